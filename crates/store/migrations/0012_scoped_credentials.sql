-- Herald schema v12: one credential model for API keys and portal sessions (issue 25).
--
-- A credential has scopes (what it may call; '*' is every scope, so the keys made before
-- scopes existed keep all of them) and may expire. A portal session is an api_keys row of
-- kind 'portal' (with the theme its page shows), so every service checks it exactly as a key:
-- same hash lookup, same cache, same revocation notices (migration 0010).
ALTER TABLE api_keys
    ADD COLUMN scopes     text[] NOT NULL DEFAULT '{*}',
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN kind       text NOT NULL DEFAULT 'key' CHECK (kind IN ('key', 'portal')),
    ADD COLUMN theme      jsonb;

-- Admin.ListApiKeys: a tenant's keys, newest first.
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, kind, id DESC);

-- Single-use links that open a portal session; only the token's SHA-256 is stored. A link
-- made with a tenant's key (created_by_key) opens only while that key is live.
CREATE TABLE portal_links (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash          bytea NOT NULL UNIQUE,
    scopes              text[] NOT NULL,
    session_ttl_seconds integer NOT NULL CHECK (session_ttl_seconds > 0),
    theme               jsonb,
    created_by_key      uuid REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    redeemed_at         timestamptz
);

CREATE INDEX portal_links_expiry ON portal_links (expires_at);

-- Origins allowed to embed the tenant's portal (CSP frame-ancestors); empty: none.
ALTER TABLE tenants ADD COLUMN portal_allowed_origins text[] NOT NULL DEFAULT '{}';
