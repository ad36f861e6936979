//! `/auth/*`: register, login, me, refresh, logout.

use anyhow::Context;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use serde::{Deserialize, Serialize};
use svc_common::{
    envelope::{self, Envelope},
    error::{ErrorBody, FieldErrors, required},
    http::bearer_token,
    json::StrictJson,
};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::State;
use crate::{
    db::{self, refresh_tokens::NewRefreshToken, users::User},
    domain::{Email, Password, Phone},
    error::ApiError,
    tokens,
};

type ApiResult = Result<Response, ApiError>;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    /// Stored trimmed and lower-cased; unique.
    #[schema(schema_with = svc_common::contact::email_schema, required = true)]
    email: Option<String>,
    /// International format; stored as E.164; unique.
    #[schema(schema_with = svc_common::contact::phone_schema, required = true)]
    phone: Option<String>,
    #[schema(schema_with = crate::domain::password::schema, required = true)]
    password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(schema_with = svc_common::contact::email_or_phone_schema, required = true)]
    identifier: Option<String>,
    #[schema(value_type = String, required = true, format = Password, pattern = "\\S")]
    password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String, required = true, pattern = "\\S")]
    refresh_token: Option<String>,
    /// Accepted in place of `refreshToken`.
    #[schema(value_type = String, pattern = "\\S")]
    old_refresh_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogoutRequest {
    #[schema(value_type = String, required = true, pattern = "\\S")]
    refresh_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: Uuid,
    email: String,
    phone: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            phone: u.phone,
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    access_token: String,
    /// Opaque; single use: every refresh returns a new one.
    refresh_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Access token lifetime in seconds.
    expires_in: u64,
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/auth/register",
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "User created", body = Envelope<UserView>),
        (status = 400, description = "Invalid input; `errors` lists every field", body = ErrorBody),
        (status = 409, description = "User already exists (email or phone taken)", body = ErrorBody)
    )
)]
pub async fn register(state: State, StrictJson(req): StrictJson<RegisterRequest>) -> ApiResult {
    let mut errors = FieldErrors::default();
    let email = errors.check("email", required(req.email).and_then(|e| Email::parse(&e)));
    let phone = errors.check("phone", required(req.phone).and_then(|p| Phone::parse(&p)));
    let password = errors.check("password", required(req.password).and_then(Password::parse));
    let (Some(email), Some(phone), Some(password)) = (email, phone, password) else {
        return Err(errors.into_error().into());
    };

    // Cheap early answer for the common case; the unique constraints below settle races.
    if db::users::find_credentials(&state.pool, email.as_str())
        .await?
        .is_some()
        || db::users::find_credentials(&state.pool, phone.as_str())
            .await?
            .is_some()
    {
        return Err(ApiError::UserExists);
    }
    let hash = state.passwords.hash(password).await?;
    let user = db::users::insert(
        &state.pool,
        Uuid::now_v7(),
        email.as_str(),
        phone.as_str(),
        &hash,
    )
    .await
    .map_err(|e| {
        if db::is_unique_violation(&e) {
            ApiError::UserExists
        } else {
            ApiError::Internal(anyhow::Error::new(e).context("insert user"))
        }
    })?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(envelope::reply(
        StatusCode::CREATED,
        "User registered successfully",
        UserView::from(user),
    ))
}

