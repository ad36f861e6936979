//! The stack's containers as data: what should run (planned from the configuration), and the
//! reconciliation that makes the engine match it.

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::{Context, bail};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings,
    HealthConfig, HostConfig, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use sha2::{Digest, Sha256};

use crate::{
    config::{CopyPlace, StackConfig},
    database::{self, Database},
    docker::{
        Engine, Health, LABEL_CONFIG_HASH, LABEL_INSTANCE, LABEL_PROJECT, LABEL_SERVICE, Naming,
    },
    images::ImageSet,
    state::Secrets,
    ui::Ui,
};

/// The stack's network, by its plain name (see [`crate::docker::Naming`]).
pub const NETWORK: &str = "app-network";
pub const PROXY: &str = "nginx-proxy";
/// Network alias every auth instance answers to: payment instances reach auth through it.
pub const AUTH_ALIAS: &str = "auth-svc";
const SECOND: i64 = 1_000_000_000;
/// How long `up` waits for a group of containers to become healthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(180);
/// Time a leaving service instance gets to finish in-flight requests.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// A command of a service, in its image: `/stackctl serve auth metrics`.
pub fn service_command(app: App, command: &'static str) -> [&'static str; 4] {
    [
        crate::images::SERVICE_BINARY,
        "serve",
        app.service().label(),
        command,
    ]
}

/// The health check of a service's instances.
pub fn service_health(app: App) -> HealthConfig {
    let [program, serve, service, probe] = service_command(app, "healthcheck");
    health(&["CMD", program, serve, service, probe], 3, 30)
}

/// The stack's services as `logs` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Auth,
    Payments,
    AuthDb,
    PaymentsDb,
    Nginx,
}

impl Service {
    pub const ALL: [Self; 5] = [
        Self::Auth,
        Self::Payments,
        Self::AuthDb,
        Self::PaymentsDb,
        Self::Nginx,
    ];

    /// The service a `stackctl.service` label names.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.label() == label)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Payments => "payments",
            Self::AuthDb => "auth-db",
            Self::PaymentsDb => "payments-db",
            Self::Nginx => "nginx",
        }
    }
}

/// The application services: the ones that run several instances behind nginx, and that
/// `scale` and `restart` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum App {
    Auth,
    Payments,
}

impl App {
    pub const ALL: [Self; 2] = [Self::Auth, Self::Payments];

    pub fn service(self) -> Service {
        match self {
            Self::Auth => Service::Auth,
            Self::Payments => Service::Payments,
        }
    }

    /// The service of its database.
    pub fn database(self) -> Service {
        match self {
            Self::Auth => Service::AuthDb,
            Self::Payments => Service::PaymentsDb,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Auth => "app_a",
            Self::Payments => "app_b",
        }
    }

    /// The port its instances listen on.
    pub fn port(self) -> u16 {
        match self {
            Self::Auth => 3000,
            Self::Payments => 4000,
        }
    }

    /// The port its instances serve their metrics on (the services' defaults), on the stack's
    /// network only.
    pub fn metrics_port(self) -> u16 {
        match self {
            Self::Auth => 9300,
            Self::Payments => 9400,
        }
    }

    /// The container name of instance `n` (from 1): `app_a1`, `app_b3`.
    pub fn instance_name(self, n: u32) -> String {
        format!("{}{n}", self.prefix())
    }

    /// Instance names `1..=n`.
    pub fn instance_names(self, n: u32) -> Vec<String> {
        (1..=n).map(|i| self.instance_name(i)).collect()
    }

    /// The number of an instance name of this service (`app_a12` → 12).
    pub fn instance_number(self, name: &str) -> Option<u32> {
        name.strip_prefix(self.prefix())?.parse().ok()
    }
}

