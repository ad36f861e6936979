//! The stack as Docker Swarm services on the `[cluster]` nodes. The same containers as on one
//! host, as services: each database pinned to its labelled node with its volume, the
//! application instances spread over the nodes, the edge on the `edge` nodes with its ports
//! published on the node itself (no routing mesh: it needs IPVS and hides client addresses), all
//! on one overlay network. Secrets are swarm secrets mounted as files, named after their content
//! (swarm never changes one's data: a new value is a new secret). The edge's site and TLS
//! certificate are files in volumes on each edge node instead, which the running edge reloads:
//! a new secret or config would replace the edge's task, and its host ports refuse connections
//! until the new one listens. Images are referenced by id, so no node ever asks a registry.

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::{Context, bail};
use bollard::models::{
    ContainerCreateBody, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, HostConfig, Limit,
    Mount, MountTmpfsOptions, MountType, MountVolumeOptions, NetworkAttachmentConfig,
    Service as SwarmService, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use sha2::{Digest, Sha256};

use crate::{
    cluster::{Cluster, NodeLabel},
    config::StackConfig,
    database,
    docker::{
        Engine, LABEL_CONFIG_HASH, LABEL_HEALTH_CHECK, LABEL_PROJECT, LABEL_SERVICE, Located,
    },
    images::ImageSet,
    stack::{self, AUTH_ALIAS, App, HEALTH_TIMEOUT, NETWORK, PROXY, STOP_GRACE, Service},
    state::Secrets,
    ui::Ui,
};

/// The label that keeps an image's readable tag beside the id the service runs.
pub const LABEL_IMAGE: &str = "stackctl.image";
const SECOND: i64 = 1_000_000_000;
/// Where an application instance finds its secrets, and who may read them (the services run
/// as nobody).
const SECRETS_DIR: &str = "/run/secrets";
const NOBODY: &str = "65534";

/// The swarm service of each of the stack's services.
pub fn service_name(service: Service) -> &'static str {
    match service {
        Service::Auth => "app_a",
        Service::Payments => "app_b",
        Service::AuthDb => "auth-db",
        Service::PaymentsDb => "payments-db",
        Service::Nginx => PROXY,
    }
}

/// The cluster's engines as stackctl reaches them.
pub struct Nodes {
    answered: Vec<Answered>,
    /// Nodes whose engine did not answer, and why.
    silent: Vec<Silent>,
    /// The first manager among `answered`.
    manager: usize,
}

/// A node whose engine answered.
struct Answered {
    /// Its place in `[cluster]`, from 0.
    index: usize,
    engine: Engine,
    /// Its swarm node id, when it is in the swarm.
    node_id: Option<String>,
}

struct Silent {
    index: usize,
    why: String,
}

impl Nodes {
    /// Connects to every node; refuses when no manager of the swarm answers.
    pub async fn connect(cluster: &Cluster, base_dir: &Path) -> anyhow::Result<Self> {
        let engines = futures_util::future::join_all(
            cluster
                .nodes
                .iter()
                .map(|node| Engine::connect_node(node, base_dir)),
        )
        .await;
        let mut answered = Vec::new();
        let mut silent = Vec::new();
        let mut manager = None;
        for (index, engine) in engines.into_iter().enumerate() {
            match engine {
                Ok(engine) => {
                    let info = engine.swarm().await?;
                    if manager.is_none() && info.control_available == Some(true) {
                        manager = Some(answered.len());
                    }
                    answered.push(Answered {
                        index,
                        engine,
                        node_id: info.node_id.filter(|id| !id.is_empty()),
                    });
                }
                Err(e) => silent.push(Silent {
                    index,
                    why: format!("{e:#}"),
                }),
            }
        }
        let Some(manager) = manager else {
            let mut why: Vec<Silent> = answered
                .iter()
                .map(|a| Silent {
                    index: a.index,
                    why: "answers, not a manager".to_owned(),
                })
                .chain(silent)
                .collect();
            why.sort_by_key(|s| s.index);
            let lines: Vec<String> = why
                .iter()
                .map(|s| format!("node {}: {}", s.index + 1, s.why))
                .collect();
            bail!(
                "no node answers as a swarm manager (run `stackctl cluster init` first):\n  {}",
                lines.join("\n  ")
            );
        };
        Ok(Self {
            answered,
            silent,
            manager,
        })
    }

    /// A manager's engine: services, secrets and the swarm's view go through it.
    pub fn manager(&self) -> &Engine {
        &self.answered[self.manager].engine
    }

    /// The engines that answered, with their place in `[cluster]`.
    pub fn reachable(&self) -> impl Iterator<Item = (usize, &Engine)> {
        self.answered.iter().map(|a| (a.index, &a.engine))
    }

    /// Nodes whose engine did not answer, and why.
    pub fn unreachable(&self) -> impl Iterator<Item = (usize, &str)> {
        self.silent.iter().map(|s| (s.index, s.why.as_str()))
    }

    /// The engine of the swarm node with this id, when it answered.
    pub fn of_node(&self, node_id: &str) -> Option<&Engine> {
        self.answered
            .iter()
            .find(|a| a.node_id.as_deref() == Some(node_id))
            .map(|a| &a.engine)
    }
}

/// A swarm secret the services mount.
#[derive(Debug, Clone)]
pub struct Object {
    /// What it holds, in its name: `jwt`, `webhook`.
    pub role: &'static str,
    pub data: Vec<u8>,
}

impl Object {
    /// `<project>_<role>_<content hash>`: a new value is a new object.
    pub fn name(&self, project: &str) -> String {
        let hash = hex::encode(&Sha256::digest(&self.data)[..6]);
        format!("{project}_{}_{hash}", self.role)
    }
}

/// The credentials the services mount.
pub fn objects(secrets: &Secrets) -> Vec<Object> {
    let secret = |role, data: &[u8]| Object {
        role,
        data: data.to_vec(),
    };
    vec![
        secret("jwt", secrets.jwt_secret.as_bytes()),
        secret("webhook", secrets.webhook_secret.as_bytes()),
        secret("auth-db-password", secrets.auth_db_password.as_bytes()),
        secret(
            "payments-db-password",
            secrets.payments_db_password.as_bytes(),
        ),
        secret(
            "auth-database-url",
            database_url(App::Auth, secrets).as_bytes(),
        ),
        secret(
            "payments-database-url",
            database_url(App::Payments, secrets).as_bytes(),
        ),
    ]
}

fn database_url(app: App, secrets: &Secrets) -> String {
    let db = database::of(app);
    format!(
        "postgres://{}:{}@{}:{}/{}",
        db.app_role,
        secrets.app_password(app),
        db.container,
        database::PORT,
        db.name
    )
}

/// The edge's routes on a swarm: every healthy task of each service, as Docker's DNS lists
/// them (`tasks.<service>`), re-read by the edge every second.
pub fn routes() -> String {
    let mut text = String::from(
        "# Written by stackctl: on a swarm the edge routes each service to its healthy tasks.\n",
    );
    for app in App::ALL {
        text.push_str(&format!(
            "{} tasks.{}:{}\n",
            app.service().label(),
            service_name(app.service()),
            app.port()
        ));
    }
    text
}

