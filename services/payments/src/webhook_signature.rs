//! `X-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Missing webhook signature")]
    Missing,
    #[error("Malformed webhook signature")]
    Malformed,
    #[error("Webhook signature timestamp is too old or in the future")]
    OutsideTolerance,
    #[error("Invalid webhook signature")]
    Mismatch,
}

/// Checks `header` against `body`. Several `v1` entries are allowed (secret rotation); one must
/// match. The comparison is constant-time (`Mac::verify_slice`).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", sig)) => {
                signatures.push(hex::decode(sig).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::OutsideTolerance);
    }
    let mac = signed_mac(secret, timestamp, body);
    if signatures
        .iter()
        .any(|sig| mac.clone().verify_slice(sig).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header value a provider sends for `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = signed_mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

fn signed_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test_0123456789";
    const BODY: &[u8] = br#"{"paymentReference":"PAY-1-ABC"}"#;

    #[test]
    fn a_fresh_signature_of_the_body_verifies() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(verify(Some(&header), BODY, SECRET, 1_100, 300), Ok(()));
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert_eq!(verify(Some(&rotated), BODY, SECRET, 1_000, 300), Ok(()));
    }

    #[test]
    fn tampering_age_and_garbage_are_refused() {
        let header = sign(SECRET, 1_000, BODY);
        assert_eq!(
            verify(None, BODY, SECRET, 1_000, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(Some(&header), b"{}", SECRET, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, b"other-secret-0000", 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, 1_301, 300),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, 699, 300),
            Err(SignatureError::OutsideTolerance)
        );
        for bad in ["", "t=abc,v1=00", "t=1000", "v1=00", "t=1000,v1=zz"] {
            assert_eq!(
                verify(Some(bad), BODY, SECRET, 1_000, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }
}