/// Exchanges an e-mail or phone and a password for an access and a refresh token.
#[utoipa::path(
    post,
    path = "/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Envelope<TokenPair>),
        (status = 400, description = "Invalid input: the identifier is neither an e-mail address nor a phone number, or a field is missing", body = ErrorBody),
        (status = 401, description = "Invalid credentials", body = ErrorBody),
        (status = 429, description = "Too many failed log-ins for this identifier; `Retry-After` says when to try again", body = ErrorBody),
        (status = 503, description = "Too many log-ins at once, or the database is unreachable; `Retry-After` says when to try again", body = ErrorBody)
    )
)]
pub async fn login(state: State, StrictJson(req): StrictJson<LoginRequest>) -> ApiResult {
    let mut errors = FieldErrors::default();
    let identifier = errors.check(
        "identifier",
        required(req.identifier).and_then(|i| parse_identifier(&i)),
    );
    let password = errors.check("password", required(req.password).and_then(non_empty));
    let (Some(identifier), Some(password)) = (identifier, password) else {
        return Err(errors.into_error().into());
    };

    if let Some(retry_after_secs) = db::login_failures::locked_for(&state.pool, &identifier).await?
    {
        return Err(ApiError::TooManyAttempts { retry_after_secs });
    }
    let user = db::users::find_credentials(&state.pool, &identifier).await?;
    let (user_id, hash) = user.map(|u| (u.id, u.password_hash)).unzip();
    // Runs bcrypt even for an unknown user, so both failures take the same time.
    let checked = state.passwords.verify(password, hash).await?;
    let Some(user_id) = user_id.filter(|_| checked.matched) else {
        // Counted for unknown identifiers too: the answers must not tell them apart.
        db::login_failures::record(&state.pool, &identifier).await?;
        return Err(ApiError::InvalidCredentials);
    };
    db::login_failures::clear(&state.pool, &identifier).await?;
    if let Some(upgraded) = checked.rehashed {
        // The hash was made at another cost; the password is at hand only now.
        db::users::set_password_hash(&state.pool, user_id, &upgraded).await?;
        tracing::info!(%user_id, "password hash upgraded to the configured cost");
    }

    let mut tx = state.pool.begin().await?;
    let pair = issue_pair(&state, &mut tx, user_id, Uuid::now_v7()).await?;
    tx.commit().await?;
    tracing::info!(%user_id, "user logged in");
    Ok(no_store(envelope::ok("Login successful", pair)))
}

/// Token answers must not be kept by any cache on the way.
fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The user the access token belongs to.
#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token's user", body = Envelope<UserView>),
        (status = 401, description = "Missing, invalid or expired token, or the user no longer exists", body = ErrorBody)
    )
)]
pub async fn me_get(state: State, headers: HeaderMap) -> ApiResult {
    me(state, headers).await
}

/// The user the access token belongs to (POST form, used by the payment service).
#[utoipa::path(
    post,
    path = "/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token's user", body = Envelope<UserView>),
        (status = 401, description = "Missing, invalid or expired token, or the user no longer exists", body = ErrorBody)
    )
)]
pub async fn me_post(state: State, headers: HeaderMap) -> ApiResult {
    me(state, headers).await
}

async fn me(state: State, headers: HeaderMap) -> ApiResult {
    let token = bearer_token(&headers).ok_or(ApiError::MissingAccessToken)?;
    let user_id = state
        .access_tokens
        .verify(token)
        .ok_or(ApiError::InvalidAccessToken)?;
    let user = state
        .users
        .find(&state.pool, user_id)
        .await?
        .ok_or(ApiError::InvalidAccessToken)?;
    Ok(envelope::ok("Token is valid", UserView::from(user)))
}

/// Exchanges a refresh token for a new pair. The old refresh token stops working; presenting it
/// again revokes every token of its login.
#[utoipa::path(
    post,
    path = "/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = Envelope<TokenPair>),
        (status = 400, description = "Missing refresh token", body = ErrorBody),
        (status = 401, description = "Invalid refresh token", body = ErrorBody)
    )
)]
pub async fn refresh(state: State, body: StrictJson<RefreshRequest>) -> ApiResult {
    rotate(state, body.0).await
}

/// Alias of `POST /auth/refresh`.
#[utoipa::path(
    post,
    path = "/auth/refresh-token",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = Envelope<TokenPair>),
        (status = 400, description = "Missing refresh token", body = ErrorBody),
        (status = 401, description = "Invalid refresh token", body = ErrorBody)
    )
)]
pub async fn refresh_token(state: State, body: StrictJson<RefreshRequest>) -> ApiResult {
    rotate(state, body.0).await
}

