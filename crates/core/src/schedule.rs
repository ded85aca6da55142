//! Retry schedules: the delay before each retry of a failed delivery.
//!
//! A failed attempt is retried after the next unused tier's delay; once the list is exhausted
//! the delivery is `failed`. Without a `Retry-After`, attempt `n` (1-based) is retried after
//! `delays[n - 1]`. A `Retry-After` from the receiver skips ahead to the first tier whose delay
//! is at least the requested wait: the skipped tiers are used up, but the attempt number still
//! counts requests (1, 2, 3, ...), which is what receivers and the delivery log show. A wait
//! longer than every remaining tier takes the last tier and waits what was asked (at most
//! [`MAX_DELAY`]): the receiver is never called again before the time it gave.

use std::fmt;
use std::time::Duration;

use crate::error::{Result, invalid};

/// Most retries a schedule may hold.
pub const MAX_TIERS: usize = 20;
/// Longest single delay.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Longest sum of all delays.
pub const MAX_TOTAL: Duration = Duration::from_secs(7 * 24 * 3600);

/// An ordered list of retry delays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextAttempt {
    /// Number of the next attempt: the failed one's plus one.
    pub attempt: u32,
    /// Tiers used up once this retry is scheduled (the skipped ones included).
    pub tiers_used: u32,
    /// How long to wait before it.
    pub delay: Duration,
}

impl Default for RetrySchedule {
    /// 1 min, 5 min, 15 min, 1 h, 6 h.
    fn default() -> Self {
        Self {
            delays: [60, 300, 900, 3600, 21600]
                .map(Duration::from_secs)
                .to_vec(),
        }
    }
}

impl RetrySchedule {
    /// Validates a list of delays: at most [`MAX_TIERS`], each at most [`MAX_DELAY`], all
    /// together at most [`MAX_TOTAL`]. An empty list means "no retries".
    pub fn new(delays: Vec<Duration>) -> Result<Self> {
        if delays.len() > MAX_TIERS {
            return Err(invalid(format!(
                "retry schedule has {} delays; at most {MAX_TIERS} are allowed",
                delays.len()
            )));
        }
        if let Some(d) = delays.iter().find(|d| **d > MAX_DELAY) {
            return Err(invalid(format!(
                "retry delay {} is longer than the maximum of 24h",
                format_duration(*d)
            )));
        }
        let total: Duration = delays.iter().sum();
        if total > MAX_TOTAL {
            return Err(invalid(format!(
                "retry delays add up to {}; at most 7 days are allowed",
                format_duration(total)
            )));
        }
        Ok(Self { delays })
    }

    /// From whole milliseconds (the API's form).
    pub fn from_millis(ms: &[u32]) -> Result<Self> {
        Self::new(
            ms.iter()
                .map(|m| Duration::from_millis(u64::from(*m)))
                .collect(),
        )
    }

    /// Parses `1m,5m,15m,1h,6h` (units ms, s, m, h; a bare number is milliseconds).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Self::new(Vec::new());
        }
        let delays = text
            .split(',')
            .map(parse_duration)
            .collect::<Result<Vec<_>>>()?;
        Self::new(delays)
    }

    /// The server's default schedule, `HERALD_RETRY_SCHEDULE` (default `1m,5m,15m,1h,6h`):
    /// the dispatchers retry with it, ingest shows it on endpoints that have none of their own.
    pub fn from_config(
        r: &crate::config::Reader<'_>,
    ) -> std::result::Result<Self, crate::config::ConfigError> {
        const NAME: &str = "HERALD_RETRY_SCHEDULE";
        Self::parse(&r.string(NAME, &Self::default().to_string())).map_err(|e| {
            crate::config::ConfigError {
                name: NAME.into(),
                message: e.to_string(),
            }
        })
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    pub fn as_millis(&self) -> Vec<u32> {
        self.delays
            .iter()
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
            .collect()
    }

    /// Total number of attempts a delivery gets (the first one plus every retry).
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The retry after attempt `failed` (1-based) failed with `tiers_used` tiers used up
    /// before it, or `None` when no tier is left.
    ///
    /// With `retry_after`, the next attempt moves to the first remaining tier whose delay is at
    /// least that long; when none is, to the last tier, after `retry_after` (at most
    /// [`MAX_DELAY`]).
    pub fn next(
        &self,
        failed: u32,
        tiers_used: u32,
        retry_after: Option<Duration>,
    ) -> Option<NextAttempt> {
        let start = usize::try_from(tiers_used).ok()?;
        if start >= self.delays.len() {
            return None;
        }
        let last = self.delays.len() - 1;
        let (index, delay) = match retry_after {
            Some(wait) => match (start..self.delays.len()).find(|i| self.delays[*i] >= wait) {
                Some(i) => (i, self.delays[i]),
                None => (last, wait.min(MAX_DELAY).max(self.delays[last])),
            },
            None => (start, self.delays[start]),
        };
        Some(NextAttempt {
            attempt: failed.max(1).saturating_add(1),
            tiers_used: index as u32 + 1,
            delay,
        })
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.delays.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Parses `250ms`, `30s`, `5m`, `2h`; a bare number is milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "ms"),
    };
    let n: u64 = digits.parse().map_err(|_| {
        invalid(format!(
            "{text:?} is not a duration (use e.g. 500ms, 30s, 5m, 1h)"
        ))
    })?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => {
            return Err(invalid(format!(
                "{text:?} has an unknown unit (use ms, s, m or h)"
            )));
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| invalid(format!("{text:?} is too long")))
}

