//! Changing a running service's instances without failing a request. New instances pass their
//! health check before nginx routes to them; leaving ones are taken out of nginx's routes before
//! they are drained and stopped. Routes change without a reload (stack_routes.lua in the edge's
//! image): a reload would make nginx's old workers close their clients' idle keep-alive
//! connections, racing the requests clients send on them. `scale`, `restart` and `up` plan their
//! changes as [`Step`]s and run them here.

use std::{
    fmt,
    path::PathBuf,
    time::{Duration, Instant},
};

use futures_util::future::try_join_all;

use crate::{
    docker::Engine,
    nginx::{self, Routes},
    stack::{self, App, AppSpecs, STOP_GRACE, Spec},
    ui::Ui,
};

/// One step of a change to a service's instances.
pub enum Step {
    /// Create and start these instances, then wait until each is healthy.
    Start(Vec<Spec>),
    /// Route the service to exactly these instances (nginx's routes, no reload).
    Route(App, Vec<String>),
    /// Drain, stop and remove these instances.
    Stop(Vec<String>),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start(specs) => {
                write!(f, "start {}, wait until healthy", names(specs).join(", "))
            }
            Self::Route(app, names) => {
                write!(f, "route {} to {}", app.service().label(), list(names))
            }
            Self::Stop(names) => write!(f, "drain and remove {}", names.join(", ")),
        }
    }
}

/// Which existing instances a change replaces. Instances that are not running are always
/// replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Only the count changes (`scale`).
    Stopped,
    /// Those whose settings or image changed (`up`).
    Changed,
    /// Every one (`restart`).
    All,
}

/// An instance as the engine has it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub hash: String,
    pub running: bool,
}

/// The service's instances, lowest number first.
pub async fn instances(engine: &Engine, project: &str, app: App) -> anyhow::Result<Vec<Instance>> {
    let mut found: Vec<(u32, Instance)> = stack::containers(engine, project)
        .await?
        .into_iter()
        .filter_map(|c| {
            let number = c.instance_of(app)?;
            Some((
                number,
                Instance {
                    name: c.name,
                    hash: c.hash,
                    running: c.running,
                },
            ))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    Ok(found.into_iter().map(|(_, i)| i).collect())
}

/// The names of the service's running instances, lowest number first.
pub async fn running(engine: &Engine, project: &str, app: App) -> anyhow::Result<Vec<String>> {
    Ok(instances(engine, project, app)
        .await?
        .into_iter()
        .filter(|i| i.running)
        .map(|i| i.name)
        .collect())
}

/// The steps that take `current` to `specs.instances` instances, replacing what `replace`
/// says, and leave the edge routing to exactly them (`routed` is what it routes to now: a change
/// cut short may have left a healthy instance unrouted). While instances are replaced one extra
/// instance (the next free number) serves, so the service never has fewer than its count
/// routed.
pub fn plan(
    app: App,
    specs: &AppSpecs,
    current: &[Instance],
    routed: &[String],
    replace: Replace,
) -> Vec<Step> {
    let wanted = specs.wanted();
    let mut live: Vec<String> = current
        .iter()
        .filter(|i| i.running)
        .map(|i| i.name.clone())
        .collect();
    let mut steps = Vec::new();

    // Leaving instances go first, highest numbers first.
    let leaving: Vec<String> = current
        .iter()
        .rev()
        .filter(|i| !wanted.iter().any(|s| s.name == i.name))
        .map(|i| i.name.clone())
        .collect();
    if !leaving.is_empty() {
        live.retain(|n| !leaving.contains(n));
        steps.push(Step::Route(app, live.clone()));
        steps.push(Step::Stop(leaving));
    }

    let new: Vec<Spec> = wanted
        .iter()
        .filter(|s| !current.iter().any(|i| i.name == s.name))
        .cloned()
        .collect();
    if !new.is_empty() {
        live.extend(names(&new));
        sort(app, &mut live);
        steps.push(Step::Start(new));
        steps.push(Step::Route(app, live.clone()));
    }

    let stale: Vec<&Spec> = wanted
        .iter()
        .filter(|s| {
            current.iter().any(|i| {
                i.name == s.name
                    && (!i.running
                        || replace == Replace::All
                        || (replace == Replace::Changed && i.hash != s.hash))
            })
        })
        .collect();
    if !stale.is_empty() {
        let top = current
            .iter()
            .map(|i| i.name.as_str())
            .chain(wanted.iter().map(|s| s.name.as_str()))
            .filter_map(|n| app.instance_number(n))
            .max()
            .unwrap_or(0);
        let surge = specs.spec(&app.instance_name(top + 1));
        live.push(surge.name.clone());
        steps.push(Step::Start(vec![surge.clone()]));
        steps.push(Step::Route(app, live.clone()));
        for spec in stale {
            live.retain(|n| *n != spec.name);
            steps.push(Step::Route(app, live.clone()));
            steps.push(Step::Stop(vec![spec.name.clone()]));
            steps.push(Step::Start(vec![spec.clone()]));
            live.push(spec.name.clone());
            sort(app, &mut live);
            steps.push(Step::Route(app, live.clone()));
        }
        live.retain(|n| *n != surge.name);
        steps.push(Step::Route(app, live.clone()));
        steps.push(Step::Stop(vec![surge.name]));
    }
    let routes = steps.iter().any(|s| matches!(s, Step::Route(..)));
    if !routes && live != routed {
        steps.push(Step::Route(app, live));
    }
    merge_routes(steps)
}

/// Back-to-back routes of one service become the last one: a change of routes is atomic.
fn merge_routes(steps: Vec<Step>) -> Vec<Step> {
    let mut merged: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        if let (Step::Route(app, _), Some(Step::Route(last, _))) = (&step, merged.last())
            && app == last
        {
            merged.pop();
        }
        merged.push(step);
    }
    merged
}

fn names(specs: &[Spec]) -> Vec<String> {
    specs.iter().map(|s| s.name.clone()).collect()
}

fn sort(app: App, names: &mut [String]) {
    names.sort_by_key(|n| app.instance_number(n));
}

/// How long a route change that removes instances is given before they are stopped: a request
/// nginx picked one of them for just before may still be on its way there.
const ROUTE_SETTLE: Duration = Duration::from_secs(1);

/// Runs planned steps against the engine and the edge.
pub struct Rollout<'a> {
    engine: &'a Engine,
    routes_path: PathBuf,
    ui: &'a Ui,
    /// The instances the edge routes to.
    routed: Routes,
    /// Started by this rollout and not routed yet: removed again when a later step fails.
    unrouted: Vec<String>,
}

