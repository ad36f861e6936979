//! The stack's configuration: embedded defaults, then `stack.toml` (or `-f FILE`), then
//! `STACKCTL_*` environment variables.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::{cluster::Cluster, stack::App};

/// Environment variables that override one key each (`STACKCTL_HTTP_PORT=8080`).
const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("STACKCTL_PROJECT", "project"),
    ("STACKCTL_HTTP_PORT", "ports.http"),
    ("STACKCTL_HTTPS_PORT", "ports.https"),
    ("STACKCTL_AUTH_DB_PORT", "ports.auth_db"),
    ("STACKCTL_PAYMENTS_DB_PORT", "ports.payments_db"),
    ("STACKCTL_AUTH_INSTANCES", "services.auth.instances"),
    ("STACKCTL_PAYMENTS_INSTANCES", "services.payments.instances"),
    (
        "STACKCTL_RATE_LIMIT_PER_MINUTE",
        "nginx.rate_limit_per_minute",
    ),
    ("STACKCTL_RATE_LIMIT_BURST", "nginx.rate_limit_burst"),
    (
        "STACKCTL_LOGIN_RATE_LIMIT_PER_MINUTE",
        "nginx.login_rate_limit_per_minute",
    ),
    (
        "STACKCTL_LOGIN_RATE_LIMIT_BURST",
        "nginx.login_rate_limit_burst",
    ),
    ("STACKCTL_NGINX_SITE_TEMPLATE", "nginx.site_template"),
    ("STACKCTL_BACKUP_DIR", "backup.dir"),
    ("STACKCTL_ALERTS_WEBHOOK", "alerts.webhook"),
    ("STACKCTL_BCRYPT_COST", "services.auth.bcrypt_cost"),
    ("STACKCTL_ROLLOUT_WATCH_SECS", "rollout.watch_secs"),
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StackConfig {
    /// Name that labels the stack's containers, network and volumes.
    pub project: String,
    pub ports: Ports,
    pub services: Services,
    pub nginx: Nginx,
    pub backup: Backup,
    pub alerts: Alerts,
    pub tls: Tls,
    pub images: Images,
    pub resources: Resources,
    pub rollout: Rollout,
    /// The swarm's nodes; without it the stack runs on the local engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
}

/// How `up` watches the services it changed on one host: a new instance that stops or turns
/// unhealthy, or more than `max_5xx_percent` of the new instances' answers through the edge
/// being 5xx, within `watch_secs` of the switch rolls the change back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    /// 0 turns the watch off.
    pub watch_secs: u32,
    pub max_5xx_percent: f64,
}

