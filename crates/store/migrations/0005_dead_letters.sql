-- Messages the broker dead-lettered (unreadable, unknown version, or redelivered past the
-- quorum queue's delivery limit), recorded by the ledger so they are counted, searchable and
-- never loop. `fingerprint` makes a redelivered dead letter a no-op.
CREATE TABLE dead_letters (
    id               uuid PRIMARY KEY,
    fingerprint      bytea NOT NULL UNIQUE,
    -- The queue it died in (without the installation prefix: work, ledger) and why
    -- (rejected, delivery_limit, expired, maxlen).
    queue            text NOT NULL,
    reason           text NOT NULL,
    -- Filled when the message could still be read as a delivery task.
    tenant_id        uuid,
    delivery_id      uuid,
    endpoint_id      uuid,
    event_id         uuid,
    error            text,
    headers          jsonb NOT NULL DEFAULT '{}',
    -- At most 64 KiB of the body; body_bytes is its real size.
    body             bytea NOT NULL,
    body_bytes       integer NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_id, id) WHERE tenant_id IS NOT NULL;
