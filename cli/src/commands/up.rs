//! `stackctl up`: builds what is missing and makes the engine run the configured stack.

use std::{
    collections::{BTreeMap, HashSet},
    net::TcpListener,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::{
    archive, certs,
    cluster::{Cluster, NodeLabel},
    config::{CopyTo, StackConfig},
    database,
    docker::{Engine, Health, Located},
    history, images, nginx,
    rollback::{self, Inputs, Pin},
    rollout::{self, Replace, Rollout, Step},
    s3,
    stack::{self, App, NETWORK, Outcome, PROXY, Plan, Service, Spec},
    state::write_with_mode,
    status::{Traffic, WINDOW},
    swarm,
    ui::Ui,
};

/// Start the whole stack, or bring it in line with the configuration: images are built when
/// missing, secrets and the certificate made once, and only containers whose settings changed are
/// recreated. Waits until everything is healthy. On a running stack it then watches the services
/// it changed for `rollout.watch_secs`: a new instance that fails, or its 5xx answers above
/// `rollout.max_5xx_percent`, rolls the change back (and `up` keeps the rolled-back release until
/// the configuration file or stackctl changes).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl up                      start, or apply stack.toml changes\n  STACKCTL_HTTP_PORT=8080 STACKCTL_HTTPS_PORT=8443 stackctl up\n  stackctl -f prod.toml up\n  stackctl up --roll-forward       try again what was rolled back"
)]
pub struct Args {
    /// Run what the configuration file and this stackctl say even while a rollback holds.
    #[arg(long)]
    roll_forward: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let _lock = ctx.state.lock()?;
    if let Some(cluster) = &config.cluster {
        return up_cluster(ctx, &config, cluster).await;
    }
    if args.roll_forward && rollback::clear(&ctx.state)? {
        ctx.ui
            .step("rolling forward: running what the configuration file and this stackctl say");
    }
    let engine = Engine::connect_stack(&config.project).await?;
    local(ctx, &engine).await
}

