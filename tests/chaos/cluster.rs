//! Herald on a three-node RabbitMQ cluster (`deploy/local/cluster.sh`: nodes hc1..hc3 on
//! ports 5681..5683 beside the machine's own broker), with nodes lost under load: one stopped
//! gracefully, then another killed with SIGKILL, each started again later. Every service is
//! given the three addresses (`HERALD_AMQP_URL` with commas) and every quorum queue three
//! replicas (`HERALD_QUORUM_REPLICAS`), so two nodes of three keep a majority of every queue.
//!
//! Checked: every accepted event reaches every endpoint and the ledger is complete; duplicate
//! deliveries are counted and printed; no publisher is refused for longer than
//! [`OUTAGE_WINDOW`] in a row (the time a connection needs to find another node and a queue
//! to elect a new leader). `CHAOS_SCALE` repeats the fault rounds with more load (`make chaos`).

use std::process::Command;
use std::time::{Duration, Instant};

use herald_tests::procs::Processes;

use crate::load::{SERIAL, Tally, assert_complete, publish_all, scale, setup};

/// Longest run of refused publishes the README promises while one node of three is lost.
const OUTAGE_WINDOW: Duration = Duration::from_secs(15);

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/cluster.sh");

/// The three nodes; stopped and their data deleted when dropped (also on panic).
struct Cluster {
    dir: String,
    urls: String,
}

impl Cluster {
    fn start() -> Cluster {
        let mut c = Cluster {
            dir: format!("/tmp/herald-cluster-{:08x}", rand::random::<u32>()),
            urls: String::new(),
        };
        c.run(&["start"]);
        let out = c.command(&["urls"]).output().expect("cluster.sh urls");
        c.urls = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SCRIPT);
        cmd.args(args).env("HERALD_CLUSTER_DIR", &self.dir);
        cmd
    }

    fn run(&self, args: &[&str]) {
        let status = self.command(args).status().expect("cluster.sh runs");
        assert!(status.success(), "cluster.sh {args:?} failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.command(&["destroy"]).status();
    }
}

#[tokio::test]
async fn losing_a_broker_node_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start();
    let p = Processes::start(
        2,
        &[
            ("HERALD_AMQP_URL", cluster.urls.as_str()),
            ("HERALD_QUORUM_REPLICAS", "3"),
        ],
    )
    .await;
    let s = setup(&p, 2).await;
    let tally = Tally::start(s.rx);
    let rounds = scale();
    let publishing = {
        let (addr, key) = (p.ingest_addr, s.key.clone());
        tokio::spawn(async move {
            publish_all(
                addr,
                &key,
                "c",
                600 * rounds,
                Duration::from_millis(25),
                Duration::from_secs(240 * rounds as u64),
            )
            .await
        })
    };
    let started = Instant::now();
    for round in 0..rounds {
        // The first node is every process's first address: stopping it moves them all.
        let (stopped, killed) = (["1", "3", "2"][round % 3], ["2", "1", "3"][round % 3]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.run(&["stop", stopped]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster.run(&["restart", stopped]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.run(&["kill", killed]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster.run(&["restart", killed]);
    }
    let published = publishing.await.expect("publish loop");
    eprintln!(
        "cluster: {} events published in {:.1} s through {rounds} round(s) of a node stopped and a node killed; {} calls refused, {} transport errors, longest refusal {:.2} s",
        published.accepted.len(),
        started.elapsed().as_secs_f64(),
        published.unavailable,
        published.transport,
        published.longest_outage.as_secs_f64()
    );
    assert!(
        published.longest_outage <= OUTAGE_WINDOW,
        "publishers were refused for {:?} in a row (promised at most {OUTAGE_WINDOW:?})",
        published.longest_outage
    );
    assert_complete(
        &p,
        &published,
        s.endpoints,
        &tally,
        Duration::from_secs(180),
        true,
    )
    .await;
    drop(p);
    drop(cluster);
}
