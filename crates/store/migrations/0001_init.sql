-- Herald schema v1. Ingest owns tenants, keys, endpoints and event types; the ledger owns
-- events, deliveries and attempts. Ids are UUIDv7, so ordering by id is ordering by creation.

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    header_prefix text NOT NULL DEFAULT 'Webhook-',
    user_agent    text NOT NULL DEFAULT 'Herald-Webhooks/1.0',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    -- SHA-256 of the key; the key itself is never stored.
    key_hash   bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE endpoints (
    id                         uuid PRIMARY KEY,
    tenant_id                  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                        text NOT NULL,
    description                text NOT NULL DEFAULT '',
    event_types                text[] NOT NULL,
    enabled                    boolean NOT NULL DEFAULT true,
    signing_scheme             text NOT NULL DEFAULT 'standard'
                               CHECK (signing_scheme IN ('standard', 'timestamped', 'hex')),
    secret                     text NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    timeout_ms                 integer NOT NULL CHECK (timeout_ms > 0),
    -- NULL: the server's default schedule.
    retry_schedule_ms          integer[],
    headers                    jsonb NOT NULL DEFAULT '{}',
    disabled_reason            text,
    disabled_at                timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, id);

CREATE TABLE event_types (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    archived    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Ledger ---------------------------------------------------------------------------------------

CREATE TABLE events (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    event_type      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    accepted_at     timestamptz NOT NULL,
    idempotency_key text,
    -- The payload exactly as published (text, not jsonb, to keep it byte for byte).
    payload         text NOT NULL
);
CREATE INDEX events_tenant ON events (tenant_id, id DESC);

CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    event_id        uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    event_type      text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'success', 'retrying', 'failed')),
    attempt_count   integer NOT NULL DEFAULT 0,
    response_status integer,
    response_body   text NOT NULL DEFAULT '',
    last_error      text,
    latency_ms      integer,
    created_at      timestamptz NOT NULL,
    last_attempt_at timestamptz,
    next_retry_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, id DESC);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id DESC);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_tenant_status ON deliveries (tenant_id, status, id DESC);

CREATE TABLE attempts (
    -- One row per execution of an attempt; a record applied twice is a no-op.
    id              uuid PRIMARY KEY,
    delivery_id     uuid NOT NULL,
    tenant_id       uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    attempt         integer NOT NULL,
    trigger         text NOT NULL,
    status          text NOT NULL CHECK (status IN ('success', 'retrying', 'failed')),
    started_at      timestamptz NOT NULL,
    latency_ms      integer NOT NULL,
    response_status integer,
    response_body   text NOT NULL DEFAULT '',
    error           text,
    next_retry_at   timestamptz
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, started_at);
