//! `stackctl certs [--force]`: the edge's certificate.

use crate::{
    certs,
    docker::Engine,
    stack::{PROXY, Service},
    swarm,
};

/// Create the self-signed certificate if missing or expiring within 30 days (or always, with
/// --force) and print where it is and its fingerprint, for `curl --cacert`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  stackctl certs                 show the certificate, make it if missing or expiring\n  stackctl certs --force         make a new one now (nginx reloads it)\n  curl --cacert .stackctl/tls/cert.pem https://localhost/health/service_a"
)]
pub struct Args {
    /// Make a new certificate even if the current one is fine.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: Args, ctx: &super::Ctx) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let _lock = ctx.state.lock()?;
    let info = certs::ensure(&ctx.state, &config.tls.names, args.force)?;
    println!("certificate: {}", info.cert_path.display());
    println!("key:         {}", info.key_path.display());
    println!("names:       {}", info.names.join(", "));
    println!("expires:     {}", info.not_after.date());
    println!("sha256:      {}", info.fingerprint);
    if !info.renewed {
        return Ok(());
    }
    if let Some(cluster) = &config.cluster {
        // Swarm never changes a secret: the new key is a new one, and the edge service is
        // updated to it, one edge node at a time (`up` does that, changing nothing else).
        let nodes = swarm::Nodes::connect(cluster, ctx.base_dir()).await?;
        let edge = swarm::service_name(Service::Nginx);
        let running = nodes
            .manager()
            .services(&config.project)
            .await?
            .iter()
            .any(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(edge));
        if running {
            super::up::up_cluster(ctx, &config, cluster).await?;
        }
    } else {
        // A running edge keeps serving the old certificate until it reloads.
        if let Ok(engine) = Engine::connect_stack(&config.project).await
            && engine.inspect(PROXY).await?.is_some()
        {
            crate::nginx::reload_proxy(&engine, &ctx.ui).await?;
            ctx.ui.step("nginx reloaded with the new certificate");
        }
    }
    Ok(())
}
