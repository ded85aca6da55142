-- Herald schema v11: a per-endpoint cap on concurrent POSTs.
--
-- POSTs a dispatcher lets one endpoint have at once (each dispatcher on its own); 0: the
-- dispatcher's default, HERALD_ENDPOINT_MAX_IN_FLIGHT. Ingest accepts 0 to 256; the bound
-- lives there, so changing it needs no migration.
ALTER TABLE endpoints
    ADD COLUMN max_in_flight integer NOT NULL DEFAULT 0 CHECK (max_in_flight >= 0);

-- Dispatchers cache endpoints (0008): a changed cap is announced like every other column a
-- delivery depends on, so it applies at once rather than after HERALD_ENDPOINT_CACHE_TTL.
DROP TRIGGER endpoints_changed ON endpoints;
CREATE TRIGGER endpoints_changed AFTER UPDATE ON endpoints
    FOR EACH ROW
    WHEN ((OLD.url, OLD.event_types, OLD.enabled, OLD.signing_scheme, OLD.secret,
           OLD.secret_key_id, OLD.previous_secret, OLD.previous_secret_key_id,
           OLD.previous_secret_expires_at, OLD.timeout_ms, OLD.retry_schedule_ms, OLD.headers,
           OLD.filter, OLD.rate_limit_per_second, OLD.disabled_reason, OLD.max_in_flight)
          IS DISTINCT FROM
          (NEW.url, NEW.event_types, NEW.enabled, NEW.signing_scheme, NEW.secret,
           NEW.secret_key_id, NEW.previous_secret, NEW.previous_secret_key_id,
           NEW.previous_secret_expires_at, NEW.timeout_ms, NEW.retry_schedule_ms, NEW.headers,
           NEW.filter, NEW.rate_limit_per_second, NEW.disabled_reason, NEW.max_in_flight))
    EXECUTE FUNCTION herald_notify_change();
