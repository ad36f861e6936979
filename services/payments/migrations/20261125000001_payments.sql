CREATE TABLE payments (
    id              uuid PRIMARY KEY,
    reference       text NOT NULL,
    user_id         uuid NOT NULL,
    amount          numeric(20, 2) NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    payment_method  text NOT NULL,
    customer_phone  text NOT NULL,
    customer_email  text,
    description     text,
    state           text NOT NULL CHECK (state IN ('INITIATED', 'PENDING', 'SUCCESS', 'FAILED')),
    provider_name   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_reference_key UNIQUE (reference)
);

-- Ids are UUIDv7, so id order is creation order: the list pages by (user_id, id).
CREATE INDEX payments_user_id_id_idx ON payments (user_id, id DESC);

-- The history: one row for the creation and one per state change.
CREATE TABLE payment_transactions (
    id                       uuid PRIMARY KEY,
    payment_id               uuid NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    status                   text NOT NULL,
    source                   text NOT NULL CHECK (source IN ('api', 'webhook')),
    provider_name            text,
    provider_transaction_id  text,
    amount                   numeric(20, 2) NOT NULL,
    currency                 text NOT NULL,
    reason                   text,
    created_at               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_transactions_payment_id_idx ON payment_transactions (payment_id, id);

-- A provider event is applied once: the key is the provider's own transaction id.
CREATE TABLE webhook_deliveries (
    provider_name            text NOT NULL,
    provider_transaction_id  text NOT NULL,
    payment_id               uuid NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    received_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_name, provider_transaction_id)
);

-- Stored answers of POST /payments per (user, Idempotency-Key), kept 24 hours.
CREATE TABLE idempotency_keys (
    user_id        uuid NOT NULL,
    key            text NOT NULL,
    request_hash   bytea NOT NULL,
    status_code    integer NOT NULL,
    response_body  jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
