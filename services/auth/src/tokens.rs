//! Access tokens (HS256 JWTs) and opaque refresh tokens.

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    iat: i64,
    exp: i64,
    iss: String,
}

/// An access token and its lifetime in seconds.
pub struct AccessToken {
    pub token: String,
    pub expires_in: u64,
}

pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    ttl_secs: u64,
}

impl AccessTokens {
    pub fn new(secret: &[u8], issuer: &str, ttl_secs: u64) -> Self {
        // Pinned to HS256: a token naming any other algorithm (including "none") is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            ttl_secs,
        }
    }

    pub fn issue(&self, user_id: Uuid) -> anyhow::Result<AccessToken> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user_id,
            iat: now,
            exp: now + i64::try_from(self.ttl_secs).context("token lifetime")?,
            iss: self.issuer.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("sign access token")?;
        Ok(AccessToken {
            token,
            expires_in: self.ttl_secs,
        })
    }

    /// The user id of a valid, unexpired token of ours; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Uuid> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims.sub)
    }
}

/// A new refresh token: the value handed to the client, and the hash that is stored.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_token_verifies_to_its_user() {
        let tokens = AccessTokens::new(SECRET, "test", 60);
        let user = Uuid::now_v7();
        let issued = tokens.issue(user).unwrap();
        assert_eq!(tokens.verify(&issued.token), Some(user));
        assert_eq!(issued.expires_in, 60);
    }

    #[test]
    fn token_of_other_issuer_or_key_is_refused() {
        let ours = AccessTokens::new(SECRET, "test", 60);
        let other_issuer = AccessTokens::new(SECRET, "someone-else", 60);
        let other_key = AccessTokens::new(b"another-key-another-key-another-key", "test", 60);
        let user = Uuid::now_v7();
        assert_eq!(ours.verify(&other_issuer.issue(user).unwrap().token), None);
        assert_eq!(ours.verify(&other_key.issue(user).unwrap().token), None);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in unpadded base64url");
        assert_eq!(hash_a, hash_refresh_token(&a));
        assert_eq!(hash_a.len(), 32);
    }
}