/// A volume on each edge node that holds some of the edge's files, and where the edge has it.
pub struct EdgeVolume {
    suffix: &'static str,
    target: &'static str,
}

static EDGE_SITE: EdgeVolume = EdgeVolume {
    suffix: "edge-site",
    target: "/etc/nginx/site",
};
static EDGE_TLS: EdgeVolume = EdgeVolume {
    suffix: "edge-tls",
    target: "/etc/nginx/tls",
};
static EDGE_VOLUMES: [&EdgeVolume; 2] = [&EDGE_SITE, &EDGE_TLS];
/// What the edge has installed: the version of its files.
const EDGE_VERSION: &str = "/etc/nginx/site/version";

impl EdgeVolume {
    fn name(&self, project: &str) -> String {
        format!("{project}_{}", self.suffix)
    }

    fn mount(&self, project: &str) -> Mount {
        Mount {
            target: Some(self.target.to_owned()),
            source: Some(self.name(project)),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }
    }
}

/// The edge's volumes: remade by every `up`, so `down` removes them with the services.
pub fn edge_volumes(project: &str) -> Vec<String> {
    EDGE_VOLUMES.iter().map(|v| v.name(project)).collect()
}

/// The edge's site, routes and certificate as `up` writes them to each edge node: the new site
/// and certificate staged beside those in use (`name.next`), for the edge to install together.
pub struct EdgeFiles {
    /// Names the content: an edge that has it installed needs nothing.
    version: String,
    archives: Vec<VolumeArchive>,
}

/// Files for one of the edge's volumes, as a tar archive.
struct VolumeArchive {
    volume: &'static EdgeVolume,
    tar: Vec<u8>,
}

/// One file of an archive.
struct File<'a> {
    path: &'a str,
    mode: u32,
    data: &'a [u8],
}

impl EdgeFiles {
    pub fn new(site: &str, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Self> {
        let routes = routes();
        let mut hash = Sha256::new();
        for part in [site.as_bytes(), routes.as_bytes(), cert_pem, key_pem] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let version = hex::encode(&hash.finalize()[..12]);
        let site_files = [
            File {
                path: "stack.conf.next",
                mode: 0o644,
                data: site.as_bytes(),
            },
            // The same for every stack: written in place.
            File {
                path: "routes",
                mode: 0o644,
                data: routes.as_bytes(),
            },
            File {
                path: "version.next",
                mode: 0o644,
                data: version.as_bytes(),
            },
        ];
        let tls_files = [
            File {
                path: "cert.pem.next",
                mode: 0o644,
                data: cert_pem,
            },
            File {
                path: "key.pem.next",
                mode: 0o600,
                data: key_pem,
            },
        ];
        Ok(Self {
            archives: vec![
                VolumeArchive {
                    volume: &EDGE_SITE,
                    tar: archive(&site_files)?,
                },
                VolumeArchive {
                    volume: &EDGE_TLS,
                    tar: archive(&tls_files)?,
                },
            ],
            version,
        })
    }
}

/// A tar archive of files owned by root.
fn archive(files: &[File]) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.data.len() as u64);
        header.set_mode(file.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(now);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, file.path, file.data)
            .with_context(|| format!("archive {}", file.path))?;
    }
    tar.into_inner().context("finish an archive")
}

/// The container through which the edge's files are written into its volumes on a node: made,
/// never started, removed.
fn edge_writer(project: &str) -> String {
    format!("{project}_edge-files")
}

