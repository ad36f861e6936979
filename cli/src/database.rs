//! The two databases: where each lives, who administers it, and the role its service runs as.
//! The service's role is no superuser: it owns its schema and what is in it, nothing else, so
//! an injected statement cannot reach the server (`COPY … TO PROGRAM`, other databases, roles).

use anyhow::bail;

use crate::{docker::Engine, stack::App};

/// `templates/sql/app-ownership.sql`, with `{role}` for the service's role.
const OWNERSHIP: &str = include_str!("../../templates/sql/app-ownership.sql");

/// The port PostgreSQL listens on inside its container.
pub const PORT: u16 = 5432;

/// One service's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Database {
    /// The container (and host name) it runs in.
    pub container: &'static str,
    /// The cluster's superuser: backups, restores, administration.
    pub superuser: &'static str,
    /// The database's name.
    pub name: &'static str,
    /// The role the service connects as.
    pub app_role: &'static str,
}

pub fn of(app: App) -> Database {
    match app {
        App::Auth => Database {
            container: "auth-db",
            superuser: "auth",
            name: "nest",
            app_role: "auth_app",
        },
        App::Payments => Database {
            container: "payments-db",
            superuser: "payments",
            name: "payments",
            app_role: "payments_app",
        },
    }
}

impl Database {
    /// SQL that makes the service's role own schema `public` and every table, view and
    /// sequence in it (also after a restore of a dump whose objects another role owned).
    pub fn ownership_sql(&self) -> String {
        OWNERSHIP.replace("{role}", self.app_role)
    }

    /// Creates the service's role when it is missing, sets its password and what it may do,
    /// and gives it its schema, in the database's `container` (its name, or a swarm task's
    /// container id). The SQL goes on standard input: a password on a command line would show
    /// in `ps`.
    pub async fn ensure_app_role(
        &self,
        engine: &Engine,
        container: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let role = self.app_role;
        // The password comes from stackctl's own generator (URL-safe base64), never from input;
        // quoted as a literal all the same.
        let password = password.replace('\'', "''");
        let sql = format!(
            "\\set ON_ERROR_STOP on
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') AS missing \\gset
\\if :missing
CREATE ROLE {role};
\\endif
ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    CONNECTION LIMIT 100 PASSWORD '{password}';
REVOKE ALL ON DATABASE {name} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {role};
BEGIN;
{ownership}
COMMIT;
",
            name = self.name,
            ownership = self.ownership_sql(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Ok(sql.into_bytes())).await?;
        drop(tx);
        let (code, out) = engine
            .exec_in(
                container,
                "postgres",
                &[
                    "psql",
                    "--username",
                    self.superuser,
                    "--dbname",
                    self.name,
                    "--no-psqlrc",
                    "--quiet",
                ],
                rx,
                |_| {},
            )
            .await?;
        if code != 0 {
            bail!(
                "cannot set up the {role} role in {}: {}",
                self.container,
                out.trim()
            );
        }
        Ok(())
    }
}
