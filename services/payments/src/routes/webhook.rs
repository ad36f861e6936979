//! `POST /payments/webhook`: provider events, authenticated by signature and applied once.

use axum::{http::HeaderMap, response::Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use svc_common::{
    envelope::{self, Envelope},
    error::{ErrorBody, FieldErrors, required},
    json::{self, JsonBytes},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;

use super::State;
use crate::{
    db,
    domain::{Amount, Currency, PaymentState},
    error::ApiError,
    routes::payments::show_amount,
    transition::{self, Change},
    webhook_signature,
};

const SIGNATURE_HEADER: &str = "x-webhook-signature";
const DEFAULT_PROVIDER: &str = "DEFAULT";
const MAX_ID_LEN: usize = 255;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookEvent {
    #[schema(value_type = String, required = true)]
    payment_reference: Option<String>,
    /// `PENDING`, `SUCCESS` or `FAILED`.
    #[schema(value_type = String, required = true)]
    status: Option<String>,
    /// Deliveries are applied once per (providerName, providerTransactionId).
    #[schema(value_type = String, required = true)]
    provider_transaction_id: Option<String>,
    /// RFC 3339.
    #[schema(value_type = String, required = true, format = DateTime)]
    timestamp: Option<String>,
    /// Defaults to `DEFAULT`.
    provider_name: Option<String>,
    /// When present, must equal the payment's amount.
    #[schema(value_type = Option<String>)]
    amount: Option<Box<RawValue>>,
    /// When present, must equal the payment's currency.
    currency: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookResult {
    /// `false` for a delivery that was already applied.
    processed: bool,
}

struct ValidEvent {
    reference: String,
    status: PaymentState,
    provider_transaction_id: String,
    provider_name: String,
    amount: Option<Amount>,
    currency: Option<Currency>,
}

fn validate(event: WebhookEvent) -> Result<ValidEvent, ApiError> {
    let mut errors = FieldErrors::default();
    let id = |s: String| {
        let s = s.trim().to_owned();
        match s.len() {
            0 => Err("must not be empty".to_owned()),
            n if n > MAX_ID_LEN => Err(format!("must be at most {MAX_ID_LEN} characters")),
            _ => Ok(s),
        }
    };
    let reference = errors.check(
        "paymentReference",
        required(event.payment_reference).and_then(id),
    );
    let status = errors.check(
        "status",
        required(event.status).and_then(|s| match PaymentState::parse(&s) {
            Ok(PaymentState::Initiated) | Err(_) => {
                Err("must be one of PENDING, SUCCESS, FAILED".to_owned())
            }
            Ok(state) => Ok(state),
        }),
    );
    let provider_transaction_id = errors.check(
        "providerTransactionId",
        required(event.provider_transaction_id).and_then(id),
    );
    let timestamp = errors.check(
        "timestamp",
        required(event.timestamp).and_then(|t| {
            OffsetDateTime::parse(&t, &Rfc3339)
                .map_err(|_| "must be an RFC 3339 date-time".to_owned())
        }),
    );
    let provider_name = errors.check(
        "providerName",
        event
            .provider_name
            .map_or(Ok(DEFAULT_PROVIDER.to_owned()), id),
    );
    let currency = errors.check(
        "currency",
        event.currency.map(|c| Currency::parse(&c)).transpose(),
    );
    let amount = errors.check(
        "amount",
        event
            .amount
            .map(|raw| Amount::parse_json(&raw, currency.flatten()))
            .transpose(),
    );
    let (
        Some(reference),
        Some(status),
        Some(provider_transaction_id),
        Some(_timestamp),
        Some(provider_name),
        Some(currency),
        Some(amount),
    ) = (
        reference,
        status,
        provider_transaction_id,
        timestamp,
        provider_name,
        currency,
        amount,
    )
    else {
        return Err(errors.into_error().into());
    };
    Ok(ValidEvent {
        reference,
        status,
        provider_transaction_id,
        provider_name,
        amount,
        currency,
    })
}

/// Applies a provider's status event to a payment. Authenticated by `X-Webhook-Signature:
/// t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`, within 300 s of now; no
/// bearer token. A repeated delivery answers `processed: false` and changes nothing.
#[utoipa::path(
    post,
    path = "/payments/webhook",
    tag = "webhooks",
    request_body(content = WebhookEvent, content_type = "application/json"),
    params(("X-Webhook-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256>")),
    responses(
        (status = 200, description = "Applied (`processed: true`) or already applied (`processed: false`)", body = Envelope<WebhookResult>),
        (status = 400, description = "Invalid payload", body = ErrorBody),
        (status = 401, description = "Missing, invalid or stale signature", body = ErrorBody),
        (status = 404, description = "Unknown payment reference", body = ErrorBody),
        (status = 409, description = "Transition not allowed, or amount/currency mismatch", body = ErrorBody)
    )
)]
pub async fn receive(
    state: State,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    webhook_signature::verify(
        headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()),
        &body,
        &state.webhook_secret,
        OffsetDateTime::now_utc().unix_timestamp(),
        state.webhook_tolerance_secs,
    )?;
    let event = validate(json::parse(&body)?)?;

    let mut tx = state.pool.begin().await?;
    // Locking the payment first serialises every delivery for it, duplicates included.
    let payment = db::payments::lock(&mut tx, &event.reference, None)
        .await?
        .ok_or(ApiError::NotFound)?;
    let first = db::webhooks::record(
        &mut tx,
        &event.provider_name,
        &event.provider_transaction_id,
        payment.id,
    )
    .await?;
    if !first {
        return Ok(envelope::ok(
            "Webhook already processed",
            WebhookResult { processed: false },
        ));
    }
    if let Some(currency) = event.currency
        && currency != payment.currency
    {
        return Err(ApiError::WebhookMismatch(format!(
            "Currency {currency} does not match the payment's {}",
            payment.currency
        )));
    }
    if let Some(amount) = event.amount
        && amount.value() != payment.amount
    {
        return Err(ApiError::WebhookMismatch(format!(
            "Amount {} does not match the payment's {}",
            amount.value(),
            show_amount(payment.amount, payment.currency)
        )));
    }
    transition::apply(
        &mut tx,
        &payment,
        event.status,
        Change {
            source: "webhook",
            provider_name: Some(&event.provider_name),
            provider_transaction_id: Some(&event.provider_transaction_id),
            reason: None,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        reference = %event.reference,
        provider = %event.provider_name,
        from = %payment.state,
        to = %event.status,
        "webhook applied"
    );
    Ok(envelope::ok(
        "Webhook processed",
        WebhookResult { processed: true },
    ))
}