/// One of the stack's containers as the engine has it: what its labels and state say, read in
/// one place.
#[derive(Debug, Clone)]
pub struct StackContainer {
    pub id: String,
    pub name: String,
    /// `None` for a container labelled by a version that had other services.
    pub service: Option<Service>,
    /// The hash of the settings it was made with.
    pub hash: String,
    pub running: bool,
    /// The engine's state word (`running`, `exited`, …) and its status line (`Up 3 minutes`).
    pub state: String,
    pub status: String,
    pub image: String,
    pub image_id: String,
    /// Published ports as `ip:public->private`, sorted.
    pub ports: Vec<String>,
}

impl StackContainer {
    fn from_summary(c: ContainerSummary) -> Self {
        let labels = c.labels.unwrap_or_default();
        let mut ports: Vec<String> = c
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                Some(format!(
                    "{}:{}->{}",
                    p.ip.unwrap_or_default(),
                    p.public_port?,
                    p.private_port
                ))
            })
            .collect();
        ports.sort();
        ports.dedup();
        Self {
            id: c.id.unwrap_or_default(),
            name: c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            service: labels
                .get(LABEL_SERVICE)
                .and_then(|l| Service::from_label(l)),
            hash: labels.get(LABEL_CONFIG_HASH).cloned().unwrap_or_default(),
            running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            status: c.status.unwrap_or_default(),
            image: c.image.unwrap_or_default(),
            image_id: c.image_id.unwrap_or_default(),
            ports,
        }
    }

    /// Its number when it is an instance of `app` (`app_a12` → 12).
    pub fn instance_of(&self, app: App) -> Option<u32> {
        if self.service != Some(app.service()) {
            return None;
        }
        app.instance_number(&self.name)
    }
}

/// The stack's containers, running or not.
pub async fn containers(engine: &Engine, project: &str) -> anyhow::Result<Vec<StackContainer>> {
    Ok(engine
        .containers(project)
        .await?
        .into_iter()
        .map(StackContainer::from_summary)
        .collect())
}

/// One container as it should be.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub body: ContainerCreateBody,
    pub hash: String,
}

/// How to make any instance of one application service.
pub struct AppSpecs {
    app: App,
    project: String,
    image: String,
    env: Vec<String>,
    /// How many instances the configuration (or `scale`) asks for.
    pub instances: u32,
    limits: Limits,
}

impl AppSpecs {
    pub fn spec(&self, name: &str) -> Spec {
        app(
            &self.project,
            self.app,
            name,
            &self.image,
            self.env.clone(),
            self.limits,
        )
    }

    /// The specs of instances `1..=instances`.
    pub fn wanted(&self) -> Vec<Spec> {
        self.app
            .instance_names(self.instances)
            .iter()
            .map(|name| self.spec(name))
            .collect()
    }
}

/// The containers of the stack: databases, then auth, payments and the edge, in start order.
pub struct Plan {
    pub databases: Vec<Spec>,
    pub auth: AppSpecs,
    pub payments: AppSpecs,
    pub edge: Spec,
}

