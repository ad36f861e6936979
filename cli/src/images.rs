//! The stack's images, built locally so `up` works on an engine with no registry: PostgreSQL and
//! nginx images, each from a Debian root file system of its own bootstrapped with mmdebstrap
//! and imported, and `FROM scratch` images of the services, which are this very program
//! (`stackctl serve auth|payments`). Each tag carries a hash of its inputs, so an image is
//! rebuilt only when they change.

use std::{collections::HashMap, path::PathBuf, process::Stdio};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{
    config::StackConfig,
    docker::Engine,
    stack::{self, App, Service},
    ui::Ui,
};

/// A Debian root file system holding what one image runs (and what its backups and health
/// checks need), nothing of the other image's.
struct Rootfs {
    name: &'static str,
    packages: &'static [&'static str],
    /// Paths (under the root) that the image never uses, removed after the packages are set up.
    unused: &'static [&'static str],
}

const POSTGRES_ROOTFS: Rootfs = Rootfs {
    name: "postgres",
    // pgBackRest: continuous WAL archiving and point-in-time recovery of the databases.
    packages: &["postgresql-15", "pgbackrest", "ca-certificates"],
    unused: &[
        // The JIT compiler (LLVM, and z3 that it links) is two thirds of the packages' size;
        // the entrypoint runs PostgreSQL with jit=off.
        "usr/lib/x86_64-linux-gnu/libLLVM-*",
        "usr/lib/x86_64-linux-gnu/libz3.so*",
        "usr/lib/postgresql/15/lib/llvmjit*",
        "usr/lib/postgresql/15/lib/bitcode",
        // The cluster the package makes; the image's is made in PGDATA on first start.
        "var/lib/postgresql/15",
        "etc/postgresql/15",
    ],
};

const NGINX_ROOTFS: Rootfs = Rootfs {
    name: "nginx",
    // Routing without reloads (stack_routes.lua), and stack-edge's client for it (curl, awk).
    packages: &[
        "nginx-light",
        "libnginx-mod-http-lua",
        "lua-cjson",
        "curl",
        "ca-certificates",
        "mawk",
    ],
    // iproute2's tools (a dependency of nginx's package) and the openssl program (that
    // ca-certificates' set-up runs) are never run in the edge.
    unused: &[
        "usr/sbin/tc",
        "usr/sbin/devlink",
        "usr/sbin/tipc",
        "usr/sbin/bridge",
        "usr/bin/rdma",
        "usr/bin/openssl",
    ],
};

/// Removed from every root file system: what only package installation and people use.
/// PostgreSQL's `psql` and `pg_dump` are run from its bin folder, not through the Perl
/// wrappers of /usr/bin.
const UNUSED_EVERYWHERE: &[&str] = &[
    "usr/bin/perl*",
    "usr/share/perl",
    "usr/share/perl5",
    "usr/share/bash-completion",
    "usr/lib/x86_64-linux-gnu/perl*",
    "usr/share/i18n",
    "usr/lib/x86_64-linux-gnu/gconv",
    "var/lib/dpkg/info",
    "var/cache/*",
    "var/log/*",
];

/// Bumped when a recipe changes in a way its package list and removals do not show.
const ROOTFS_RECIPE: &str = "2";

/// Where a service image holds this program, which its entrypoint and health check run.
pub const SERVICE_BINARY: &str = "/stackctl";

const POSTGRES_DOCKERFILE: &str = include_str!("../../templates/images/postgres/Dockerfile");
const POSTGRES_ENTRYPOINT: &str = include_str!("../../templates/images/postgres/entrypoint.sh");
const POSTGRES_RECOVER: &str = include_str!("../../templates/images/postgres/recover.sh");
const POSTGRES_ARCHIVE_PUSH: &str = include_str!("../../templates/images/postgres/archive-push.sh");
const NGINX_DOCKERFILE: &str = include_str!("../../templates/images/nginx/Dockerfile");
const NGINX_CONF: &str = include_str!("../../nginx/nginx.conf");
const NGINX_TLS_PARAMS: &str = include_str!("../../nginx/tls-params.conf");
const NGINX_ENTRYPOINT: &str = include_str!("../../templates/images/nginx/stack-edge");
const NGINX_ROUTES: &str = include_str!("../../templates/images/nginx/stack_routes.lua");
/// `{service}` stands for the service's name.
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

