//! The stack's images, built locally so `up` works on an engine with no registry: a Debian base
//! bootstrapped with mmdebstrap and imported, PostgreSQL and nginx images derived from it, and
//! `FROM scratch` images of the statically linked services. Each tag carries a hash of its
//! inputs, so an image is rebuilt only when they change.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{
    config::StackConfig,
    docker::Engine,
    stack::{self, App, Service},
    ui::Ui,
};

const BASE_PACKAGES: &[&str] = &[
    "postgresql-15",
    // Continuous WAL archiving and point-in-time recovery of the databases.
    "pgbackrest",
    "nginx-light",
    // Routing without reloads (stack_routes.lua), and stack-edge's client for it.
    "libnginx-mod-http-lua",
    "lua-cjson",
    "curl",
    "ca-certificates",
];
/// Bumped when the base recipe changes in a way the package list does not show.
const BASE_RECIPE: &str = "1";
const RUST_TARGET: &str = "x86_64-unknown-linux-gnu";

const POSTGRES_DOCKERFILE: &str = include_str!("../../templates/images/postgres/Dockerfile");
const POSTGRES_ENTRYPOINT: &str = include_str!("../../templates/images/postgres/entrypoint.sh");
const POSTGRES_RECOVER: &str = include_str!("../../templates/images/postgres/recover.sh");
const POSTGRES_ARCHIVE_PUSH: &str = include_str!("../../templates/images/postgres/archive-push.sh");
const NGINX_DOCKERFILE: &str = include_str!("../../templates/images/nginx/Dockerfile");
const NGINX_CONF: &str = include_str!("../../nginx/nginx.conf");
const NGINX_TLS_PARAMS: &str = include_str!("../../nginx/tls-params.conf");
const NGINX_ENTRYPOINT: &str = include_str!("../../templates/images/nginx/stack-edge");
const NGINX_ROUTES: &str = include_str!("../../templates/images/nginx/stack_routes.lua");
const SERVICE_DOCKERFILE: &str = include_str!("../../templates/images/service/Dockerfile");

/// The tags of every image the stack runs.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub postgres: String,
    pub nginx: String,
    pub auth: String,
    pub payments: String,
}

impl ImageSet {
    pub fn all(&self) -> [&str; 4] {
        [&self.postgres, &self.nginx, &self.auth, &self.payments]
    }

    /// The image of an application service.
    pub fn app(&self, app: App) -> &str {
        match app {
            App::Auth => &self.auth,
            App::Payments => &self.payments,
        }
    }

    pub fn set_app(&mut self, app: App, image: String) {
        match app {
            App::Auth => self.auth = image,
            App::Payments => self.payments = image,
        }
    }
}

/// The images the stack's containers run now: what `scale` and `restart` start more of, so that
/// they never deploy new code. For a service, its lowest-numbered running instance decides.
pub async fn running(engine: &Engine, project: &str) -> anyhow::Result<ImageSet> {
    let mut containers = stack::containers(engine, project).await?;
    containers.retain(|c| c.running);
    containers.sort_by_key(|c| {
        let digits = c.name.trim_start_matches(|ch: char| !ch.is_ascii_digit());
        digits.parse::<u32>().unwrap_or(0)
    });
    let image = |service: Service| -> anyhow::Result<String> {
        containers
            .iter()
            .find(|c| c.service == Some(service))
            .map(|c| c.image.clone())
            .with_context(|| {
                format!(
                    "no {} container is running in stack '{project}'; start the stack with `stackctl up`",
                    service.label()
                )
            })
    };
    Ok(ImageSet {
        postgres: image(Service::AuthDb)?,
        nginx: image(Service::Nginx)?,
        auth: image(Service::Auth)?,
        payments: image(Service::Payments)?,
    })
}

