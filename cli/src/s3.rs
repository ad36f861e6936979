//! The S3-compatible store of `backup.copy_to = "s3://…"`, as stackctl itself uses it: the
//! dumps' copies (pgBackRest in the database containers keeps the archive's copy there on its
//! own). Requests are signed by rusty-s3 and sent over TLS by hyper.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Empty, StreamBody, combinators::BoxBody};
use hyper::{Method, StatusCode, body::Bytes};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rusty_s3::{
    Bucket, Credentials, S3Action, UrlStyle,
    actions::{DeleteObject, HeadBucket, ListObjectsV2, PutObject},
};

use crate::config;

/// How long a signed request stays valid: it is sent at once.
const SIGNED_FOR: Duration = Duration::from_secs(600);
/// The most one PUT takes (S3's limit); larger dumps need a multipart upload.
const MAX_OBJECT: u64 = 5 * 1024 * 1024 * 1024;
/// No request waits longer than this for the store to answer.
const TIMEOUT: Duration = Duration::from_secs(600);

/// The access key of the store, read from `backup.s3.credentials`.
pub struct Keys {
    pub id: String,
    pub secret: String,
}

impl Keys {
    /// Reads the file, which must be its owner's only: the secret key is in it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .with_context(|| format!("backup.s3.credentials: cannot read {shown}"))?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!(
                "backup.s3.credentials: {shown} can be read by others than its owner; `chmod 600 {shown}`"
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("backup.s3.credentials: cannot read {shown}"))?;
        let (mut id, mut secret) = (None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some(("AWS_ACCESS_KEY_ID", value)) if !value.is_empty() => {
                    id = Some(value.to_owned());
                }
                Some(("AWS_SECRET_ACCESS_KEY", value)) if !value.is_empty() => {
                    secret = Some(value.to_owned());
                }
                // The line itself may hold a secret: never shown.
                _ => bail!(
                    "backup.s3.credentials: line {} of {shown} is not AWS_ACCESS_KEY_ID=… or AWS_SECRET_ACCESS_KEY=…",
                    n + 1
                ),
            }
        }
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(Self { id, secret }),
            _ => bail!(
                "backup.s3.credentials: {shown} needs both AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=…"
            ),
        }
    }
}

/// One object of a listing.
pub struct Object {
    pub key: String,
    pub size: u64,
}

type Body = BoxBody<Bytes, std::io::Error>;