/// What each container may use: memory (MiB, a hard limit), processes, and the auth
/// instances' CPU weight (the others have Docker's 1024), so a flood of bcrypt log-ins leaves the
/// rest of the stack CPU to breathe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    pub database_memory_mb: u32,
    pub service_memory_mb: u32,
    pub edge_memory_mb: u32,
    pub pids: u32,
    pub auth_cpu_shares: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            database_memory_mb: 1024,
            service_memory_mb: 256,
            edge_memory_mb: 256,
            pids: 512,
            auth_cpu_shares: 512,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
    /// Published on 127.0.0.1 only.
    pub auth_db: u16,
    pub payments_db: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Services {
    pub auth: AuthService,
    pub payments: PaymentService,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthService {
    pub instances: u32,
    pub bcrypt_cost: u32,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentService {
    pub instances: u32,
    pub auth_cache_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Nginx {
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// The stricter limit of log-in and registration (bcrypt, the costliest routes), per client
    /// IP, on top of the general one.
    pub login_rate_limit_per_minute: u32,
    pub login_rate_limit_burst: u32,
    /// A site template to render instead of the built-in one (relative to the configuration
    /// file's folder); empty for the built-in `templates/nginx/site.conf.j2`.
    pub site_template: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    pub dir: PathBuf,
    /// Every backup of the last `keep_days` days is kept, and the newest of each of the last
    /// `keep_weeks` weeks and `keep_months` months.
    pub keep_days: u32,
    pub keep_weeks: u32,
    pub keep_months: u32,
    pub cron: String,
    /// When `backup schedule` runs a restore drill of each database's latest backup; empty:
    /// never.
    pub drill_cron: String,
    /// `stackctl doctor` reports a database whose newest good backup is older than this.
    pub max_age_hours: u32,
    /// A database archives its WAL at least this often, even when a segment is not full: the
    /// most a restore to the latest moment can lose.
    pub archive_timeout_secs: u32,
    /// Where each database's archive is also kept, encrypted, and every dump copied: an
    /// absolute folder on another disk or mount (one host), or `s3://bucket/prefix` (with
    /// `[backup.s3]`). Empty: no copy.
    pub copy_to: String,
    pub s3: S3,
}

/// The S3-compatible store of `copy_to = "s3://…"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct S3 {
    /// `https://host[:port]` of the store.
    pub endpoint: String,
    pub region: String,
    /// The bucket in the path (`https://host/bucket/…`), as most self-hosted stores want,
    /// rather than in the host name.
    pub path_style: bool,
    /// A PEM file of the authority that signed the store's certificate, when this machine's
    /// roots do not hold it; empty: the system's.
    pub ca_file: PathBuf,
    /// A file, the owner's only, with the lines `AWS_ACCESS_KEY_ID=…` and
    /// `AWS_SECRET_ACCESS_KEY=…`: kept out of this file, which is shared.
    pub credentials: PathBuf,
}

impl Default for S3 {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            path_style: false,
            ca_file: PathBuf::new(),
            credentials: PathBuf::new(),
        }
    }
}

/// Where the copies off the host go (`backup.copy_to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyTo {
    Folder(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// Where one database's copies go: its folder, or its key prefix in the bucket (no slash at
/// either end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyPlace {
    Folder(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl CopyTo {
    /// `copy_to` as written; `None` when empty.
    pub fn parse(text: &str) -> anyhow::Result<Option<Self>> {
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // S3's rule for bucket names, which also keeps them safe in a host name and a path.
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !valid {
                bail!(
                    "backup.copy_to: {bucket:?} is not a bucket name (3 to 63 lower-case letters, digits, '-' and '.'), e.g. \"s3://my-backups/stackctl\""
                );
            }
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|part| part == "." || part == ".." || (part.is_empty() && !prefix.is_empty()))
                || prefix.chars().any(|c| c.is_control() || c == '\\')
            {
                bail!(
                    "backup.copy_to: {prefix:?} is not a plain key prefix (parts separated by one '/')"
                );
            }
            return Ok(Some(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            }));
        }
        let folder = PathBuf::from(text);
        if !folder.is_absolute() {
            bail!(
                "backup.copy_to: give an absolute folder on another disk or mount, e.g. \"/mnt/offsite/stackctl\", or s3://bucket/prefix"
            );
        }
        Ok(Some(Self::Folder(folder)))
    }

    /// Where `service`'s copies go.
    pub fn place(&self, project: &str, service: crate::stack::Service) -> CopyPlace {
        match self {
            Self::Folder(folder) => CopyPlace::Folder(folder.join(project).join(service.label())),
            Self::S3 { bucket, prefix } => CopyPlace::S3 {
                bucket: bucket.clone(),
                prefix: [prefix.as_str(), project, service.label()]
                    .into_iter()
                    .filter(|part| !part.is_empty())
                    .collect::<Vec<_>>()
                    .join("/"),
            },
        }
    }
}

