//! `stackctl restore`: a database back to a backup, all or nothing.

use std::{path::PathBuf, sync::Mutex, time::Instant};

use anyhow::{Context, bail};
use futures_util::future::try_join_all;

use super::Site;
use crate::{
    archive,
    backup::{self, Backup, Kind, Replayed},
    database,
    docker::{Engine, Health, Located},
    images, nginx,
    rollout::{self, Rollout, Step},
    stack::{self, App, STOP_GRACE},
    swarm,
    ui::Ui,
};

/// Restore a service's database from a backup. The file's checksum and its whole gzip stream
/// are checked before anything is touched; then nginx stops routing to the service, its
/// instances stop (nginx keeps serving the other service), a safety backup of what the
/// database holds is taken, and `psql` replays the dump in one transaction that only the end
/// of the dump commits. Then the instances start and nginx routes to them again. Interrupted
/// or failed at any point, the database is exactly as it was or exactly the backup, and the
/// command says which.
///
/// With --to, the database comes back as it was at a moment instead, from its archive: its
/// newest physical backup before that moment and the WAL archived since. That also works when
/// the database's container and data volume are gone.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl restore auth latest\n  stackctl restore payments backups/payments/payments_20261125_020000.sql.gz --yes\n  stackctl restore payments --to \"2026-11-26 10:15:00\"     everything committed before then (UTC)\n  stackctl restore payments --to latest                    up to the last archived WAL\n\n`latest` is the newest backup of that database, never a pre-restore safety copy; restore one of\nthose by its file name (stackctl backup list shows them and the window --to can reach)."
)]
pub struct Args {
    /// Whose database.
    service: App,
    /// A backup file, or `latest` for the newest backup of that database.
    #[arg(required_unless_present = "to", conflicts_with = "to")]
    file: Option<String>,
    /// A moment to restore to from the archive: `latest`, "YYYY-MM-DD HH:MM:SS" in UTC, or an
    /// RFC 3339 time with its offset.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// With --to: the repository to restore from; `copy` is the encrypted one in
    /// backup.copy_to, for when the archive volume is lost too.
    #[arg(long, value_enum, default_value = "archive", requires = "to")]
    from: archive::Repo,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    yes: bool,
}

