//! The edge's site configuration, rendered from `templates/nginx/site.conf.j2`, and the routes
//! (which instances serve each service), a file of their own that changes without a reload;
//! and how the running edge takes each of them.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use minijinja::{Environment, UndefinedBehavior, context};

use crate::{
    config::StackConfig,
    docker::Engine,
    stack::{App, PROXY, STOP_GRACE},
    state::write_with_mode,
    ui::Ui,
};

/// The site stackctl renders, under the state folder (the edge reads that `nginx` folder).
pub const SITE_FILE: &str = "nginx/stack.conf";
/// The routes stackctl writes beside it.
pub const ROUTES_FILE: &str = "nginx/routes";

/// The instances the edge routes each service to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub auth: Vec<String>,
    pub payments: Vec<String>,
}

impl Routes {
    pub fn of(&self, app: App) -> &[String] {
        match app {
            App::Auth => &self.auth,
            App::Payments => &self.payments,
        }
    }

    pub fn set(&mut self, app: App, names: Vec<String>) {
        match app {
            App::Auth => self.auth = names,
            App::Payments => self.payments = names,
        }
    }

    /// The routes file stack-edge reads: one line per service, its instances as `name:port`.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Written by stackctl: the instances the edge routes each service to.\n\
             # stack-edge hands their addresses to nginx without a reload.\n",
        );
        for app in App::ALL {
            text.push_str(app.service().label());
            for name in self.of(app) {
                text.push_str(&format!(" {name}:{}", app.port()));
            }
            text.push('\n');
        }
        text
    }

    /// What a routes file says; anything that is not an instance of the service is left out.
    pub fn parse(text: &str) -> Self {
        let mut routes = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut words = line.split_whitespace();
            let Some(app) = words
                .next()
                .and_then(|label| App::ALL.into_iter().find(|a| a.service().label() == label))
            else {
                continue;
            };
            let names = words
                .filter_map(|entry| entry.split_once(':'))
                .filter(|(name, _)| app.instance_number(name).is_some())
                .map(|(name, _)| name.to_owned())
                .collect();
            routes.set(app, names);
        }
        routes
    }
}

/// The template, embedded so the binary works from any folder.
pub const SITE_TEMPLATE: &str = include_str!("../../templates/nginx/site.conf.j2");

/// The site template: the configured file, or the built-in one.
pub fn template(config: &StackConfig, base_dir: &Path) -> anyhow::Result<String> {
    if config.nginx.site_template.as_os_str().is_empty() {
        return Ok(SITE_TEMPLATE.to_owned());
    }
    let path = base_dir.join(&config.nginx.site_template);
    std::fs::read_to_string(&path)
        .with_context(|| format!("nginx.site_template: cannot read {}", path.display()))
}

/// Renders the site.
pub fn render_site(template: &str, config: &StackConfig) -> anyhow::Result<String> {
    let mut env = Environment::new();
    // A misspelt variable fails the render instead of becoming an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template("site.conf", template)
        .context("nginx site template does not parse")?;
    let https_port_suffix = if config.ports.https == 443 {
        String::new()
    } else {
        format!(":{}", config.ports.https)
    };
    // Long enough for the bucket to have room again.
    let retry_after_secs = 60_u32.div_ceil(config.nginx.rate_limit_per_minute).max(1);
    let login_retry_after_secs = 60_u32
        .div_ceil(config.nginx.login_rate_limit_per_minute)
        .max(1);
    env.get_template("site.conf")?
        .render(context! {
            rate_limit_per_minute => config.nginx.rate_limit_per_minute,
            rate_limit_burst => config.nginx.rate_limit_burst,
            login_rate_limit_per_minute => config.nginx.login_rate_limit_per_minute,
            login_rate_limit_burst => config.nginx.login_rate_limit_burst,
            https_port_suffix,
            retry_after_secs,
            login_retry_after_secs,
        })
        .context("render nginx site template")
}

/// What the routes file at `path` says the edge routes to; `None` when there is none (a stack
/// that never ran, or one whose edge routed by reloads).
pub fn routed(path: &Path) -> anyhow::Result<Option<Routes>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(Routes::parse(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// What the edge routes to, for a command that changes it on a running stack.
pub fn routed_now(path: &Path) -> anyhow::Result<Routes> {
    routed(path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is missing: the edge routes by another version's rules; run `stackctl up` first",
            path.display()
        )
    })
}

/// Writes the routes file and has the edge take it (`stack-edge routes`: names resolved, handed
/// to nginx's shared memory, no reload). When the edge refuses, the previous file is put back.
pub async fn apply_routes(engine: &Engine, path: &Path, routes: &Routes) -> anyhow::Result<()> {
    write_then(path, routes.render().as_bytes(), async {
        let (code, out) = engine.exec(PROXY, &["stack-edge", "routes"]).await?;
        if code != 0 {
            bail!("the edge did not take the new routes:\n{}", out.trim());
        }
        Ok(())
    })
    .await
}

/// Writes `bytes` to `path`, then runs `take` (the edge reads the file); when that fails, the
/// previous file is put back, so what the edge would load on a restart is what it runs.
async fn write_then(
    path: &Path,
    bytes: &[u8],
    take: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let previous = std::fs::read(path).ok();
    write_with_mode(path, bytes, 0o644)?;
    if let Err(e) = take.await {
        match previous {
            Some(old) => write_with_mode(path, &old, 0o644)?,
            None => std::fs::remove_file(path)?,
        }
        return Err(e);
    }
    Ok(())
}