impl std::fmt::Display for CopyPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Folder(folder) => write!(f, "{}", folder.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl Backup {
    /// Where the copies of `service`'s archive and dumps go, when there is a copy. `copy_to`
    /// is valid here: [`StackConfig::validate`] checked it.
    pub fn copy_place(&self, project: &str, service: crate::stack::Service) -> Option<CopyPlace> {
        CopyTo::parse(&self.copy_to)
            .ok()
            .flatten()
            .map(|to| to.place(project, service))
    }
}

impl Backup {
    pub fn retention(&self) -> crate::backup::Retention {
        crate::backup::Retention {
            days: self.keep_days,
            weeks: self.keep_weeks,
            months: self.keep_months,
        }
    }
}

impl S3 {
    fn validate(&self) -> anyhow::Result<()> {
        let endpoint: hyper::Uri = self.endpoint.parse().map_err(|_| {
            anyhow::anyhow!(
                "backup.s3.endpoint: give the store's https URL, e.g. \"https://s3.eu-west-1.amazonaws.com\""
            )
        })?;
        if endpoint.scheme_str() != Some("https")
            || endpoint.host().is_none_or(str::is_empty)
            || !matches!(endpoint.path(), "" | "/")
            || endpoint.query().is_some()
        {
            bail!(
                "backup.s3.endpoint: {:?} is not https://host[:port] (the copy leaves the host, so TLS only)",
                self.endpoint
            );
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            bail!("backup.s3.region: give the store's region, e.g. \"us-east-1\"");
        }
        if !self.credentials.is_absolute() {
            bail!(
                "backup.s3.credentials: give the absolute path of a file (mode 0600) with AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=… lines"
            );
        }
        if !self.ca_file.as_os_str().is_empty() && !self.ca_file.is_absolute() {
            bail!(
                "backup.s3.ca_file: give an absolute path, or leave it empty for the system's roots"
            );
        }
        Ok(())
    }
}

/// Where `backup schedule` sends what `stackctl doctor` finds, and failed backups.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// An http:// or https:// URL that receives a JSON POST per alert; empty: none.
    pub webhook: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Subject alternative names of the self-signed certificate.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Images {
    /// Debian suite the base image is bootstrapped from.
    pub debian_suite: String,
    /// Debian mirror mmdebstrap downloads from (empty: mmdebstrap's default).
    pub debian_mirror: String,
}

/// The project of a configuration that names none: its containers and network have the plain
/// names of ARCHITECTURE.md.
pub const DEFAULT_PROJECT: &str = "stackctl";

/// Most instances of one service `scale` and the configuration accept.
pub const MAX_INSTANCES: u32 = 16;

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            project: DEFAULT_PROJECT.to_owned(),
            ports: Ports::default(),
            services: Services::default(),
            nginx: Nginx::default(),
            backup: Backup::default(),
            alerts: Alerts::default(),
            tls: Tls::default(),
            images: Images::default(),
            resources: Resources::default(),
            rollout: Rollout::default(),
            cluster: None,
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            http: 80,
            https: 443,
            auth_db: 5432,
            payments_db: 5433,
        }
    }
}

impl Default for AuthService {
    fn default() -> Self {
        Self {
            instances: 2,
            bcrypt_cost: 12,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 7 * 24 * 3600,
        }
    }
}

impl Default for PaymentService {
    fn default() -> Self {
        Self {
            instances: 2,
            auth_cache_secs: 5,
        }
    }
}

impl Default for Nginx {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 100,
            rate_limit_burst: 20,
            login_rate_limit_per_minute: 10,
            login_rate_limit_burst: 5,
            site_template: PathBuf::new(),
        }
    }
}

impl Default for Backup {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("backups"),
            keep_days: 7,
            keep_weeks: 4,
            keep_months: 6,
            max_age_hours: 26,
            archive_timeout_secs: 60,
            copy_to: String::new(),
            s3: S3::default(),
            cron: "0 0 2 * * *".to_owned(),
            drill_cron: "0 0 4 * * SUN".to_owned(),
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        }
    }
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            watch_secs: 30,
            max_5xx_percent: 1.0,
        }
    }
}

