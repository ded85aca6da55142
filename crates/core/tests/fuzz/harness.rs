//! The fuzz harness shared by herald-core's, herald-outbound's and herald-ingest's fuzz tests:
//! corpus seeds, seed mutation (byte flips, inserts, deletes, splices of interesting tokens), and
//! a run loop that counts cases, shrinks failures with proptest and reports them all at the end.

use std::fmt::Debug;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{TestCaseResult, TestError, TestRunner};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fuzz/corpus");

/// Cases per strategy: `HERALD_FUZZ_CASES`, 256 by default.
fn cases() -> u32 {
    std::env::var("HERALD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // A failure is reported with its minimal input; add that as a corpus seed.
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// Snippets worth splicing into any input.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    ".",
    "..",
    "$",
    "$gt",
    "$in",
    "$and",
    "$or",
    "$xyz",
    "null",
    "true",
    "-0",
    "1e309",
    "18446744073709551616",
    "-9223372036854775808",
    "9223372036854775807",
    "\\u0000",
    "\\ud800",
    "v1,",
    "t=",
    "sha256=",
    "whsec_",
    "::ffff:",
    "::",
    "0x",
    "%00",
    "%2e",
    "@",
    "[::1]",
    "/",
    "//",
    "#",
    "?",
    "0",
    "01",
    "/33",
    "h",
    "ms",
    "\u{fffd}",
    "é",
    "ｆ",
    "\u{200b}",
    " ",
    "\t",
    "\n",
    "\r\n",
];

#[derive(Clone, Debug)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Splice(Index, &'static str),
    Duplicate(Index, Index),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, bit)| Edit::Flip(i, 1 << bit)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), select(TOKENS)).prop_map(|(i, t)| Edit::Splice(i, t)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Edit::Duplicate(i, j)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let len = b.len();
        match e {
            Edit::Flip(i, mask) if len > 0 => b[i.index(len)] ^= mask,
            Edit::Insert(i, byte) => b.insert(i.index(len + 1), *byte),
            Edit::Delete(i) if len > 0 => {
                b.remove(i.index(len));
            }
            Edit::Splice(i, token) => {
                let at = i.index(len + 1);
                b.splice(at..at, token.bytes());
            }
            Edit::Duplicate(i, j) if len > 0 => {
                let (a, z) = (i.index(len), j.index(len));
                let chunk = b[a.min(z)..=a.max(z)].to_vec();
                let at = a.max(z) + 1;
                b.splice(at..at, chunk);
            }
            Edit::Truncate(i) => b.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    b
}

/// Raw input bytes, shown as an escaped byte string in failure reports.
#[derive(Clone)]
pub struct Bytes(pub Vec<u8>);

impl Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// A corpus seed with a few random edits.
pub fn mutated_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Bytes> {
    (select(seeds), vec(edit(), 1..8)).prop_map(|(seed, edits)| Bytes(apply(&seed, &edits)))
}

/// A corpus seed with a few random edits, as (lossy) UTF-8 text.
pub fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = String> {
    mutated_bytes(seeds).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".to_owned())
}

/// One fuzz target: its corpus, its counters and the failures found so far.
pub struct Fuzz {
    target: &'static str,
    seeds: Vec<(String, Vec<u8>)>,
    corpus: usize,
    generated: usize,
    failures: Vec<String>,
    started: Instant,
}

impl Fuzz {
    /// A target named after its corpus directory.
    pub fn new(target: &'static str) -> Self {
        Self::with_corpus(target, target)
    }

    /// A target that reads the corpus of another (`corpus` is its directory name).
    pub fn with_corpus(target: &'static str, corpus: &str) -> Self {
        let dir = format!("{CORPUS}/{corpus}");
        let mut seeds: Vec<(String, Vec<u8>)> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| {
                    let path = e.expect("corpus entry").path();
                    let bytes = fs::read(&path).expect("corpus seed");
                    (path.display().to_string(), bytes)
                })
                .collect(),
            Err(e) => panic!("fuzz corpus {dir}: {e}"),
        };
        seeds.sort();
        assert!(!seeds.is_empty(), "fuzz corpus {dir} is empty");
        Fuzz {
            target,
            seeds,
            corpus: 0,
            generated: 0,
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn seeds(&self) -> Vec<Vec<u8>> {
        self.seeds.iter().map(|(_, b)| b.clone()).collect()
    }

    /// Runs every seed, exactly as stored, through `check`.
    pub fn corpus(&mut self, check: impl Fn(&[u8]) -> TestCaseResult) {
        for (name, bytes) in &self.seeds {
            self.corpus += 1;
            match catch_unwind(AssertUnwindSafe(|| check(bytes))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.failures.push(format!("seed {name}: {e}")),
                Err(panic) => self
                    .failures
                    .push(format!("seed {name}: panicked: {}", panic_text(&*panic))),
            }
        }
    }

    /// Runs `check` over `cases()` inputs from `strategy`; a failure is shrunk and recorded.
    pub fn run<S>(&mut self, label: &str, strategy: S, check: impl Fn(S::Value) -> TestCaseResult)
    where
        S: Strategy,
        S::Value: Debug,
    {
        let ran = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let mut runner = TestRunner::new(config());
        let result = runner.run(&strategy, |value| {
            let outcome = check(value);
            if outcome.is_err() {
                failed.store(true, Ordering::Relaxed);
            } else if !failed.load(Ordering::Relaxed) {
                ran.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        });
        self.generated += ran.load(Ordering::Relaxed);
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, input)) => self
                .failures
                .push(format!("{label}: {reason}\n  minimal input: {input:?}")),
            Err(TestError::Abort(reason)) => {
                self.failures.push(format!("{label}: aborted: {reason}"));
            }
        }
    }

    /// Prints the counts; panics with every failure found.
    pub fn finish(self) {
        eprintln!(
            "fuzz {}: {} generated + {} corpus cases, {} failures ({:.1} s)",
            self.target,
            self.generated,
            self.corpus,
            self.failures.len(),
            self.started.elapsed().as_secs_f64()
        );
        assert!(
            self.failures.is_empty(),
            "fuzz {} failed (add the minimal input as a seed under tests/fuzz/corpus/):\n{}",
            self.target,
            self.failures.join("\n")
        );
    }
}