/// How the part of a restore that changes things ended.
enum Outcome {
    Done { safety: Backup, replay_secs: f64 },
    Failed(anyhow::Error),
    Interrupted(&'static str),
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    if let Some(to) = &args.to {
        let target = archive::Target::parse(to)?;
        return to_moment(args.service, target, args.from, args.yes, ctx).await;
    }
    let app = args.service;
    let label = app.service().label();
    let config = ctx.config()?;
    let root = ctx.base_dir().join(&config.backup.dir);
    let _lock = ctx.state.lock()?;
    for line in backup::sweep(&root, app)? {
        ctx.ui.detail(&line);
    }
    let file = args.file.unwrap_or_default();
    let path = if file == "latest" {
        backup::latest(&root, app)?
            .with_context(|| {
                format!(
                    "no {label} backup in {} (stackctl backup list)",
                    root.display()
                )
            })?
            .path
    } else {
        PathBuf::from(&file)
    };
    if !path.is_file() {
        bail!(
            "{} is not a file (stackctl backup list shows the backups)",
            path.display()
        );
    }
    ctx.ui.step(&format!(
        "checking {}: checksum and the whole gzip stream",
        path.display()
    ));
    backup::verify(&path)?;
    if !args.yes
        && !super::confirm(&format!(
            "replace the {label} database with {}? its instances stop meanwhile",
            path.display()
        ))?
    {
        bail!("nothing was restored");
    }

    let site = Site::connect(ctx, &config).await?;
    let db = site.database(app).await?;
    match db.engine.health(&db.container).await? {
        Health::Healthy => {}
        // Restarted a moment ago (a restore --to just now, say): it is waited for.
        Health::Starting => {
            ctx.ui.step(&format!(
                "{} is starting: waiting for it",
                database::of(app).container
            ));
            stack::wait_healthy(db.engine, std::slice::from_ref(&db.container), &ctx.ui).await?;
        }
        Health::Unhealthy | Health::Down => bail!(
            "{} is not running and healthy; start the stack with `stackctl up`",
            database::of(app).container
        ),
    }
    // A restore killed a moment ago may still be rolling back.
    backup::settle(&db, app, None).await?;

    let mut instances = Instances::of(&site, ctx, &config.project, app, false).await?;
    let transaction = Mutex::new(None);
    let replace = async {
        instances.stop(&ctx.ui).await?;
        // Taken with the writers stopped, so no write falls between it and the restore.
        let safety = backup::take(&db, &root, app, Kind::PreRestore, &ctx.ui).await?;
        ctx.ui.step(&format!(
            "safety backup of the current data: {}",
            safety.path.display()
        ));
        ctx.ui
            .step(&format!("restoring {label} from {}", path.display()));
        let started = Instant::now();
        backup::replay(&db, app, &path, &transaction).await?;
        anyhow::Ok((safety, started.elapsed().as_secs_f64()))
    };
    let outcome = tokio::select! {
        done = replace => match done {
            Ok((safety, replay_secs)) => Outcome::Done { safety, replay_secs },
            Err(e) => Outcome::Failed(e),
        },
        signal = interrupted() => Outcome::Interrupted(signal),
    };
    // The replay may have ended any way: ask the database what became of it.
    let replayed = match &outcome {
        Outcome::Done { .. } => Ok(Replayed::Committed),
        Outcome::Failed(_) | Outcome::Interrupted(_) => {
            if let Outcome::Interrupted(signal) = &outcome {
                ctx.ui.step(&format!(
                    "interrupted ({signal}); finishing: the instances start again (the same signal again leaves them stopped)"
                ));
                tokio::spawn(async {
                    let signal = interrupted().await;
                    eprintln!(
                        "error: interrupted again ({signal}); the instances may still be stopped: run stackctl up"
                    );
                    std::process::exit(130);
                });
            }
            let id = transaction.lock().ok().and_then(|id| *id);
            backup::settle(&db, app, id).await
        }
    };
    let state = match &replayed {
        Ok(Replayed::Committed) => format!("the {label} database holds {}", path.display()),
        Ok(Replayed::RolledBack) => format!("the {label} database is as it was"),
        Err(e) => format!("the state of the {label} database is unknown ({e:#})"),
    };

    // Whatever happened, the instances run again and nginx routes to them.
    if let Err(e) = instances.start(&ctx.ui).await {
        return Err(e.context(format!(
            "{state}, but its instances did not come back; see stackctl logs {label}, then stackctl up"
        )));
    }
    match outcome {
        Outcome::Done {
            safety,
            replay_secs,
        } => {
            ctx.ui.step(&format!(
                "restored the {label} database from {} (replayed in {replay_secs:.1}s); what it held before is in {}",
                path.display(),
                safety.path.display()
            ));
            ctx.ui.done();
            Ok(())
        }
        Outcome::Failed(e) => Err(e.context(format!(
            "restore failed; {state} and its instances run again"
        ))),
        Outcome::Interrupted(signal) => {
            bail!("restore interrupted ({signal}); {state} and its instances run again")
        }
    }
}

/// `restore APP --to TARGET`: the database as it was at `target`, from its archive.
async fn to_moment(
    app: App,
    target: archive::Target,
    from: archive::Repo,
    yes: bool,
    ctx: &super::Ctx,
) -> anyhow::Result<()> {
    let label = app.service().label();
    if let archive::Target::Time(at) = target
        && at > chrono::Utc::now()
    {
        bail!("--to {target}: that moment has not come yet");
    }
    let config = ctx.config()?;
    if from == archive::Repo::Copy
        && config
            .backup
            .copy_place(&config.project, app.database())
            .is_none()
    {
        bail!("--from copy: backup.copy_to is not set, so there is no copy");
    }
    let root = ctx.base_dir().join(&config.backup.dir);
    let _lock = ctx.state.lock()?;
    if !yes
        && !super::confirm(&format!(
            "bring the {label} database back to {target} from its {}? its instances stop meanwhile",
            from.name()
        ))?
    {
        bail!("nothing was restored");
    }
    let site = Site::connect(ctx, &config).await?;
    let project = &config.project;
    // Stopped ones too: a restore --to killed earlier left them stopped, and this one, run
    // again to finish it, starts them.
    let mut instances = Instances::of(&site, ctx, project, app, true).await?;
    instances.stop(&ctx.ui).await?;

    let running = match site.database(app).await {
        Ok(db) => (db.engine.health(&db.container).await? == Health::Healthy).then_some(db),
        Err(_) => None,
    };
    if let Some(db) = &running {
        let safety = match backup::take(db, &root, app, Kind::PreRestore, &ctx.ui).await {
            Ok(safety) => safety,
            // Nothing was touched yet: the instances run again before the error is told.
            Err(e) => {
                instances.start(&ctx.ui).await?;
                return Err(e.context(format!(
                    "no safety backup, so nothing was restored; the {label} database is as it was and its instances run again"
                )));
            }
        };
        ctx.ui.step(&format!(
            "safety backup of the current data: {}",
            safety.path.display()
        ));
    } else {
        ctx.ui.step(&format!(
            "no safety backup: the {label} database does not run"
        ));
    }
    let secrets = ctx.state.secrets()?;
    let moment = Moment { app, target, from };
    let started = Instant::now();
    let recovered = async {
        let db = match &site {
            Site::Local(engine) => {
                moment
                    .put_back_local(engine, &config, &secrets, &ctx.ui)
                    .await?
            }
            Site::Cluster(nodes) => moment.put_back_swarm(nodes, &config, &ctx.ui).await?,
        };
        archive::wait_recovered(&db, app, &ctx.ui).await?;
        // Restored on a new host, the role's password is the lost host's: it takes this one's.
        database::of(app)
            .ensure_app_role(db.engine, &db.container, secrets.app_password(app))
            .await?;
        // The restored cluster archives to every repository: one that held another cluster's
        // backups (a new host's first database) keeps them aside, one that was lost with its
        // volume starts again, with a full backup.
        for line in archive::set_aside_foreign(&db, app).await? {
            ctx.ui.step(&line);
        }
        for line in
            archive::ensure(&db, app, &|| ctx.ui.detail(&archive::waiting_line(app))).await?
        {
            ctx.ui.step(&line);
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        done = recovered => done,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted ({signal})")),
    };
    if let Err(e) = outcome {
        return Err(e.context(format!(
            "the {label} database is not restored and its instances stay stopped; run the same command again: it takes up where this one stopped"
        )));
    }
    let secs = started.elapsed().as_secs_f64();
    instances.start(&ctx.ui).await.map_err(|e| {
        e.context(format!(
            "the {label} database is back at {target}, but its instances did not come back; see stackctl logs {label}, then stackctl up"
        ))
    })?;
    ctx.ui.step(&format!(
        "the {label} database is back at {target} (restored and replayed in {secs:.1}s); WAL archiving goes on from there"
    ));
    ctx.ui.done();
    Ok(())
}

/// Where `restore --to` brings a database back to, and from which repository.
struct Moment {
    app: App,
    target: archive::Target,
    from: archive::Repo,
}

impl Moment {
    /// On one host: the database's container removed, its files restored in a one-off
    /// container with its volumes, then the container made anew; the database as it runs.
    async fn put_back_local<'e>(
        &self,
        engine: &'e Engine,
        config: &crate::config::StackConfig,
        secrets: &crate::state::Secrets,
        ui: &Ui,
    ) -> anyhow::Result<Located<'e>> {
        let project = &config.project;
        let image = images::ensure_postgres(engine, config, ui).await?;
        let container = database::of(self.app).container;
        engine.remove(container, STOP_GRACE).await?;
        for volume in [
            stack::volume_name(project, self.app.database()),
            stack::archive_volume_name(project, self.app.database()),
        ] {
            engine.ensure_volume(&volume, project).await?;
        }
        archive::prepare_copy(config, self.app.database())?;
        self.say_restoring(ui);
        let spec = stack::database_spec(config, self.app, &image, secrets)?;
        archive::recover(
            engine,
            project,
            &spec.name,
            &spec.body,
            self.from,
            self.target,
        )
        .await?;
        engine.create_and_start(&spec.name, spec.body).await?;
        stack::wait_healthy(engine, &[spec.name], ui).await?;
        Ok(Located::local(engine, container))
    }

