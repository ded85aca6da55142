//! Each tenant's share of a resource of this instance that is measured only once used (CPU
//! time, bytes received): a token bucket charged *after* the use, whose owner is refused while
//! it is in debt, with the time until the debt is paid as the retry delay.
//!
//! Charging after is what makes it exact (a call's cost is not known before it ran) and cheap
//! (one lock, no round trip). What a tenant can overdraw is bounded by what its calls already
//! admitted can use, which the callers bound (places on the payload threads, message size
//! limits). Local to the instance: the resource is.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Accounts remembered before the full ones (nothing owed, nothing to earn) are forgotten.
const ACCOUNTS_KEPT: usize = 1024;

/// Per-tenant buckets of `rate` units a second, holding one second's worth at most.
pub struct Shares {
    /// Units a second; zero: not limited.
    rate: f64,
    accounts: Mutex<HashMap<Uuid, Account>>,
}

struct Account {
    credit: f64,
    at: Instant,
}

impl Account {
    fn refill(&mut self, rate: f64, now: Instant) {
        let earned = rate * now.duration_since(self.at).as_secs_f64();
        self.credit = (self.credit + earned).min(rate);
        self.at = now;
    }
}

impl Shares {
    pub fn new(rate: f64) -> Self {
        Self {
            rate: rate.max(0.0),
            accounts: Mutex::default(),
        }
    }

    /// Units a second (zero: not limited).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn limited(&self) -> bool {
        self.rate > 0.0
    }

    /// How long until `tenant` is out of debt; `None` when it is not in debt (or not limited).
    pub fn owed(&self, tenant: Uuid) -> Option<Duration> {
        if !self.limited() {
            return None;
        }
        let now = Instant::now();
        let mut accounts = self.accounts.lock().expect("shares lock");
        let account = accounts.get_mut(&tenant)?;
        account.refill(self.rate, now);
        (account.credit < 0.0).then(|| {
            Duration::from_secs_f64(-account.credit / self.rate).max(Duration::from_millis(1))
        })
    }

    /// Takes `used` units from `tenant`'s credit.
    pub fn charge(&self, tenant: Uuid, used: f64) {
        if !self.limited() || used <= 0.0 {
            return;
        }
        self.with_account(tenant, |a| a.credit -= used);
    }

    /// Takes whole units from `tenant`'s credit, as many of `wanted` as it holds (never going
    /// into debt); returns how many it took. Not limited: all of them.
    pub fn take_up_to(&self, tenant: Uuid, wanted: u64) -> u64 {
        if !self.limited() || wanted == 0 {
            return wanted;
        }
        self.with_account(tenant, |a| {
            let taken = (a.credit.max(0.0).floor() as u64).min(wanted);
            a.credit -= taken as f64;
            taken
        })
    }

    /// Runs `f` on `tenant`'s refilled account (a new one starts full), forgetting full idle
    /// accounts once [`ACCOUNTS_KEPT`] are held.
    fn with_account<T>(&self, tenant: Uuid, f: impl FnOnce(&mut Account) -> T) -> T {
        let now = Instant::now();
        let mut accounts = self.accounts.lock().expect("shares lock");
        if accounts.len() >= ACCOUNTS_KEPT && !accounts.contains_key(&tenant) {
            let rate = self.rate;
            accounts.retain(|_, a| {
                a.refill(rate, now);
                a.credit < rate
            });
        }
        let account = accounts.entry(tenant).or_insert(Account {
            credit: self.rate,
            at: now,
        });
        account.refill(self.rate, now);
        f(account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_owed_until_earned_back_and_only_by_its_tenant() {
        let shares = Shares::new(100.0);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(shares.owed(a), None, "a new tenant owes nothing");
        shares.charge(a, 60.0);
        assert_eq!(shares.owed(a), None, "within the second saved up");
        shares.charge(a, 90.0);
        let owed = shares.owed(a).expect("50 over at 100 a second");
        assert!(
            owed > Duration::from_millis(400) && owed <= Duration::from_millis(500),
            "{owed:?}"
        );
        assert_eq!(shares.owed(b), None);
        std::thread::sleep(owed);
        assert_eq!(shares.owed(a), None, "paid back by waiting as told");
    }

    #[test]
    fn taking_stops_at_the_credit_and_never_owes() {
        let shares = Shares::new(100.0);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(shares.take_up_to(a, 60), 60);
        assert_eq!(shares.take_up_to(a, 60), 40, "the rest of the second's 100");
        assert_eq!(shares.take_up_to(a, 60), 0);
        assert_eq!(shares.owed(a), None, "taking never goes into debt");
        assert_eq!(shares.take_up_to(b, 500), 100, "another tenant has its own");
        std::thread::sleep(Duration::from_millis(100));
        let later = shares.take_up_to(a, 60);
        assert!((9..=12).contains(&later), "about 10 earned back: {later}");
        assert_eq!(Shares::new(0.0).take_up_to(a, 1_000_000), 1_000_000);
    }

    #[test]
    fn a_zero_rate_is_not_limited() {
        let shares = Shares::new(0.0);
        let a = Uuid::now_v7();
        shares.charge(a, 1e12);
        assert_eq!(shares.owed(a), None);
    }

    #[test]
    fn idle_accounts_are_forgotten_past_the_bound() {
        let shares = Shares::new(1.0);
        for _ in 0..ACCOUNTS_KEPT * 3 {
            shares.charge(Uuid::now_v7(), 0.5);
        }
        // Accounts still earning are kept; once full they are forgotten at the next new one.
        std::thread::sleep(Duration::from_millis(600));
        shares.charge(Uuid::now_v7(), 0.5);
        assert!(
            shares.accounts.lock().unwrap().len() <= 2,
            "full ones forgotten"
        );
    }
}
