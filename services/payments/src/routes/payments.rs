//! `/payments`: create (idempotent), read, list, change state.

use axum::{
    Json,
    extract::{Path, Query, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use svc_common::{
    envelope::{self, Envelope},
    error::{ErrorBody, ErrorResponse, FieldError, FieldErrors, required, validation_failed},
    json::{self, JsonBytes, StrictJson},
};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{AuthUser, State};
use crate::{
    db::{
        self,
        payments::{NewPayment, Payment},
        transactions::Transaction,
    },
    domain::{
        Amount, Currency, Email, MAX_WHOLE, PaymentMethod, PaymentState, Phone, new_reference,
    },
    error::ApiError,
    transition::{self, Change},
};

type ApiResult = Result<Response, ApiError>;

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_DESCRIPTION: usize = 500;
const MAX_REASON: usize = 500;

/// The amount's rules follow the currency (API.md): the document says so with one branch per
/// number of decimals, so that a client or a fuzzer made from it sends only what is accepted.
/// (A JSON number with decimals is accepted too; JSON Schema cannot say "no more decimals than"
/// of a binary number, so the document offers whole numbers and decimal strings.)
pub fn document_amount_rules(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        ObjectBuilder, Schema, Type,
        schema::{AllOfBuilder, AnyOfBuilder, OneOfBuilder},
    };
    let Some(schemas) = spec.components.as_mut().map(|c| &mut c.schemas) else {
        return;
    };
    let Some(base) = schemas.remove("CreatePaymentRequest") else {
        return;
    };
    let mut by_decimals: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
    for currency in Currency::ALL {
        by_decimals
            .entry(currency.decimals())
            .or_default()
            .push(currency.code());
    }
    let mut branches = OneOfBuilder::new();
    for (decimals, codes) in by_decimals {
        let amount = AnyOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(Amount::pattern(decimals))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_WHOLE)),
            );
        branches = branches.item(
            ObjectBuilder::new()
                .property(
                    "currency",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(codes)),
                )
                .property("amount", amount),
        );
    }
    schemas.insert(
        "CreatePaymentRequest".to_owned(),
        Schema::AllOf(AllOfBuilder::new().item(base).item(branches).build()).into(),
    );
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePaymentRequest {
    /// Major units, as a JSON number or a decimal string; never more decimals than the
    /// currency has (UGX, RWF, JPY: 0; USD, EUR, GBP, KES, TZS, NGN: 2).
    #[schema(value_type = String, required = true, example = "12.50")]
    amount: Option<Box<RawValue>>,
    #[schema(
        value_type = String,
        required = true,
        example = "USD",
        pattern = "^(UGX|RWF|JPY|USD|EUR|GBP|KES|TZS|NGN)$"
    )]
    currency: Option<String>,
    /// `MOBILE_MONEY`, `CARD` or `BANK_TRANSFER`.
    #[schema(
        value_type = String,
        required = true,
        example = "MOBILE_MONEY",
        pattern = "^(MOBILE_MONEY|CARD|BANK_TRANSFER)$"
    )]
    payment_method: Option<String>,
    #[schema(schema_with = svc_common::contact::phone_schema, required = true)]
    customer_phone: Option<String>,
    #[schema(schema_with = svc_common::contact::optional_email_schema)]
    customer_email: Option<String>,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStatusRequest {
    /// The new state: `PENDING`, `SUCCESS` or `FAILED`, as the state machine allows.
    #[schema(
        value_type = String,
        required = true,
        example = "PENDING",
        pattern = "^(INITIATED|PENDING|SUCCESS|FAILED)$"
    )]
    status: Option<String>,
    /// At most 500 characters; kept in the history.
    #[schema(max_length = 500)]
    reason: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100, default 20.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `nextCursor` of the previous page (16 bytes, URL-safe base64 without padding).
    #[param(pattern = "^[A-Za-z0-9_-]{21}[AQgw]$")]
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    id: Uuid,
    reference: String,
    /// Decimal string with the currency's decimals.
    #[schema(example = "12.50")]
    amount: String,
    #[schema(example = "USD")]
    currency: &'static str,
    #[schema(example = "MOBILE_MONEY")]
    payment_method: &'static str,
    customer_phone: String,
    customer_email: Option<String>,
    description: Option<String>,
    #[schema(example = "INITIATED")]
    state: &'static str,
    provider_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: OffsetDateTime,
    /// The history, oldest first (on `GET /payments/{reference}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    transactions: Option<Vec<TransactionView>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    id: Uuid,
    #[schema(example = "PENDING")]
    status: &'static str,
    /// `api` or `webhook`.
    source: String,
    provider_name: Option<String>,
    provider_transaction_id: Option<String>,
    amount: String,
    currency: &'static str,
    reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentData {
    payment: PaymentView,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPage {
    payments: Vec<PaymentView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// Formats a stored amount with its currency's decimals.
pub fn show_amount(amount: rust_decimal::Decimal, currency: Currency) -> String {
    Amount::from_decimal(amount).display(currency)
}

impl PaymentView {
    pub fn new(p: Payment, transactions: Option<Vec<Transaction>>) -> Self {
        Self {
            amount: show_amount(p.amount, p.currency),
            transactions: transactions.map(|ts| {
                ts.into_iter()
                    .map(|t| TransactionView {
                        amount: show_amount(t.amount, t.currency),
                        id: t.id,
                        status: t.status.as_str(),
                        source: t.source,
                        provider_name: t.provider_name,
                        provider_transaction_id: t.provider_transaction_id,
                        currency: t.currency.code(),
                        reason: t.reason,
                        created_at: t.created_at,
                    })
                    .collect()
            }),
            id: p.id,
            reference: p.reference,
            currency: p.currency.code(),
            payment_method: p.payment_method.as_str(),
            customer_phone: p.customer_phone,
            customer_email: p.customer_email,
            description: p.description,
            state: p.state.as_str(),
            provider_name: p.provider_name,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A create request that passed validation.
struct ValidPayment {
    amount: Amount,
    currency: Currency,
    method: PaymentMethod,
    phone: Phone,
    email: Option<Email>,
    description: Option<String>,
}

fn validate_create(req: CreatePaymentRequest) -> Result<ValidPayment, ApiError> {
    let mut errors = FieldErrors::default();
    let currency = errors.check(
        "currency",
        required(req.currency).and_then(|c| Currency::parse(&c)),
    );
    let amount = errors.check(
        "amount",
        required(req.amount).and_then(|raw| Amount::parse_json(&raw, currency)),
    );
    let method = errors.check(
        "paymentMethod",
        required(req.payment_method).and_then(|m| PaymentMethod::parse(&m)),
    );
    let phone = errors.check(
        "customerPhone",
        required(req.customer_phone).and_then(|p| Phone::parse(&p)),
    );
    let email = errors.check(
        "customerEmail",
        req.customer_email
            .filter(|e| !e.trim().is_empty())
            .map(|e| Email::parse(&e))
            .transpose(),
    );
    let description = errors.check(
        "description",
        match req.description {
            Some(d) if d.chars().count() > MAX_DESCRIPTION => {
                Err(format!("must be at most {MAX_DESCRIPTION} characters"))
            }
            other => Ok(other),
        },
    );
    let (Some(currency), Some(amount), Some(method), Some(phone), Some(email), Some(description)) =
        (currency, amount, method, phone, email, description)
    else {
        return Err(errors.into_error().into());
    };
    Ok(ValidPayment {
        amount,
        currency,
        method,
        phone,
        email,
        description,
    })
}

/// Creates a payment in state `INITIATED`.
///
/// With an `Idempotency-Key` header, a retry with the same body returns the original answer
/// (header `Idempotent-Replayed: true`) for 24 hours; the same key with another body is 422,
/// and while the first request with the key is still running, 409.
#[utoipa::path(
    post,
    path = "/payments",
    tag = "payments",
    security(("bearer" = [])),
    request_body = CreatePaymentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 printable ASCII characters", pattern = "^[!-~]{1,255}$")),
    responses(
        (status = 201, description = "Created (or replayed)", body = Envelope<PaymentData>),
        (status = 400, description = "Invalid input; `errors` lists every field", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 409, description = "A request with this key is in flight", body = ErrorBody),
        (status = 422, description = "Key reused with another body", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody)
    )
)]
pub async fn create_payment(
    state: State,
    AuthUser(user_id): AuthUser,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> ApiResult {
    let key = idempotency_key(&headers)?;
    let valid = validate_create(json::parse(&body)?)?;

    let Some(key) = key else {
        let mut conn = state.pool.acquire().await?;
        let body = insert_payment(&mut conn, user_id, &valid).await?;
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    };
    let request_hash: [u8; 32] = Sha256::digest(&body).into();
    let mut tx = state.pool.begin().await?;
    if !db::idempotency::try_lock(&mut tx, user_id, &key).await? {
        return Err(ApiError::IdempotencyInFlight);
    }
    if let Some(stored) = db::idempotency::find(&mut tx, user_id, &key).await? {
        if stored.request_hash != request_hash {
            return Err(ApiError::IdempotencyMismatch);
        }
        let status = u16::try_from(stored.status_code)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::CREATED);
        let mut res = (status, Json(stored.response_body)).into_response();
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(res);
    }
    let body = insert_payment(&mut tx, user_id, &valid).await?;
    db::idempotency::save(&mut tx, user_id, &key, &request_hash, 201, &body).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Inserts the payment (and its first history row) and returns the response body.
async fn insert_payment(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
    valid: &ValidPayment,
) -> Result<serde_json::Value, ApiError> {
    let reference = new_reference();
    let payment = db::payments::insert(
        conn,
        NewPayment {
            reference: &reference,
            user_id,
            amount: valid.amount.value(),
            currency: valid.currency,
            payment_method: valid.method,
            customer_phone: valid.phone.as_str(),
            customer_email: valid.email.as_ref().map(Email::as_str),
            description: valid.description.as_deref(),
            state: PaymentState::Initiated,
        },
    )
    .await?;
    tracing::info!(%reference, %user_id, "payment created");
    let body = Envelope {
        success: true,
        message: "Payment created".to_owned(),
        data: Some(PaymentData {
            payment: PaymentView::new(payment, None),
        }),
    };
    Ok(serde_json::to_value(body).map_err(anyhow::Error::from)?)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(validation_failed(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        )])
        .into());
    }
    Ok(Some(key.to_owned()))
}

/// One of the caller's payments, with its history. Another user's payment is 404.
#[utoipa::path(
    get,
    path = "/payments/{reference}",
    tag = "payments",
    security(("bearer" = [])),
    params(("reference" = String, Path, example = "PAY-1764000000000-0A1B2C3D4E")),
    responses(
        (status = 200, description = "The payment", body = Envelope<PaymentData>),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "No such payment of the caller's", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody)
    )
)]
pub async fn get_payment(
    state: State,
    AuthUser(user_id): AuthUser,
    Path(reference): Path<String>,
) -> ApiResult {
    let (payment, history) = db::payments::find_for_user(&state.pool, &reference, user_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(envelope::ok(
        "Payment retrieved",
        PaymentData {
            payment: PaymentView::new(payment, Some(history)),
        },
    ))
}

/// The caller's payments, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/payments",
    tag = "payments",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of payments", body = Envelope<PaymentPage>),
        (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody)
    )
)]
pub async fn list_payments(
    state: State,
    AuthUser(user_id): AuthUser,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params.map_err(|e| {
        ErrorResponse::new(StatusCode::BAD_REQUEST, "Invalid query string")
            .with_errors(vec![FieldError::new("query", e.body_text())])
    })?;
    let mut errors = FieldErrors::default();
    let limit = errors.check(
        "limit",
        params.limit.map_or(Ok(20), |l| match l.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err("must be a whole number from 1 to 100".to_owned()),
        }),
    );
    let cursor = errors.check(
        "cursor",
        params.cursor.map(|c| decode_cursor(&c)).transpose(),
    );
    let (Some(limit), Some(cursor)) = (limit, cursor) else {
        return Err(errors.into_error().into());
    };
    let mut rows = db::payments::list_for_user(&state.pool, user_id, cursor, limit + 1).await?;
    let next_cursor = if rows.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        rows.pop();
        rows.last().map(|p| URL_SAFE_NO_PAD.encode(p.id.as_bytes()))
    } else {
        None
    };
    Ok(envelope::ok(
        "Payments retrieved",
        PaymentPage {
            payments: rows
                .into_iter()
                .map(|p| PaymentView::new(p, None))
                .collect(),
            next_cursor,
        },
    ))
}

