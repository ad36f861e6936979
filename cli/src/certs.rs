//! The edge's self-signed TLS certificate, made with rcgen and kept in `.stackctl/tls/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{CertificateParams, KeyPair};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::state::{StateDir, write_private, write_with_mode};

/// A certificate is renewed when it expires within this many days.
pub const RENEW_WITHIN_DAYS: i64 = 30;
const VALID_DAYS: i64 = 365;

pub struct CertInfo {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// SHA-256 of the DER certificate, colon-separated hex.
    pub fingerprint: String,
    pub not_after: OffsetDateTime,
    pub names: Vec<String>,
    /// Whether this call wrote a new certificate.
    pub renewed: bool,
}

pub fn dir(state: &StateDir) -> PathBuf {
    state.path("tls")
}

/// Makes sure a certificate for `names` exists and is not about to expire; `force` renews it
/// anyway.
pub fn ensure(state: &StateDir, names: &[String], force: bool) -> anyhow::Result<CertInfo> {
    let dir = dir(state);
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !force && let Some(info) = current(&cert_path, &key_path, names)? {
        return Ok(info);
    }
    let mut params = CertificateParams::new(names.to_vec())
        .context("tls.names must be DNS names or IP addresses")?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(VALID_DAYS);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    let key = KeyPair::generate().context("generate TLS key")?;
    let cert = params.self_signed(&key).context("sign TLS certificate")?;
    state.ensure()?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_with_mode(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let issued = Issued {
        names: names.to_vec(),
        not_after: params.not_after,
        fingerprint: fingerprint(cert.der()),
    };
    write_with_mode(
        &dir.join("cert.json"),
        serde_json::to_string_pretty(&issued)?.as_bytes(),
        0o644,
    )?;
    Ok(CertInfo {
        fingerprint: issued.fingerprint,
        not_after: params.not_after,
        names: names.to_vec(),
        cert_path,
        key_path,
        renewed: true,
    })
}

/// What was issued, kept beside the certificate so renewal needs no X.509 parser.
#[derive(serde::Serialize, serde::Deserialize)]
struct Issued {
    names: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    not_after: OffsetDateTime,
    fingerprint: String,
}

/// When the current certificate expires; `None` before the first one is made.
pub fn expires(state: &StateDir) -> anyhow::Result<Option<OffsetDateTime>> {
    let meta = dir(state).join("cert.json");
    let text = match std::fs::read_to_string(&meta) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", meta.display())),
    };
    let issued: Issued = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged; stackctl certs --force makes a new certificate",
            meta.display()
        )
    })?;
    Ok(Some(issued.not_after))
}

/// The existing certificate, if it covers `names` and is not within the renewal window.
fn current(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
) -> anyhow::Result<Option<CertInfo>> {
    let meta = cert_path.with_file_name("cert.json");
    if !cert_path.exists() || !key_path.exists() || !meta.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&meta)
        .with_context(|| format!("cannot read {}", meta.display()))?;
    let Ok(issued) = serde_json::from_str::<Issued>(&text) else {
        return Ok(None);
    };
    let (mut have, mut want) = (issued.names.clone(), names.to_vec());
    have.sort();
    want.sort();
    let expiring = issued.not_after - OffsetDateTime::now_utc() < Duration::days(RENEW_WITHIN_DAYS);
    if have != want || expiring {
        return Ok(None);
    }
    Ok(Some(CertInfo {
        fingerprint: issued.fingerprint,
        not_after: issued.not_after,
        names: names.to_vec(),
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        renewed: false,
    }))
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_kept_until_names_change_or_forced() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::beside(&tmp.path().join("stack.toml"));
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = ensure(&state, &names, false).unwrap();
        assert!(first.renewed);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&first.key_path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        let again = ensure(&state, &names, false).unwrap();
        assert!(!again.renewed);
        assert_eq!(again.fingerprint, first.fingerprint);
        let forced = ensure(&state, &names, true).unwrap();
        assert_ne!(forced.fingerprint, first.fingerprint);
        let other = ensure(&state, &["example.test".to_owned()], false).unwrap();
        assert!(other.renewed, "new names mean a new certificate");
    }
}