    /// On a swarm: the database's service scaled to no task, its files restored in a one-off
    /// container on its node (where its volumes are), then the service back to its task.
    async fn put_back_swarm<'n>(
        &self,
        nodes: &'n swarm::Nodes,
        config: &crate::config::StackConfig,
        ui: &Ui,
    ) -> anyhow::Result<Located<'n>> {
        let project = &config.project;
        let cluster = config
            .cluster
            .as_ref()
            .context("a swarm without [cluster] in the configuration")?;
        let node = swarm::database_engine(nodes, cluster, self.app)?;
        let body = swarm::database_container(nodes.manager(), project, self.app).await?;
        let service = self.app.database();
        swarm::scale_service(nodes.manager(), project, service, 0, ui).await?;
        for volume in [
            stack::volume_name(project, service),
            stack::archive_volume_name(project, service),
        ] {
            node.ensure_volume(&volume, project).await?;
        }
        self.say_restoring(ui);
        archive::recover(
            node,
            project,
            service.label(),
            &body,
            self.from,
            self.target,
        )
        .await?;
        swarm::scale_service(nodes.manager(), project, service, 1, ui).await?;
        let db = swarm::running_container(nodes, swarm::service_name(service)).await?;
        stack::wait_healthy(db.engine, std::slice::from_ref(&db.container), ui).await?;
        Ok(db)
    }

    fn say_restoring(&self, ui: &Ui) {
        ui.step(&format!(
            "restoring the {} database's files from its {}",
            self.app.service().label(),
            self.from.name()
        ));
    }
}

