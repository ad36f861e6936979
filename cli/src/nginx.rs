//! The edge's site configuration, rendered from `templates/nginx/site.conf.j2`.

use std::path::Path;

use anyhow::Context;
use minijinja::{Environment, UndefinedBehavior, context};

use crate::{config::StackConfig, stack::App};

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

    /// What a rendered site routes to: the instance names in its two upstreams (placeholders
    /// left out). What nginx was last given, whatever runs now.
    pub fn read(site: &str) -> Self {
        let mut routes = Self::default();
        for app in App::ALL {
            let names = site
                .split(&format!("upstream {} {{", upstream(app)))
                .nth(1)
                .and_then(|rest| rest.split('}').next())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().strip_prefix("server "))
                .filter_map(|l| l.split(':').next())
                .filter(|host| app.instance_number(host).is_some())
                .map(str::to_owned)
                .collect();
            routes.set(app, names);
        }
        routes
    }
}

/// The upstream of a service in the site template.
fn upstream(app: App) -> &'static str {
    match app {
        App::Auth => "service_a",
        App::Payments => "service_b",
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

/// Renders the site for these routes (container names).
pub fn render_site(
    template: &str,
    config: &StackConfig,
    routes: &Routes,
) -> anyhow::Result<String> {
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
            auth_instances => routes.auth.clone(),
            payment_instances => routes.payments.clone(),
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
    fn upstreams_list_exactly_the_instances() {
        let config = StackConfig::default();
        let site = render_site(SITE_TEMPLATE, &config, &routes(3, 1)).unwrap();
        assert_eq!(Routes::read(&site), routes(3, 1), "read back as rendered");
        let servers: Vec<&str> = site
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("server app_"))
            .collect();
        assert_eq!(
            servers,
            [
                "server app_a1:3000 max_fails=3 fail_timeout=10s;",
                "server app_a2:3000 max_fails=3 fail_timeout=10s;",
                "server app_a3:3000 max_fails=3 fail_timeout=10s;",
                "server app_b1:4000 max_fails=3 fail_timeout=10s;",
            ]
        );
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
    fn an_empty_upstream_holds_a_server_marked_down() {
        let config = StackConfig::default();
        let site = render_site(SITE_TEMPLATE, &config, &routes(0, 1)).unwrap();
        assert_eq!(
            Routes::read(&site),
            routes(0, 1),
            "the placeholder is no instance"
        );
        let block = site
            .split("upstream service_a {")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        let servers: Vec<&str> = block
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("server "))
            .collect();
        assert_eq!(servers, ["server 127.0.0.1:9 down;"]);
    }

    #[test]
    fn non_default_https_port_is_kept_in_the_redirect() {
        let mut config = StackConfig::default();
        config.ports.https = 8443;
        let site = render_site(SITE_TEMPLATE, &config, &routes(1, 1)).unwrap();
        assert!(site.contains("return 301 https://$host:8443$request_uri;"));
    }

    #[test]
    fn a_broken_template_is_an_error_not_an_empty_value() {
        let config = StackConfig::default();
        let none = Routes::default();
        assert!(render_site("{{ no_such_value }}", &config, &none).is_err());
        assert!(render_site("{% for %}", &config, &none).is_err());
    }
}
