//! `stackctl up`: builds what is missing and makes the engine run the configured stack.

use std::{net::TcpListener, path::PathBuf};

use anyhow::Context;

use crate::{
    archive, certs,
    cluster::{Cluster, NodeLabel},
    config::{CopyTo, StackConfig},
    database,
    docker::{Engine, Health, Located},
    images, nginx,
    rollout::{self, Replace, Rollout},
    s3,
    stack::{self, App, NETWORK, Outcome, PROXY, Plan, Service, Spec},
    state::write_with_mode,
    swarm,
    ui::Ui,
};

/// Start the whole stack, or bring it in line with the configuration: images are built when
/// missing, secrets and the certificate made once, and only containers whose settings changed are
/// recreated. Waits until everything is healthy.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl up                      start, or apply stack.toml changes\n  STACKCTL_HTTP_PORT=8080 STACKCTL_HTTPS_PORT=8443 stackctl up\n  stackctl -f prod.toml up"
)]
pub struct Args {}

pub async fn run(_args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let _lock = ctx.state.lock()?;
    if let Some(cluster) = &config.cluster {
        return up_cluster(ctx, &config, cluster).await;
    }
    let ui = &ctx.ui;
    let engine = Engine::connect().await?;
    check_ports(&engine, &config).await?;
    check_store(&config).await?;

    let secrets = ctx.state.secrets()?;
    let cert = certs::ensure(&ctx.state, &config.tls.names, false)?;
    if cert.renewed {
        ui.step(&format!("new TLS certificate {}", cert.cert_path.display()));
    }
    let images = images::ensure(&engine, &config, ui).await?;
    for tag in images.all() {
        let size = engine.image_size(tag).await?;
        ui.detail(&format!("{tag}: {:.1} MB", size as f64 / 1e6));
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

    reconcile_group(&engine, &config, &plan.databases, ui).await?;
    // The services connect as roles of their own, not as the clusters' superusers.
    for app in App::ALL {
        let db = database::of(app);
        db.ensure_app_role(&engine, db.container, secrets.app_password(app))
            .await?;
        let at = Located::local(&engine, db.container);
        for line in archive::ensure(&at, app, &|| ui.detail(&archive::waiting_line(app))).await? {
            ui.step(&line);
        }
    }
    // With the edge serving, instances change one at a time behind it, so an update fails no
    // request; without it there is nothing to keep serving and they start together.
    if engine.health(PROXY).await? != Health::Down {
        // The edge first, routing to what serves now: a new edge (an older one routed by
        // reloads) must take the routes the instances' changes make.
        let routed = match nginx::routed(&edge.routes_path)? {
            Some(routes) => routes,
            None => running_routes(&engine, &config.project).await?,
        };
        edge.update(&engine, &config, &routed, ui).await?;
        let mut rollout = Rollout::new(&engine, edge.routes_path.clone(), routed, ui);
        for app in App::ALL {
            let current = rollout::instances(&engine, &config.project, app).await?;
            let steps = rollout::plan(
                app,
                plan.app(app),
                &current,
                rollout.routed().of(app),
                Replace::Changed,
            );
            rollout.run(steps).await?;
        }
    } else {
        for app in App::ALL {
            reconcile_group(&engine, &config, &plan.app(app).wanted(), ui).await?;
        }
        let routes = nginx::Routes {
            auth: App::Auth.instance_names(config.services.auth.instances),
            payments: App::Payments.instance_names(config.services.payments.instances),
        };
        edge.update(&engine, &config, &routes, ui).await?;
    }

    // Whatever the plan no longer has goes, now that nothing routes to it.
    let wanted = plan.names();
    for c in stack::containers(&engine, &config.project).await? {
        if !wanted.contains(&c.name) {
            ui.step(&format!("removing {}", c.name));
            engine.remove(&c.name, stack::STOP_GRACE).await?;
        }
    }

    print_urls(&config);
    ui.done();
    Ok(())
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
