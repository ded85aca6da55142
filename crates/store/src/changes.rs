//! Change notices: what Postgres announces when a cached row changes (migration 0008).
//!
//! Ingest caches each tenant's subscription index and dispatchers cache endpoints, so that a
//! publish or a delivery costs no query. Without notices a change made through one process
//! reached the others only when their entry expired; with them, a toggle, a delete or a new
//! secret applies to the next delivery. The caches keep their TTL as the fallback: a notice
//! sent while a listener is reconnecting is lost, and the listener then says so
//! ([`Change::Unknown`]) so its owner drops everything.

use herald_core::backoff::Backoff;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Store;

/// The channel the triggers of migration 0008 notify.
pub const CHANNEL: &str = "herald_changes";

/// One change notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A tenant's settings or event types changed (or it was deleted).
    Tenant(Uuid),
    /// One endpoint was created, changed or deleted.
    Endpoint { tenant: Uuid, endpoint: Uuid },
    /// Notices may have been missed (the listener connected or reconnected).
    Unknown,
}

impl Change {
    /// Reads a payload: `<tenant id>` or `<tenant id> <endpoint id>`.
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.split(' ');
        let tenant = Uuid::parse_str(parts.next()?).ok()?;
        let change = match parts.next() {
            None => Change::Tenant(tenant),
            Some(e) => Change::Endpoint {
                tenant,
                endpoint: Uuid::parse_str(e).ok()?,
            },
        };
        parts.next().is_none().then_some(change)
    }
}

impl Store {
    /// Calls `on` with every change notice until `shutdown`, and with [`Change::Unknown`]
    /// whenever notices may have been missed (at each connection). Reconnects by itself.
    pub fn watch_changes(
        &self,
        shutdown: CancellationToken,
        on: impl Fn(Change) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        // A pool of its own (one connection, the same settings): a listener keeps its
        // connection for good, which must not shrink the pool the queries use.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        tokio::spawn(async move {
            let mut backoff = Backoff::held();
            loop {
                let connect = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                let connected = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    c = connect => c,
                };
                let mut listener = match connected {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.next_wait().as_millis() as u64, "cannot listen for change notices; caches rely on their ttl meanwhile");
                        if !backoff.wait(shutdown.cancelled()).await {
                            return;
                        }
                        continue;
                    }
                };
                backoff.reset();
                on(Change::Unknown);
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        n = listener.try_recv() => n,
                    };
                    match next {
                        Ok(Some(n)) => match Change::parse(n.payload()) {
                            Some(change) => on(change),
                            None => {
                                tracing::debug!(payload = n.payload(), "unreadable change notice")
                            }
                        },
                        // The connection dropped; the next receive reconnects.
                        Ok(None) => on(Change::Unknown),
                        Err(e) => {
                            tracing::warn!(error = %e, "change notices interrupted, reconnecting");
                            on(Change::Unknown);
                            break;
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back() {
        let (t, e) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(Change::parse(&t.to_string()), Some(Change::Tenant(t)));
        assert_eq!(
            Change::parse(&format!("{t} {e}")),
            Some(Change::Endpoint {
                tenant: t,
                endpoint: e
            })
        );
        assert_eq!(Change::parse(&format!("{t} {e} x")), None);
        assert_eq!(Change::parse("nonsense"), None);
        assert_eq!(Change::parse(""), None);
    }
}
