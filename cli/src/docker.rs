//! Every Docker Engine call stackctl makes, through bollard. Containers, networks and volumes
//! are found by the stack's labels, so nothing that is not the stack's is ever touched.

use std::{borrow::Cow, collections::HashMap, net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use bollard::{
    API_DEFAULT_VERSION, Docker, body_full, body_stream,
    container::LogOutput,
    errors::Error as DockerError,
    exec::{CreateExecOptions, StartExecOptions, StartExecResults},
    models::{
        ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EventMessage,
        HealthConfig, HealthStatusEnum, JoinTokens, NetworkCreateRequest, Node, NodeSpec,
        SecretSpec, Service as SwarmService, ServiceSpec, SwarmInfo, SwarmInitRequest,
        SwarmJoinRequest, Task, VolumeCreateRequest,
    },
    query_parameters::{
        BuildImageOptions, CreateContainerOptions, CreateImageOptions, EventsOptions,
        ImportImageOptions, InspectContainerOptions, ListConfigsOptions, ListContainersOptions,
        ListNetworksOptions, ListNodesOptions, ListSecretsOptions, ListServicesOptions,
        ListTasksOptions, ListVolumesOptions, LogsOptions, RemoveContainerOptions,
        RemoveVolumeOptions, ResizeExecOptions, StopContainerOptions, UpdateNodeOptions,
        UpdateServiceOptions, UploadToContainerOptions,
    },
};
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::{
    cluster::{EngineUrl, NodeConfig},
    config::DEFAULT_PROJECT,
};

pub const LABEL_PROJECT: &str = "stackctl.project";
pub const LABEL_SERVICE: &str = "stackctl.service";
pub const LABEL_INSTANCE: &str = "stackctl.instance";
pub const LABEL_CONFIG_HASH: &str = "stackctl.config-hash";
/// A swarm service's health check, as JSON: the engine returns a service's health check under a
/// key bollard does not read (`Healthcheck`, not `HealthCheck`), so a spec read, changed and
/// sent back would lose it, and with it every wait for a new task to be healthy.
pub const LABEL_HEALTH_CHECK: &str = "stackctl.health-check";
/// Swarm's control plane port (managers listen on it, every node reaches them there).
pub const SWARM_PORT: u16 = 2377;
/// How long a node's engine has to answer before it counts as unreachable.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Engine {
    docker: Docker,
    naming: Naming,
}

/// How one stack's containers and network are named on an engine that may run other stacks:
/// with the plain names of ARCHITECTURE.md (`app_a1`, `app-network`) for the default project,
/// behind the project's name (`staging-app_a1`) for any other. stackctl speaks of containers by
/// their plain names, as the stack's own network does (each container answers to its plain
/// name there), so the services' addresses and the edge's routes are alike in every project.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
}

impl Naming {
    pub fn of(project: &str) -> Self {
        Self {
            prefix: if project == DEFAULT_PROJECT {
                String::new()
            } else {
                format!("{project}-")
            },
        }
    }

    /// A container's or the network's name on the engine.
    pub fn on_engine<'a>(&self, plain: &'a str) -> Cow<'a, str> {
        if self.prefix.is_empty() {
            Cow::Borrowed(plain)
        } else {
            Cow::Owned(format!("{}{plain}", self.prefix))
        }
    }

    /// The plain name of one of the stack's containers, from its name on the engine.
    pub fn plain<'a>(&self, on_engine: &'a str) -> &'a str {
        on_engine.strip_prefix(&self.prefix).unwrap_or(on_engine)
    }
}

/// A container and the engine it runs on: a name on one host, a swarm task's container on the
/// engine of its node.
pub struct Located<'a> {
    pub engine: &'a Engine,
    pub container: String,
}

impl<'a> Located<'a> {
    /// A container of the local engine, by name.
    pub fn local(engine: &'a Engine, name: &str) -> Self {
        Self {
            engine,
            container: name.to_owned(),
        }
    }
}

/// A task of one of the stack's swarm services.
#[derive(Debug, Clone)]
pub struct StackTask {
    pub service: String,
    pub node_id: String,
    /// Swarm's word for it: `running`, `starting`, `preparing`, …
    pub state: String,
}

/// What a container's health check last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Starting,
    Unhealthy,
    /// Not running at all (exited, dead, created).
    Down,
}

/// A started exec's output, and its standard input.
struct Attached {
    output: std::pin::Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>,
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

/// An image stackctl built: its tag and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub tag: String,
    pub id: String,
}