impl Plan {
    pub fn new(
        config: &StackConfig,
        images: &ImageSet,
        secrets: &Secrets,
        state_root: &Path,
    ) -> anyhow::Result<Self> {
        let p = &config.project;
        let auth_db = database_spec(config, App::Auth, &images.postgres, secrets)?;
        let payments_db = database_spec(config, App::Payments, &images.postgres, secrets)?;
        let url = |app: App| {
            let db = database::of(app);
            format!(
                "DATABASE_URL=postgres://{}:{}@{}:{}/{}",
                db.app_role,
                secrets.app_password(app),
                db.container,
                database::PORT,
                db.name
            )
        };
        let auth = AppSpecs {
            app: App::Auth,
            project: p.clone(),
            image: images.auth.clone(),
            env: vec![
                url(App::Auth),
                format!("JWT_SECRET={}", secrets.jwt_secret),
                format!("PORT={}", App::Auth.port()),
                format!("METRICS_PORT={}", App::Auth.metrics_port()),
                format!("BCRYPT_COST={}", config.services.auth.bcrypt_cost),
                format!(
                    "ACCESS_TOKEN_TTL_SECS={}",
                    config.services.auth.access_token_ttl_secs
                ),
                format!(
                    "REFRESH_TOKEN_TTL_SECS={}",
                    config.services.auth.refresh_token_ttl_secs
                ),
            ],
            instances: config.services.auth.instances,
            limits: limits(config.resources.service_memory_mb, config.resources.pids)
                .cpu_shares(config.resources.auth_cpu_shares),
        };
        let payments = AppSpecs {
            app: App::Payments,
            project: p.clone(),
            image: images.payments.clone(),
            env: vec![
                url(App::Payments),
                format!("WEBHOOK_SECRET={}", secrets.webhook_secret),
                format!("AUTH_SERVICE_URL=http://{AUTH_ALIAS}:{}", App::Auth.port()),
                format!("PORT={}", App::Payments.port()),
                format!("METRICS_PORT={}", App::Payments.metrics_port()),
                format!(
                    "AUTH_CACHE_SECS={}",
                    config.services.payments.auth_cache_secs
                ),
            ],
            instances: config.services.payments.instances,
            limits: limits(config.resources.service_memory_mb, config.resources.pids),
        };
        Ok(Self {
            databases: vec![auth_db, payments_db],
            auth,
            payments,
            edge: proxy(config, &images.nginx, state_root)?,
        })
    }

    pub fn app(&self, app: App) -> &AppSpecs {
        match app {
            App::Auth => &self.auth,
            App::Payments => &self.payments,
        }
    }

    /// The names of every container the stack should have.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.databases.iter().map(|s| s.name.clone()).collect();
        for app in App::ALL {
            names.extend(app.instance_names(self.app(app).instances));
        }
        names.push(self.edge.name.clone());
        names
    }
}

fn labels(project: &str, service: Service, instance: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_PROJECT.to_owned(), project.to_owned()),
        (LABEL_SERVICE.to_owned(), service.label().to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_owned()),
    ])
}

/// What one container may use.
#[derive(Debug, Clone, Copy)]
struct Limits {
    memory_bytes: i64,
    pids: i64,
    cpu_shares: Option<i64>,
}

fn limits(memory_mb: u32, pids: u32) -> Limits {
    Limits {
        memory_bytes: i64::from(memory_mb) * 1024 * 1024,
        pids: i64::from(pids),
        cpu_shares: None,
    }
}

impl Limits {
    fn cpu_shares(self, shares: u32) -> Self {
        Self {
            cpu_shares: Some(i64::from(shares)),
            ..self
        }
    }

    /// A host configuration with these limits and the least privilege every container gets:
    /// no new privileges, the capabilities given and no others, a read-only root file system
    /// with `tmpfs` where the program writes.
    fn host_config(self, caps: &[&str], tmpfs: &[&str]) -> HostConfig {
        HostConfig {
            memory: Some(self.memory_bytes),
            // The same as the memory: no swap on top of it.
            memory_swap: Some(self.memory_bytes),
            pids_limit: Some(self.pids),
            cpu_shares: self.cpu_shares,
            restart_policy: restart(),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!caps.is_empty()).then(|| caps.iter().map(|c| (*c).to_owned()).collect()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            tmpfs: (!tmpfs.is_empty()).then(|| {
                tmpfs
                    .iter()
                    .map(|path| ((*path).to_owned(), "rw,nosuid,nodev,size=64m".to_owned()))
                    .collect()
            }),
            ..Default::default()
        }
    }
}

pub fn health(test: &[&str], retries: i64, start_period_secs: i64) -> HealthConfig {
    HealthConfig {
        test: Some(test.iter().map(|s| (*s).to_owned()).collect()),
        interval: Some(2 * SECOND),
        timeout: Some(3 * SECOND),
        retries: Some(retries),
        start_period: Some(start_period_secs * SECOND),
        start_interval: None,
    }
}