impl<'a> Rollout<'a> {
    /// Starts from what the edge routes to now.
    pub fn new(engine: &'a Engine, routes_path: PathBuf, routed: Routes, ui: &'a Ui) -> Self {
        Self {
            engine,
            routes_path,
            ui,
            routed,
            unrouted: Vec::new(),
        }
    }

    /// What the edge routes to, with this rollout's changes.
    pub fn routed(&self) -> &Routes {
        &self.routed
    }

    /// Runs the steps in order, one line each. When one fails, the instances it started that
    /// nginx never routed to are removed and the error says what still serves.
    pub async fn run(&mut self, steps: Vec<Step>) -> anyhow::Result<()> {
        for step in steps {
            let started = Instant::now();
            if let Err(e) = self.apply(&step).await {
                self.remove_unrouted().await;
                return Err(e.context(format!(
                    "{step} failed; nginx still routes auth to {} and payments to {} (run `stackctl up` to finish the change)",
                    list(&self.routed.auth),
                    list(&self.routed.payments),
                )));
            }
            self.ui
                .step(&format!("{step} ({:.1}s)", started.elapsed().as_secs_f64()));
        }
        Ok(())
    }

    async fn apply(&mut self, step: &Step) -> anyhow::Result<()> {
        match step {
            Step::Start(specs) => {
                self.unrouted.extend(names(specs));
                try_join_all(
                    specs
                        .iter()
                        .map(|s| self.engine.create_and_start(&s.name, s.body.clone())),
                )
                .await?;
                stack::wait_healthy(self.engine, &names(specs), self.ui).await
            }
            Step::Route(app, names) => {
                let mut next = self.routed.clone();
                next.set(*app, names.clone());
                nginx::apply_routes(self.engine, &self.routes_path, &next).await?;
                let removed = self.routed.of(*app).iter().any(|n| !names.contains(n));
                self.routed = next;
                self.unrouted.retain(|n| !names.contains(n));
                if removed {
                    tokio::time::sleep(ROUTE_SETTLE).await;
                }
                Ok(())
            }
            Step::Stop(names) => {
                try_join_all(names.iter().map(|n| self.engine.remove(n, STOP_GRACE))).await?;
                Ok(())
            }
        }
    }