impl BuiltImage {
    /// A Debian root file system that an image derives from (`stackctl/postgres-base:…`).
    pub fn is_base(&self) -> bool {
        self.tag
            .split_once(':')
            .is_some_and(|(repo, _)| repo.ends_with("-base"))
    }
}

/// The terminal in raw mode until dropped, also when the command fails.
struct RawMode;

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        crossterm::terminal::enable_raw_mode().context("put the terminal in raw mode")?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better can be done if the terminal refuses: the shell's `reset` fixes it.
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Starting => "starting",
            Self::Unhealthy => "unhealthy",
            Self::Down => "down",
        }
    }
}

/// Puts back the health check of a service's spec read from the engine, from its label.
pub fn restore_health_check(spec: &mut ServiceSpec) {
    let Some(saved) = spec
        .labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_HEALTH_CHECK))
        .and_then(|json| serde_json::from_str::<HealthConfig>(json).ok())
    else {
        return;
    };
    if let Some(container) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
        && container.health_check.is_none()
    {
        container.health_check = Some(saved);
    }
}

impl Engine {
    /// The local engine as the one-host stack of `project` names its containers (see
    /// [`Naming`]).
    pub async fn connect_stack(project: &str) -> anyhow::Result<Self> {
        Ok(Self {
            naming: Naming::of(project),
            ..Self::connect().await?
        })
    }

    /// Connects to `DOCKER_HOST` or the local socket and checks the daemon answers. Containers
    /// are named as given: swarm tasks' by id.
    pub async fn connect() -> anyhow::Result<Self> {
        let target = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let hint = || {
            format!(
                "cannot reach Docker at {target} (is the daemon running, and may this user use it? check DOCKER_HOST)"
            )
        };
        let docker = Docker::connect_with_defaults().with_context(hint)?;
        Self::checked(docker).await.with_context(hint)
    }

    /// Connects to a cluster node's engine (TLS files relative to `base_dir`) and checks it
    /// answers within `ANSWER_TIMEOUT`.
    pub async fn connect_node(node: &NodeConfig, base_dir: &Path) -> anyhow::Result<Self> {
        let timeout = 600;
        let docker = match (EngineUrl::parse(&node.engine)?, &node.tls) {
            (EngineUrl::Unix(path), _) => {
                Docker::connect_with_unix(&path.to_string_lossy(), timeout, API_DEFAULT_VERSION)
            }
            (EngineUrl::Tcp { .. }, Some(tls)) => Docker::connect_with_ssl(
                &node.engine,
                &base_dir.join(&tls.key),
                &base_dir.join(&tls.cert),
                &base_dir.join(&tls.ca),
                timeout,
                API_DEFAULT_VERSION,
            ),
            (EngineUrl::Tcp { .. }, None) => {
                Docker::connect_with_http(&node.engine, timeout, API_DEFAULT_VERSION)
            }
            (EngineUrl::Ssh { .. }, _) => Docker::connect_with_ssh(
                &node.engine,
                timeout,
                API_DEFAULT_VERSION,
                node.ssh_key
                    .as_ref()
                    .map(|key| base_dir.join(key).to_string_lossy().into_owned()),
            ),
        }
        .with_context(|| format!("cannot reach the engine at {}", node.engine))?;
        tokio::time::timeout(ANSWER_TIMEOUT, Self::checked(docker))
            .await
            .unwrap_or_else(|_| bail!("no answer within {} s", ANSWER_TIMEOUT.as_secs()))
            .with_context(|| format!("cannot reach the engine at {}", node.engine))
    }

    /// The engine on the other end, once it has answered (API version agreed).
    async fn checked(docker: Docker) -> anyhow::Result<Self> {
        let docker = docker
            .with_timeout(Duration::from_secs(600))
            .negotiate_version()
            .await?;
        docker.ping().await?;
        Ok(Self {
            docker,
            naming: Naming::default(),
        })
    }

    /// What the engine says of its swarm membership.
    pub async fn swarm(&self) -> anyhow::Result<SwarmInfo> {
        Ok(self
            .docker
            .info()
            .await
            .context("read the engine's information")?
            .swarm
            .unwrap_or_default())
    }

    /// Starts a new swarm with this engine its first manager; returns its node id.
    pub async fn init_swarm(&self, advertise: Option<IpAddr>) -> anyhow::Result<String> {
        self.docker
            .init_swarm(SwarmInitRequest {
                listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
                advertise_addr: advertise.map(|a| a.to_string()),
                ..Default::default()
            })
            .await
            .context("start a swarm")
    }