/// The instances a restore stops and starts again, and how.
enum Instances<'a> {
    /// On one host: the running instances, taken out of nginx's routes, then stopped.
    Local {
        engine: &'a Engine,
        app: App,
        rollout: Rollout<'a>,
        names: Vec<String>,
    },
    /// On a swarm: the service scaled to no task (Docker's DNS, and so the edge, drop them
    /// first) and back to its count.
    Swarm {
        nodes: &'a swarm::Nodes,
        project: &'a str,
        app: App,
        count: u32,
    },
}

impl<'a> Instances<'a> {
    /// The instances of `app` that run; with `stopped_too` the stopped ones as well (those a
    /// restore killed earlier left stopped), on one host.
    async fn of(
        site: &'a Site,
        ctx: &'a super::Ctx,
        project: &'a str,
        app: App,
        stopped_too: bool,
    ) -> anyhow::Result<Self> {
        Ok(match site {
            Site::Local(engine) => {
                let names = rollout::instances(engine, project, app)
                    .await?
                    .into_iter()
                    .filter(|i| i.running || stopped_too)
                    .map(|i| i.name)
                    .collect();
                let routes_path = ctx.state.path(nginx::ROUTES_FILE);
                let routed = nginx::routed_now(&routes_path)?;
                Self::Local {
                    engine,
                    app,
                    rollout: Rollout::new(engine, routes_path, routed, &ctx.ui),
                    names,
                }
            }
            Site::Cluster(nodes) => {
                let running = swarm::instances(nodes.manager(), project, app)
                    .await?
                    .filter(|n| *n > 0);
                let count = match running {
                    Some(n) => n,
                    // A restore --to killed earlier scaled them to none: back to the count
                    // `up` would give them.
                    None if stopped_too => ctx.config()?.instances(app),
                    None => bail!(
                        "{} runs no instance; start the stack with `stackctl up`",
                        app.service().label()
                    ),
                };
                Self::Swarm {
                    nodes,
                    project,
                    app,
                    count,
                }
            }
        })
    }

    /// What stops and starts: `app_a1, app_a2`, or `the 2 tasks of app_a`.
    fn describe(&self) -> String {
        match self {
            Self::Local { names, .. } => names.join(", "),
            Self::Swarm { app, count, .. } => {
                format!(
                    "the {count} tasks of {}",
                    swarm::service_name(app.service())
                )
            }
        }
    }

    async fn stop(&mut self, ui: &Ui) -> anyhow::Result<()> {
        let what = self.describe();
        match self {
            Self::Local {
                engine,
                app,
                rollout,
                names,
            } => {
                rollout.run(vec![Step::Route(*app, Vec::new())]).await?;
                ui.step(&format!("stopping {what}"));
                try_join_all(names.iter().map(|n| engine.stop(n, STOP_GRACE))).await?;
                Ok(())
            }
            Self::Swarm {
                nodes,
                project,
                app,
                ..
            } => {
                ui.step(&format!("stopping {what}"));
                swarm::scale_to(nodes.manager(), project, *app, 0, ui).await?;
                // Until then an edge whose DNS lags may still send requests to a gone task
                // (they time out); after, they get a 503 at once.
                swarm::wait_routed(nodes, *app, ui).await
            }
        }
    }

    async fn start(&mut self, ui: &Ui) -> anyhow::Result<()> {
        ui.step(&format!("starting {}", self.describe()));
        match self {
            Self::Local {
                engine,
                app,
                rollout,
                names,
            } => {
                try_join_all(names.iter().map(|n| engine.start(n))).await?;
                stack::wait_healthy(engine, names, ui).await?;
                rollout.run(vec![Step::Route(*app, names.clone())]).await
            }
            Self::Swarm {
                nodes,
                project,
                app,
                count,
            } => {
                swarm::scale_to(nodes.manager(), project, *app, *count, ui).await?;
                swarm::wait_routed(nodes, *app, ui).await
            }
        }
    }
}

/// Resolves at the first Ctrl-C or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