/// Writes the edge's site and has nginx load it. nginx validates it first (`nginx -t` in the
/// container); when it does not validate, the previous file is put back.
pub async fn apply_site(engine: &Engine, path: &Path, site: &str, ui: &Ui) -> anyhow::Result<()> {
    write_then(path, site.as_bytes(), reload_proxy(engine, ui)).await
}

/// Validates the edge's configuration inside the container, then reloads it gracefully and
/// waits until the workers of the old configuration have finished their requests and exited,
/// so that what follows (a certificate's old key removed, say) no longer serves. A
/// configuration that does not validate is never loaded.
pub async fn reload_proxy(engine: &Engine, ui: &Ui) -> anyhow::Result<()> {
    let old = workers(engine).await?;
    // stack-edge installs the site, checks it with `nginx -t` and reloads; it keeps the old one
    // when the check fails.
    let (code, out) = engine.exec(PROXY, &["stack-edge", "reload"]).await?;
    if code != 0 {
        bail!(
            "nginx rejected the new configuration, the old one keeps serving:\n{}",
            out.trim()
        );
    }
    // `nginx -s reload` only signals the master; the old workers keep taking requests until it
    // has started the new ones, then finish what they hold and exit.
    let spinner = ui.spinner("waiting for nginx's old workers to finish their requests");
    let deadline = Instant::now() + STOP_GRACE;
    // Decided by the exit status, which the engine reports reliably, not by the output.
    let gone = format!(
        "for p in {}; do [ -e /proc/$p ] && exit 1; done; exit 0",
        old.join(" ")
    );
    loop {
        let (code, _) = engine.exec(PROXY, &["bash", "-c", &gone]).await?;
        if code == 0 {
            break;
        }
        if Instant::now() > deadline {
            ui.detail(&format!(
                "nginx's old workers are still busy after {} s; going on",
                STOP_GRACE.as_secs()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    spinner.finish_and_clear();
    Ok(())
}

/// The process ids of the proxy's nginx workers.
async fn workers(engine: &Engine) -> anyhow::Result<Vec<String>> {
    // `[p]` keeps this command's own command line from matching.
    let list = "grep -ls 'worker [p]rocess' /proc/[0-9]*/cmdline";
    // nginx always runs workers: an empty answer is a lost one, so ask again.
    for _ in 0..5 {
        let (_, out) = engine.exec(PROXY, &["bash", "-c", list]).await?;
        let pids: Vec<String> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("/proc/")?.strip_suffix("/cmdline"))
            .map(str::to_owned)
            .collect();
        if !pids.is_empty() {
            return Ok(pids);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("cannot list nginx's worker processes in {PROXY}; is it running? (stackctl ps)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(auth: u32, payments: u32) -> Routes {
        Routes {
            auth: App::Auth.instance_names(auth),
            payments: App::Payments.instance_names(payments),
        }
    }

    #[test]
    fn routes_are_written_and_read_back() {
        let text = routes(3, 1).render();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "auth app_a1:3000 app_a2:3000 app_a3:3000",
                "payments app_b1:4000"
            ]
        );
        assert_eq!(Routes::parse(&text), routes(3, 1));
        let none = routes(0, 1).render();
        assert!(none.contains("\nauth\n"), "{none}");
        assert_eq!(Routes::parse(&none), routes(0, 1));
        assert_eq!(
            Routes::parse("auth app_a1:3000 app_b1:4000 nginx-proxy:80\nnginx app_a2:3000\n"),
            routes(1, 0),
            "only instances of the service"
        );
    }

    #[test]
    fn the_site_routes_through_the_balancer_and_limits_log_in() {
        let config = StackConfig::default();
        let site = render_site(SITE_TEMPLATE, &config).unwrap();
        for (upstream, service) in [("service_a", "auth"), ("service_b", "payments")] {
            let block = site
                .split(&format!("upstream {upstream} {{"))
                .nth(1)
                .unwrap()
                .split("\n}")
                .next()
                .unwrap();
            let lines: Vec<&str> = block.lines().map(str::trim).collect();
            assert_eq!(
                lines,
                [
                    "",
                    "server 127.0.0.1:9 down;",
                    &format!(
                        "balancer_by_lua_block {{ require(\"stack_routes\").balance(\"{service}\") }}"
                    ),
                    "keepalive 32;",
                ]
            );
        }
        assert!(site.contains("zone=per_ip:10m rate=100r/m"));
        assert!(site.contains("zone=login:10m rate=10r/m"));
        assert!(site.contains("limit_req zone=per_ip burst=20 nodelay;"));
        for route in ["login", "register"] {
            let block = site
                .split(&format!("location = /a/auth/{route} {{"))
                .nth(1)
                .unwrap()
                .split('}')
                .next()
                .unwrap();
            assert!(block.contains("limit_req zone=per_ip burst=20 nodelay;"));
            assert!(block.contains("limit_req zone=login burst=5 nodelay;"));
            assert!(block.contains(&format!("proxy_pass http://service_a/auth/{route};")));
        }
        assert!(site.contains("return 301 https://$host$request_uri;"));
    }

    #[test]
    fn non_default_https_port_is_kept_in_the_redirect() {
        let mut config = StackConfig::default();
        config.ports.https = 8443;
        let site = render_site(SITE_TEMPLATE, &config).unwrap();
        assert!(site.contains("return 301 https://$host:8443$request_uri;"));
    }

    #[test]
    fn a_broken_template_is_an_error_not_an_empty_value() {
        let config = StackConfig::default();
        assert!(render_site("{{ no_such_value }}", &config).is_err());
        assert!(render_site("{% for %}", &config).is_err());
    }
}