/// A bucket of the store, with the keys to it.
pub struct Store {
    bucket: Bucket,
    keys: Credentials,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Store {
    pub fn new(settings: &config::S3, bucket: &str) -> anyhow::Result<Self> {
        let keys = Keys::load(&settings.credentials)?;
        let endpoint: url::Url = settings
            .endpoint
            .parse()
            .context("backup.s3.endpoint: not a URL")?;
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, bucket.to_owned(), settings.region.clone())
            .context("backup.s3: cannot name the bucket at that endpoint")?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls(&settings.ca_file)?)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            bucket,
            keys: Credentials::new(keys.id, keys.secret),
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// Says what is wrong when the bucket cannot be used with these keys.
    pub async fn check(&self) -> anyhow::Result<()> {
        let url = HeadBucket::new(&self.bucket, Some(&self.keys)).sign(SIGNED_FOR);
        let (status, _) = self.send(Method::HEAD, url, empty(), None).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => bail!(
                "the bucket {} does not exist at {}; create it first",
                self.bucket.name(),
                self.bucket.base_url()
            ),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => bail!(
                "the store at {} refuses the keys in backup.s3.credentials for the bucket {} ({status})",
                self.bucket.base_url(),
                self.bucket.name()
            ),
            s => bail!("the store at {} answered {s}", self.bucket.base_url()),
        }
    }

    /// Uploads the file at `path` as `key`: the object appears whole or not at all.
    pub async fn put(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        let size = file.metadata().await?.len();
        if size > MAX_OBJECT {
            bail!(
                "{} is over 5 GiB, more than one upload to the store takes",
                path.display()
            );
        }
        let chunks = tokio_util::io::ReaderStream::new(file).map_ok(hyper::body::Frame::data);
        let url = PutObject::new(&self.bucket, Some(&self.keys), key).sign(SIGNED_FOR);
        let body = BoxBody::new(StreamBody::new(chunks));
        let (status, text) = self.send(Method::PUT, url, body, Some(size)).await?;
        if !status.is_success() {
            bail!("the store refused {key}: {status} {}", first_line(&text));
        }
        Ok(())
    }

    /// Every object whose key starts with `prefix`.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<Object>> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.keys));
            action.with_prefix(prefix);
            if let Some(token) = &token {
                action.with_continuation_token(token.clone());
            }
            let url = action.sign(SIGNED_FOR);
            let (status, text) = self.send(Method::GET, url, empty(), None).await?;
            if !status.is_success() {
                bail!(
                    "the store cannot list {prefix}: {status} {}",
                    first_line(&text)
                );
            }
            let page = ListObjectsV2::parse_response(&text)
                .with_context(|| format!("the store's listing of {prefix} is not S3's"))?;
            found.extend(page.contents.into_iter().map(|o| Object {
                key: o.key,
                size: o.size,
            }));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(found),
            }
        }
    }

    /// Deletes `key`; a key that is not there is no error.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let url = DeleteObject::new(&self.bucket, Some(&self.keys), key).sign(SIGNED_FOR);
        let (status, text) = self.send(Method::DELETE, url, empty(), None).await?;
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            bail!(
                "the store cannot delete {key}: {status} {}",
                first_line(&text)
            );
        }
        Ok(())
    }

    /// Sends a signed request; the answer's status and body.
    async fn send(
        &self,
        method: Method,
        url: url::Url,
        body: Body,
        length: Option<u64>,
    ) -> anyhow::Result<(StatusCode, String)> {
        // The signature is in the query; the URL carries no key, only its signature.
        let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(hyper::header::USER_AGENT, "stackctl");
        if let Some(length) = length {
            request = request.header(hyper::header::CONTENT_LENGTH, length);
        }
        let exchange = async {
            let response = self.client.request(request.body(body)?).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the store did not answer within {} s", TIMEOUT.as_secs())
            })?
            .with_context(|| format!("cannot reach the store at {shown}"))
    }
}

fn empty() -> Body {
    BoxBody::new(Empty::new().map_err(|never| match never {}))
}

/// The first line of an error body, for a message.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// TLS trusting this machine's roots, and the authority in `ca_file` when there is one.
fn tls(ca_file: &Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if !ca_file.as_os_str().is_empty() {
        for cert in CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("backup.s3.ca_file: cannot read {}", ca_file.display()))?
        {
            let cert = cert
                .with_context(|| format!("backup.s3.ca_file: {} is not PEM", ca_file.display()))?;
            roots.add(cert).with_context(|| {
                format!(
                    "backup.s3.ca_file: {} holds a certificate rustls does not take",
                    ca_file.display()
                )
            })?;
        }
    }
    // Explicit: the process may hold more than one rustls provider.
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS: no protocol version")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(mode: u32, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn keys_are_read_from_an_owner_only_file_and_never_shown() {
        let (_dir, path) = written(
            0o600,
            "# store\nAWS_ACCESS_KEY_ID=AKIDEXAMPLE\n\nAWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI\n",
        );
        let keys = Keys::load(&path).expect("keys");
        assert_eq!(
            (keys.id.as_str(), keys.secret.as_str()),
            ("AKIDEXAMPLE", "wJalrXUtnFEMI")
        );

        let (_dir, path) = written(0o644, "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n");
        let e = format!("{:#}", Keys::load(&path).err().expect("refused"));
        assert!(e.contains("chmod 600"), "{e}");

        let (_dir, path) = written(0o600, "AWS_ACCESS_KEY_ID=a\nsecret=s3cr3t-value\n");
        let e = format!("{:#}", Keys::load(&path).err().expect("refused"));
        assert!(e.contains("line 2") && !e.contains("s3cr3t-value"), "{e}");

        let (_dir, path) = written(0o600, "AWS_ACCESS_KEY_ID=a\n");
        let e = format!("{:#}", Keys::load(&path).err().expect("refused"));
        assert!(e.contains("needs both"), "{e}");
    }
}