/// Builds the PostgreSQL image if it is missing and returns its tag.
pub async fn ensure_postgres(
    engine: &Engine,
    config: &StackConfig,
    ui: &Ui,
) -> anyhow::Result<String> {
    let [base] = ensure_rootfs(engine, config, ui, [&POSTGRES_ROOTFS]).await?;
    postgres(engine, ui, &base).await
}

/// Builds what is missing and returns the tags.
pub async fn ensure(engine: &Engine, config: &StackConfig, ui: &Ui) -> anyhow::Result<ImageSet> {
    let [postgres_base, nginx_base] =
        ensure_rootfs(engine, config, ui, [&POSTGRES_ROOTFS, &NGINX_ROOTFS]).await?;
    let postgres = postgres(engine, ui, &postgres_base).await?;
    let nginx = derived(
        engine,
        ui,
        "nginx",
        &nginx_base,
        &[
            ("Dockerfile", NGINX_DOCKERFILE.as_bytes(), 0o644),
            ("nginx.conf", NGINX_CONF.as_bytes(), 0o644),
            ("tls-params.conf", NGINX_TLS_PARAMS.as_bytes(), 0o644),
            ("stack-edge", NGINX_ENTRYPOINT.as_bytes(), 0o755),
            ("stack_routes.lua", NGINX_ROUTES.as_bytes(), 0o644),
        ],
    )
    .await?;
    // The running program, even when its file has been replaced since it started.
    let program = std::fs::read("/proc/self/exe").context("read this program (/proc/self/exe)")?;
    let auth = service_image(engine, ui, App::Auth, &program).await?;
    let payments = service_image(engine, ui, App::Payments, &program).await?;
    Ok(ImageSet {
        postgres,
        nginx,
        auth,
        payments,
    })
}

async fn postgres(engine: &Engine, ui: &Ui, base: &str) -> anyhow::Result<String> {
    derived(
        engine,
        ui,
        "postgres",
        base,
        &[
            ("Dockerfile", POSTGRES_DOCKERFILE.as_bytes(), 0o644),
            ("entrypoint.sh", POSTGRES_ENTRYPOINT.as_bytes(), 0o755),
            ("recover.sh", POSTGRES_RECOVER.as_bytes(), 0o755),
            ("archive-push.sh", POSTGRES_ARCHIVE_PUSH.as_bytes(), 0o755),
        ],
    )
    .await
}

fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())[..12].to_owned()
}

/// The tags of the root file systems' images, in the order given; those missing are
/// bootstrapped side by side (mmdebstrap mostly waits on the mirror).
async fn ensure_rootfs<const N: usize>(
    engine: &Engine,
    config: &StackConfig,
    ui: &Ui,
    wanted: [&Rootfs; N],
) -> anyhow::Result<[String; N]> {
    let suite = &config.images.debian_suite;
    let tags = wanted.map(|rootfs| {
        let hash = short_hash(&[
            ROOTFS_RECIPE.as_bytes(),
            suite.as_bytes(),
            rootfs.packages.join(",").as_bytes(),
            rootfs.unused.join(",").as_bytes(),
            UNUSED_EVERYWHERE.join(",").as_bytes(),
            config.images.debian_mirror.as_bytes(),
        ]);
        format!("{suite}-{hash}")
    });
    let mut missing = Vec::new();
    for (rootfs, tag) in wanted.iter().zip(&tags) {
        if !engine.image_exists(&rootfs_image(rootfs, tag)).await? {
            missing.push((*rootfs, tag.as_str()));
        }
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(rootfs, _)| rootfs.name).collect();
        ui.step(&format!(
            "bootstrapping the Debian {suite} root file system of {} with mmdebstrap (about a minute, once)",
            names.join(" and ")
        ));
        let spinner = ui.spinner("mmdebstrap");
        let built = futures_util::future::try_join_all(
            missing
                .iter()
                .map(|(rootfs, tag)| bootstrap(engine, config, rootfs, tag)),
        )
        .await;
        spinner.finish_and_clear();
        built?;
    }
    Ok(std::array::from_fn(|i| rootfs_image(wanted[i], &tags[i])))
}

