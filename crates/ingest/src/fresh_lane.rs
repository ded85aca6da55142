//! Each tenant's fresh allowance: `HERALD_TENANT_FRESH_RATE` delivery tasks a second (one
//! second's worth saved up) go to its shard's queue of fresh tasks; the rest of a burst goes to
//! the shard's bulk queue.
//!
//! Tenants share 8 work shards, and a shard's queue is consumed in order: a tenant sharing the
//! shard of another that just published 20,000 tasks would wait behind all of them (measured
//! with `bench scenario noisy-neighbour`: 5 s at the p99 when the two drew the same shard). A
//! burst is what a tenant's own deliveries can wait for; a steady tenant's fresh deliveries
//! must not. Splitting at publish time, where the rate is known, keeps the queues static (no
//! per-tenant queue to create, find or delete) and costs one lock per chunk of tasks.
//!
//! Every dispatcher consumes the bulk queues like the others (with a window of their own), so a
//! burst is delivered as fast as before once it is there; tasks of one tenant are then in two
//! queues, which changes no guarantee (Herald does not order deliveries). Per ingest instance,
//! like the other tenant shares: with several instances behind a balancer a tenant's allowance
//! is this many times the instances it reaches.

use uuid::Uuid;

use crate::shares::Shares;

/// Each tenant's allowance of fresh tasks.
pub struct FreshLane {
    tasks: Shares,
}

impl FreshLane {
    /// `per_second` tasks a second per tenant; zero: every task is fresh.
    pub fn new(per_second: u64) -> Self {
        Self {
            tasks: Shares::new(per_second as f64),
        }
    }

    /// How many of `tenant`'s next `tasks` go to the fresh queue; the others go to bulk.
    pub fn admit(&self, tenant: Uuid, tasks: usize) -> usize {
        let fresh = self.tasks.take_up_to(tenant, tasks as u64) as usize;
        if fresh < tasks {
            metrics::counter!("herald_tasks_bulk_total").increment((tasks - fresh) as u64);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_to_bulk_past_the_allowance_and_a_steady_tenant_stays_fresh() {
        let lane = FreshLane::new(500);
        let (burst, steady) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(lane.admit(burst, 400), 400);
        assert_eq!(lane.admit(burst, 400), 100);
        assert_eq!(lane.admit(burst, 10_000), 0);
        for _ in 0..50 {
            assert_eq!(lane.admit(steady, 1), 1);
        }
        assert_eq!(FreshLane::new(0).admit(burst, 1_000_000), 1_000_000);
    }
}