    /// The swarm's join tokens; a manager's engine only.
    pub async fn join_tokens(&self) -> anyhow::Result<JoinTokens> {
        Ok(self
            .docker
            .inspect_swarm()
            .await
            .context("read the swarm's join tokens")?
            .join_tokens
            .unwrap_or_default())
    }

    /// Joins the swarm a manager at `remote` (`address:2377`) runs.
    pub async fn join_swarm(
        &self,
        remote: &str,
        token: &str,
        advertise: Option<IpAddr>,
    ) -> anyhow::Result<()> {
        self.docker
            .join_swarm(SwarmJoinRequest {
                listen_addr: Some(format!("0.0.0.0:{SWARM_PORT}")),
                advertise_addr: advertise.map(|a| a.to_string()),
                remote_addrs: Some(vec![remote.to_owned()]),
                join_token: Some(token.to_owned()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("join the swarm through {remote}"))
    }

    /// The swarm's nodes; a manager's engine only.
    pub async fn nodes(&self) -> anyhow::Result<Vec<Node>> {
        self.docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .context("list the swarm's nodes")
    }

    /// The tasks of the stack's swarm services that should run; a manager's engine only.
    pub async fn stack_tasks(&self, project: &str) -> anyhow::Result<Vec<StackTask>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_PROJECT}={project}")],
        )]);
        let services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(filters),
                status: None,
            }))
            .await
            .context("list the stack's services")?;
        let mut tasks = Vec::new();
        for service in services {
            let name = service.spec.and_then(|s| s.name).unwrap_or_default();
            let filters = HashMap::from([
                ("service".to_owned(), vec![service.id.unwrap_or_default()]),
                ("desired-state".to_owned(), vec!["running".to_owned()]),
            ]);
            for task in self
                .docker
                .list_tasks(Some(ListTasksOptions {
                    filters: Some(filters),
                }))
                .await
                .with_context(|| format!("list the tasks of {name}"))?
            {
                tasks.push(StackTask {
                    service: name.clone(),
                    node_id: task.node_id.unwrap_or_default(),
                    state: task
                        .status
                        .and_then(|s| s.state)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                });
            }
        }
        Ok(tasks)
    }

    /// The image's id (`sha256:…`), which is the same on every engine that loads it.
    pub async fn image_id(&self, tag: &str) -> anyhow::Result<String> {
        self.docker
            .inspect_image(tag)
            .await
            .with_context(|| format!("inspect image {tag}"))?
            .id
            .with_context(|| format!("image {tag} has no id"))
    }

    /// Copies images from this engine into `to` (`docker save | docker load`, streamed);
    /// `sent` gets the bytes copied so far.
    pub async fn copy_images(
        &self,
        tags: &[&str],
        to: &Engine,
        mut sent: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
        let mut export = self.docker.export_images(tags);
        let feed = async move {
            let mut total = 0u64;
            while let Some(chunk) = export.next().await {
                let chunk = chunk.context("export the images")?;
                total += chunk.len() as u64;
                sent(total);
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        };
        let load = to
            .docker
            .import_image_stream(
                ImportImageOptions {
                    quiet: true,
                    ..Default::default()
                },
                futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|chunk| (chunk, rx))
                }),
                None,
            )
            .try_collect::<Vec<_>>();
        let (fed, loaded) = tokio::join!(feed, load);
        fed?;
        loaded.context("load the images")?;
        Ok(())
    }

    pub async fn create_network_overlay(&self, name: &str, project: &str) -> anyhow::Result<()> {
        let existing = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
            }))
            .await
            .context("list networks")?;
        if let Some(net) = existing.iter().find(|n| n.name.as_deref() == Some(name)) {
            if owned_by(net.labels.as_ref(), project) && net.driver.as_deref() == Some("overlay") {
                return Ok(());
            }
            bail!(
                "a network named {name} exists and is not this stack's overlay network; remove or rename it"
            );
        }
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("overlay".to_owned()),
                attachable: Some(true),
                labels: Some(project_labels(project)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create network {name}"))?;
        Ok(())
    }

    /// The stack's swarm secrets (`configs` false) or configs (true): name and id.
    pub async fn swarm_objects(
        &self,
        project: &str,
        configs: bool,
    ) -> anyhow::Result<HashMap<String, String>> {
        let filters = Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_PROJECT}={project}")],
        )]));
        Ok(if configs {
            self.docker
                .list_configs(Some(ListConfigsOptions { filters }))
                .await
                .context("list the swarm's configs")?
                .into_iter()
                .filter_map(|c| Some((c.spec?.name?, c.id?)))
                .collect()
        } else {
            self.docker
                .list_secrets(Some(ListSecretsOptions { filters }))
                .await
                .context("list the swarm's secrets")?
                .into_iter()
                .filter_map(|s| Some((s.spec?.name?, s.id?)))
                .collect()
        })
    }

    /// Creates a swarm secret labelled as the stack's; returns its id.
    pub async fn create_secret(
        &self,
        name: &str,
        project: &str,
        data: &[u8],
    ) -> anyhow::Result<String> {
        use base64::Engine as _;
        Ok(self
            .docker
            .create_secret(SecretSpec {
                name: Some(name.to_owned()),
                labels: Some(project_labels(project)),
                data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create {name}"))?
            .id)
    }

    /// Removes a swarm secret or config; one still in use is kept (`Ok(false)`).
    pub async fn remove_swarm_object(&self, id: &str, config: bool) -> anyhow::Result<bool> {
        let removed = if config {
            self.docker.delete_config(id).await
        } else {
            self.docker.delete_secret(id).await
        };
        match removed {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(true),
            Err(DockerError::DockerResponseServerError {
                status_code: 400 | 409,
                ..
            }) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("remove {id}")),
        }
    }

    /// The stack's swarm services.
    pub async fn services(&self, project: &str) -> anyhow::Result<Vec<SwarmService>> {
        let mut services = self
            .docker
            .list_services(Some(ListServicesOptions {
                filters: Some(HashMap::from([(
                    "label".to_owned(),
                    vec![format!("{LABEL_PROJECT}={project}")],
                )])),
                status: Some(true),
            }))
            .await
            .context("list the stack's services")?;
        for service in &mut services {
            if let Some(spec) = service.spec.as_mut() {
                restore_health_check(spec);
            }
        }
        Ok(services)
    }

    /// Creates the service, or replaces its spec with `spec` (a rolling update as its update
    /// configuration says).
    pub async fn put_service(
        &self,
        existing: Option<&SwarmService>,
        spec: ServiceSpec,
    ) -> anyhow::Result<()> {
        let name = spec.name.clone().unwrap_or_default();
        match existing {
            None => {
                self.docker
                    .create_service(spec, None)
                    .await
                    .with_context(|| format!("create service {name}"))?;
            }
            Some(service) => {
                let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
                self.docker
                    .update_service(
                        &name,
                        spec,
                        UpdateServiceOptions {
                            version: i32::try_from(version).unwrap_or(i32::MAX),
                            ..Default::default()
                        },
                        None,
                    )
                    .await
                    .with_context(|| format!("update service {name}"))?;
            }
        }
        Ok(())
    }

    pub async fn remove_service(&self, name: &str) -> anyhow::Result<()> {
        match self.docker.delete_service(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove service {name}")),
        }
    }

    /// A service's tasks (all of them, or those that should run).
    pub async fn tasks(&self, service: &str, desired_running: bool) -> anyhow::Result<Vec<Task>> {
        let mut filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        if desired_running {
            filters.insert("desired-state".to_owned(), vec!["running".to_owned()]);
        }
        self.docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .with_context(|| format!("list the tasks of {service}"))
    }

    pub async fn update_node(&self, node: &Node, spec: NodeSpec) -> anyhow::Result<()> {
        let id = node.id.clone().unwrap_or_default();
        let version = node.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        self.docker
            .update_node(
                &id,
                spec,
                UpdateNodeOptions {
                    version: i64::try_from(version).unwrap_or(i64::MAX),
                },
            )
            .await
            .with_context(|| format!("update node {id}"))
    }

    pub async fn image_exists(&self, tag: &str) -> anyhow::Result<bool> {
        match self.docker.inspect_image(tag).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("inspect image {tag}")),
        }
    }

    /// Size in bytes of a local image.
    pub async fn image_size(&self, tag: &str) -> anyhow::Result<i64> {
        let image = self
            .docker
            .inspect_image(tag)
            .await
            .with_context(|| format!("inspect image {tag}"))?;
        Ok(image.size.unwrap_or_default())
    }

    /// `docker import`: a root file system tarball becomes image `repo:tag`.
    pub async fn import_rootfs(&self, tarball: &Path, repo: &str, tag: &str) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(tarball)
            .await
            .with_context(|| format!("open {}", tarball.display()))?;
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((bytes::Bytes::from(buf), file))
                }
            }
        });
        let options = CreateImageOptions {
            from_src: Some("-".to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        self.docker
            .create_image(Some(options), Some(body_stream(chunks)), None)
            .try_collect::<Vec<_>>()
            .await
            .with_context(|| format!("import {} as {repo}:{tag}", tarball.display()))?;
        Ok(())
    }

    /// Builds `tag` with the classic builder from a tar build context. `progress` gets each
    /// line the build prints.
    pub async fn build_image_with_args(
        &self,
        context_tar: Vec<u8>,
        tag: &str,
        labels: HashMap<String, String>,
        build_args: HashMap<String, String>,
        mut progress: impl FnMut(&str),
    ) -> anyhow::Result<()> {
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".to_owned(),
            t: Some(tag.to_owned()),
            rm: true,
            forcerm: true,
            labels: Some(labels),
            buildargs: Some(build_args),
            ..Default::default()
        };
        let mut stream =
            self.docker
                .build_image(options, None, Some(body_full(context_tar.into())));
        while let Some(item) = stream.next().await {
            let info = item.with_context(|| format!("build image {tag}"))?;
            if let Some(line) = info
                .stream
                .as_deref()
                .map(str::trim)
                .filter(|l| !l.is_empty())
            {
                progress(line);
            }
        }
        Ok(())
    }

    /// Creates the network unless it exists; refuses one that is not the stack's.
    pub async fn ensure_network(&self, name: &str, project: &str) -> anyhow::Result<()> {
        let name = &*self.naming.on_engine(name);
        let filters = HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
        let existing = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .context("list networks")?;
        if let Some(net) = existing.iter().find(|n| n.name.as_deref() == Some(name)) {
            if owned_by(net.labels.as_ref(), project) {
                return Ok(());
            }
            bail!("a network named {name} exists and is not this stack's; remove or rename it");
        }
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".to_owned()),
                labels: Some(project_labels(project)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create network {name}"))?;
        Ok(())
    }

    pub async fn ensure_volume(&self, name: &str, project: &str) -> anyhow::Result<()> {
        match self.docker.inspect_volume(name).await {
            Ok(volume) if owned_by(Some(&volume.labels), project) => Ok(()),
            Ok(_) => bail!("a volume named {name} exists and is not this stack's"),
            Err(e) if is_not_found(&e) => {
                self.docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(name.to_owned()),
                        labels: Some(project_labels(project)),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("create volume {name}"))?;
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("inspect volume {name}")),
        }
    }

    /// The stack's containers, running or not, by their plain names.
    pub async fn containers(&self, project: &str) -> anyhow::Result<Vec<ContainerSummary>> {
        let mut containers = self.labelled(format!("{LABEL_PROJECT}={project}")).await?;
        for name in containers
            .iter_mut()
            .flat_map(|c| c.names.iter_mut().flatten())
        {
            let plain = self.naming.plain(name.trim_start_matches('/')).to_owned();
            *name = plain;
        }
        Ok(containers)
    }

    /// A container's or the network's name on the engine (see [`Naming`]).
    pub fn on_engine<'a>(&self, plain: &'a str) -> Cow<'a, str> {
        self.naming.on_engine(plain)
    }

    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The ids of the images that containers of any stack use, running or not: what no
    /// project's `down --images` or `prune` may delete.
    pub async fn images_in_use(&self) -> anyhow::Result<std::collections::BTreeSet<String>> {
        Ok(self
            .labelled(LABEL_PROJECT.to_owned())
            .await?
            .into_iter()
            .filter_map(|c| c.image_id)
            .collect())
    }

    /// Every container, running or not, with the label `label` (`key` or `key=value`).
    async fn labelled(&self, label: String) -> anyhow::Result<Vec<ContainerSummary>> {
        let filters = HashMap::from([("label".to_owned(), vec![label])]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .context("list containers")
    }

    /// The container with this name, if any (the stack's or not).
    pub async fn inspect(&self, name: &str) -> anyhow::Result<Option<ContainerInspectResponse>> {
        match self
            .docker
            .inspect_container(
                &self.naming.on_engine(name),
                None::<InspectContainerOptions>,
            )
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspect container {name}")),
        }
    }

    pub async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> anyhow::Result<()> {
        self.create(name, body).await?;
        self.docker
            .start_container(&self.naming.on_engine(name), None)
            .await
            .with_context(|| format!("start container {name}"))
    }

    /// Creates a container and leaves it stopped.
    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> anyhow::Result<()> {
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(self.naming.on_engine(name).into_owned()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .with_context(|| format!("create container {name}"))?;
        Ok(())
    }

    /// Extracts a tar archive at `path` in a container (into its volumes too, also while it
    /// is stopped).
    pub async fn upload(&self, name: &str, path: &str, archive: Vec<u8>) -> anyhow::Result<()> {
        self.docker
            .upload_to_container(
                &self.naming.on_engine(name),
                Some(UploadToContainerOptions {
                    path: path.to_owned(),
                    ..Default::default()
                }),
                body_full(archive.into()),
            )
            .await
            .with_context(|| format!("write files to {path} in {name}"))
    }

    /// Stops a container: SIGTERM, then SIGKILL after `grace`. A stopped or missing one is fine.
    pub async fn stop(&self, name: &str, grace: Duration) -> anyhow::Result<()> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                &self.naming.on_engine(name),
                Some(StopContainerOptions {
                    t: Some(secs),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || is_not_modified(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("stop container {name}")),
        }
    }

    /// Starts an existing container.
    pub async fn start(&self, name: &str) -> anyhow::Result<()> {
        match self
            .docker
            .start_container(&self.naming.on_engine(name), None)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_modified(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("start container {name}")),
        }
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container.
    pub async fn remove(&self, name: &str, grace: Duration) -> anyhow::Result<()> {
        self.stop(name, grace).await?;
        match self
            .docker
            .remove_container(
                &self.naming.on_engine(name),
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove container {name}")),
        }
    }

    /// What a container's health check last said, `Down` when it does not run or is not there.
    pub async fn health(&self, name: &str) -> anyhow::Result<Health> {
        let Some(c) = self.inspect(name).await? else {
            return Ok(Health::Down);
        };
        let state = c.state.unwrap_or_default();
        if state.running != Some(true) {
            return Ok(Health::Down);
        }
        Ok(match state.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::Starting,
        })
    }

    /// Runs `cmd` in the container and returns its exit code and combined output.
    pub async fn exec(&self, name: &str, cmd: &[&str]) -> anyhow::Result<(i64, String)> {
        // The empty user is the container's own.
        self.exec_as(name, "", cmd).await
    }

    /// Runs `cmd` as `user` and returns its exit code and combined output.
    pub async fn exec_as(
        &self,
        name: &str,
        user: &str,
        cmd: &[&str],
    ) -> anyhow::Result<(i64, String)> {
        let id = self.create_exec(name, user, cmd, false, false).await?;
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&id, None::<StartExecOptions>)
            .await
            .with_context(|| format!("exec in {name}"))?
        {
            while let Some(chunk) = output.next().await {
                out.push_str(
                    &chunk
                        .with_context(|| format!("exec output from {name}"))?
                        .to_string(),
                );
            }
        }
        Ok((self.exit_code(&id, name).await?, out))
    }

    /// Runs `cmd` as `user` and hands its standard output to `sink` chunk by chunk, byte-exact
    /// (no TTY). Returns the exit code and what it wrote to standard error.
    pub async fn exec_out(
        &self,
        name: &str,
        user: &str,
        cmd: &[&str],
        mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<(i64, String)> {
        let id = self.create_exec(name, user, cmd, false, false).await?;
        let mut stderr = String::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(
                &id,
                Some(StartExecOptions {
                    output_capacity: Some(256 * 1024),
                    ..Default::default()
                }),
            )
            .await
            .with_context(|| format!("exec in {name}"))?
        {
            while let Some(frame) = output.next().await {
                match frame.with_context(|| format!("exec output from {name}"))? {
                    LogOutput::StdOut { message } => sink(&message)?,
                    other => stderr.push_str(&other.to_string()),
                }
            }
        }
        Ok((self.exit_code(&id, name).await?, stderr))
    }

    /// Runs `cmd` as `user` with the chunks from `input` on its standard input, then end of
    /// file, also when `input` yields an error (then returned). `seen` gets the combined output
    /// so far each time more arrives. Returns the exit code and that output.
    pub async fn exec_in(
        &self,
        name: &str,
        user: &str,
        cmd: &[&str],
        mut input: tokio::sync::mpsc::Receiver<anyhow::Result<Vec<u8>>>,
        mut seen: impl FnMut(&str),
    ) -> anyhow::Result<(i64, String)> {
        use tokio::io::AsyncWriteExt;
        let id = self.create_exec(name, user, cmd, true, false).await?;
        let Attached {
            mut output,
            input: mut stdin,
        } = self.start_attached(&id, name).await?;
        // Output is drained while input is written, so neither side can block the other.
        let write = async {
            let mut fed = anyhow::Ok(());
            while let Some(chunk) = input.recv().await {
                fed = match chunk {
                    Ok(bytes) => stdin
                        .write_all(&bytes)
                        .await
                        .with_context(|| format!("write to {name}")),
                    Err(e) => Err(e),
                };
                if fed.is_err() {
                    break;
                }
            }
            // The command must see end of file whatever happened, or it would wait forever.
            let closed = stdin
                .shutdown()
                .await
                .with_context(|| format!("close input of {name}"));
            fed.and(closed)
        };
        let read = async {
            let mut out = String::new();
            while let Some(frame) = output.next().await {
                out.push_str(
                    &frame
                        .with_context(|| format!("exec output from {name}"))?
                        .to_string(),
                );
                seen(&out);
            }
            anyhow::Ok(out)
        };
        let (written, out) = tokio::join!(write, read);
        let out = out?;
        let code = self.exit_code(&id, name).await?;
        written.with_context(|| format!("output so far: {}", out.trim()))?;
        Ok((code, out))
    }

    async fn create_exec(
        &self,
        name: &str,
        user: &str,
        cmd: &[&str],
        stdin: bool,
        tty: bool,
    ) -> anyhow::Result<String> {
        Ok(self
            .docker
            .create_exec(
                &self.naming.on_engine(name),
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
                    user: Some(user.to_owned()),
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("exec in {name}"))?
            .id)
    }

    /// Starts exec `id` with its standard input and output attached.
    async fn start_attached(&self, id: &str, name: &str) -> anyhow::Result<Attached> {
        match self
            .docker
            .start_exec(id, None::<StartExecOptions>)
            .await
            .with_context(|| format!("exec in {name}"))?
        {
            StartExecResults::Attached { output, input } => Ok(Attached { output, input }),
            StartExecResults::Detached => bail!("exec in {name} did not attach"),
        }
    }

    async fn exit_code(&self, id: &str, name: &str) -> anyhow::Result<i64> {
        Ok(self
            .docker
            .inspect_exec(id)
            .await
            .with_context(|| format!("exec in {name}"))?
            .exit_code
            .unwrap_or(-1))
    }

    /// Runs `cmd` as `user` on this process's standard input and output: with a terminal, in a
    /// terminal of the same size (raw mode, so keys reach it as typed); without, as a pipe.
    /// Returns its exit code.
    pub async fn exec_attached(&self, name: &str, user: &str, cmd: &[&str]) -> anyhow::Result<i64> {
        use std::io::IsTerminal;
        use tokio::io::AsyncWriteExt;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let id = self.create_exec(name, user, cmd, true, tty).await?;
        let Attached {
            mut output,
            input: mut stdin,
        } = self.start_attached(&id, name).await?;
        let _raw = if tty {
            let (w, h) = crossterm::terminal::size().context("read the terminal's size")?;
            self.docker
                .resize_exec(
                    &id,
                    ResizeExecOptions {
                        h: i32::from(h),
                        w: i32::from(w),
                    },
                )
                .await
                .with_context(|| format!("size the terminal of {name}"))?;
            Some(RawMode::enter()?)
        } else {
            None
        };
        // Input is read on a thread of its own, not the runtime's: a read of the terminal blocks
        // until a key comes and cannot be cancelled, and the command may end first (`\q`).
        let (keys, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = vec![0; 4096];
            let mut input = std::io::stdin().lock();
            while let Ok(n @ 1..) = input.read(&mut buf) {
                if keys.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        let feed = tokio::spawn(async move {
            while let Some(bytes) = typed.recv().await {
                if stdin.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // End of input: the command sees it too.
            let _ = stdin.shutdown().await;
        });
        let mut screen = tokio::io::stdout();
        while let Some(frame) = output.next().await {
            let bytes = frame
                .with_context(|| format!("output of {name}"))?
                .into_bytes();
            screen.write_all(&bytes).await?;
            screen.flush().await?;
        }
        feed.abort();
        self.exit_code(&id, name).await
    }

    /// The events of the project's containers from now on, as they happen.
    pub fn events(
        &self,
        project: &str,
    ) -> impl Stream<Item = anyhow::Result<EventMessage>> + use<> {
        let options = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                (
                    "label".to_owned(),
                    vec![format!("{LABEL_PROJECT}={project}")],
                ),
            ])),
            ..Default::default()
        };
        self.docker
            .events(Some(options))
            .map(|e| e.context("the engine's event stream"))
    }

    /// A container's log lines (stdout and stderr).
    pub fn logs(
        &self,
        name: &str,
        follow: bool,
        tail: Option<u64>,
        since: Option<i64>,
    ) -> impl Stream<Item = anyhow::Result<String>> + use<> {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
            since: since.and_then(|s| i32::try_from(s).ok()).unwrap_or(0),
            ..Default::default()
        };
        let name = self.naming.on_engine(name).into_owned();
        self.docker.logs(&name, Some(options)).map(move |item| {
            item.map(|chunk| chunk.to_string())
                .with_context(|| format!("logs of {name}"))
        })
    }

    /// Runs a container that does one job to its end and removes it (and first one of the
    /// same name an interrupted run left). Returns its exit code and its last lines of output.
    pub async fn run_once(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> anyhow::Result<(i64, String)> {
        self.remove(name, Duration::ZERO).await?;
        self.create_and_start(name, body).await?;
        let mut waited = self
            .docker
            .wait_container(&self.naming.on_engine(name), None);
        let code = match waited.next().await {
            Some(Ok(end)) => Ok(end.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(anyhow::Error::new(e).context(format!("wait for {name}"))),
            None => Err(anyhow::anyhow!("the engine did not say how {name} ended")),
        };
        let out = self.last_lines(name, 40).await;
        self.remove(name, Duration::ZERO).await?;
        Ok((code?, out))
    }

    /// The last `n` log lines of a container, for error reports.
    pub async fn last_lines(&self, name: &str, n: u64) -> String {
        let lines: Vec<String> = self
            .logs(name, false, Some(n), None)
            .filter_map(|l| async move { l.ok() })
            .collect()
            .await;
        lines.concat()
    }

    /// The stack's volumes.
    pub async fn volumes(&self, project: &str) -> anyhow::Result<Vec<String>> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_PROJECT}={project}")],
        )]);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .context("list volumes")?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    pub async fn remove_volume(&self, name: &str) -> anyhow::Result<()> {
        match self
            .docker
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove volume {name}")),
        }
    }

    /// The images stackctl built (repository `stackctl/…`), the bases last since the others
    /// derive from them.
    pub async fn stack_images(&self) -> anyhow::Result<Vec<BuiltImage>> {
        let images = self
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .context("list images")?;
        let mut built: Vec<BuiltImage> = images
            .into_iter()
            .flat_map(|i| {
                let id = i.id;
                i.repo_tags.into_iter().map(move |tag| BuiltImage {
                    tag,
                    id: id.clone(),
                })
            })
            .filter(|i| i.tag.starts_with("stackctl/"))
            .collect();
        built.sort_by_key(|i| i.is_base());
        Ok(built)
    }

    pub async fn remove_image(&self, tag: &str) -> anyhow::Result<()> {
        match self
            .docker
            .remove_image(
                tag,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e)
                .with_context(|| format!("remove image {tag} (is a container still using it?)")),
        }
    }

    /// Removes the network if it is the stack's.
    pub async fn remove_network(&self, name: &str, project: &str) -> anyhow::Result<()> {
        let name = &*self.naming.on_engine(name);
        match self.docker.inspect_network(name, None).await {
            Ok(net) if owned_by(net.labels.as_ref(), project) => self
                .docker
                .remove_network(name)
                .await
                .with_context(|| format!("remove network {name}")),
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("inspect network {name}")),
        }
    }
}

pub fn project_labels(project: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL_PROJECT.to_owned(), project.to_owned())])
}

fn owned_by(labels: Option<&HashMap<String, String>>, project: &str) -> bool {
    labels
        .and_then(|l| l.get(LABEL_PROJECT))
        .is_some_and(|p| p == project)
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_project_has_the_plain_names_and_others_their_own() {
        let plain = Naming::of(DEFAULT_PROJECT);
        assert_eq!(plain.on_engine("app_a1"), "app_a1");
        assert_eq!(plain.plain("app_a1"), "app_a1");
        let staging = Naming::of("staging");
        assert_eq!(staging.on_engine("app_a1"), "staging-app_a1");
        assert_eq!(staging.on_engine("app-network"), "staging-app-network");
        assert_eq!(staging.plain("staging-nginx-proxy"), "nginx-proxy");
    }
}
