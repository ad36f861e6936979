//! `stackctl up`: builds what is missing and makes the engine run the configured stack.

use std::net::TcpListener;

use anyhow::{Context, bail};

use crate::{
    certs,
    config::StackConfig,
    docker::Engine,
    images, nginx,
    stack::{self, NETWORK, Outcome, PROXY, Plan, Service},
    state::write_with_mode,
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
    let ui = &ctx.ui;
    let engine = Engine::connect().await?;
    check_ports(&engine, &config).await?;

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
        engine
            .ensure_volume(
                &stack::volume_name(&config.project, service),
                &config.project,
            )
            .await?;
    }
    let plan = Plan::new(&config, &images, &secrets, ctx.state.root())?;
    let site = nginx::render_site(
        nginx::SITE_TEMPLATE,
        &config,
        &Service::Auth.instance_names(config.services.auth.instances),
        &Service::Payments.instance_names(config.services.payments.instances),
    )?;
    let site_path = ctx.state.path("nginx/stack.conf");
    let site_changed = std::fs::read_to_string(&site_path).ok().as_deref() != Some(site.as_str());

    // Instances that the configuration no longer has leave the edge first, then go.
    let wanted = plan.names();
    let extra: Vec<String> = engine
        .containers(&config.project)
        .await?
        .into_iter()
        .filter_map(|c| {
            c.names?
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
        })
        .filter(|n| !wanted.contains(&n.as_str()))
        .collect();

    // nginx resolves upstream names when it loads its configuration, so a recreated instance
    // (new address) needs a reload even when the site text did not change.
    let mut instances_changed = false;
    for group in &plan.groups {
        let is_edge = group.iter().any(|s| s.service == Service::Nginx);
        if is_edge {
            write_with_mode(&site_path, site.as_bytes(), 0o644)?;
        }
        let mut changed = Vec::new();
        // The containers of one group do not depend on each other: reconcile them together.
        let outcomes = futures_util::future::try_join_all(
            group
                .iter()
                .map(|spec| stack::reconcile(&engine, &config.project, spec)),
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
            changed.push(spec.name.clone());
            if !is_edge && outcome != Outcome::Kept {
                instances_changed = true;
            }
            if is_edge
                && outcome == Outcome::Kept
                && (site_changed || cert.renewed || instances_changed)
            {
                reload_proxy(&engine).await?;
                ui.step("nginx configuration reloaded");
            }
        }
        stack::wait_healthy(&engine, &changed, ui).await?;
    }
    for name in &extra {
        ui.step(&format!("removing {name}"));
        engine.remove(name, stack::STOP_GRACE).await?;
    }

    print_urls(&config);
    ui.done();
    Ok(())
}

/// Validates the edge's configuration inside the container, then reloads it gracefully. A
/// configuration that does not validate is never loaded.
pub async fn reload_proxy(engine: &Engine) -> anyhow::Result<()> {
    let (code, out) = engine.exec(PROXY, &["nginx", "-t"]).await?;
    if code != 0 {
        bail!(
            "nginx rejected the new configuration, the old one keeps serving:\n{}",
            out.trim()
        );
    }
    let (code, out) = engine.exec(PROXY, &["nginx", "-s", "reload"]).await?;
    if code != 0 {
        bail!("nginx reload failed: {}", out.trim());
    }
    Ok(())
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
            "auth-db",
        ),
        (
            "ports.payments_db",
            "127.0.0.1",
            config.ports.payments_db,
            "payments-db",
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