/// `up` on one host. When the services' change fails or the watch after it sees them fail, the
/// release before it is pinned and applied again, and the change's failure is returned.
pub(super) async fn local(ctx: &super::Ctx, engine: &Engine) -> anyhow::Result<()> {
    let ui = &ctx.ui;
    let inputs = Target::resolve(ctx, engine).await?;
    let Target {
        config,
        images,
        pinned,
        built,
    } = inputs;
    check_ports(engine, &config).await?;
    check_store(&config).await?;

    let secrets = ctx.state.secrets()?;
    let cert = certs::ensure(&ctx.state, &config.tls.names, false)?;
    if cert.renewed {
        ui.step(&format!("new TLS certificate {}", cert.cert_path.display()));
    }

    engine.ensure_network(NETWORK, &config.project).await?;
    for service in [Service::AuthDb, Service::PaymentsDb] {
        for volume in [
            stack::volume_name(&config.project, service),
            stack::archive_volume_name(&config.project, service),
        ] {
            engine.ensure_volume(&volume, &config.project).await?;
        }
        archive::prepare_copy(&config, service)?;
    }
    let plan = Plan::new(&config, &images, &secrets, ctx.state.root())?;
    let edge = Edge {
        spec: &plan.edge,
        site: nginx::render_site(&nginx::template(&config, ctx.base_dir())?, &config)?,
        site_path: ctx.state.path(nginx::SITE_FILE),
        routes_path: ctx.state.path(nginx::ROUTES_FILE),
        cert_renewed: cert.renewed,
    };

    reconcile_group(engine, &config, &plan.databases, ui).await?;
    // The services connect as roles of their own, not as the clusters' superusers.
    for app in App::ALL {
        let db = database::of(app);
        db.ensure_app_role(engine, db.container, secrets.app_password(app))
            .await?;
        let at = Located::local(engine, db.container);
        for line in archive::ensure(&at, app, &|| ui.detail(&archive::waiting_line(app))).await? {
            ui.step(&line);
        }
    }
    // With the edge serving, instances change one at a time behind it, so an update fails no
    // request; without it there is nothing to keep serving and they start together.
    let mut changed = Vec::new();
    let mut previous = None;
    let switched = Utc::now();
    if engine.health(PROXY).await? != Health::Down {
        // The edge first, routing to what serves now: a new edge (an older one routed by
        // reloads) must take the routes the instances' changes make.
        let routed = match nginx::routed(&edge.routes_path)? {
            Some(routes) => routes,
            None => running_routes(engine, &config.project).await?,
        };
        edge.update(engine, &config, &routed, ui).await?;
        previous = Previous::capture(ctx, engine, &config.project).await?;
        let mut rollout = Rollout::new(engine, edge.routes_path.clone(), routed, ui);
        for app in App::ALL {
            let current = rollout::instances(engine, &config.project, app).await?;
            let steps = rollout::plan(
                app,
                plan.app(app),
                &current,
                rollout.routed().of(app),
                Replace::Changed,
            );
            let started: Vec<String> = steps
                .iter()
                .filter_map(|s| match s {
                    Step::Start(specs) => Some(specs.iter().map(|s| s.name.clone())),
                    _ => None,
                })
                .flatten()
                .collect();
            if !started.is_empty() {
                changed.push(Changed { app, started });
            }
            if let Err(e) = rollout.run(steps).await {
                // A rolled-back release that fails has nothing better to go back to.
                if pinned {
                    return Err(e);
                }
                return roll_back(ctx, engine, previous, built, format!("{e:#}")).await;
            }
        }
    } else {
        for app in App::ALL {
            reconcile_group(engine, &config, &plan.app(app).wanted(), ui).await?;
        }
        let routes = nginx::Routes {
            auth: App::Auth.instance_names(config.services.auth.instances),
            payments: App::Payments.instance_names(config.services.payments.instances),
        };
        edge.update(engine, &config, &routes, ui).await?;
    }

    // Whatever the plan no longer has goes, now that nothing routes to it.
    let wanted = plan.names();
    for c in stack::containers(engine, &config.project).await? {
        if !wanted.contains(&c.name) {
            ui.step(&format!("removing {}", c.name));
            engine.remove(&c.name, stack::STOP_GRACE).await?;
        }
    }

    // A rolled-back release is not watched: there is nothing better to go back to.
    if !pinned && let Some(why) = watch(engine, &config, &changed, switched, ui).await? {
        return roll_back(ctx, engine, previous, built, why).await;
    }
    print_urls(&config);
    ui.done();
    Ok(())
}

/// What `up` runs: the configuration file and the images built from this stackctl, or a
/// rollback's release while it holds over them.
struct Target {
    config: StackConfig,
    images: images::ImageSet,
    /// Whether a rollback's release runs.
    pinned: bool,
    /// What the file and this stackctl give: what a rollback made now holds over.
    built: Inputs,
}

impl Target {
    async fn resolve(ctx: &super::Ctx, engine: &Engine) -> anyhow::Result<Self> {
        let ui = &ctx.ui;
        let config = ctx.config()?;
        let (mut images, built) = built(ctx, engine, &config).await?;
        let pin = rollback::read(&ctx.state)?;
        match pin {
            Some(pin) if pin.holds_over(&built.config_hash) && pin.over.images == built.images => {
                for app in App::ALL {
                    if let Some(image) = pin.image(app) {
                        images.set_app(app, image.to_owned());
                    }
                }
                ui.step(&format!(
                    "release {} runs, as rolled back at {} ({}); a change of the configuration file or of stackctl rolls forward, or `up --roll-forward`",
                    pin.release,
                    pin.at.format("%Y-%m-%d %H:%M UTC"),
                    pin.reason
                ));
                Ok(Self {
                    config,
                    images,
                    pinned: true,
                    built,
                })
            }
            Some(_) => {
                rollback::clear(&ctx.state)?;
                ui.step("rolling forward: the configuration file or stackctl changed since the rollback");
                // The configuration was the rollback's while the file had not changed.
                let config = ctx.config()?;
                let images = images::ensure(engine, &config, ui).await?;
                Ok(Self {
                    config,
                    images,
                    pinned: false,
                    built,
                })
            }
            None => Ok(Self {
                config,
                images,
                pinned: false,
                built,
            }),
        }
    }
}