fn decode_cursor(cursor: &str) -> Result<Uuid, String> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| "is not a cursor this service issued".to_owned())
}

/// Moves one of the caller's payments to a new state. Concurrent changes are serialised: one
/// wins, the others see its result and get 409 when their change no longer applies.
#[utoipa::path(
    patch,
    path = "/payments/{reference}/status",
    tag = "payments",
    security(("bearer" = [])),
    params(("reference" = String, Path)),
    request_body = UpdateStatusRequest,
    responses(
        (status = 200, description = "State changed", body = Envelope<PaymentData>),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or rejected token", body = ErrorBody),
        (status = 404, description = "No such payment of the caller's", body = ErrorBody),
        (status = 409, description = "Transition not allowed from the current state", body = ErrorBody),
        (status = 503, description = "Auth service unreachable", body = ErrorBody)
    )
)]
pub async fn update_status(
    state: State,
    AuthUser(user_id): AuthUser,
    Path(reference): Path<String>,
    StrictJson(req): StrictJson<UpdateStatusRequest>,
) -> ApiResult {
    let mut errors = FieldErrors::default();
    let next = errors.check(
        "status",
        required(req.status).and_then(|s| PaymentState::parse(&s)),
    );
    let reason = errors.check(
        "reason",
        match req.reason {
            Some(r) if r.chars().count() > MAX_REASON => {
                Err(format!("must be at most {MAX_REASON} characters"))
            }
            other => Ok(other),
        },
    );
    let (Some(next), Some(reason)) = (next, reason) else {
        return Err(errors.into_error().into());
    };

    let mut tx = state.pool.begin().await?;
    let payment = db::payments::lock(&mut tx, &reference, Some(user_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    let updated = transition::apply(
        &mut tx,
        &payment,
        next,
        Change {
            source: "api",
            provider_name: None,
            provider_transaction_id: None,
            reason: reason.as_deref(),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%reference, from = %payment.state, to = %next, "payment state changed");
    Ok(envelope::ok(
        "Payment status updated",
        PaymentData {
            payment: PaymentView::new(updated, None),
        },
    ))
}
