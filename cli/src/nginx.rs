//! The edge's site configuration, rendered from `templates/nginx/site.conf.j2`, and the routes
//! (which instances serve each service), a file of their own that changes without a reload.

use std::path::Path;

use anyhow::Context;
use minijinja::{Environment, UndefinedBehavior, context};

use crate::{config::StackConfig, stack::App};

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