/// On the project's network, answering to `aliases`: its plain name first.
fn network(project: &str, aliases: Vec<String>) -> NetworkingConfig {
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            Naming::of(project).on_engine(NETWORK).into_owned(),
            EndpointSettings {
                aliases: Some(aliases),
                ..Default::default()
            },
        )])),
    }
}

fn publish(
    container_port: u16,
    host_ip: &str,
    host_port: u16,
) -> (String, Option<Vec<PortBinding>>) {
    (
        format!("{container_port}/tcp"),
        Some(vec![PortBinding {
            host_ip: Some(host_ip.to_owned()),
            host_port: Some(host_port.to_string()),
        }]),
    )
}

fn restart() -> Option<RestartPolicy> {
    Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        maximum_retry_count: None,
    })
}

pub fn volume_name(project: &str, service: Service) -> String {
    format!("{project}_{}-data", service.label())
}

/// The volume of a database's pgBackRest repository: its physical backups and archived WAL.
/// Apart from the data's volume, so that losing that one loses nothing archived.
pub fn archive_volume_name(project: &str, service: Service) -> String {
    format!("{project}_{}-archive", service.label())
}

/// Where the database image keeps its pgBackRest repository.
pub const ARCHIVE_PATH: &str = "/var/lib/pgbackrest";

/// The container of `app`'s database, as `up` makes it.
pub fn database_spec(
    config: &StackConfig,
    app: App,
    image: &str,
    secrets: &Secrets,
) -> anyhow::Result<Spec> {
    let (password, host_port) = match app {
        App::Auth => (&secrets.auth_db_password, config.ports.auth_db),
        App::Payments => (&secrets.payments_db_password, config.ports.payments_db),
    };
    database(
        config,
        app.database(),
        image,
        database::of(app),
        password,
        host_port,
        &secrets.archive_cipher_pass,
    )
}

/// Where the database image has the copy of its archive (`backup.copy_to`) in a folder,
/// pgBackRest's second repository.
pub const ARCHIVE_COPY_PATH: &str = "/var/lib/pgbackrest-copy";

/// Where a database container finds `backup.s3.ca_file`.
const S3_CA_PATH: &str = "/etc/stackctl/s3-ca.pem";

/// What a database container needs for the copy of its archive.
struct ArchiveCopy {
    /// Host files bound into the container.
    binds: Vec<String>,
    /// pgBackRest's repo2 there, encrypted.
    env: Vec<String>,
}

fn archive_copy(
    config: &StackConfig,
    service: Service,
    cipher_pass: &str,
) -> anyhow::Result<Option<ArchiveCopy>> {
    let Some(place) = config.backup.copy_place(&config.project, service) else {
        return Ok(None);
    };
    let mut env = vec![
        "PGBACKREST_REPO2_RETENTION_FULL=2".to_owned(),
        "PGBACKREST_REPO2_CIPHER_TYPE=aes-256-cbc".to_owned(),
        format!("PGBACKREST_REPO2_CIPHER_PASS={cipher_pass}"),
    ];
    let mut binds = Vec::new();
    match place {
        CopyPlace::Folder(dir) => {
            env.push(format!("PGBACKREST_REPO2_PATH={ARCHIVE_COPY_PATH}"));
            binds.push(format!(
                "{}:{ARCHIVE_COPY_PATH}",
                dir.join("archive").display()
            ));
        }
        CopyPlace::S3 { bucket, prefix } => {
            let s3 = &config.backup.s3;
            let keys = crate::s3::Keys::load(&s3.credentials)?;
            let endpoint: hyper::Uri = s3
                .endpoint
                .parse()
                .context("backup.s3.endpoint: not a URL")?;
            env.extend([
                "PGBACKREST_REPO2_TYPE=s3".to_owned(),
                format!("PGBACKREST_REPO2_PATH=/{prefix}/archive"),
                format!("PGBACKREST_REPO2_S3_BUCKET={bucket}"),
                format!(
                    "PGBACKREST_REPO2_S3_ENDPOINT={}",
                    endpoint.host().unwrap_or_default()
                ),
                format!(
                    "PGBACKREST_REPO2_STORAGE_PORT={}",
                    endpoint.port_u16().unwrap_or(443)
                ),
                format!("PGBACKREST_REPO2_S3_REGION={}", s3.region),
                format!(
                    "PGBACKREST_REPO2_S3_URI_STYLE={}",
                    if s3.path_style { "path" } else { "host" }
                ),
                format!("PGBACKREST_REPO2_S3_KEY={}", keys.id),
                format!("PGBACKREST_REPO2_S3_KEY_SECRET={}", keys.secret),
            ]);
            if !s3.ca_file.as_os_str().is_empty() {
                env.push(format!("PGBACKREST_REPO2_STORAGE_CA_FILE={S3_CA_PATH}"));
                binds.push(format!("{}:{S3_CA_PATH}:ro", s3.ca_file.display()));
            }
        }
    }
    Ok(Some(ArchiveCopy { binds, env }))
}