fn rootfs_image(rootfs: &Rootfs, tag: &str) -> String {
    format!("stackctl/{}-base:{tag}", rootfs.name)
}

/// Runs mmdebstrap for one root file system and imports it as `stackctl/<name>-base:<tag>`.
async fn bootstrap(
    engine: &Engine,
    config: &StackConfig,
    rootfs: &Rootfs,
    tag: &str,
) -> anyhow::Result<()> {
    let work = tempdir()?;
    let tarball = work.join("rootfs.tar");
    let unused: Vec<&str> = rootfs
        .unused
        .iter()
        .chain(UNUSED_EVERYWHERE)
        .copied()
        .collect();
    let mut cmd = tokio::process::Command::new("mmdebstrap");
    // Only the Essential packages beneath the image's own: no apt, no package manager at all
    // at run time.
    cmd.args(["--variant=essential", "--quiet"])
        .arg(format!("--include={}", rootfs.packages.join(",")))
        // Documentation, manuals and translations are dead weight in a container.
        .args([
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
        ])
        // The merged /usr of bookworm through usr-is-merged, not usrmerge, which pulls in Perl.
        .arg("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr")
        .arg(format!(
            "--customize-hook=cd \"$1\" && rm -rf {}",
            unused.join(" ")
        ))
        .arg(&config.images.debian_suite)
        .arg(&tarball);
    if !config.images.debian_mirror.is_empty() {
        cmd.arg(&config.images.debian_mirror);
    }
    let out = cmd.stdin(Stdio::null()).output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "mmdebstrap is not installed: install it (apt-get install mmdebstrap on Debian or Ubuntu) and run stackctl up again"
            )
        } else {
            anyhow::Error::new(e).context("run mmdebstrap")
        }
    })?;
    if !out.status.success() {
        bail!(
            "mmdebstrap of the {} root file system failed ({}): {}\ncheck that this host reaches the Debian mirror",
            rootfs.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    engine
        .import_rootfs(&tarball, &format!("stackctl/{}-base", rootfs.name), tag)
        .await?;
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

/// An image `FROM` a root file system's, from embedded files.
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

/// A service's image: `program` (this one, statically linked, so it runs alone in a `FROM
/// scratch` image), started as `stackctl serve <service>`.
async fn service_image(
    engine: &Engine,
    ui: &Ui,
    app: App,
    program: &[u8],
) -> anyhow::Result<String> {
    let service = app.service().label();
    let dockerfile = SERVICE_DOCKERFILE.replace("{service}", service);
    let name = match app {
        App::Auth => "auth-svc",
        App::Payments => "payment-svc",
    };
    let tag = format!(
        "stackctl/{name}:{}",
        short_hash(&[program, dockerfile.as_bytes()])
    );
    if engine.image_exists(&tag).await? {
        return Ok(tag);
    }
    ui.step(&format!("building image {tag}"));
    if cfg!(debug_assertions) {
        ui.detail("from a debug build of stackctl: the service is as slow as it (use --release)");
    }
    let passwd = b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    let context = tar_context(&[
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("passwd", passwd, 0o644),
        ("stackctl", program, 0o755),
    ])?;
    let labels = HashMap::from([("stackctl.image".to_owned(), name.to_owned())]);
    let spinner = ui.spinner(name);
    engine
        .build_image_with_args(context, &tag, labels, HashMap::new(), |line| {
            spinner.set_message(line.to_owned())
        })
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