/// Brings the edge on every edge node whose engine answers to `files`. A node whose running
/// edge has them installed is left alone. On the others the files are staged in the edge's
/// volumes, and the running edge installs them (`stack-edge reload`: nginx checks them, all or
/// none, and reloads without refusing a connection); an edge that does not run yet installs them
/// when it starts.
pub async fn sync_edge(
    nodes: &Nodes,
    cluster: &Cluster,
    project: &str,
    image_id: &str,
    files: &EdgeFiles,
    ui: &Ui,
) -> anyhow::Result<()> {
    for (i, engine) in nodes.reachable() {
        if !cluster.nodes.get(i).is_some_and(|n| n.has(NodeLabel::Edge)) {
            continue;
        }
        let edge = stack::containers(engine, project)
            .await?
            .into_iter()
            .find(|c| c.service == Some(Service::Nginx) && c.running);
        if let Some(edge) = &edge {
            let (code, installed) = engine.exec(&edge.id, &["cat", EDGE_VERSION]).await?;
            if code == 0 && installed.trim() == files.version {
                continue;
            }
        }
        stage_edge(engine, project, image_id, files).await?;
        if let Some(edge) = edge {
            let (code, out) = engine.exec(&edge.id, &["stack-edge", "reload"]).await?;
            if code != 0 {
                bail!(
                    "the edge on node {} refused the new site or certificate and keeps serving the ones it had:\n{}",
                    i + 1,
                    out.trim()
                );
            }
            ui.step(&format!(
                "node {}: the edge reloaded its site and certificate",
                i + 1
            ));
        }
    }
    for (i, why) in nodes.unreachable() {
        if cluster.nodes.get(i).is_some_and(|n| n.has(NodeLabel::Edge)) {
            ui.detail(&format!(
                "edge node {} does not answer: it gets the current site and certificate from the next `stackctl up` ({why})",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Writes `files` into the edge's volumes on one node, made if missing.
async fn stage_edge(
    engine: &Engine,
    project: &str,
    image_id: &str,
    files: &EdgeFiles,
) -> anyhow::Result<()> {
    let writer = edge_writer(project);
    // One left by an interrupted `up`.
    engine.remove(&writer, Duration::ZERO).await?;
    for volume in EDGE_VOLUMES {
        engine.ensure_volume(&volume.name(project), project).await?;
    }
    engine
        .create(
            &writer,
            ContainerCreateBody {
                image: Some(image_id.to_owned()),
                network_disabled: Some(true),
                host_config: Some(HostConfig {
                    mounts: Some(EDGE_VOLUMES.iter().map(|v| v.mount(project)).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?;
    let mut written = Ok(());
    for archive in &files.archives {
        written = engine
            .upload(&writer, archive.volume.target, archive.tar.clone())
            .await;
        if written.is_err() {
            break;
        }
    }
    engine.remove(&writer, Duration::ZERO).await?;
    written
}

/// Removes the edge's volumes from a node (and the container that writes them, if an
/// interrupted `up` left it).
pub async fn remove_edge_volumes(engine: &Engine, project: &str) -> anyhow::Result<()> {
    engine.remove(&edge_writer(project), Duration::ZERO).await?;
    for volume in edge_volumes(project) {
        engine.remove_volume(&volume).await?;
    }
    Ok(())
}

/// An object as the swarm has it: services name it by both.
struct Ref {
    name: String,
    id: String,
}

/// The swarm's names and ids of the stack's objects, by role.
pub struct Refs {
    project: String,
    by_role: HashMap<&'static str, Ref>,
}

impl Refs {
    fn get(&self, role: &str) -> anyhow::Result<&Ref> {
        self.by_role
            .get(role)
            .with_context(|| format!("no swarm object for {role} in stack {}", self.project))
    }

    /// A secret mounted at `target` (relative: under /run/secrets), readable by `uid` only.
    fn secret(
        &self,
        role: &str,
        target: &str,
        uid: &str,
    ) -> anyhow::Result<TaskSpecContainerSpecSecrets> {
        let Ref { name, id } = self.get(role)?;
        Ok(TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(target.to_owned()),
                uid: Some(uid.to_owned()),
                gid: Some(uid.to_owned()),
                mode: Some(0o400),
            }),
            secret_id: Some(id.clone()),
            secret_name: Some(name.clone()),
        })
    }
}

/// Creates the objects the swarm lacks; returns every object's name and id.
pub async fn ensure_objects(
    manager: &Engine,
    project: &str,
    objects: &[Object],
) -> anyhow::Result<Refs> {
    let secrets = manager.swarm_objects(project, false).await?;
    let mut by_role = HashMap::new();
    for object in objects {
        let name = object.name(project);
        let id = match secrets.get(&name) {
            Some(id) => id.clone(),
            None => manager.create_secret(&name, project, &object.data).await?,
        };
        by_role.insert(object.role, Ref { name, id });
    }
    Ok(Refs {
        project: project.to_owned(),
        by_role,
    })
}

/// Removes the stack's secrets that no service uses any more (those of an earlier value), and
/// configs (an earlier stackctl kept the edge's files in them); one still in use by a task on
/// its way out stays until the next `up`.
pub async fn remove_stale_objects(manager: &Engine, refs: &Refs) -> anyhow::Result<()> {
    let current: Vec<&str> = refs.by_role.values().map(|r| r.name.as_str()).collect();
    for config in [false, true] {
        for (name, id) in manager.swarm_objects(&refs.project, config).await? {
            if !current.contains(&name.as_str()) {
                manager.remove_swarm_object(&id, config).await?;
            }
        }
    }
    Ok(())
}

/// The images the services run: their ids, with the tags they were built as.
pub struct Images<'a> {
    pub tags: &'a ImageSet,
    pub ids: &'a ImageSet,
}

impl<'a> Images<'a> {
    /// The image a service runs: its id, and the tag it was built as.
    fn of(&self, service: Service) -> ServiceImage<'a> {
        let pick = |set: &'a ImageSet| match service {
            Service::Auth => set.auth.as_str(),
            Service::Payments => set.payments.as_str(),
            Service::AuthDb | Service::PaymentsDb => set.postgres.as_str(),
            Service::Nginx => set.nginx.as_str(),
        };
        ServiceImage {
            id: pick(self.ids),
            tag: pick(self.tags),
        }
    }
}

struct ServiceImage<'a> {
    id: &'a str,
    tag: &'a str,
}

/// The ids of the images `tags` names, on the engine that built them.
pub async fn image_ids(engine: &Engine, tags: &ImageSet) -> anyhow::Result<ImageSet> {
    Ok(ImageSet {
        postgres: engine.image_id(&tags.postgres).await?,
        nginx: engine.image_id(&tags.nginx).await?,
        auth: engine.image_id(&tags.auth).await?,
        payments: engine.image_id(&tags.payments).await?,
    })
}

/// Loads the images into every node that answers and lacks one, streamed from the engine that
/// built them (`docker save | docker load`), so no node ever looks for a registry. A node that
/// does not answer gets them on the next `up`.
pub async fn ship(local: &Engine, nodes: &Nodes, tags: &ImageSet, ui: &Ui) -> anyhow::Result<()> {
    for (i, engine) in nodes.reachable() {
        let mut missing = Vec::new();
        for tag in tags.all() {
            if !engine.image_exists(tag).await? {
                missing.push(tag);
            }
        }
        if missing.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let bar = ui.bytes(&format!("images to node {}", i + 1));
        let mut copied = 0;
        local
            .copy_images(&missing, engine, |n| {
                copied = n;
                bar.set_position(n);
            })
            .await
            .with_context(|| format!("load the images into node {}", i + 1))?;
        bar.finish_and_clear();
        ui.step(&format!(
            "node {}: loaded {} ({:.0} MB in {:.1}s)",
            i + 1,
            missing.join(", "),
            copied as f64 / 1e6,
            started.elapsed().as_secs_f64()
        ));
    }
    for (i, why) in nodes.unreachable() {
        ui.detail(&format!(
            "node {} does not answer; it gets the images on the next `up` ({why})",
            i + 1
        ));
    }
    Ok(())
}

/// The stack's services, in start order: databases, auth, payments, the edge.
pub struct SwarmPlan {
    pub databases: Vec<ServiceSpec>,
    pub apps: Vec<ServiceSpec>,
    pub edge: ServiceSpec,
}

impl SwarmPlan {
    pub fn new(config: &StackConfig, images: &Images, refs: &Refs) -> anyhow::Result<Self> {
        Ok(Self {
            databases: vec![
                database_spec(config, App::Auth, images, refs)?,
                database_spec(config, App::Payments, images, refs)?,
            ],
            apps: vec![
                app_spec(config, App::Auth, images, refs)?,
                app_spec(config, App::Payments, images, refs)?,
            ],
            edge: edge_spec(config, images),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.databases
            .iter()
            .chain(&self.apps)
            .chain([&self.edge])
            .filter_map(|s| s.name.clone())
            .collect()
    }
}

/// What one service's tasks are like; `service_spec` fills in the rest.
struct Shape {
    service: Service,
    container: TaskSpecContainerSpec,
    mode: ServiceSpecMode,
    constraints: Vec<String>,
    memory_mb: u32,
    /// Start the new task before the old one stops (a rolling update without a gap); else stop
    /// first (a database's volume, the edge's host ports).
    start_first: bool,
    aliases: Vec<String>,
    ports: Vec<EndpointPortConfig>,
}

fn service_spec(config: &StackConfig, shape: Shape) -> ServiceSpec {
    let name = service_name(shape.service);
    let labels = HashMap::from([
        (LABEL_PROJECT.to_owned(), config.project.clone()),
        (LABEL_SERVICE.to_owned(), shape.service.label().to_owned()),
    ]);
    let mut container_labels = shape.container.labels.clone().unwrap_or_default();
    container_labels.extend(labels.clone());
    let mut labels = labels;
    if let Some(health) = &shape.container.health_check {
        labels.insert(
            LABEL_HEALTH_CHECK.to_owned(),
            serde_json::to_string(health).unwrap_or_default(),
        );
    }
    let (update_order, rollback_order) = if shape.start_first {
        (
            ServiceSpecUpdateConfigOrderEnum::START_FIRST,
            ServiceSpecRollbackConfigOrderEnum::START_FIRST,
        )
    } else {
        (
            ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
        )
    };
    let mut spec = ServiceSpec {
        name: Some(name.to_owned()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                labels: Some(container_labels),
                read_only: Some(true),
                stop_grace_period: Some(i64::try_from(STOP_GRACE.as_secs()).unwrap_or(15) * SECOND),
                ..shape.container
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(i64::from(shape.memory_mb) * 1024 * 1024),
                    pids: Some(i64::from(config.resources.pids)),
                    nano_cpus: None,
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(2 * SECOND),
                max_attempts: Some(0),
                window: None,
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(shape.constraints),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(NETWORK.to_owned()),
                aliases: Some(shape.aliases),
                driver_opts: None,
            }]),
            ..Default::default()
        }),
        mode: Some(shape.mode),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(5 * SECOND),
            max_failure_ratio: Some(0.0),
            order: Some(update_order),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(5 * SECOND),
            max_failure_ratio: Some(0.0),
            order: Some(rollback_order),
        }),
        endpoint_spec: Some(EndpointSpec {
            // No virtual IP: that needs IPVS, which not every kernel has.
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: (!shape.ports.is_empty()).then_some(shape.ports),
        }),
        ..Default::default()
    };
    // Without the task count, which `scale` changes on its own: a service differs from its
    // plan when this hash or the count does.
    let hash = stack::hash_of(&ServiceSpec {
        mode: None,
        ..spec.clone()
    });
    if let Some(labels) = spec.labels.as_mut() {
        labels.insert(LABEL_CONFIG_HASH.to_owned(), hash.clone());
    }
    // On the containers too, so a task tells which settings it was made with.
    if let Some(labels) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
        .and_then(|c| c.labels.as_mut())
    {
        labels.insert(LABEL_CONFIG_HASH.to_owned(), hash);
    }
    spec
}

