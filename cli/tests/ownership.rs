//! `templates/sql/app-ownership.sql` on a real PostgreSQL (`setup/test.sh` starts one and sets
//! DATABASE_URL): objects another role made, as in a stack from before the services had roles of
//! their own, all end up owned by the service's role.
#![allow(clippy::unwrap_used)]

use std::{io::Write, process::Command};

const OWNERSHIP: &str = include_str!("../../templates/sql/app-ownership.sql");

/// Runs `sql` with psql on `url`; returns what it printed, unaligned and tuples only.
fn psql(url: &str, sql: &str) -> String {
    let mut child = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", url, "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_service_role_gets_every_object_of_its_schema() {
    let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL (setup/test.sh sets it)");
    let id = std::process::id();
    let (db, role) = (format!("ownership_{id}"), format!("ownership_app_{id}"));
    psql(
        &admin,
        &format!("CREATE DATABASE {db}; CREATE ROLE {role} LOGIN;"),
    );
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);
    psql(
        &url,
        "CREATE TABLE users (id uuid PRIMARY KEY, email text UNIQUE);
         CREATE TABLE _sqlx_migrations (version bigint PRIMARY KEY);
         CREATE TABLE counters (id serial PRIMARY KEY, n int GENERATED ALWAYS AS IDENTITY);
         CREATE VIEW recent AS SELECT * FROM users;
         CREATE SEQUENCE numbers;",
    );

    let sql = OWNERSHIP.replace("{role}", &role);
    psql(&url, &format!("BEGIN;\n{sql}\nCOMMIT;"));
    // Again: nothing left to do, no error.
    psql(&url, &format!("BEGIN;\n{sql}\nCOMMIT;"));

    let owners = psql(
        &url,
        "SELECT c.relname || ' ' || pg_get_userbyid(c.relowner) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1;
         SELECT 'schema ' || nspowner::regrole FROM pg_namespace WHERE nspname = 'public';",
    );
    let lines: Vec<&str> = owners.lines().collect();
    assert_eq!(lines.len(), 12, "{owners}");
    for line in &lines {
        assert!(line.ends_with(&format!(" {role}")), "{owners}");
    }
    psql(&admin, &format!("DROP DATABASE {db}; DROP ROLE {role};"));
}