async fn rotate(state: State, req: RefreshRequest) -> ApiResult {
    let mut errors = FieldErrors::default();
    let presented = errors.check(
        "refreshToken",
        required(req.refresh_token.or(req.old_refresh_token)).and_then(non_empty),
    );
    let Some(presented) = presented else {
        return Err(errors.into_error().into());
    };

    let mut tx = state.pool.begin().await?;
    let hash = tokens::hash_refresh_token(&presented);
    let stored = db::refresh_tokens::lock_by_hash(&mut tx, &hash)
        .await?
        .ok_or(ApiError::InvalidRefreshToken)?;
    if stored.revoked_at.is_some() {
        return Err(ApiError::InvalidRefreshToken);
    }
    if stored.rotated_at.is_some() {
        // A rotated token came back: whoever holds this family's tokens may be a thief.
        let revoked = db::refresh_tokens::revoke_family(&mut tx, stored.family_id).await?;
        tx.commit().await?;
        tracing::warn!(
            user_id = %stored.user_id,
            family_id = %stored.family_id,
            revoked,
            "refresh token reused; its login family is revoked"
        );
        return Err(ApiError::InvalidRefreshToken);
    }
    if stored.expires_at <= OffsetDateTime::now_utc() {
        return Err(ApiError::InvalidRefreshToken);
    }
    db::refresh_tokens::mark_rotated(&mut tx, stored.id).await?;
    let pair = issue_pair(&state, &mut tx, stored.user_id, stored.family_id).await?;
    tx.commit().await?;
    Ok(no_store(envelope::ok("Token refreshed", pair)))
}

/// Revokes the refresh token's login. Answers the same for unknown or already revoked tokens.
#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    request_body = LogoutRequest,
    responses(
        (status = 200, description = "Logged out (also for unknown or revoked tokens)", body = Envelope<Object>),
        (status = 400, description = "Missing refresh token", body = ErrorBody)
    )
)]
pub async fn logout(state: State, StrictJson(req): StrictJson<LogoutRequest>) -> ApiResult {
    let mut errors = FieldErrors::default();
    let presented = errors.check(
        "refreshToken",
        required(req.refresh_token).and_then(non_empty),
    );
    let Some(presented) = presented else {
        return Err(errors.into_error().into());
    };
    let hash = tokens::hash_refresh_token(&presented);
    db::refresh_tokens::revoke_family_of(&state.pool, &hash).await?;
    Ok(envelope::message("Logged out successfully"))
}

/// A new access token, and a refresh token of `family_id` stored inside `tx`.
async fn issue_pair(
    state: &State,
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
    family_id: Uuid,
) -> Result<TokenPair, ApiError> {
    let access = state.access_tokens.issue(user_id)?;
    let (refresh_token, token_hash) = tokens::new_refresh_token();
    let ttl = time::Duration::try_from(state.refresh_ttl).context("refresh token lifetime")?;
    db::refresh_tokens::insert(
        tx,
        NewRefreshToken {
            user_id,
            family_id,
            token_hash: &token_hash,
            expires_at: OffsetDateTime::now_utc() + ttl,
        },
    )
    .await?;
    Ok(TokenPair {
        access_token: access.token,
        refresh_token,
        token_type: "Bearer",
        expires_in: access.expires_in,
    })
}

/// The stored form of a login identifier: e-mails lower-cased, phones in E.164. Anything else is
/// a bad request, not a failed log-in (API.md).
fn parse_identifier(identifier: &str) -> Result<String, String> {
    if identifier.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if identifier.contains('@') {
        Email::parse(identifier).map(|e| e.as_str().to_owned())
    } else {
        Phone::parse(identifier)
            .map(|p| p.as_str().to_owned())
            .map_err(|_| {
                "must be an e-mail address or a phone number in international format".to_owned()
            })
    }
}

fn non_empty(s: String) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s)
    }
}
