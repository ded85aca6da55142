-- Herald schema v2: what a "Webhooks" page needs. Tenant policies, endpoint filters, rate limits
-- and failure tracking, event type groups, test deliveries, and per-endpoint statistics that the
-- ledger keeps as it writes (so reading them never scans the attempts table).

ALTER TABLE tenants
    ADD COLUMN require_https              boolean NOT NULL DEFAULT false,
    ADD COLUMN reject_unknown_event_types boolean NOT NULL DEFAULT false;

ALTER TABLE endpoints
    -- Payload filter (validated at write time); NULL: every event of the subscribed types.
    ADD COLUMN filter                jsonb,
    -- Deliveries per second across all dispatchers; 0: unlimited.
    ADD COLUMN rate_limit_per_second integer NOT NULL DEFAULT 0 CHECK (rate_limit_per_second >= 0),
    -- Deliveries that ended `failed` in a row, and when the streak began; reset by a success
    -- or by enabling the endpoint.
    ADD COLUMN consecutive_failures  integer NOT NULL DEFAULT 0,
    ADD COLUMN failing_since         timestamptz,
    -- Failed attempts in a row (any attempt, retries included), for `endpoint.failing`.
    ADD COLUMN failed_attempts       integer NOT NULL DEFAULT 0,
    ADD COLUMN failing_notified      boolean NOT NULL DEFAULT false;

ALTER TABLE event_types
    ADD COLUMN group_name text NOT NULL DEFAULT '';

ALTER TABLE events ADD COLUMN test boolean NOT NULL DEFAULT false;
ALTER TABLE deliveries ADD COLUMN test boolean NOT NULL DEFAULT false;

-- Replay: an endpoint's deliveries by status in creation order.
CREATE INDEX deliveries_endpoint_status ON deliveries (endpoint_id, status, id);

-- One row per endpoint: the endpoint card's summary.
CREATE TABLE endpoint_stats (
    endpoint_id      uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    total_deliveries bigint NOT NULL DEFAULT 0,
    last_status      text,
    last_delivery_at timestamptz
);

-- Attempts per endpoint, hour and latency bucket (bucket i counts latencies up to the i-th
-- bound of herald_core::stats::LATENCY_BOUNDS_MS): success rate and percentiles over a window
-- are a sum over at most a few hundred small rows.
CREATE TABLE endpoint_latency (
    endpoint_id uuid NOT NULL,
    hour        timestamptz NOT NULL,
    bucket      smallint NOT NULL,
    attempts    bigint NOT NULL,
    successes   bigint NOT NULL,
    PRIMARY KEY (endpoint_id, hour, bucket)
);