fn database(
    config: &StackConfig,
    service: Service,
    image: &str,
    db: Database,
    password: &str,
    host_port: u16,
    cipher_pass: &str,
) -> anyhow::Result<Spec> {
    let project = &config.project;
    let name = service.label().to_owned();
    let Database {
        superuser: user,
        name: db,
        ..
    } = db;
    let limits = limits(config.resources.database_memory_mb, config.resources.pids);
    let mut env = vec![
        format!("POSTGRES_USER={user}"),
        format!("POSTGRES_PASSWORD={password}"),
        format!("POSTGRES_DB={db}"),
        format!(
            "ARCHIVE_TIMEOUT_SECS={}",
            config.backup.archive_timeout_secs
        ),
        format!("PGBACKREST_PG1_USER={user}"),
    ];
    let mut binds = vec![
        format!("{}:/var/lib/postgresql/data", volume_name(project, service)),
        format!("{}:{ARCHIVE_PATH}", archive_volume_name(project, service)),
    ];
    if let Some(copy) = archive_copy(config, service, cipher_pass)? {
        binds.extend(copy.binds);
        env.extend(copy.env);
    }
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        hostname: Some(name.clone()),
        env: Some(env),
        labels: Some(labels(project, service, &name)),
        exposed_ports: Some(vec![format!("{}/tcp", database::PORT)]),
        healthcheck: Some(health(
            &["CMD", "pg_isready", "-h", "127.0.0.1", "-U", user, "-d", db],
            30,
            60,
        )),
        host_config: Some(HostConfig {
            binds: Some(binds),
            port_bindings: Some(HashMap::from([publish(
                database::PORT,
                "127.0.0.1",
                host_port,
            )])),
            // PostgreSQL's shared memory for parallel queries lives there; Docker's default is 64 MiB.
            shm_size: Some(256 * 1024 * 1024),
            // The entrypoint makes the data and socket folders its own, then drops to postgres.
            ..limits.host_config(
                &["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"],
                &["/run/postgresql", "/tmp"],
            )
        }),
        networking_config: Some(network(project, vec![name.clone()])),
        ..Default::default()
    };
    Ok(finish(name, body))
}

fn app(
    project: &str,
    app: App,
    name: &str,
    image: &str,
    mut env: Vec<String>,
    limits: Limits,
) -> Spec {
    let port = app.port();
    env.push("RUST_LOG=info".to_owned());
    let mut aliases = vec![name.to_owned()];
    if app == App::Auth {
        aliases.push(AUTH_ALIAS.to_owned());
    }
    let service = app.service();
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        hostname: Some(name.to_owned()),
        env: Some(env),
        labels: Some(labels(project, service, name)),
        exposed_ports: Some(vec![format!("{port}/tcp")]),
        healthcheck: Some(service_health(app)),
        stop_timeout: Some(i64::try_from(STOP_GRACE.as_secs()).unwrap_or(15)),
        // Nothing in a service image is written at run time, and it runs as 65534.
        host_config: Some(limits.host_config(&[], &[])),
        networking_config: Some(network(project, aliases)),
        ..Default::default()
    };
    finish(name.to_owned(), body)
}