/// Where the service sources are: `STACKCTL_SOURCE_DIR`, else the checkout stackctl was built from.
pub fn source_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("STACKCTL_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    if !dir.join("services/auth/Cargo.toml").exists() {
        bail!(
            "the service sources are not at {} (set STACKCTL_SOURCE_DIR to the stackctl checkout)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Builds the PostgreSQL image if it is missing and returns its tag.
pub async fn ensure_postgres(
    engine: &Engine,
    config: &StackConfig,
    ui: &Ui,
) -> anyhow::Result<String> {
    let base = ensure_base(engine, config, ui).await?;
    derived(
        engine,
        ui,
        "postgres",
        &base,
        &[
            ("Dockerfile", POSTGRES_DOCKERFILE.as_bytes(), 0o644),
            ("entrypoint.sh", POSTGRES_ENTRYPOINT.as_bytes(), 0o755),
            ("recover.sh", POSTGRES_RECOVER.as_bytes(), 0o755),
            ("archive-push.sh", POSTGRES_ARCHIVE_PUSH.as_bytes(), 0o755),
        ],
    )
    .await
}

/// Builds what is missing and returns the tags.
pub async fn ensure(engine: &Engine, config: &StackConfig, ui: &Ui) -> anyhow::Result<ImageSet> {
    let postgres = ensure_postgres(engine, config, ui).await?;
    let base = ensure_base(engine, config, ui).await?;
    let nginx = derived(
        engine,
        ui,
        "nginx",
        &base,
        &[
            ("Dockerfile", NGINX_DOCKERFILE.as_bytes(), 0o644),
            ("nginx.conf", NGINX_CONF.as_bytes(), 0o644),
            ("tls-params.conf", NGINX_TLS_PARAMS.as_bytes(), 0o644),
            ("stack-edge", NGINX_ENTRYPOINT.as_bytes(), 0o755),
            ("stack_routes.lua", NGINX_ROUTES.as_bytes(), 0o644),
        ],
    )
    .await?;
    let binaries = build_services(ui).await?;
    let auth = service_image(engine, ui, "auth-svc", &binaries.join("auth-svc")).await?;
    let payments = service_image(engine, ui, "payment-svc", &binaries.join("payment-svc")).await?;
    Ok(ImageSet {
        postgres,
        nginx,
        auth,
        payments,
    })
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())[..12].to_owned()
}

async fn ensure_base(engine: &Engine, config: &StackConfig, ui: &Ui) -> anyhow::Result<String> {
    let suite = &config.images.debian_suite;
    let packages = BASE_PACKAGES.join(",");
    let hash = short_hash(&[
        BASE_RECIPE.as_bytes(),
        suite.as_bytes(),
        packages.as_bytes(),
        config.images.debian_mirror.as_bytes(),
    ]);
    let (repo, tag) = ("stackctl/base", format!("{suite}-{hash}"));
    let full = format!("{repo}:{tag}");
    if engine.image_exists(&full).await? {
        return Ok(full);
    }
    ui.step(&format!(
        "building the Debian {suite} base image with mmdebstrap (about a minute, once)"
    ));
    let work = tempdir()?;
    let tarball = work.join("rootfs.tar");
    let mut cmd = tokio::process::Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--quiet"])
        .arg(format!("--include={packages}"))
        // Documentation, manuals and translations are dead weight in a container.
        .args([
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
        ])
        .arg(suite)
        .arg(&tarball);
    if !config.images.debian_mirror.is_empty() {
        cmd.arg(&config.images.debian_mirror);
    }
    let spinner = ui.spinner("mmdebstrap");
    let out = cmd.stdin(Stdio::null()).output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "mmdebstrap is not installed: run setup/setup.sh (or apt-get install mmdebstrap)"
            )
        } else {
            anyhow::Error::new(e).context("run mmdebstrap")
        }
    })?;
    spinner.finish_and_clear();
    if !out.status.success() {
        bail!(
            "mmdebstrap failed ({}): {}\ncheck that this host reaches the Debian mirror",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let spinner = ui.spinner("importing the root file system");
    engine.import_rootfs(&tarball, repo, &tag).await?;
    spinner.finish_and_clear();
    std::fs::remove_dir_all(&work).ok();
    Ok(full)
}

/// An image `FROM` the base, from embedded files.
async fn derived(
    engine: &Engine,
    ui: &Ui,
    name: &str,
    base: &str,
    files: &[(&str, &[u8], u32)],
) -> anyhow::Result<String> {
    let mut parts: Vec<&[u8]> = vec![base.as_bytes()];
    parts.extend(files.iter().map(|(_, bytes, _)| *bytes));
    let tag = format!("stackctl/{name}:{}", short_hash(&parts));
    if engine.image_exists(&tag).await? {
        return Ok(tag);
    }
    ui.step(&format!("building image {tag}"));
    let context = tar_context(files)?;
    let spinner = ui.spinner(name);
    let labels = HashMap::from([("stackctl.image".to_owned(), name.to_owned())]);
    let build = engine.build_image_with_args(
        context,
        &tag,
        labels,
        HashMap::from([("BASE".to_owned(), base.to_owned())]),
        |line| spinner.set_message(line.to_owned()),
    );
    build.await?;
    spinner.finish_and_clear();
    Ok(tag)
}

/// Release binaries of both services, statically linked against glibc so that a `FROM scratch`
/// image runs them on any host.
async fn build_services(ui: &Ui) -> anyhow::Result<PathBuf> {
    let source = source_dir()?;
    ui.step("building the service binaries (cargo build --release, static)");
    let status =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .current_dir(&source)
            .args(["build", "--release", "--locked", "--target", RUST_TARGET])
            .args(["-p", "auth-svc", "-p", "payment-svc", "--bins"])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .stdin(Stdio::null())
            .status()
            .await
            .context("run cargo (is Rust installed?)")?;
    if !status.success() {
        bail!("cargo build of the services failed ({status}); see its output above");
    }
    Ok(source.join("target").join(RUST_TARGET).join("release"))
}

async fn service_image(
    engine: &Engine,
    ui: &Ui,
    name: &str,
    binary: &Path,
) -> anyhow::Result<String> {
    let bytes = std::fs::read(binary).with_context(|| format!("read {}", binary.display()))?;
    let tag = format!(
        "stackctl/{name}:{}",
        short_hash(&[&bytes, SERVICE_DOCKERFILE.as_bytes()])
    );
    if engine.image_exists(&tag).await? {
        return Ok(tag);
    }
    ui.step(&format!("building image {tag}"));
    let passwd = b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    let context = tar_context(&[
        ("Dockerfile", SERVICE_DOCKERFILE.as_bytes(), 0o644),
        ("passwd", passwd, 0o644),
        (name, &bytes, 0o755),
    ])?;
    let labels = HashMap::from([("stackctl.image".to_owned(), name.to_owned())]);
    let spinner = ui.spinner(name);
    engine
        .build_image_with_args(
            context,
            &tag,
            labels,
            HashMap::from([("BINARY".to_owned(), name.to_owned())]),
            |line| spinner.set_message(line.to_owned()),
        )
        .await?;
    spinner.finish_and_clear();
    Ok(tag)
}

fn tar_context(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, name, *bytes)
            .with_context(|| format!("add {name} to the build context"))?;
    }
    builder.into_inner().context("finish the build context")
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "stackctl-{}",
        short_hash(&[&rand::random::<[u8; 16]>()])
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