/// The settings hash a service's spec carries.
fn spec_hash(spec: &ServiceSpec) -> Option<&str> {
    spec.labels
        .as_ref()?
        .get(LABEL_CONFIG_HASH)
        .map(String::as_str)
}

/// The task count of a replicated service.
fn replicas(spec: &ServiceSpec) -> Option<i64> {
    spec.mode.as_ref()?.replicated.as_ref()?.replicas
}

/// Whether a task was made from the service's current task settings: the same settings hash,
/// and the same forced-update counter (`restart` raises it).
fn is_current(task: &Task, template: Option<&TaskSpec>) -> bool {
    let settings = |t: &TaskSpec| {
        let hash = t
            .container_spec
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_CONFIG_HASH))
            .cloned();
        (hash, t.force_update.unwrap_or(0))
    };
    task.spec.as_ref().map(settings) == template.map(settings)
}

fn replicated(n: u32) -> ServiceSpecMode {
    ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(i64::from(n)),
        }),
        ..Default::default()
    }
}

fn on(label: NodeLabel) -> String {
    format!("node.labels.{}==true", label.key())
}

fn tmpfs(paths: &[&str]) -> Vec<Mount> {
    paths
        .iter()
        .map(|path| Mount {
            target: Some((*path).to_owned()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(64 * 1024 * 1024),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

fn image_labels(tag: &str) -> Option<HashMap<String, String>> {
    Some(HashMap::from([(LABEL_IMAGE.to_owned(), tag.to_owned())]))
}

fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| (*s).to_owned()).collect())
}

/// The label of the node that holds `app`'s database and its volumes.
fn database_label(app: App) -> NodeLabel {
    match app {
        App::Auth => NodeLabel::AuthDb,
        App::Payments => NodeLabel::PaymentsDb,
    }
}

/// The engine of the node that holds `app`'s database and its volumes, whether its task runs
/// or not.
pub fn database_engine<'a>(
    nodes: &'a Nodes,
    cluster: &Cluster,
    app: App,
) -> anyhow::Result<&'a Engine> {
    let label = database_label(app);
    let index = cluster
        .nodes
        .iter()
        .position(|node| node.labels.contains(&label))
        .with_context(|| format!("no node of [cluster] is labelled {}", label.name()))?;
    nodes
        .reachable()
        .find(|(i, _)| *i == index)
        .map(|(_, engine)| engine)
        .with_context(|| {
            format!(
                "node {} holds the {} database, and its engine does not answer (stackctl cluster status)",
                index + 1,
                app.service().label()
            )
        })
}