fn proxy(config: &StackConfig, image: &str, state_root: &Path) -> anyhow::Result<Spec> {
    let root = std::fs::canonicalize(state_root)
        .with_context(|| format!("resolve {}", state_root.display()))?;
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        hostname: Some(PROXY.to_owned()),
        labels: Some(labels(&config.project, Service::Nginx, PROXY)),
        exposed_ports: Some(vec!["80/tcp".to_owned(), "443/tcp".to_owned()]),
        healthcheck: Some(health(
            &["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/443"],
            5,
            10,
        )),
        host_config: Some(HostConfig {
            binds: Some(vec![
                // stack-edge makes the site nginx loads (conf.d) from this one.
                format!("{}:/etc/nginx/site:ro", root.join("nginx").display()),
                format!("{}:/etc/nginx/tls:ro", root.join("tls").display()),
            ]),
            port_bindings: Some(HashMap::from([
                publish(80, "0.0.0.0", config.ports.http),
                publish(443, "0.0.0.0", config.ports.https),
            ])),
            // The master binds 80 and 443, reads the key (0600, whoever's it is), makes its
            // temporary folders the workers' and runs them as www-data.
            ..limits(config.resources.edge_memory_mb, config.resources.pids).host_config(
                &[
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "NET_BIND_SERVICE",
                    "SETGID",
                    "SETUID",
                ],
                &[
                    "/run",
                    "/tmp",
                    "/var/lib/nginx",
                    "/var/log/nginx",
                    "/etc/nginx/conf.d",
                ],
            )
        }),
        networking_config: Some(network(&config.project, vec![PROXY.to_owned()])),
        ..Default::default()
    };
    Ok(finish(PROXY.to_owned(), body))
}

/// Labels the body with the hash of everything else in it.
fn finish(name: String, mut body: ContainerCreateBody) -> Spec {
    let hash = hash_of(&body);
    if let Some(labels) = body.labels.as_mut() {
        labels.insert(LABEL_CONFIG_HASH.to_owned(), hash.clone());
    }
    Spec { name, body, hash }
}

/// A short hash of the value's JSON, the same in every process.
pub fn hash_of(value: &impl serde::Serialize) -> String {
    // Maps iterate in a different order in every process: sort before hashing.
    let json = serde_json::to_value(value)
        .map(sorted)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

/// `value` with every object's keys in sorted order.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// Whether the container runs with exactly this spec.
pub async fn is_current(engine: &Engine, spec: &Spec) -> anyhow::Result<bool> {
    Ok(engine.inspect(&spec.name).await?.is_some_and(|c| {
        let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let hash = c
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_CONFIG_HASH));
        running && hash == Some(&spec.hash)
    }))
}

/// What reconciling one container did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Started,
    Created,
    Recreated,
}

/// Makes the container match its spec: kept when its hash matches, recreated when not.
pub async fn reconcile(engine: &Engine, project: &str, spec: &Spec) -> anyhow::Result<Outcome> {
    match engine.inspect(&spec.name).await? {
        None => {
            engine
                .create_and_start(&spec.name, spec.body.clone())
                .await?;
            Ok(Outcome::Created)
        }
        Some(existing) => {
            let labels = existing
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.get(LABEL_PROJECT).map(String::as_str) != Some(project) {
                bail!(
                    "a container named {} exists and is not this stack's; remove or rename it",
                    spec.name
                );
            }
            if labels.get(LABEL_CONFIG_HASH) == Some(&spec.hash) {
                let running = existing.state.and_then(|s| s.running).unwrap_or(false);
                if running {
                    return Ok(Outcome::Kept);
                }
                engine.remove(&spec.name, STOP_GRACE).await?;
                engine
                    .create_and_start(&spec.name, spec.body.clone())
                    .await?;
                return Ok(Outcome::Started);
            }
            engine.remove(&spec.name, STOP_GRACE).await?;
            engine
                .create_and_start(&spec.name, spec.body.clone())
                .await?;
            Ok(Outcome::Recreated)
        }
    }
}