impl Default for Images {
    fn default() -> Self {
        Self {
            debian_suite: "bookworm".to_owned(),
            debian_mirror: String::new(),
        }
    }
}

impl StackConfig {
    /// The instance count of an application service.
    pub fn instances(&self, app: App) -> u32 {
        match app {
            App::Auth => self.services.auth.instances,
            App::Payments => self.services.payments.instances,
        }
    }

    pub fn set_instances(&mut self, app: App, n: u32) {
        match app {
            App::Auth => self.services.auth.instances = n,
            App::Payments => self.services.payments.instances = n,
        }
    }

    /// `app`'s settings (its `[services.*]` table) as `other` has them, the count kept.
    pub fn set_service_settings(&mut self, app: App, other: &Self) {
        let instances = self.instances(app);
        match app {
            App::Auth => self.services.auth = other.services.auth.clone(),
            App::Payments => self.services.payments = other.services.payments.clone(),
        }
        self.set_instances(app, instances);
    }

    /// Loads `path` when it exists (a missing default file means the defaults; a missing file
    /// named with `-f` is an error), then applies the environment overrides and validates.
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<Self> {
        let mut table = if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("{} is not valid TOML", path.display()))?
        } else if explicit {
            bail!("configuration file {} does not exist", path.display());
        } else {
            toml::Table::new()
        };
        for (var, key) in ENV_OVERRIDES {
            if let Ok(value) = std::env::var(var) {
                set_key(&mut table, key, &value)
                    .with_context(|| format!("environment variable {var}"))?;
            }
        }
        // The path of a bad value (ports.http) goes into the message.
        let config: Self =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner().message())
            })?;
        config
            .validate()
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.project.is_empty()
            || !self
                .project
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("project: use lower-case letters, digits and '-' only");
        }
        for (key, n) in [
            ("services.auth.instances", self.services.auth.instances),
            (
                "services.payments.instances",
                self.services.payments.instances,
            ),
        ] {
            if !(1..=MAX_INSTANCES).contains(&n) {
                bail!("{key}: must be between 1 and {MAX_INSTANCES}, not {n}");
            }
        }
        let ports = [
            ("ports.http", self.ports.http),
            ("ports.https", self.ports.https),
            ("ports.auth_db", self.ports.auth_db),
            ("ports.payments_db", self.ports.payments_db),
        ];
        for (i, (key, port)) in ports.iter().enumerate() {
            if *port == 0 {
                bail!("{key}: must be a port number from 1 to 65535");
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                bail!("{key}: port {port} is already used by {other}");
            }
        }
        if !(10..=31).contains(&self.services.auth.bcrypt_cost) {
            bail!("services.auth.bcrypt_cost: must be between 10 and 31");
        }
        if self.services.payments.auth_cache_secs > 30 {
            bail!("services.payments.auth_cache_secs: must be at most 30");
        }
        if self.nginx.rate_limit_per_minute == 0 {
            bail!("nginx.rate_limit_per_minute: must be at least 1");
        }
        let r = &self.resources;
        for (key, mb) in [
            ("resources.database_memory_mb", r.database_memory_mb),
            ("resources.service_memory_mb", r.service_memory_mb),
            ("resources.edge_memory_mb", r.edge_memory_mb),
        ] {
            if mb < 64 {
                bail!("{key}: must be at least 64 (MiB)");
            }
        }
        if self.rollout.watch_secs > 3600 {
            bail!("rollout.watch_secs: must be at most 3600 (0 turns the watch off)");
        }
        if !(0.0..=100.0).contains(&self.rollout.max_5xx_percent) {
            bail!("rollout.max_5xx_percent: must be from 0 to 100");
        }
        if r.pids < 64 {
            bail!("resources.pids: must be at least 64");
        }
        if !(2..=262_144).contains(&r.auth_cpu_shares) {
            bail!("resources.auth_cpu_shares: must be between 2 and 262144 (others have 1024)");
        }
        if self.nginx.login_rate_limit_per_minute == 0 {
            bail!("nginx.login_rate_limit_per_minute: must be at least 1");
        }
        if self.tls.names.is_empty() {
            bail!("tls.names: give at least one name, e.g. [\"localhost\"]");
        }
        if self.backup.keep_days == 0 {
            bail!("backup.keep_days: must be at least 1");
        }
        if self.backup.max_age_hours == 0 {
            bail!("backup.max_age_hours: must be at least 1");
        }
        if !(1..=3600).contains(&self.backup.archive_timeout_secs) {
            bail!("backup.archive_timeout_secs: must be between 1 and 3600");
        }
        if let Some(to) = CopyTo::parse(&self.backup.copy_to)? {
            if self.cluster.is_some() {
                bail!(
                    "backup.copy_to: copies are made on one host so far; leave it empty with [cluster]"
                );
            }
            if matches!(to, CopyTo::S3 { .. }) {
                self.backup.s3.validate()?;
            }
        }
        if !self.alerts.webhook.is_empty() {
            crate::alerts::parse_webhook(&self.alerts.webhook)?;
        }
        parse_cron(&self.backup.cron).context("backup.cron")?;
        if !self.backup.drill_cron.is_empty() {
            parse_cron(&self.backup.drill_cron).context("backup.drill_cron")?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }
}

