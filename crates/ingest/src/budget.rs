//! What a tenant's test sends may cost. `SendTest` POSTs synchronously from ingest, so without
//! a bound one tenant with an endpoint that never answers could hold as many of ingest's tasks
//! and sockets as it can open calls, each for the endpoint's timeout.
//!
//! - **Rate.** A test send takes one token from the tenant's publish bucket, the Redis token
//!   bucket `Publish` takes from and the ledger's `Redeliver`/`ReplayEndpoint` too: re-sends
//!   are publishes. Over it: `RESOURCE_EXHAUSTED` with `RetryInfo`, as a publish is. Not
//!   enforced while Redis is down, like the publish rate.
//! - **Concurrency.** At most `HERALD_SEND_TEST_CONCURRENCY` test sends of one tenant at once
//!   **per ingest instance**; one more is refused at once. Per instance because what a hanging
//!   test send holds (a task, a socket, a connection of the outbound client) belongs to this
//!   instance: a local count costs no Redis round trip per call and cannot leak a slot when an
//!   instance dies. A tenant may hold the cap on every instance, which the shared rate bounds.
//!
//! Refusals are counted in `herald_send_test_refused_total{limit}` (`rate`, `concurrency`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_redis::Take;
use uuid::Uuid;

use crate::Ingest;
use crate::error::{Error, Result};

/// Test sends in progress per tenant on this instance.
#[derive(Clone)]
pub struct TestSlots {
    cap: usize,
    held: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One test send in progress; its slot is given back when dropped.
pub struct TestSlot {
    tenant: Uuid,
    held: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl TestSlots {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            held: Arc::default(),
        }
    }

    /// A slot for one of `tenant`'s test sends, or `RESOURCE_EXHAUSTED` naming the limit.
    pub fn take(&self, tenant: Uuid) -> Result<TestSlot> {
        let mut held = self.held.lock().expect("test slots lock");
        let n = held.entry(tenant).or_insert(0);
        if *n >= self.cap {
            metrics::counter!("herald_send_test_refused_total", "limit" => "concurrency")
                .increment(1);
            return Err(Error::ResourceExhausted(format!(
                "at most {} test sends of a tenant at once (HERALD_SEND_TEST_CONCURRENCY): wait for one to answer (each takes at most its endpoint's timeout)",
                self.cap
            )));
        }
        *n += 1;
        Ok(TestSlot {
            tenant,
            held: self.held.clone(),
        })
    }
}

impl Drop for TestSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("test slots lock");
        if let Some(n) = held.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

impl Ingest {
    /// Takes `sends` tokens from the tenant's publish bucket for test sends (its own
    /// `publish_rate_limit`, else `HERALD_PUBLISH_RATE_LIMIT`; burst `HERALD_PUBLISH_BURST`).
    pub(crate) async fn charge_test_sends(&self, tenant: Uuid, sends: u32) -> Result<()> {
        let index = self.subscriptions.index(tenant).await?;
        let rate = index
            .publish_rate_limit
            .unwrap_or(self.config.publish_rate_limit);
        if rate == 0 {
            return Ok(());
        }
        let taken = self
            .limiter
            .take_publish(tenant, rate, self.config.publish_burst, sends);
        let retry_after = match taken.await {
            Ok(Take::Now) => return Ok(()),
            Ok(Take::Wait(retry_after)) => retry_after,
            // Only a call of more than the burst; a test send is one.
            Ok(Take::AboveBurst) => std::time::Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "publish rate limit unavailable (redis), test send not charged");
                return Ok(());
            }
        };
        metrics::counter!("herald_send_test_refused_total", "limit" => "rate").increment(1);
        Err(Error::RateLimited {
            message: format!(
                "publish rate limit of {rate} events/s for this tenant reached (test sends and re-sends count as publishes); retry after {} ms",
                retry_after.as_millis()
            ),
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_tenant_and_given_back() {
        let slots = TestSlots::new(2);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = slots.take(a).expect("first");
        let _second = slots.take(a).expect("second");
        let refused = slots.take(a).err().expect("third refused");
        assert!(
            refused.to_string().contains("at most 2 test sends"),
            "{refused}"
        );
        let _other = slots.take(b).expect("another tenant has its own slots");
        drop(first);
        let _again = slots.take(a).expect("a slot came back");
    }
}