    async fn remove_unrouted(&mut self) {
        for name in std::mem::take(&mut self.unrouted) {
            self.ui
                .step(&format!("removing {name}: nginx never routed to it"));
            if let Err(e) = self.engine.remove(&name, STOP_GRACE).await {
                self.ui.detail(&format!("could not remove {name}: {e:#}"));
            }
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::StackConfig, images::ImageSet, state::Secrets};

    fn specs(app: App, instances: u32) -> AppSpecs {
        let mut config = StackConfig::default();
        config.set_instances(app, instances);
        let images = ImageSet {
            postgres: "pg".into(),
            nginx: "nginx".into(),
            auth: "auth:2".into(),
            payments: "payments:2".into(),
        };
        let secrets: Secrets = serde_json::from_value(serde_json::json!({
            "jwt_secret": "j", "webhook_secret": "w",
            "auth_db_password": "a", "payments_db_password": "p"
        }))
        .unwrap();
        let plan = stack::Plan::new(&config, &images, &secrets, std::path::Path::new(".")).unwrap();
        match app {
            App::Auth => plan.auth,
            App::Payments => plan.payments,
        }
    }

    /// Instances as `specs` would make them (`same`), or with other settings.
    fn running(app: App, n: u32, same: bool) -> Vec<Instance> {
        let s = specs(app, n);
        s.wanted()
            .into_iter()
            .map(|spec| Instance {
                hash: if same { spec.hash } else { "old".into() },
                name: spec.name,
                running: true,
            })
            .collect()
    }

    /// `plan` with the edge routing to what runs, as after a change that finished.
    fn plan_settled(
        app: App,
        specs: &AppSpecs,
        current: &[Instance],
        replace: Replace,
    ) -> Vec<Step> {
        let routed: Vec<String> = current
            .iter()
            .filter(|i| i.running)
            .map(|i| i.name.clone())
            .collect();
        plan(app, specs, current, &routed, replace)
    }

    #[test]
    fn a_healthy_instance_left_unrouted_is_routed() {
        let current = running(App::Auth, 3, true);
        let routed = App::Auth.instance_names(2);
        for replace in [Replace::Stopped, Replace::Changed] {
            let steps = plan(App::Auth, &specs(App::Auth, 3), &current, &routed, replace);
            assert_eq!(lines(&steps), ["route auth to app_a1, app_a2, app_a3"]);
        }
        let steps = plan(
            App::Auth,
            &specs(App::Auth, 2),
            &current,
            &routed,
            Replace::Stopped,
        );
        // Unrouted already, but a stop always follows a route: the edge is told again, in
        // case the routes file and nginx disagree.
        assert_eq!(
            lines(&steps),
            ["route auth to app_a1, app_a2", "drain and remove app_a3"]
        );
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn scaling_up_routes_only_after_the_new_instances_are_healthy() {
        let steps = plan_settled(
            App::Auth,
            &specs(App::Auth, 3),
            &running(App::Auth, 2, true),
            Replace::Stopped,
        );
        assert_eq!(
            lines(&steps),
            [
                "start app_a3, wait until healthy",
                "route auth to app_a1, app_a2, app_a3",
            ]
        );
    }

    #[test]
    fn scaling_down_unroutes_the_highest_numbers_before_stopping_them() {
        let steps = plan_settled(
            App::Payments,
            &specs(App::Payments, 1),
            &running(App::Payments, 3, true),
            Replace::Stopped,
        );
        assert_eq!(
            lines(&steps),
            [
                "route payments to app_b1",
                "drain and remove app_b3, app_b2",
            ]
        );
    }

    #[test]
    fn nothing_to_do_is_no_step() {
        let steps = plan_settled(
            App::Auth,
            &specs(App::Auth, 2),
            &running(App::Auth, 2, true),
            Replace::Changed,
        );
        assert!(steps.is_empty());
    }

    #[test]
    fn a_replacement_keeps_the_full_count_routed() {
        let steps = plan_settled(
            App::Auth,
            &specs(App::Auth, 1),
            &running(App::Auth, 1, false),
            Replace::Changed,
        );
        assert_eq!(
            lines(&steps),
            [
                "start app_a2, wait until healthy",
                "route auth to app_a2",
                "drain and remove app_a1",
                "start app_a1, wait until healthy",
                "route auth to app_a1",
                "drain and remove app_a2",
            ]
        );
        // Every route names at least as many instances as the service has.
        for step in &steps {
            if let Step::Route(_, names) = step {
                assert!(!names.is_empty());
            }
        }
    }

    #[test]
    fn restart_replaces_every_instance_one_at_a_time() {
        let steps = plan_settled(
            App::Payments,
            &specs(App::Payments, 2),
            &running(App::Payments, 2, true),
            Replace::All,
        );
        assert_eq!(
            lines(&steps),
            [
                "start app_b3, wait until healthy",
                "route payments to app_b2, app_b3",
                "drain and remove app_b1",
                "start app_b1, wait until healthy",
                "route payments to app_b1, app_b3",
                "drain and remove app_b2",
                "start app_b2, wait until healthy",
                "route payments to app_b1, app_b2",
                "drain and remove app_b3",
            ]
        );
    }

    #[test]
    fn a_stopped_instance_is_replaced_even_by_scale() {
        let mut current = running(App::Auth, 2, true);
        current[1].running = false;
        let steps = plan_settled(App::Auth, &specs(App::Auth, 2), &current, Replace::Stopped);
        let text = lines(&steps);
        assert!(
            text.contains(&"drain and remove app_a2".to_owned()),
            "{text:?}"
        );
        assert!(
            text.contains(&"start app_a2, wait until healthy".to_owned()),
            "{text:?}"
        );
        assert_eq!(text.last().unwrap(), "drain and remove app_a3", "{text:?}");
    }
}