/// A cron expression with seconds (`"0 0 2 * * *"`: 02:00:00 every day).
pub fn parse_cron(expr: &str) -> anyhow::Result<croner::Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(expr)
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; give six fields with seconds first, e.g. \"0 0 2 * * *\" for 02:00 daily"
            )
        })
}

/// Sets a dotted `key` in `table`, parsing `value` as a TOML value (a bare word is a string).
fn set_key(table: &mut toml::Table, key: &str, value: &str) -> anyhow::Result<()> {
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().context("empty key")?;
    let mut current = table;
    for part in parts {
        current = current
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("{part} is not a table"))?;
    }
    current.insert(last.to_owned(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<StackConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, text).unwrap();
        StackConfig::load(&path, true)
    }

    #[test]
    fn missing_default_file_means_defaults() {
        let config = StackConfig::load(Path::new("/nonexistent/stack.toml"), false).unwrap();
        assert_eq!(config, StackConfig::default());
        assert!(StackConfig::load(Path::new("/nonexistent/stack.toml"), true).is_err());
    }

    #[test]
    fn file_values_override_defaults() {
        let config = load("[ports]\nhttp = 8080\n[services.auth]\ninstances = 3\n").unwrap();
        assert_eq!(config.ports.http, 8080);
        assert_eq!(config.ports.https, 443);
        assert_eq!(config.services.auth.instances, 3);
    }

    #[test]
    fn a_cluster_table_is_read() {
        let config = load(
            "[cluster]\nnodes = [\n  { engine = \"unix:///n1.sock\", labels = [\"edge\", \"auth-db\", \"payments-db\"] },\n  { engine = \"tcp://10.0.0.2:2376\", tls = { ca = \"ca.pem\", cert = \"c.pem\", key = \"k.pem\" } },\n]\n",
        )
        .unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.nodes.len(), 2);
        assert_eq!(
            cluster.nodes[1].tls.as_ref().unwrap().key,
            Path::new("k.pem")
        );
        assert_eq!(load("").unwrap().cluster, None);
    }

    #[test]
    fn a_copy_goes_to_a_folder_or_a_bucket_with_one_prefix_per_database() {
        use crate::stack::Service;
        let place = |copy_to: &str| {
            CopyTo::parse(copy_to)
                .unwrap()
                .map(|to| to.place("default", Service::PaymentsDb).to_string())
        };
        assert_eq!(place(""), None);
        assert_eq!(
            place("/mnt/offsite").as_deref(),
            Some("/mnt/offsite/default/payments-db")
        );
        assert_eq!(
            place("s3://my-backups").as_deref(),
            Some("s3://my-backups/default/payments-db")
        );
        assert_eq!(
            place("s3://my.backups/stackctl/eu/").as_deref(),
            Some("s3://my.backups/stackctl/eu/default/payments-db")
        );
        let config = load(
            "[backup]\ncopy_to = \"s3://my-backups/x\"\n[backup.s3]\nendpoint = \"https://minio.lan:9000\"\npath_style = true\ncredentials = \"/etc/stackctl/s3\"\n",
        )
        .unwrap();
        assert_eq!(config.backup.s3.region, "us-east-1");
        assert_eq!(
            config.backup.copy_place("default", Service::AuthDb),
            Some(CopyPlace::S3 {
                bucket: "my-backups".to_owned(),
                prefix: "x/default/auth-db".to_owned()
            })
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[ports]\nhtp = 80\n", "htp"),
            (
                "[services.auth]\ninstances = 0\n",
                "services.auth.instances",
            ),
            ("[ports]\nhttp = \"eighty\"\n", "http"),
            ("[ports]\nhttp = 443\n", "ports.http"),
            (
                "[nginx]\nrate_limit_per_minute = 0\n",
                "nginx.rate_limit_per_minute",
            ),
            ("[backup]\ncron = \"0 2 * * *\"\n", "backup.cron"),
            ("[rollout]\nwatch_secs = 7200\n", "rollout.watch_secs"),
            (
                "[rollout]\nmax_5xx_percent = 101.0\n",
                "rollout.max_5xx_percent",
            ),
            (
                "[backup]\narchive_timeout_secs = 0\n",
                "backup.archive_timeout_secs",
            ),
            ("[backup]\ncopy_to = \"offsite\"\n", "backup.copy_to"),
            ("[backup]\ncopy_to = \"s3://My_Bucket\"\n", "backup.copy_to"),
            (
                "[backup]\ncopy_to = \"s3://bk1/a/../c\"\n",
                "backup.copy_to",
            ),
            (
                "[backup]\ncopy_to = \"s3://bk1\"\n[backup.s3]\nendpoint = \"http://s3.test\"\ncredentials = \"/k\"\n",
                "backup.s3.endpoint",
            ),
            (
                "[backup]\ncopy_to = \"s3://bk1\"\n[backup.s3]\nendpoint = \"https://s3.test/x\"\ncredentials = \"/k\"\n",
                "backup.s3.endpoint",
            ),
            (
                "[backup]\ncopy_to = \"s3://bk1\"\n[backup.s3]\nendpoint = \"https://s3.test\"\n",
                "backup.s3.credentials",
            ),
            (
                "[backup]\ncopy_to = \"s3://bk1\"\n[backup.s3]\nendpoint = \"https://s3.test\"\ncredentials = \"/k\"\nca_file = \"ca.pem\"\n",
                "backup.s3.ca_file",
            ),
            (
                "[backup]\ncopy_to = \"/mnt/offsite\"\n[cluster]\nnodes = [{ engine = \"unix:///a.sock\", labels = [\"edge\", \"auth-db\", \"payments-db\"] }]\n",
                "backup.copy_to",
            ),
            (
                "[cluster]\nnodes = [{ engine = \"unix:///a.sock\", labels = [\"edge\", \"db\"] }]\n",
                "cluster.nodes[0].labels[1]",
            ),
            (
                "[cluster]\nnodes = [{ engine = \"unix:///a.sock\", address = \"node-1\" }]\n",
                "cluster.nodes[0].address",
            ),
            (
                "[cluster]\nnodes = [{ engine = \"http://a:2375\" }]\n",
                "cluster.nodes[0].engine",
            ),
        ] {
            let err = format!("{:#}", load(text).unwrap_err());
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }
}