/// The images `config` runs (built when missing, their sizes said), and what the configuration
/// file and this stackctl give: what a rollback holds over.
pub(super) async fn built(
    ctx: &super::Ctx,
    engine: &Engine,
    config: &StackConfig,
) -> anyhow::Result<(images::ImageSet, Inputs)> {
    let ui = &ctx.ui;
    let images = images::ensure(engine, config, ui).await?;
    for tag in images.all() {
        let size = engine.image_size(tag).await?;
        ui.detail(&format!("{tag}: {:.1} MB", size as f64 / 1e6));
    }
    let mut built = Inputs {
        config_hash: history::config_hash(&ctx.configured()?)?,
        images: BTreeMap::new(),
    };
    for app in App::ALL {
        built.images.insert(
            app.service().label().to_owned(),
            engine.image_id(images.app(app)).await?,
        );
    }
    Ok((images, built))
}

/// The release that ran before `up` changed the services: what a failed change goes back to.
struct Previous {
    /// Its history entry, numbered from 1.
    release: usize,
    config_hash: String,
    /// What each service's lowest-numbered instance runs (its tag while that still names its
    /// image, else its id), so that going back leaves an unchanged service's instances alone.
    images: BTreeMap<String, String>,
}

impl Previous {
    /// `None` when there is none to go back to: no history, or its configuration not kept.
    async fn capture(
        ctx: &super::Ctx,
        engine: &Engine,
        project: &str,
    ) -> anyhow::Result<Option<Self>> {
        let entries = history::read(&ctx.state)?;
        let Some(last) = entries.last() else {
            return Ok(None);
        };
        let config_hash = last.release.config_hash.clone();
        if history::kept_config(&ctx.state, &config_hash)?.is_none() {
            return Ok(None);
        }
        let containers = stack::containers(engine, project).await?;
        let mut images = BTreeMap::new();
        for app in App::ALL {
            let lowest = containers
                .iter()
                .filter(|c| c.running)
                .filter_map(|c| Some((c.instance_of(app)?, c)))
                .min_by_key(|(n, _)| *n);
            let Some((_, c)) = lowest else {
                return Ok(None);
            };
            images.insert(app.service().label().to_owned(), c.image.clone());
        }
        Ok(Some(Self {
            release: entries.len(),
            config_hash,
            images,
        }))
    }
}

/// Pins the release before the change and applies it again; returns the change's failure.
async fn roll_back(
    ctx: &super::Ctx,
    engine: &Engine,
    previous: Option<Previous>,
    over: Inputs,
    why: String,
) -> anyhow::Result<()> {
    let Some(previous) = previous else {
        anyhow::bail!(
            "{why}; there is no earlier release to roll back to (none in `stackctl history` with its configuration kept)"
        );
    };
    ctx.ui.step(&format!(
        "rolling back to release {}: {why}",
        previous.release
    ));
    let pin = Pin {
        release: previous.release,
        reason: why.clone(),
        at: Utc::now(),
        config_hash: previous.config_hash,
        images: previous.images,
        over,
    };
    rollback::save(&ctx.state, &pin)?;
    Box::pin(local(ctx, engine)).await.with_context(|| {
        format!(
            "{why}; rolling back to release {} failed too",
            previous.release
        )
    })?;
    anyhow::bail!(
        "{why}: rolled back to release {}, which runs again; `stackctl up` keeps it until the configuration file or stackctl change (or `up --roll-forward`)",
        previous.release
    )
}

/// A service whose instances `up` replaced or added.
struct Changed {
    app: App,
    /// The instances it started, a surge instance among them.
    started: Vec<String>,
}