/// Waits until every named container is healthy; on failure names it and shows its last logs.
pub async fn wait_healthy(engine: &Engine, names: &[String], ui: &Ui) -> anyhow::Result<()> {
    let spinner = ui.spinner(&format!("waiting for {} to be healthy", names.join(", ")));
    let deadline = tokio::time::Instant::now() + HEALTH_TIMEOUT;
    let mut pending: Vec<&String> = names.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for name in pending {
            match engine.health(name).await? {
                Health::Healthy => {}
                Health::Starting => still.push(name),
                state @ (Health::Unhealthy | Health::Down) => {
                    spinner.finish_and_clear();
                    return Err(
                        unhealthy(engine, name, &format!("{state:?}").to_lowercase()).await,
                    );
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            spinner.finish_and_clear();
            let name = pending[0];
            return Err(unhealthy(engine, name, "still starting after 180 s").await);
        }
        spinner.set_message(format!(
            "waiting for {}",
            pending
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    spinner.finish_and_clear();
    Ok(())
}

async fn unhealthy(engine: &Engine, name: &str, state: &str) -> anyhow::Error {
    let logs = engine.last_lines(name, 30).await;
    anyhow::anyhow!(
        "container {name} is {state}; its last log lines:\n{}\n(see all with: stackctl logs)",
        logs.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use bollard::models::{PortSummary, PortSummaryTypeEnum};

    use super::*;

    #[test]
    fn a_listed_container_is_read_once() {
        let port = |ip: &str, public: Option<u16>| PortSummary {
            ip: Some(ip.into()),
            private_port: 3000,
            public_port: public,
            typ: Some(PortSummaryTypeEnum::TCP),
        };
        let summary = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/app_a12".into()]),
            image: Some("stackctl/auth:1".into()),
            labels: Some(HashMap::from([
                (LABEL_SERVICE.into(), "auth".into()),
                (LABEL_CONFIG_HASH.into(), "h1".into()),
            ])),
            state: Some(ContainerSummaryStateEnum::RUNNING),
            status: Some("Up 3 minutes".into()),
            ports: Some(vec![
                port("0.0.0.0", Some(8080)),
                port("0.0.0.0", Some(8080)),
                port("", None),
            ]),
            ..Default::default()
        };
        let c = StackContainer::from_summary(summary.clone());
        assert_eq!(c.name, "app_a12");
        assert_eq!(c.service, Some(Service::Auth));
        assert_eq!(c.hash, "h1");
        assert!(c.running);
        assert_eq!(c.ports, ["0.0.0.0:8080->3000"]);
        assert_eq!(c.instance_of(App::Auth), Some(12));
        assert_eq!(c.instance_of(App::Payments), None);
        let other = StackContainer::from_summary(ContainerSummary {
            labels: Some(HashMap::from([(LABEL_SERVICE.into(), "redis".into())])),
            state: Some(ContainerSummaryStateEnum::EXITED),
            ..summary
        });
        assert_eq!(other.service, None);
        assert!(!other.running);
        assert_eq!(other.instance_of(App::Auth), None);
    }

    #[test]
    fn the_hash_does_not_depend_on_map_order() {
        let body = |pairs: &[(&str, &str)]| ContainerCreateBody {
            labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        };
        let pairs: Vec<(String, String)> = (0..32)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut reversed = refs.clone();
        reversed.reverse();
        let a = finish("x".into(), body(&refs));
        let b = finish("x".into(), body(&reversed));
        assert_eq!(a.hash, b.hash);
        let c = finish("x".into(), body(&refs[1..]));
        assert_ne!(a.hash, c.hash);
    }
}