/// What a task of `app`'s database runs, as a one-off container on its node takes it: image,
/// settings, volumes, tmpfs and capabilities (not its secrets: the data is all it touches).
pub async fn database_container(
    manager: &Engine,
    project: &str,
    app: App,
) -> anyhow::Result<ContainerCreateBody> {
    let name = service_name(app.database());
    let service = find(manager, project, app.database())
        .await?
        .with_context(|| {
            format!("service {name} does not run; start the stack with `stackctl up`")
        })?;
    let spec = service
        .spec
        .and_then(|s| s.task_template)
        .and_then(|t| t.container_spec)
        .with_context(|| format!("service {name} has no container in its spec"))?;
    let mounts = spec.mounts.unwrap_or_default();
    let of_type = |typ: MountType| mounts.iter().filter(move |m| m.typ == Some(typ));
    let binds = of_type(MountType::VOLUME)
        .filter_map(|m| Some(format!("{}:{}", m.source.as_ref()?, m.target.as_ref()?)))
        .collect();
    let tmpfs = of_type(MountType::TMPFS)
        .filter_map(|m| Some((m.target.clone()?, String::new())))
        .collect();
    Ok(ContainerCreateBody {
        image: spec.image,
        env: spec.env,
        host_config: Some(HostConfig {
            binds: Some(binds),
            tmpfs: Some(tmpfs),
            cap_drop: spec.capability_drop,
            cap_add: spec.capability_add,
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn database_spec(
    config: &StackConfig,
    app: App,
    images: &Images,
    refs: &Refs,
) -> anyhow::Result<ServiceSpec> {
    let db = database::of(app);
    let service = app.database();
    let label = database_label(app);
    let image = images.of(service);
    let volume = |source: String, target: &str| Mount {
        target: Some(target.to_owned()),
        source: Some(source),
        typ: Some(MountType::VOLUME),
        volume_options: Some(MountVolumeOptions {
            labels: Some(crate::docker::project_labels(&config.project)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut mounts = vec![
        volume(
            stack::volume_name(&config.project, service),
            "/var/lib/postgresql/data",
        ),
        volume(
            stack::archive_volume_name(&config.project, service),
            stack::ARCHIVE_PATH,
        ),
    ];
    mounts.extend(tmpfs(&["/run/postgresql", "/tmp"]));
    Ok(service_spec(
        config,
        Shape {
            service,
            container: TaskSpecContainerSpec {
                image: Some(image.id.to_owned()),
                labels: image_labels(image.tag),
                hostname: Some(db.container.to_owned()),
                env: Some(vec![
                    format!("POSTGRES_USER={}", db.superuser),
                    format!("POSTGRES_PASSWORD_FILE={SECRETS_DIR}/db-password"),
                    format!("POSTGRES_DB={}", db.name),
                    format!(
                        "ARCHIVE_TIMEOUT_SECS={}",
                        config.backup.archive_timeout_secs
                    ),
                    format!("PGBACKREST_PG1_USER={}", db.superuser),
                ]),
                mounts: Some(mounts),
                health_check: Some(stack::health(
                    &[
                        "CMD",
                        "pg_isready",
                        "-h",
                        "127.0.0.1",
                        "-U",
                        db.superuser,
                        "-d",
                        db.name,
                    ],
                    30,
                    60,
                )),
                secrets: Some(vec![refs.secret(
                    &format!("{}-password", service.label()),
                    "db-password",
                    "0",
                )?]),
                // The entrypoint makes the data and socket folders its own, then drops to postgres.
                capability_drop: strings(&["ALL"]),
                capability_add: strings(&["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]),
                ..Default::default()
            },
            mode: replicated(1),
            constraints: vec![on(label)],
            memory_mb: config.resources.database_memory_mb,
            start_first: false,
            aliases: vec![db.container.to_owned()],
            ports: Vec::new(),
        },
    ))
}

/// How long a leaving task goes on taking new requests after SIGTERM. The edge learns that a
/// task leaves from Docker's DNS, which drops the task 2 s before SIGTERM on the task's node and
/// on the others when gossip reaches them; the edge reads it every second. Within `STOP_GRACE`.
const STOP_DELAY: Duration = Duration::from_secs(5);

fn app_spec(
    config: &StackConfig,
    app: App,
    images: &Images,
    refs: &Refs,
) -> anyhow::Result<ServiceSpec> {
    let service_kind = app.service();
    let image = images.of(service_kind);
    let port = app.port();
    let mut env = vec![
        format!("PORT={port}"),
        format!("METRICS_PORT={}", app.metrics_port()),
        format!("DATABASE_URL_FILE={SECRETS_DIR}/database-url"),
        format!("STOP_DELAY_MS={}", STOP_DELAY.as_millis()),
        "RUST_LOG=info".to_owned(),
    ];
    let url_role = format!("{}-database-url", service_kind.label());
    let mut secrets = vec![refs.secret(&url_role, "database-url", NOBODY)?];
    let mut aliases = Vec::new();
    match app {
        App::Auth => {
            let auth = &config.services.auth;
            env.extend([
                format!("JWT_SECRET_FILE={SECRETS_DIR}/jwt"),
                format!("BCRYPT_COST={}", auth.bcrypt_cost),
                format!("ACCESS_TOKEN_TTL_SECS={}", auth.access_token_ttl_secs),
                format!("REFRESH_TOKEN_TTL_SECS={}", auth.refresh_token_ttl_secs),
            ]);
            secrets.push(refs.secret("jwt", "jwt", NOBODY)?);
            aliases.push(AUTH_ALIAS.to_owned());
        }
        App::Payments => {
            env.extend([
                format!("WEBHOOK_SECRET_FILE={SECRETS_DIR}/webhook"),
                format!("AUTH_SERVICE_URL=http://{AUTH_ALIAS}:{}", App::Auth.port()),
                format!(
                    "AUTH_CACHE_SECS={}",
                    config.services.payments.auth_cache_secs
                ),
            ]);
            secrets.push(refs.secret("webhook", "webhook", NOBODY)?);
        }
    }
    Ok(service_spec(
        config,
        Shape {
            service: service_kind,
            container: TaskSpecContainerSpec {
                image: Some(image.id.to_owned()),
                labels: image_labels(image.tag),
                // The instance's name in its answers and logs: app_a.2.
                hostname: Some("{{.Service.Name}}.{{.Task.Slot}}".to_owned()),
                env: Some(env),
                health_check: Some(stack::service_health(app)),
                secrets: Some(secrets),
                capability_drop: strings(&["ALL"]),
                ..Default::default()
            },
            mode: replicated(config.instances(app)),
            constraints: Vec::new(),
            memory_mb: config.resources.service_memory_mb,
            start_first: true,
            aliases,
            ports: Vec::new(),
        },
    ))
}

fn edge_spec(config: &StackConfig, images: &Images) -> ServiceSpec {
    let image = images.of(Service::Nginx);
    let publish = |target: u16, published: u16| EndpointPortConfig {
        protocol: Some(EndpointPortConfigProtocolEnum::TCP),
        target_port: Some(i64::from(target)),
        published_port: Some(i64::from(published)),
        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
        name: None,
    };
    service_spec(
        config,
        Shape {
            service: Service::Nginx,
            container: TaskSpecContainerSpec {
                image: Some(image.id.to_owned()),
                labels: image_labels(image.tag),
                hostname: Some(PROXY.to_owned()),
                mounts: Some(
                    tmpfs(&[
                        "/run",
                        "/tmp",
                        "/var/lib/nginx",
                        "/var/log/nginx",
                        "/etc/nginx/conf.d",
                    ])
                    .into_iter()
                    .chain(EDGE_VOLUMES.iter().map(|v| v.mount(&config.project)))
                    .collect(),
                ),
                health_check: Some(stack::health(
                    &["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/443"],
                    5,
                    10,
                )),
                capability_drop: strings(&["ALL"]),
                capability_add: strings(&[
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "NET_BIND_SERVICE",
                    "SETGID",
                    "SETUID",
                ]),
                ..Default::default()
            },
            // One on every edge node.
            mode: ServiceSpecMode {
                global: Some(HashMap::new()),
                ..Default::default()
            },
            constraints: vec![on(NodeLabel::Edge)],
            memory_mb: config.resources.edge_memory_mb,
            start_first: false,
            aliases: vec![PROXY.to_owned()],
            ports: vec![
                publish(80, config.ports.http),
                publish(443, config.ports.https),
            ],
        },
    )
}

/// Creates or updates the services whose spec changed; the others are left alone.
pub async fn put(
    manager: &Engine,
    project: &str,
    specs: &[ServiceSpec],
    ui: &Ui,
) -> anyhow::Result<()> {
    let existing = manager.services(project).await?;
    for spec in specs {
        let name = spec.name.clone().unwrap_or_default();
        let current = existing
            .iter()
            .find(|s| s.spec.as_ref().and_then(|s| s.name.as_ref()) == Some(&name));
        if let Some(current_spec) = current.and_then(|c| c.spec.as_ref())
            && spec_hash(current_spec) == spec_hash(spec)
            && replicas(current_spec) == replicas(spec)
        {
            continue;
        }
        manager.put_service(current, spec.clone()).await?;
        ui.step(&format!(
            "{} service {name}",
            if current.is_some() {
                "updated"
            } else {
                "created"
            }
        ));
    }
    Ok(())
}

/// Waits until every named service runs all its tasks with its current settings, healthy, with
/// no update in progress; a failed update (rolled back) or tasks that keep failing are errors
/// that say why.
pub async fn wait_converged(
    manager: &Engine,
    project: &str,
    names: &[String],
    ui: &Ui,
) -> anyhow::Result<()> {
    let spinner = ui.spinner(&format!("waiting for {} to run healthy", names.join(", ")));
    let deadline = tokio::time::Instant::now() + HEALTH_TIMEOUT;
    loop {
        let services = manager.services(project).await?;
        let mut pending = Vec::new();
        for name in names {
            let service = services
                .iter()
                .find(|s| s.spec.as_ref().and_then(|s| s.name.as_ref()) == Some(name))
                .with_context(|| format!("service {name} is gone"))?;
            let tasks = manager.tasks(name, true).await?;
            match progress(service, &tasks) {
                Progress::Done => {}
                Progress::Waiting(what) => pending.push(format!("{name} ({what})")),
                Progress::Failed(why) => {
                    spinner.finish_and_clear();
                    bail!("service {name}: {why}{}", last_error(manager, name).await);
                }
            }
        }
        if pending.is_empty() {
            spinner.finish_and_clear();
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            spinner.finish_and_clear();
            bail!(
                "still waiting after {} s for {}{}",
                HEALTH_TIMEOUT.as_secs(),
                pending.join(", "),
                last_error(manager, names.first().map_or("", String::as_str)).await
            );
        }
        spinner.set_message(format!("waiting for {}", pending.join(", ")));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

enum Progress {
    Done,
    Waiting(String),
    Failed(String),
}

/// How far the service is: done when as many tasks as it wants run (healthy: swarm counts a
/// task as running once its health check passed) made from its current task settings. Counting
/// those, not all running tasks, makes an update just sent wait: swarm clears the update status
/// when it takes a new spec, and only later says the update is in progress.
fn progress(service: &SwarmService, tasks: &[Task]) -> Progress {
    let update = service.update_status.as_ref();
    let message = || update.and_then(|u| u.message.clone()).unwrap_or_default();
    match update.and_then(|u| u.state) {
        Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
            return Progress::Failed(format!(
                "the update failed and was rolled back: {}",
                message()
            ));
        }
        Some(
            ServiceUpdateStatusStateEnum::PAUSED | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
        ) => {
            return Progress::Failed(format!("the update is paused: {}", message()));
        }
        Some(
            ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED,
        ) => return Progress::Waiting("updating".to_owned()),
        _ => {}
    }
    let template = service.spec.as_ref().and_then(|s| s.task_template.as_ref());
    let current = tasks
        .iter()
        .filter(|t| {
            t.desired_state == Some(TaskState::RUNNING)
                && t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
                && is_current(t, template)
        })
        .count() as u64;
    let desired = service
        .service_status
        .as_ref()
        .and_then(|s| s.desired_tasks)
        .unwrap_or(0);
    if desired > 0 && current >= desired {
        Progress::Done
    } else {
        Progress::Waiting(format!("{current}/{desired} running"))
    }
}

/// What `scale` and `restart` do to a service on a swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This many tasks: new ones are routed once healthy, leaving ones are dropped from the
    /// edge's routes before they are stopped.
    Scale(u32),
    /// Every task replaced, one at a time, each new one healthy before its old one leaves.
    Restart,
}

/// Scales or restarts a running service, with the image and settings it runs now (never new
/// code). `false` when the service does not run (the stack is not up).
pub async fn change(
    manager: &Engine,
    project: &str,
    app: App,
    change: Change,
    dry_run: bool,
    ui: &Ui,
) -> anyhow::Result<bool> {
    let name = service_name(app.service());
    let Some(service) = find(manager, project, app.service()).await? else {
        return Ok(false);
    };
    let mut spec = service.spec.clone().unwrap_or_default();
    let before = replicas(&spec).unwrap_or(0);
    let step = match change {
        Change::Scale(n) if before == i64::from(n) => {
            ui.step(&format!(
                "{} already runs {n} instances; nothing to do",
                app.service().label()
            ));
            return Ok(true);
        }
        Change::Scale(n) => {
            spec.mode = Some(replicated(n));
            format!(
                "set {name} from {before} to {n} tasks; new ones are routed once healthy, leaving ones leave the routes before they stop"
            )
        }
        Change::Restart => {
            let template = spec.task_template.get_or_insert_with(Default::default);
            template.force_update = Some(template.force_update.unwrap_or(0) + 1);
            format!(
                "replace the {before} tasks of {name} one at a time, each new one healthy before its old one stops"
            )
        }
    };
    if dry_run {
        println!("1. {step}");
        return Ok(true);
    }
    let count = replicas(&spec)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    manager.put_service(Some(&service), spec).await?;
    wait_converged(manager, project, &[name.to_owned()], ui).await?;
    wait_drained(manager, name, count, ui).await?;
    ui.step(&step);
    Ok(true)
}

/// The stack's swarm service of `app`, when it runs.
async fn find(
    manager: &Engine,
    project: &str,
    service: Service,
) -> anyhow::Result<Option<SwarmService>> {
    let name = service_name(service);
    Ok(manager
        .services(project)
        .await?
        .into_iter()
        .find(|s| s.spec.as_ref().and_then(|s| s.name.as_deref()) == Some(name)))
}

/// How many tasks the service of `app` runs; `None` when it does not run.
pub async fn instances(manager: &Engine, project: &str, app: App) -> anyhow::Result<Option<u32>> {
    Ok(find(manager, project, app.service())
        .await?
        .and_then(|s| replicas(s.spec.as_ref()?))
        .and_then(|n| u32::try_from(n).ok()))
}

/// Sets the service of `app` to `n` tasks, as it is otherwise, and waits for every task to run
/// healthy and the others to have stopped (their requests drained).
pub async fn scale_to(
    manager: &Engine,
    project: &str,
    app: App,
    n: u32,
    ui: &Ui,
) -> anyhow::Result<()> {
    scale_service(manager, project, app.service(), n, ui).await
}

/// [`scale_to`] for any of the stack's services: a database's, say (0 or 1 task).
pub async fn scale_service(
    manager: &Engine,
    project: &str,
    service: Service,
    n: u32,
    ui: &Ui,
) -> anyhow::Result<()> {
    let name = service_name(service);
    let service = find(manager, project, service).await?.with_context(|| {
        format!("service {name} does not run; start the stack with `stackctl up`")
    })?;
    let mut spec = service.spec.clone().unwrap_or_default();
    if replicas(&spec) != Some(i64::from(n)) {
        spec.mode = Some(replicated(n));
        manager.put_service(Some(&service), spec).await?;
    }
    if n > 0 {
        wait_converged(manager, project, &[name.to_owned()], ui).await?;
    }
    wait_drained(manager, name, n, ui).await
}

/// Waits until no more than `n` tasks of the service are alive: the ones it scaled away or
/// replaced have finished their requests and stopped.
async fn wait_drained(manager: &Engine, name: &str, n: u32, ui: &Ui) -> anyhow::Result<()> {
    let spinner = ui.spinner(&format!("waiting for leaving tasks of {name} to stop"));
    let deadline = tokio::time::Instant::now() + STOP_GRACE + Duration::from_secs(30);
    loop {
        let live = manager
            .tasks(name, false)
            .await?
            .iter()
            .filter(|t| {
                matches!(
                    t.status.as_ref().and_then(|s| s.state),
                    Some(
                        TaskState::NEW
                            | TaskState::ALLOCATED
                            | TaskState::PENDING
                            | TaskState::ASSIGNED
                            | TaskState::ACCEPTED
                            | TaskState::PREPARING
                            | TaskState::READY
                            | TaskState::STARTING
                            | TaskState::RUNNING
                    )
                )
            })
            .count();
        if live <= n as usize {
            spinner.finish_and_clear();
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            spinner.finish_and_clear();
            bail!("{live} tasks of {name} still run, {n} wanted");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The latest error a task of the service reported, as a line to add to a message.
async fn last_error(manager: &Engine, name: &str) -> String {
    let Ok(mut tasks) = manager.tasks(name, false).await else {
        return String::new();
    };
    tasks.sort_by_key(|t| {
        t.status
            .as_ref()
            .and_then(|s| s.timestamp.clone())
            .map(|t| t.to_string())
    });
    tasks
        .iter()
        .rev()
        .find_map(|t| {
            let status = t.status.as_ref()?;
            let err = status.err.clone().filter(|e| !e.is_empty())?;
            Some(format!(
                "\nlast task error ({}): {err}",
                status.state.map(|s| s.to_string()).unwrap_or_default()
            ))
        })
        .unwrap_or_default()
}

/// Whether a running instance of `app` started before its database's running task did. After
/// the database's node was lost and came back, such instances may hold connections to an
/// address that is gone: a lost node sends no reset, so they would wait on them.
pub async fn predates_database(manager: &Engine, project: &str, app: App) -> anyhow::Result<bool> {
    if instances(manager, project, app).await?.is_none() {
        return Ok(false);
    }
    let started = |tasks: Vec<Task>| -> Vec<chrono::DateTime<chrono::FixedOffset>> {
        tasks
            .iter()
            .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t.created_at.as_deref()?).ok())
            .collect()
    };
    let database = started(manager.tasks(service_name(app.database()), true).await?);
    let Some(database) = database.into_iter().max() else {
        return Ok(false);
    };
    let apps = started(manager.tasks(service_name(app.service()), true).await?);
    Ok(apps.iter().any(|t| *t < database))
}

/// The containers of a service's running tasks, on their nodes (those whose engine answers).
async fn running_containers<'a>(
    nodes: &'a Nodes,
    service: &str,
) -> anyhow::Result<Vec<Located<'a>>> {
    let mut found = Vec::new();
    for task in nodes.manager().tasks(service, true).await? {
        let status = task.status.unwrap_or_default();
        if status.state != Some(TaskState::RUNNING) {
            continue;
        }
        let container = status.container_status.and_then(|c| c.container_id);
        let engine = task.node_id.as_deref().and_then(|id| nodes.of_node(id));
        if let (Some(container), Some(engine)) = (container, engine) {
            found.push(Located { engine, container });
        }
    }
    Ok(found)
}

/// Waits until every edge routes `app` to exactly the overlay addresses of its running tasks.
/// Docker's DNS on an edge node can lag behind a change made on the others (a task gone, or
/// new), and a command that changed the tasks should return once the edge sees the change.
pub async fn wait_routed(nodes: &Nodes, app: App, ui: &Ui) -> anyhow::Result<()> {
    let label = app.service().label();
    if nodes.unreachable().next().is_some() {
        // The addresses of tasks there, and that node's edge, cannot be read.
        ui.detail(&format!(
            "not every node answers: the edge's routes to {label} are not checked"
        ));
        return Ok(());
    }
    let spinner = ui.spinner(&format!(
        "waiting for the edge to route {label} to its tasks"
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut wanted = std::collections::BTreeSet::new();
        for task in running_containers(nodes, service_name(app.service())).await? {
            let address = task
                .engine
                .inspect(&task.container)
                .await?
                .and_then(|c| c.network_settings?.networks?.remove(NETWORK)?.ip_address);
            if let Some(address) = address.filter(|a| !a.is_empty()) {
                wanted.insert(format!("{address}:{}", app.port()));
            }
        }
        let mut behind = None;
        for edge in running_containers(nodes, PROXY).await? {
            // Resolved now, not at the edge's next second.
            edge.engine
                .exec(&edge.container, &["stack-edge", "routes"])
                .await?;
            let (_, json) = edge
                .engine
                .exec(&edge.container, &["cat", "/run/stack-edge/routes.json"])
                .await?;
            let routed: std::collections::BTreeSet<String> =
                serde_json::from_str::<HashMap<String, Vec<String>>>(json.trim())
                    .unwrap_or_default()
                    .remove(label)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            if routed != wanted {
                behind = Some(routed);
            }
        }
        let Some(routed) = behind else {
            spinner.finish_and_clear();
            return Ok(());
        };
        if tokio::time::Instant::now() > deadline {
            spinner.finish_and_clear();
            bail!(
                "after 30 s an edge still routes {label} to {routed:?}, its tasks are at {wanted:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The container of a service's running task, and the engine of its node.
pub async fn running_container<'a>(nodes: &'a Nodes, service: &str) -> anyhow::Result<Located<'a>> {
    let tasks = nodes.manager().tasks(service, true).await?;
    let task = tasks
        .iter()
        .find(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
        .with_context(|| format!("no task of {service} is running (stackctl ps)"))?;
    let node = task.node_id.clone().unwrap_or_default();
    let container = task
        .status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .with_context(|| format!("the task of {service} has no container yet"))?;
    let engine = nodes.of_node(&node).with_context(|| {
        format!("{service} runs on a node whose engine does not answer (stackctl cluster status)")
    })?;
    Ok(Located { engine, container })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        serde_json::from_value(serde_json::json!({
            "jwt_secret": "j", "webhook_secret": "w",
            "auth_db_password": "a", "payments_db_password": "pdb-secret-value",
            "auth_app_password": "aa", "payments_app_password": "pp"
        }))
        .unwrap()
    }

    fn plan(config: &StackConfig) -> SwarmPlan {
        let objects = objects(&secrets());
        let refs = Refs {
            project: config.project.clone(),
            by_role: objects
                .iter()
                .map(|o| {
                    let r = Ref {
                        name: o.name(&config.project),
                        id: format!("id-{}", o.role),
                    };
                    (o.role, r)
                })
                .collect(),
        };
        let set = |prefix: &str| ImageSet {
            postgres: format!("{prefix}postgres"),
            nginx: format!("{prefix}nginx"),
            auth: format!("{prefix}auth"),
            payments: format!("{prefix}payments"),
        };
        let (tags, ids) = (set("stackctl/"), set("sha256:"));
        SwarmPlan::new(
            config,
            &Images {
                tags: &tags,
                ids: &ids,
            },
            &refs,
        )
        .unwrap()
    }

    fn container(spec: &ServiceSpec) -> &TaskSpecContainerSpec {
        spec.task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap()
    }

    fn constraints(spec: &ServiceSpec) -> Vec<String> {
        spec.task_template
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap()
            .constraints
            .clone()
            .unwrap()
    }

    #[test]
    fn a_new_value_is_a_new_object_and_the_routes_name_the_tasks() {
        let a = objects(&secrets());
        let mut other = secrets();
        other.jwt_secret = "rotated".into();
        let b = objects(&other);
        let name =
            |set: &[Object], role: &str| set.iter().find(|o| o.role == role).unwrap().name("shop");
        assert_ne!(name(&a, "jwt"), name(&b, "jwt"));
        assert_eq!(name(&a, "webhook"), name(&b, "webhook"));
        assert!(name(&a, "jwt").starts_with("shop_jwt_"));
        let url = a.iter().find(|o| o.role == "auth-database-url").unwrap();
        assert_eq!(url.data, b"postgres://auth_app:aa@auth-db:5432/nest");
        let lines: Vec<String> = routes()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            lines,
            ["auth tasks.app_a:3000", "payments tasks.app_b:4000"]
        );
    }

    #[test]
    fn a_spec_read_back_from_the_engine_keeps_its_health_check() {
        let plan = plan(&StackConfig::default());
        for spec in plan.databases.iter().chain(&plan.apps).chain([&plan.edge]) {
            let sent = container(spec).health_check.clone();
            assert!(sent.is_some(), "{:?}", spec.name);
            // The engine names the key as its Go field, which bollard does not read.
            let json = serde_json::to_string(spec)
                .unwrap()
                .replace("\"HealthCheck\"", "\"Healthcheck\"");
            let mut read: ServiceSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(container(&read).health_check, None, "{:?}", spec.name);
            crate::docker::restore_health_check(&mut read);
            assert_eq!(container(&read).health_check, sent, "{:?}", spec.name);
        }
    }

    #[test]
    fn databases_are_pinned_and_take_their_password_from_a_file() {
        let plan = plan(&StackConfig::default());
        let db = &plan.databases[1];
        assert_eq!(db.name.as_deref(), Some("payments-db"));
        assert_eq!(constraints(db), ["node.labels.stackctl.payments-db==true"]);
        assert_eq!(replicas(db), Some(1));
        let c = container(db);
        assert_eq!(c.image.as_deref(), Some("sha256:postgres"));
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .contains(&"POSTGRES_PASSWORD_FILE=/run/secrets/db-password".to_owned())
        );
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| !e.contains("pdb-secret-value"))
        );
        let secret = &c.secrets.as_ref().unwrap()[0];
        assert_eq!(secret.secret_id.as_deref(), Some("id-payments-db-password"));
        let volume = &c.mounts.as_ref().unwrap()[0];
        assert_eq!(volume.source.as_deref(), Some("stackctl_payments-db-data"));
        let update = db.update_config.as_ref().unwrap();
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
        );
    }

    #[test]
    fn instances_spread_start_first_and_carry_no_secret_in_their_environment() {
        let mut config = StackConfig::default();
        config.services.auth.instances = 3;
        let plan = plan(&config);
        let auth = &plan.apps[0];
        assert_eq!(auth.name.as_deref(), Some("app_a"));
        assert_eq!(replicas(auth), Some(3));
        assert!(constraints(auth).is_empty());
        let c = container(auth);
        let env = c.env.as_ref().unwrap();
        assert!(env.contains(&"JWT_SECRET_FILE=/run/secrets/jwt".to_owned()));
        assert!(env.contains(&"DATABASE_URL_FILE=/run/secrets/database-url".to_owned()));
        assert!(env.iter().all(|e| !e.starts_with("JWT_SECRET=")));
        // Still taking requests until every edge has stopped routing to it.
        assert!(env.contains(&"STOP_DELAY_MS=5000".to_owned()));
        assert!(STOP_DELAY < STOP_GRACE);
        for secret in c.secrets.as_ref().unwrap() {
            let file = secret.file.as_ref().unwrap();
            assert_eq!(file.uid.as_deref(), Some(NOBODY));
            assert_eq!(file.mode, Some(0o400));
        }
        assert_eq!(
            auth.update_config.as_ref().unwrap().order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        let aliases = &auth
            .task_template
            .as_ref()
            .unwrap()
            .networks
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            aliases.aliases.as_deref(),
            Some(&["auth-svc".to_owned()][..])
        );
        assert_eq!(
            auth.endpoint_spec.as_ref().unwrap().mode,
            Some(EndpointSpecModeEnum::DNSRR)
        );
    }

    #[test]
    fn the_edge_publishes_on_its_nodes_and_keeps_its_files_in_volumes() {
        let mut config = StackConfig::default();
        config.ports.https = 8443;
        let plan = plan(&config);
        let edge = &plan.edge;
        assert_eq!(constraints(edge), ["node.labels.stackctl.edge==true"]);
        assert!(edge.mode.as_ref().unwrap().global.is_some());
        let ports = edge.endpoint_spec.as_ref().unwrap().ports.clone().unwrap();
        let published: Vec<(i64, i64)> = ports
            .iter()
            .map(|p| {
                assert_eq!(
                    p.publish_mode,
                    Some(EndpointPortConfigPublishModeEnum::HOST)
                );
                (p.published_port.unwrap(), p.target_port.unwrap())
            })
            .collect();
        assert_eq!(published, [(80, 80), (8443, 443)]);
        let c = container(edge);
        assert_eq!(c.secrets, None);
        assert_eq!(c.configs, None);
        let volumes: Vec<(&str, &str)> = c
            .mounts
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.typ == Some(MountType::VOLUME))
            .map(|m| (m.source.as_deref().unwrap(), m.target.as_deref().unwrap()))
            .collect();
        assert_eq!(
            volumes,
            [
                ("stackctl_edge-site", "/etc/nginx/site"),
                ("stackctl_edge-tls", "/etc/nginx/tls")
            ]
        );
        assert_eq!(
            edge_volumes("stackctl"),
            ["stackctl_edge-site", "stackctl_edge-tls"]
        );
    }

    /// The files of each of the edge's archives: path, mode, owner and content.
    fn unpack(files: &EdgeFiles) -> Vec<(String, String, u32, u64, String)> {
        let mut seen = Vec::new();
        for archive in &files.archives {
            let mut tar = tar::Archive::new(archive.tar.as_slice());
            for entry in tar.entries().unwrap() {
                let mut entry = entry.unwrap();
                let mut data = String::new();
                std::io::Read::read_to_string(&mut entry, &mut data).unwrap();
                let header = entry.header();
                seen.push((
                    archive.volume.target.to_owned(),
                    header.path().unwrap().display().to_string(),
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    data,
                ));
            }
        }
        seen
    }

    #[test]
    fn the_edge_files_are_staged_with_the_key_for_root_only_and_a_version_of_their_content() {
        let files = EdgeFiles::new("site text", b"CERT", b"KEY").unwrap();
        let seen = unpack(&files);
        let version = files.version.clone();
        let row = |dir: &str, path: &str, mode: u32, data: &str| {
            (dir.to_owned(), path.to_owned(), mode, 0, data.to_owned())
        };
        assert_eq!(
            seen,
            [
                row("/etc/nginx/site", "stack.conf.next", 0o644, "site text"),
                row("/etc/nginx/site", "routes", 0o644, &routes()),
                row("/etc/nginx/site", "version.next", 0o644, &version),
                row("/etc/nginx/tls", "cert.pem.next", 0o644, "CERT"),
                row("/etc/nginx/tls", "key.pem.next", 0o600, "KEY"),
            ]
        );
        let again = EdgeFiles::new("site text", b"CERT", b"KEY").unwrap();
        assert_eq!(again.version, version);
        for other in [
            EdgeFiles::new("site text", b"CERT", b"NEW KEY").unwrap(),
            EdgeFiles::new("site text", b"NEW CERT", b"KEY").unwrap(),
            EdgeFiles::new("site", b" textCERT", b"KEY").unwrap(),
        ] {
            assert_ne!(other.version, version);
        }
    }

    #[test]
    fn the_settings_hash_leaves_the_count_to_scale() {
        let mut config = StackConfig::default();
        let two = plan(&config);
        config.services.auth.instances = 5;
        let five = plan(&config);
        assert_eq!(spec_hash(&two.apps[0]), spec_hash(&five.apps[0]));
        assert_ne!(replicas(&two.apps[0]), replicas(&five.apps[0]));
        config.services.auth.bcrypt_cost = 13;
        let slower = plan(&config);
        assert_ne!(spec_hash(&five.apps[0]), spec_hash(&slower.apps[0]));
        let label = container(&slower.apps[0])
            .labels
            .as_ref()
            .unwrap()
            .get(LABEL_CONFIG_HASH)
            .map(String::as_str);
        assert_eq!(label, spec_hash(&slower.apps[0]), "tasks carry it too");
    }
}