/// Formats a duration in the largest whole unit: `1h`, `5m`, `30s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_default_comes_from_herald_retry_schedule() {
        use std::collections::HashMap;
        let read = |pairs: &[(&str, &str)]| {
            let env: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            RetrySchedule::from_config(&crate::config::Reader::new(&env))
        };
        assert_eq!(read(&[]).unwrap().to_string(), "1m,5m,15m,1h,6h");
        let set = read(&[("HERALD_RETRY_SCHEDULE", "100ms,2s")]).unwrap();
        assert_eq!(set.as_millis(), vec![100, 2_000]);
        let bad = read(&[("HERALD_RETRY_SCHEDULE", "soon")]).unwrap_err();
        assert_eq!(bad.name, "HERALD_RETRY_SCHEDULE");
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_is_one_five_fifteen_minutes_one_and_six_hours() {
        let s = RetrySchedule::default();
        assert_eq!(s.to_string(), "1m,5m,15m,1h,6h");
        assert_eq!(s.max_attempts(), 6);
    }

    #[test]
    fn walks_the_tiers_then_stops() {
        let s = RetrySchedule::default();
        let got: Vec<_> = (1..=6).map(|a| s.next(a, a - 1, None)).collect();
        assert_eq!(
            got[0],
            Some(NextAttempt {
                attempt: 2,
                tiers_used: 1,
                delay: secs(60)
            })
        );
        assert_eq!(
            got[4],
            Some(NextAttempt {
                attempt: 6,
                tiers_used: 5,
                delay: secs(21600)
            })
        );
        assert_eq!(got[5], None);
    }

    #[test]
    fn retry_after_skips_tiers_but_attempts_count_requests() {
        let s = RetrySchedule::default();
        assert_eq!(
            s.next(1, 0, Some(secs(120))),
            Some(NextAttempt {
                attempt: 2,
                tiers_used: 2,
                delay: secs(300)
            })
        );
        assert_eq!(
            s.next(1, 0, Some(secs(30))),
            Some(NextAttempt {
                attempt: 2,
                tiers_used: 1,
                delay: secs(60)
            })
        );
        // Longer than any tier: the last tier, after the wait asked for (at most 24 h); after
        // it, nothing is left.
        let last = s.next(2, 1, Some(secs(30_000))).unwrap();
        assert_eq!(
            last,
            NextAttempt {
                attempt: 3,
                tiers_used: 5,
                delay: secs(30_000)
            }
        );
        assert_eq!(s.next(last.attempt, last.tiers_used, None), None);
        assert_eq!(
            s.next(2, 1, Some(secs(1_000_000))).map(|n| n.delay),
            Some(MAX_DELAY)
        );
        // A short schedule never retries before the receiver's time either.
        let short = RetrySchedule::parse("1s,1s").unwrap();
        assert_eq!(
            short.next(1, 0, Some(secs(3))),
            Some(NextAttempt {
                attempt: 2,
                tiers_used: 2,
                delay: secs(3)
            })
        );
    }

    #[test]
    fn parses_units_and_rejects_nonsense() {
        assert_eq!(
            RetrySchedule::parse("0s, 100ms,2m,1h").unwrap().delays(),
            &[secs(0), Duration::from_millis(100), secs(120), secs(3600)]
        );
        assert!(RetrySchedule::parse("5x").is_err());
        assert!(
            RetrySchedule::parse("25h")
                .unwrap_err()
                .to_string()
                .contains("24h")
        );
        assert!(RetrySchedule::parse(&vec!["1s"; 21].join(",")).is_err());
        assert!(
            RetrySchedule::parse(&["24h"; 8].join(","))
                .unwrap_err()
                .to_string()
                .contains("7 days")
        );
        assert!(RetrySchedule::parse("").unwrap().next(1, 0, None).is_none());
    }
}
