//! `herald-console` as a real process beside a test installation ([`crate::Herald`] with
//! `Options::console`): pointed at that installation's ingest and ledger, listening on a free
//! loopback port that ingest also knows as `HERALD_CONSOLE_URL` (so portal links it makes open
//! this console), killed when the installation stops or is dropped.
//!
//! A process rather than an in-process server: the console is a gRPC client like any other and
//! the tests drive it only over HTTP, as a browser does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bin_dir;

/// The CSRF key of every test console (`HERALD_CONSOLE_SECRET`).
pub const CONSOLE_SECRET: &str = "test-console-secret-0123456789abcdef";

/// A running `herald-console`.
pub struct Console {
    pub addr: SocketAddr,
    /// `HERALD_CONSOLE_PUBLIC_URL`: `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    child: Child,
}

impl Console {
    /// Starts the console on `addr` with the installation's `env` (its settings that the
    /// console does not read are ignored), talking to the given ingest and ledger.
    pub fn spawn(
        env: &HashMap<String, String>,
        addr: SocketAddr,
        ingest: SocketAddr,
        ledger: SocketAddr,
    ) -> Console {
        let bin = bin_dir().join("herald-console");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bins` first (make test does)",
            bin.display()
        );
        let url = public_url(addr);
        let mut cmd = Command::new(bin);
        cmd.envs(env)
            .env("HERALD_CONSOLE_ADDR", addr.to_string())
            .env("HERALD_CONSOLE_PUBLIC_URL", &url)
            .env("HERALD_CONSOLE_INGEST_URL", format!("http://{ingest}"))
            .env("HERALD_CONSOLE_LEDGER_URL", format!("http://{ledger}"))
            .env("HERALD_CONSOLE_SECRET", CONSOLE_SECRET)
            .env("HERALD_METRICS_ADDR", "off")
            .env(
                "HERALD_LOG",
                env.get("HERALD_LOG").map_or("warn", String::as_str),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("spawn herald-console");
        Console { addr, url, child }
    }

    /// Waits until the console accepts connections (at most 30 s), failing at once if it
    /// exited.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("herald-console exited at start ({status}); its log is above");
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "herald-console did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An absolute URL of the console: `path` starts with `/`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Stops the process (SIGKILL: the console keeps nothing worth draining in tests).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The public URL a console on `addr` is reached at.
pub fn public_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

impl Drop for Console {
    fn drop(&mut self) {
        self.kill();
    }
}
