//! Baselines: what this machine does with the same payloads when Herald is not in the way, so
//! Herald's figures can be read as a share of the hardware rather than as absolute numbers.
//!
//! - RabbitMQ, one hop: persistent messages, publisher confirms pipelined 256 deep, into a
//!   durable queue of Herald's queue type; a consumer acks each message. This is the floor of
//!   one delivery task per delivery.
//! - RabbitMQ, two hops: the same, plus a relay that consumes, republishes confirmed to a second
//!   queue and acks only after the confirm (the dispatcher's ack discipline), then a sink.
//! - RabbitMQ, publish only: the same publishes into a queue nobody consumes (what a publisher
//!   alone can hand the broker: the ceiling of ingest's acceptance).
//! - HTTP: reqwest with 64 requests in flight against the bench's own receiver.
//!
//! Each runs for `--baseline-secs`; the rate is what the last stage completed in that window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::task::JoinHandle;

use crate::cli::Settings;
use crate::load::PayloadMaker;
use crate::procs::unique_name;
use crate::receiver::{Receiver, ReceiverOptions};
use crate::report::{BaselineFigure, Baselines, CpuCost};
use crate::usage::{CpuSnapshot, usage_between};

/// Publisher confirms in flight.
const WINDOW: usize = 256;
/// Unacked messages per consumer.
const PREFETCH: u16 = 256;
/// HTTP requests in flight.
const HTTP_IN_FLIGHT: usize = 64;

/// Runs the three baselines with payloads of `payload_bytes`.
pub async fn run_all(settings: &Settings, payload_bytes: usize) -> Baselines {
    let window = Duration::from_secs(settings.baseline_secs.max(1));
    let limit = Duration::from_secs(settings.timeout.max(30));
    let payload = PayloadMaker::new(payload_bytes).make(0, 0);
    let quorum = settings.queue_type == "quorum";
    eprintln!("bench: baseline: RabbitMQ one hop");
    let rabbit_one_hop = figure(
        limit,
        rabbit(&settings.amqp_url, quorum, &payload, window, false),
    )
    .await;
    eprintln!("bench: baseline: RabbitMQ one hop, minimal client");
    let rabbit_one_hop_raw = broker_limit(settings, payload_bytes).await;
    eprintln!("bench: baseline: RabbitMQ two hops");
    let rabbit_two_hops = figure(
        limit,
        rabbit(&settings.amqp_url, quorum, &payload, window, true),
    )
    .await;
    eprintln!("bench: baseline: RabbitMQ publish only");
    let rabbit_publish = figure(
        limit,
        rabbit_publish_only(&settings.amqp_url, quorum, &payload, window),
    )
    .await;
    eprintln!("bench: baseline: RabbitMQ publish only, minimal client");
    let rabbit_publish_raw = figure(
        limit,
        rabbit_raw(&settings.amqp_url, quorum, &payload, window, false),
    )
    .await;
    eprintln!("bench: baseline: bare HTTP POST");
    let http_post = figure(limit, http(Bytes::from(payload), window)).await;
    Baselines {
        payload_bytes,
        queue_type: settings.queue_type.clone(),
        rabbit_one_hop,
        rabbit_one_hop_raw,
        rabbit_two_hops,
        rabbit_publish,
        rabbit_publish_raw,
        http_post,
    }
}

/// The broker's own limit: one hop with the minimal client (see `scale_out.rs`).
pub async fn broker_limit(settings: &Settings, payload_bytes: usize) -> BaselineFigure {
    let window = Duration::from_secs(settings.baseline_secs.max(1));
    let limit = Duration::from_secs(settings.timeout.max(30));
    let payload = PayloadMaker::new(payload_bytes).make(0, 0);
    let quorum = settings.queue_type == "quorum";
    figure(
        limit,
        rabbit_raw(&settings.amqp_url, quorum, &payload, window, true),
    )
    .await
}