/// Watches the services `up` changed for `rollout.watch_secs` after the switch (begun at
/// `since`): why they should be rolled back, as soon as it shows.
async fn watch(
    engine: &Engine,
    config: &StackConfig,
    apps: &[Changed],
    since: DateTime<Utc>,
    ui: &Ui,
) -> anyhow::Result<Option<String>> {
    let secs = config.rollout.watch_secs;
    if secs == 0 || apps.is_empty() {
        return Ok(None);
    }
    let names = apps
        .iter()
        .map(|a| a.app.service().label())
        .collect::<Vec<_>>()
        .join(" and ");
    let limit = config.rollout.max_5xx_percent;
    ui.step(&format!(
        "watching {names} for {secs} s: an instance failing, or over {limit} % of answers 5xx, rolls back (Ctrl-C ends the watch, keeping the change)"
    ));
    let spinner = ui.spinner(&format!("watching {names}"));
    let mut stop = super::Stop::listen()?;
    let deadline = Instant::now() + Duration::from_secs(secs.into());
    loop {
        if let Some(why) = failing(engine, config, apps, since).await? {
            spinner.finish_and_clear();
            ends_on_stop(stop);
            return Ok(Some(why));
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            () = stop.requested() => {
                spinner.finish_and_clear();
                ui.step("watch ended on request: the change stays");
                return Ok(None);
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    spinner.finish_and_clear();
    ui.step(&format!(
        "{names}: every instance healthy and 5xx within {limit} % for {secs} s"
    ));
    ends_on_stop(stop);
    Ok(None)
}

/// Ctrl-C or SIGTERM from now on end the process, as before they were listened for: what
/// follows a watch (a rollback, the pin saved first) is finished by the next `up`.
fn ends_on_stop(mut stop: super::Stop) {
    tokio::spawn(async move {
        stop.requested().await;
        eprintln!("interrupted: `stackctl up` finishes what was under way");
        std::process::exit(130);
    });
}

/// Why the changed services fail now, if they do: an instance this `up` started stopped or
/// unhealthy, or too many 5xx among the answers they gave through the edge since `since` (the
/// instances it left alone are not this change's doing).
async fn failing(
    engine: &Engine,
    config: &StackConfig,
    apps: &[Changed],
    since: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let mut addresses = HashSet::new();
    for changed in apps {
        for name in &changed.started {
            if engine.inspect(name).await?.is_none() {
                // The surge instance, gone once the others were replaced.
                continue;
            }
            match engine.health(name).await? {
                Health::Unhealthy => return Ok(Some(format!("{name} turned unhealthy"))),
                Health::Down => return Ok(Some(format!("{name} stopped"))),
                Health::Healthy | Health::Starting => {}
            }
            addresses.extend(super::status::address(engine, name).await?);
        }
    }
    let answers = super::status::edge_answers(engine, since).await;
    for changed in apps {
        let own = answers.iter().filter(|a| {
            a.app == Some(changed.app)
                && a.upstream
                    .as_deref()
                    .and_then(|u| u.rsplit_once(':'))
                    .is_some_and(|(ip, _)| addresses.contains(ip))
        });
        let traffic = Traffic::of(own.map(|a| (a.status, a.secs)), WINDOW);
        let percent = traffic.share_5xx * 100.0;
        if percent > config.rollout.max_5xx_percent {
            let failed = (traffic.share_5xx * traffic.requests as f64).round();
            return Ok(Some(format!(
                "{} answered 5xx to {failed} of {} requests through the edge since the switch ({percent:.1} %, limit {} %)",
                changed.app.service().label(),
                traffic.requests,
                config.rollout.max_5xx_percent
            )));
        }
    }
    Ok(None)
}

/// `up` on a swarm: images built here and loaded into the nodes, then the services in start
/// order (databases, their roles, auth and payments, the edge), each waited for until its tasks
/// run healthy. A service whose settings did not change is left alone; one that did is updated
/// by swarm, a task at a time, new before old for the services.
pub(super) async fn up_cluster(
    ctx: &super::Ctx,
    config: &StackConfig,
    cluster: &Cluster,
) -> anyhow::Result<()> {
    let ui = &ctx.ui;
    let nodes = swarm::Nodes::connect(cluster, ctx.base_dir()).await?;
    let local = Engine::connect()
        .await
        .context("the images are built on this machine's engine before they go to the nodes")?;
    let secrets = ctx.state.secrets()?;
    let cert = certs::ensure(&ctx.state, &config.tls.names, false)?;
    if cert.renewed {
        ui.step(&format!("new TLS certificate {}", cert.cert_path.display()));
    }
    let tags = images::ensure(&local, config, ui).await?;
    let ids = swarm::image_ids(&local, &tags).await?;
    swarm::ship(&local, &nodes, &tags, ui).await?;

    let manager = nodes.manager();
    let project = &config.project;
    manager.create_network_overlay(NETWORK, project).await?;
    let site = nginx::render_site(&nginx::template(config, ctx.base_dir())?, config)?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let edge_files = swarm::EdgeFiles::new(&site, &read(&cert.cert_path)?, &read(&cert.key_path)?)?;
    let refs = swarm::ensure_objects(manager, project, &swarm::objects(&secrets)).await?;
    let images = swarm::Images {
        tags: &tags,
        ids: &ids,
    };
    let plan = swarm::SwarmPlan::new(config, &images, &refs)?;

    swarm::put(manager, project, &plan.databases, ui).await?;
    swarm::wait_converged(manager, project, &names(&plan.databases), ui).await?;
    // The services connect as roles of their own, not as the clusters' superusers.
    for app in App::ALL {
        let db = database::of(app);
        let at = swarm::running_container(&nodes, swarm::service_name(app.database())).await?;
        db.ensure_app_role(at.engine, &at.container, secrets.app_password(app))
            .await?;
        for line in archive::ensure(&at, app, &|| ui.detail(&archive::waiting_line(app))).await? {
            ui.step(&line);
        }
        if swarm::predates_database(manager, project, app).await? {
            ui.step(&format!(
                "{} instances started before their database did (its node came back): replacing them",
                app.service().label()
            ));
            swarm::change(manager, project, app, swarm::Change::Restart, false, ui).await?;
        }
    }
    swarm::put(manager, project, &plan.apps, ui).await?;
    swarm::wait_converged(manager, project, &names(&plan.apps), ui).await?;
    // The running edge takes a new site or certificate in place; then its service changes
    // only with its image or settings.
    swarm::sync_edge(&nodes, cluster, project, &ids.nginx, &edge_files, ui).await?;
    let edge = std::slice::from_ref(&plan.edge);
    swarm::put(manager, project, edge, ui).await?;
    swarm::wait_converged(manager, project, &names(edge), ui).await?;
    // An edge task that started meanwhile installed the staged files at its start, or refused
    // them and kept those before: this finds out, and says nginx's reason.
    swarm::sync_edge(&nodes, cluster, project, &ids.nginx, &edge_files, ui).await?;
    // The edge re-reads Docker's DNS every second: once this returns, requests reach every
    // instance that runs.
    for app in App::ALL {
        swarm::wait_routed(&nodes, app, ui).await?;
    }

    let wanted = plan.names();
    for service in manager.services(project).await? {
        let name = service.spec.and_then(|s| s.name).unwrap_or_default();
        if !wanted.contains(&name) {
            ui.step(&format!("removing service {name}"));
            manager.remove_service(&name).await?;
        }
    }
    swarm::remove_stale_objects(manager, &refs).await?;

    for node in cluster.nodes.iter().filter(|n| n.has(NodeLabel::Edge)) {
        let host = node
            .advertise()
            .map_or_else(|| node.engine.clone(), |a| a.to_string());
        let base = format!("https://{host}:{}", config.ports.https);
        println!("edge:      {base}/a/  {base}/b/   (docs {base}/a/docs, {base}/b/docs)");
    }
    ui.done();
    Ok(())
}

fn names(specs: &[bollard::models::ServiceSpec]) -> Vec<String> {
    specs.iter().filter_map(|s| s.name.clone()).collect()
}

/// The edge as `up` makes it.
struct Edge<'a> {
    spec: &'a Spec,
    site: String,
    site_path: PathBuf,
    routes_path: PathBuf,
    cert_renewed: bool,
}

impl Edge<'_> {
    /// Brings the edge in line: created or recreated when its settings changed (starting with
    /// `routes`), reloaded when only the site or the certificate did, else left alone.
    async fn update(
        &self,
        engine: &Engine,
        config: &StackConfig,
        routes: &nginx::Routes,
        ui: &Ui,
    ) -> anyhow::Result<()> {
        if stack::is_current(engine, self.spec).await? {
            let site_changed = std::fs::read_to_string(&self.site_path).ok().as_deref()
                != Some(self.site.as_str());
            if site_changed || self.cert_renewed {
                nginx::apply_site(engine, &self.site_path, &self.site, ui).await?;
                ui.step("nginx configuration reloaded");
            }
            return nginx::apply_routes(engine, &self.routes_path, routes).await;
        }
        write_with_mode(&self.site_path, self.site.as_bytes(), 0o644)?;
        write_with_mode(&self.routes_path, routes.render().as_bytes(), 0o644)?;
        reconcile_group(engine, config, std::slice::from_ref(self.spec), ui).await
    }
}

/// The running instances of each service: what an edge that kept no routes file served.
async fn running_routes(engine: &Engine, project: &str) -> anyhow::Result<nginx::Routes> {
    let mut routes = nginx::Routes::default();
    for app in App::ALL {
        routes.set(app, rollout::running(engine, project, app).await?);
    }
    Ok(routes)
}

/// Reconciles containers that do not depend on each other together, then waits for them.
async fn reconcile_group(
    engine: &Engine,
    config: &StackConfig,
    group: &[Spec],
    ui: &Ui,
) -> anyhow::Result<()> {
    let outcomes = futures_util::future::try_join_all(
        group
            .iter()
            .map(|spec| stack::reconcile(engine, &config.project, spec)),
    )
    .await?;
    for (spec, outcome) in group.iter().zip(outcomes) {
        if outcome != Outcome::Kept {
            ui.step(&format!(
                "{} {}",
                format!("{outcome:?}").to_lowercase(),
                spec.name
            ));
        }
    }
    let names: Vec<String> = group.iter().map(|s| s.name.clone()).collect();
    stack::wait_healthy(engine, &names, ui).await
}

/// Refuses to start when a port the stack publishes is taken by something else, before
/// anything is created.
async fn check_ports(engine: &Engine, config: &StackConfig) -> anyhow::Result<()> {
    let published = [
        ("ports.http", "0.0.0.0", config.ports.http, PROXY),
        ("ports.https", "0.0.0.0", config.ports.https, PROXY),
        (
            "ports.auth_db",
            "127.0.0.1",
            config.ports.auth_db,
            database::of(App::Auth).container,
        ),
        (
            "ports.payments_db",
            "127.0.0.1",
            config.ports.payments_db,
            database::of(App::Payments).container,
        ),
    ];
    for (key, ip, port, owner) in published {
        // The stack's own running container holds its port; that is no conflict.
        let ours = engine
            .inspect(owner)
            .await?
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if ours {
            continue;
        }
        TcpListener::bind((ip, port)).with_context(|| {
            format!(
                "{key}: port {port} on {ip} is already in use; stop what uses it or set another port in {}",
                "[ports] of the configuration (or STACKCTL_* variables)"
            )
        })?;
    }
    Ok(())
}

fn print_urls(config: &StackConfig) {
    let host = config.tls.names.first().map_or("localhost", String::as_str);
    let port = if config.ports.https == 443 {
        String::new()
    } else {
        format!(":{}", config.ports.https)
    };
    let base = format!("https://{host}{port}");
    println!("auth:      {base}/a/   (docs {base}/a/docs)");
    println!("payments:  {base}/b/   (docs {base}/b/docs)");
    println!("health:    {base}/health/service_a  {base}/health/service_b");
    println!(
        "TLS:       self-signed; trust .stackctl/tls/cert.pem (curl --cacert .stackctl/tls/cert.pem)"
    );
}

/// A copy in an S3 store that cannot be used (no bucket, keys refused, certificate not
/// trusted) is said before anything changes.
async fn check_store(config: &StackConfig) -> anyhow::Result<()> {
    if let Some(CopyTo::S3 { bucket, .. }) = CopyTo::parse(&config.backup.copy_to)? {
        s3::Store::new(&config.backup.s3, &bucket)?
            .check()
            .await
            .context("backup.copy_to")?;
    }
    Ok(())
}