/// (completed, seconds) → figure, bounded by `limit`.
///
/// The CPU cost is charged from the first to the last moment of the baseline (setup included,
/// a few queue declarations) with the bench process as the client.
async fn figure(
    limit: Duration,
    measured: impl Future<Output = Result<(u64, f64)>>,
) -> BaselineFigure {
    let me = [("bench".to_owned(), std::process::id())];
    let begin = CpuSnapshot::take(&me);
    let outcome = tokio::time::timeout(limit, measured).await;
    let usage = usage_between(&begin, &CpuSnapshot::take(&me));
    match outcome {
        Ok(Ok((count, secs))) => BaselineFigure {
            per_sec: (secs > 0.0).then_some(count as f64 / secs),
            count,
            secs,
            error: None,
            cpu: CpuCost::new(&usage, count, |_| true),
        },
        Ok(Err(e)) => BaselineFigure {
            error: Some(format!("{e:#}")),
            ..Default::default()
        },
        Err(_) => BaselineFigure {
            error: Some("timed out".into()),
            ..Default::default()
        },
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn declare(ch: &Channel, name: &str, quorum: bool) -> Result<()> {
    let mut args = FieldTable::default();
    if quorum {
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(ShortString::from(name), opts, args)
        .await?;
    Ok(())
}

/// One or two hops; returns (messages the last consumer acked within the window, window).
async fn rabbit(
    url: &str,
    quorum: bool,
    payload: &[u8],
    window: Duration,
    two_hops: bool,
) -> Result<(u64, f64)> {
    let prefix = unique_name();
    let first = format!("{prefix}.baseline.in");
    let second = format!("{prefix}.baseline.out");
    let admin = connect(url, "herald-bench-baseline").await?;
    let ch = admin.create_channel().await?;
    let mut queues = vec![first.clone()];
    if two_hops {
        queues.push(second.clone());
    }
    let outcome: Result<(u64, f64)> = async {
        for q in &queues {
            declare(&ch, q, quorum).await?;
        }
        let publisher = connect(url, "herald-bench-publisher").await?;
        let sink_conn = connect(url, "herald-bench-sink").await?;
        let relay_conn = connect(url, "herald-bench-relay").await?;
        let sink_queue = if two_hops { &second } else { &first };
        let (sink, sunk) = spawn_sink(&sink_conn, sink_queue).await?;
        let relay = if two_hops {
            Some(spawn_relay(&relay_conn, &first, &second).await?)
        } else {
            None
        };
        let started = Instant::now();
        let published = publish_for(&publisher, &first, payload, window).await;
        let elapsed = started.elapsed().as_secs_f64();
        let done = sunk.load(Ordering::Relaxed);
        sink.abort();
        if let Some(r) = relay {
            r.abort();
        }
        for c in [&publisher, &sink_conn, &relay_conn] {
            let _ = c.close(200, ShortString::from("done")).await;
        }
        published?;
        Ok((done, elapsed))
    }
    .await;
    for q in &queues {
        let _ = ch
            .queue_delete(ShortString::from(q.as_str()), QueueDeleteOptions::default())
            .await;
    }
    let _ = admin.close(200, ShortString::from("done")).await;
    outcome
}

/// Declares a fresh queue named after `suffix`, runs `measure` on its name, and deletes the
/// queue whatever the outcome.
async fn with_queue(
    url: &str,
    suffix: &str,
    quorum: bool,
    measure: impl AsyncFnOnce(&str) -> Result<(u64, f64)>,
) -> Result<(u64, f64)> {
    let queue = format!("{}.baseline.{suffix}", unique_name());
    let admin = connect(url, "herald-bench-baseline").await?;
    let ch = admin.create_channel().await?;
    let outcome = match declare(&ch, &queue, quorum).await {
        Ok(()) => measure(&queue).await,
        Err(e) => Err(e),
    };
    let _ = ch
        .queue_delete(
            ShortString::from(queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = admin.close(200, ShortString::from("done")).await;
    outcome
}

/// One hop (`consumed`) or publish only with the minimal client of [`crate::rawamqp`] (the
/// queue is declared with lapin, off the clock); returns (messages acked, or confirmed when
/// nobody consumes, within the window; the window).
async fn rabbit_raw(
    url: &str,
    quorum: bool,
    payload: &[u8],
    window: Duration,
    consumed: bool,
) -> Result<(u64, f64)> {
    with_queue(url, "raw", quorum, async |queue: &str| {
        let sunk = Arc::new(AtomicU64::new(0));
        let sink = consumed.then(|| {
            let consumer =
                crate::rawamqp::consume(url.to_owned(), queue.to_owned(), PREFETCH, sunk.clone());
            tokio::spawn(consumer)
        });
        let started = Instant::now();
        let published =
            crate::rawamqp::publish_for(url, queue, payload, window, WINDOW as u64).await;
        let elapsed = started.elapsed().as_secs_f64();
        let Some(sink) = sink else {
            return Ok((published?, elapsed));
        };
        let done = sunk.load(Ordering::Relaxed);
        let sink_failed = sink.is_finished();
        sink.abort();
        match sink.await {
            Ok(Err(e)) => return Err(e.context("the minimal consumer failed")),
            _ if sink_failed => bail!("the minimal consumer ended early"),
            _ => {}
        }
        published?;
        Ok((done, elapsed))
    })
    .await
}

/// Publishes into a fresh queue nobody consumes; returns (messages confirmed, seconds).
async fn rabbit_publish_only(
    url: &str,
    quorum: bool,
    payload: &[u8],
    window: Duration,
) -> Result<(u64, f64)> {
    with_queue(url, "publish", quorum, async |queue: &str| {
        let publisher = connect(url, "herald-bench-publisher").await?;
        let started = Instant::now();
        let published = publish_for(&publisher, queue, payload, window).await;
        let elapsed = started.elapsed().as_secs_f64();
        let _ = publisher.close(200, ShortString::from("done")).await;
        Ok((published?, elapsed))
    })
    .await
}

/// Publishes persistent messages to `queue` for `window`, keeping `WINDOW` confirms in
/// flight; returns how many were confirmed.
async fn publish_for(
    conn: &Connection,
    queue: &str,
    payload: &[u8],
    window: Duration,
) -> Result<u64> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let until = Instant::now() + window;
    let mut in_flight = FuturesUnordered::new();
    let mut confirmed = 0u64;
    while Instant::now() < until {
        while in_flight.len() >= WINDOW {
            if let Some(c) = in_flight.next().await {
                check(c)?;
                confirmed += 1;
            }
        }
        let confirm = ch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                payload,
                persistent(),
            )
            .await?;
        in_flight.push(confirm);
    }
    while let Some(c) = in_flight.next().await {
        check(c)?;
        confirmed += 1;
    }
    Ok(confirmed)
}

/// A lapin connection of the baseline's own, named for the management UI.
async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

fn check(c: lapin::Result<Confirmation>) -> Result<()> {
    match c? {
        Confirmation::Nack(_) => bail!("the broker nacked a message"),
        _ => Ok(()),
    }
}

/// A consumer that acks each message and counts it.
async fn spawn_sink(conn: &Connection, queue: &str) -> Result<(JoinHandle<()>, Arc<AtomicU64>)> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            ShortString::from(queue),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        let _channel = ch;
        while let Some(Ok(delivery)) = consumer.next().await {
            if delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .is_err()
            {
                break;
            }
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok((task, count))
}

/// A relay: consumes `from`, republishes each message confirmed to `to`, then acks it.
async fn spawn_relay(conn: &Connection, from: &str, to: &str) -> Result<JoinHandle<()>> {
    let input = conn.create_channel().await?;
    input
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let output = conn.create_channel().await?;
    output
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = input
        .basic_consume(
            ShortString::from(from),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let to = to.to_owned();
    Ok(tokio::spawn(async move {
        let _input = input;
        let mut pending = FuturesUnordered::new();
        loop {
            tokio::select! {
                next = consumer.next() => {
                    let Some(Ok(delivery)) = next else { break };
                    let output = output.clone();
                    let to = to.clone();
                    pending.push(async move {
                        let confirm = output
                            .basic_publish(
                                ShortString::from(""),
                                ShortString::from(to.as_str()),
                                BasicPublishOptions::default(),
                                &delivery.data,
                                persistent(),
                            )
                            .await;
                        if let Ok(confirm) = confirm
                            && let Ok(Confirmation::Ack(_)) = confirm.await
                        {
                            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                        }
                    });
                }
                Some(()) = pending.next(), if !pending.is_empty() => {}
            }
        }
    }))
}

/// POSTs the payload with `HTTP_IN_FLIGHT` requests in flight for `window`; returns the
/// 2xx answers within it.
async fn http(payload: Bytes, window: Duration) -> Result<(u64, f64)> {
    let start = Instant::now();
    let receiver = Receiver::start(start, ReceiverOptions::default()).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(HTTP_IN_FLIGHT)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = receiver.url("/ok/baseline");
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + window;
    let workers: Vec<JoinHandle<u64>> = (0..HTTP_IN_FLIGHT)
        .map(|_| {
            let (client, url, payload, seq) =
                (client.clone(), url.clone(), payload.clone(), seq.clone());
            tokio::spawn(async move {
                let mut ok = 0u64;
                while Instant::now() < until {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let id = uuid::Uuid::from_u128(u128::from(n) + 1).to_string();
                    let sent = client
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .header("webhook-id", id)
                        .body(payload.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(resp) => {
                            let success = resp.status().is_success();
                            let _ = resp.bytes().await;
                            if success {
                                ok += 1;
                            }
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                ok
            })
        })
        .collect();
    let mut total = 0u64;
    for joined in futures::future::join_all(workers).await {
        total += joined.unwrap_or(0);
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(receiver);
    Ok((total, elapsed))
}
