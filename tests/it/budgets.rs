//! Budgets on what a tenant's calls cost ingest: a payload filter's evaluation steps (a
//! pathological filter is stopped by its budget, off the async workers, so other tenants' calls
//! stay fast; a stored one that runs out misses only its own endpoint), a tenant's share of
//! filter CPU (`HERALD_TENANT_PAYLOAD_CPU_MS`: past it, refused with a retry delay, while other
//! tenants and its unfiltered publishes go on) and a publish call's fan-out (refused whole
//! past `HERALD_MAX_FANOUT_BYTES`, handed off in chunks below it).

use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Options, Tenant, authed, retry_delay};
use tonic::Code;

/// The default `HERALD_MAX_PAYLOAD_BYTES`.
const MAX_PAYLOAD: usize = 256 * 1024;

/// `{"$and":[{"a":{"$nin":[0 × 256]}} × 30]}`: 15.9 KiB, within every parse limit, and each
/// branch compares its 256 values with every element of `a`.
fn pathological_filter() -> String {
    let branch = serde_json::json!({ "a": { "$nin": vec![0; 256] } });
    let text = serde_json::json!({ "$and": vec![branch; 30] }).to_string();
    assert!(text.len() <= 16 * 1024, "{} bytes", text.len());
    text
}

/// `{"a":[1,1,…]}` (plus `extra` fields) of exactly `bytes` bytes or one less.
fn array_payload(bytes: usize, extra: &str) -> Vec<u8> {
    let head = format!("{{{extra}\"a\":[");
    let n = (bytes - head.len() - 2).div_ceil(2);
    let mut text = head;
    text.push_str(&vec!["1"; n].join(","));
    text.push_str("]}");
    text.into_bytes()
}

async fn test_filter(
    herald: &Herald,
    tenant: &Tenant,
    filter: &str,
    payload: Vec<u8>,
) -> Result<pb::TestFilterResponse, tonic::Status> {
    herald
        .endpoints()
        .await
        .test_filter(authed(
            pb::TestFilterRequest {
                filter: filter.into(),
                payload,
            },
            &tenant.api_key,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_pathological_filter_runs_out_of_budget_and_others_stay_fast() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        // The step budget alone (the share has a test of its own).
        env: vec![("HERALD_TENANT_PAYLOAD_CPU_MS".into(), "0".into())],
        ..Default::default()
    })
    .await;
    let heavy = herald.tenant().await;
    let other = herald.tenant().await;
    let filter = pathological_filter();

    // Over the publish payload limit: refused before anything is parsed.
    let over = array_payload(MAX_PAYLOAD + 2, "");
    assert!(over.len() > MAX_PAYLOAD);
    let status = test_filter(&herald, &heavy, &filter, over)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("HERALD_MAX_PAYLOAD_BYTES"),
        "{}",
        status.message()
    );

    // Just under it: 30 × 256 × ~131,000 comparisons (seconds of CPU before the budget) stop
    // at the budget, with an answer that says so.
    let under = array_payload(MAX_PAYLOAD, "");
    assert!(under.len() <= MAX_PAYLOAD && under.len() > MAX_PAYLOAD - 4);
    let started = Instant::now();
    let status = test_filter(&herald, &heavy, &filter, under.clone())
        .await
        .unwrap_err();
    let alone = started.elapsed();
    assert!(alone < Duration::from_secs(5), "took {alone:?}");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("filter: ran out of its budget of 1000000 steps on this payload"),
        "{}",
        status.message()
    );

    // Four of them at once beside another tenant's calls: those stay fast.
    let (heavy_took, slowest) = beside_heavy_calls(&herald, &heavy, &other, &filter, &under).await;
    for took in heavy_took {
        // Unbounded, each took seconds of CPU (over a minute in a debug build).
        assert!(took < Duration::from_secs(5), "a heavy call took {took:?}");
    }
    assert!(
        slowest < Duration::from_secs(1),
        "another tenant's ListEventTypes took {slowest:?} (one heavy call alone: {alone:?})"
    );
    herald.stop().await;
}

#[tokio::test]
async fn filters_are_evaluated_off_the_async_workers() {
    // A budget large enough for each call to take seconds: they must not hold up the workers
    // (this test's runtime has a single one, shared by the whole installation).
    let herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![
            ("HERALD_FILTER_STEP_BUDGET".into(), "30000000".into()),
            // All four at once, each as long as it takes: what is measured is the workers.
            ("HERALD_PAYLOAD_THREADS".into(), "4".into()),
            ("HERALD_TENANT_PAYLOAD_CPU_MS".into(), "0".into()),
        ],
        ..Default::default()
    })
    .await;
    let (heavy, other) = (herald.tenant().await, herald.tenant().await);
    let under = array_payload(MAX_PAYLOAD, "");
    let (heavy_took, slowest) =
        beside_heavy_calls(&herald, &heavy, &other, &pathological_filter(), &under).await;
    let longest = heavy_took.into_iter().max().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "another tenant's ListEventTypes took {slowest:?} beside heavy calls of {longest:?}"
    );
    herald.stop().await;
}

/// Runs four `TestFilter` calls of `heavy` (each must run out of its budget) while `other`
/// lists its event types again and again: how long each heavy call took, and the slowest list.
async fn beside_heavy_calls(
    herald: &Herald,
    heavy: &Tenant,
    other: &Tenant,
    filter: &str,
    payload: &[u8],
) -> (Vec<Duration>, Duration) {
    let heavy_calls: Vec<_> = (0..4)
        .map(|_| {
            let (addr, key, filter, payload) = (
                herald.ingest_addr,
                heavy.api_key.clone(),
                filter.to_owned(),
                payload.to_vec(),
            );
            tokio::spawn(async move {
                let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let started = Instant::now();
                let r = pb::endpoints_client::EndpointsClient::new(channel)
                    .test_filter(authed(pb::TestFilterRequest { filter, payload }, &key))
                    .await;
                (r.map(|_| ()), started.elapsed())
            })
        })
        .collect();
    let mut types = herald.event_types().await;
    let mut slowest = Duration::ZERO;
    let mut listed = 0;
    while heavy_calls.iter().any(|c| !c.is_finished()) || listed < 3 {
        let started = Instant::now();
        types
            .list_event_types(authed(pb::ListEventTypesRequest::default(), &other.api_key))
            .await
            .expect("list event types");
        slowest = slowest.max(started.elapsed());
        listed += 1;
    }
    let mut took = Vec::new();
    let mut ran = 0;
    for call in heavy_calls {
        let (result, elapsed) = call.await.unwrap();
        let status = result.unwrap_err();
        // Stopped by the step budget, or refused by the tenant's share of filter CPU (or its
        // places on the filter threads) once earlier ones used it.
        match status.code() {
            Code::InvalidArgument => {
                assert!(
                    status.message().contains("ran out of its budget"),
                    "{}",
                    status.message()
                );
                ran += 1;
            }
            Code::ResourceExhausted => assert!(
                status.message().contains("HERALD_TENANT_PAYLOAD_CPU_MS")
                    || status.message().contains("HERALD_PAYLOAD_THREADS"),
                "{}",
                status.message()
            ),
            _ => panic!("{status:?}"),
        }
        took.push(elapsed);
    }
    assert!(ran >= 1, "no heavy call ran");
    (took, slowest)
}

/// A `TestFilter` call that runs out of its step budget (its CPU is charged to the tenant) or
/// is refused by the tenant's share: true when it ran.
async fn heavy_call_ran(herald: &Herald, tenant: &Tenant, payload: &[u8]) -> bool {
    let status = test_filter(herald, tenant, &pathological_filter(), payload.to_vec())
        .await
        .unwrap_err();
    match status.code() {
        Code::InvalidArgument => true,
        Code::ResourceExhausted => {
            assert!(
                status
                    .message()
                    .contains("used its share of this ingest's CPU (100 ms per second, HERALD_TENANT_PAYLOAD_CPU_MS); retry after"),
                "{}",
                status.message()
            );
            let hint = retry_delay(&status);
            assert!(
                hint > Duration::ZERO && hint <= Duration::from_secs(60),
                "{hint:?}"
            );
            false
        }
        _ => panic!("{status:?}"),
    }
}

#[tokio::test]
async fn a_tenants_filters_get_a_share_of_the_cpu_and_no_more() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![("HERALD_TENANT_PAYLOAD_CPU_MS".into(), "100".into())],
        ..Default::default()
    })
    .await;
    let (greedy, other) = (herald.tenant().await, herald.tenant().await);
    let under = array_payload(MAX_PAYLOAD, "");
    // Each call runs 1,000,000 steps (milliseconds of CPU, more in a debug build): calling in
    // a loop, the greedy tenant is soon past 100 ms a second and refused.
    let (mut ran, mut refused) = (0, 0);
    let started = Instant::now();
    while refused < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{ran} heavy calls ran and none was refused"
        );
        if heavy_call_ran(&herald, &greedy, &under).await {
            ran += 1;
        } else {
            refused += 1;
        }
    }
    assert!(ran >= 1);
    // Another tenant's filters have a share of their own.
    assert!(heavy_call_ran(&herald, &other, &under).await);
    // The greedy tenant still publishes what needs no filter and is small (a fraction of a
    // millisecond to validate: neither charged nor refused).
    herald
        .create_endpoint(
            &greedy,
            pb::CreateEndpointRequest {
                url: "http://127.0.0.1:9/plain".into(),
                event_types: vec!["plain.*".into()],
                ..Default::default()
            },
        )
        .await;
    let published = herald
        .publish(&greedy, "plain.event", br#"{"small":true}"#)
        .await;
    assert_eq!(published.deliveries, 1);
    herald.stop().await;
}

#[tokio::test]
async fn a_stored_filter_out_of_budget_misses_only_its_endpoint() {
    let herald = Herald::start(Options::default()).await;
    let tenant = herald.tenant().await;
    let mut rx = Receiver::ok().await;
    let endpoint = |path: &str, filter: String| pb::CreateEndpointRequest {
        url: rx.url(path),
        event_types: vec!["budget.*".into()],
        filter: Some(filter),
        ..Default::default()
    };
    let (costly, _) = herald
        .create_endpoint(&tenant, endpoint("/costly", pathological_filter()))
        .await;
    let (cheap, _) = herald
        .create_endpoint(&tenant, endpoint("/cheap", r#"{"kind": "big"}"#.into()))
        .await;

    let payload = array_payload(200_000, r#""kind":"big","#);
    let published = herald.publish(&tenant, "budget.test", &payload).await;
    assert_eq!(published.deliveries, 1, "only the cheap endpoint");
    let got = rx
        .exactly(1, Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/cheap");
    assert_eq!(got[0].body.as_ref(), payload.as_slice());
    let deliveries = herald
        .wait_deliveries(&tenant, &published.event_id, 1)
        .await;
    assert_eq!(deliveries[0].endpoint_id, cheap.id);
    assert_ne!(deliveries[0].endpoint_id, costly.id);

    // The same endpoint gets what its filter can decide within its share of the budget
    // (30 × 256 × 51 comparisons: 392,000 steps of its 500,000).
    let small = array_payload(120, r#""kind":"big","#);
    let published = herald.publish(&tenant, "budget.test", &small).await;
    assert_eq!(published.deliveries, 2);
    let got = rx
        .exactly(2, Duration::from_secs(10), Duration::from_millis(300))
        .await;
    let mut paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/cheap", "/costly"]);
    herald.stop().await;
}

fn event(n: usize, payload_bytes: usize) -> pb::PublishRequest {
    let head = format!("{{\"n\":{n},\"pad\":\"");
    let pad = "x".repeat(payload_bytes - head.len() - 2);
    pb::PublishRequest {
        event_type: "fan.out".into(),
        payload: format!("{head}{pad}\"}}").into_bytes(),
        idempotency_key: Some(format!("key-{n}")),
        occurred_at: None,
    }
}

#[tokio::test]
async fn validating_large_payloads_takes_from_the_same_share() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![("HERALD_TENANT_PAYLOAD_CPU_MS".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let (greedy, other) = (herald.tenant().await, herald.tenant().await);
    let mut events = herald.events().await;
    // 8 payloads of 200 KB: 1.6 MB to validate per call, above what runs inline.
    let batch = pb::PublishBatchRequest {
        events: (0..8)
            .map(|n| pb::PublishRequest {
                idempotency_key: None,
                ..event(n, 200_000)
            })
            .collect(),
    };
    let started = Instant::now();
    let status = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never refused at 1 ms of CPU a second"
        );
        match events
            .publish_batch(authed(batch.clone(), &greedy.api_key))
            .await
        {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("HERALD_TENANT_PAYLOAD_CPU_MS"),
        "{}",
        status.message()
    );
    assert!(retry_delay(&status) > Duration::ZERO);
    events
        .publish_batch(authed(batch, &other.api_key))
        .await
        .expect("another tenant has a share of its own");
    herald.stop().await;
}

#[tokio::test]
async fn a_tenant_over_its_share_of_bytes_is_refused_before_its_message_is_read() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![("HERALD_TENANT_INGRESS_BYTES".into(), "1000000".into())],
        ..Default::default()
    })
    .await;
    let (greedy, other) = (herald.tenant().await, herald.tenant().await);
    let mut events = herald.events().await;
    // 12 events of 200 KB: 2.4 MB, 1.4 MB past the second's worth saved up.
    let big = pb::PublishBatchRequest {
        events: (0..12)
            .map(|n| pb::PublishRequest {
                idempotency_key: None,
                ..event(n, 200_000)
            })
            .collect(),
    };
    let sent = Instant::now();
    events
        .publish_batch(authed(big.clone(), &greedy.api_key))
        .await
        .expect("admitted: nothing owed yet");
    // Now even a small call is refused, from its headers.
    let status = events
        .publish(authed(event(99, 100), &greedy.api_key))
        .await
        .unwrap_err();
    let hint = retry_delay(&status);
    assert!(
        status.message().contains(
            "this tenant sent this ingest more than its share of bytes (1000000 bytes per second, HERALD_TENANT_INGRESS_BYTES)"
        ),
        "{}",
        status.message()
    );
    // 1.4 MB owed at 1 MB/s, less what was paid back while the calls ran (however slow the
    // machine is).
    let since = sent.elapsed();
    assert!(
        hint + since >= Duration::from_millis(1_300) && hint <= Duration::from_millis(1_500),
        "{hint:?} hinted {since:?} after the batch was sent"
    );
    events
        .publish_batch(authed(big, &other.api_key))
        .await
        .expect("another tenant has a share of its own");
    tokio::time::sleep(hint).await;
    events
        .publish(authed(event(99, 100), &greedy.api_key))
        .await
        .expect("accepted after the hinted delay");
    herald.stop().await;
}

/// Waits until `table` holds `n` rows, failing if it ever holds more.
async fn wait_rows(herald: &Herald, table: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = herald.count(table).await;
        assert!(rows <= n, "{rows} rows in {table}, expected {n}");
        if rows == n {
            return;
        }
        assert!(Instant::now() < deadline, "{rows} of {n} rows in {table}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_batch_over_the_fanout_limit_is_refused_whole() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![("HERALD_MAX_FANOUT_BYTES".into(), "20000".into())],
        ..Default::default()
    })
    .await;
    let tenant = herald.tenant().await;
    for i in 0..3 {
        herald
            .create_endpoint(
                &tenant,
                pb::CreateEndpointRequest {
                    url: format!("http://127.0.0.1:9/{i}"),
                    event_types: vec!["fan.*".into()],
                    ..Default::default()
                },
            )
            .await;
    }
    let mut events = herald.events().await;

    // 5 events × 3 endpoints × (1 KiB + 1 KiB counted per task) = 30 KiB > 20,000 bytes.
    let batch = pb::PublishBatchRequest {
        events: (0..5).map(|n| event(n, 1024)).collect(),
    };
    let status = events
        .publish_batch(authed(batch, &tenant.api_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("fans out to 15 deliveries weighing 30720 bytes"),
        "{}",
        status.message()
    );
    assert!(
        status
            .message()
            .contains("HERALD_MAX_FANOUT_BYTES allows 20000 per call"),
        "{}",
        status.message()
    );

    // Refused before any payload is parsed: a batch of non-JSON payloads bound to be refused
    // gets the fan-out refusal, not an answer per event about its payload.
    let junk = pb::PublishBatchRequest {
        events: (0..5)
            .map(|n| pb::PublishRequest {
                payload: vec![b'x'; 2048],
                ..event(n, 1024)
            })
            .collect(),
    };
    let status = events
        .publish_batch(authed(junk, &tenant.api_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("fans out to 15 deliveries"),
        "{}",
        status.message()
    );

    // Nothing was handed off, and the keys were let go: the same events fit in smaller calls.
    for n in 0..5 {
        let r = events
            .publish(authed(event(n, 1024), &tenant.api_key))
            .await
            .expect("one event fits")
            .into_inner();
        assert_eq!((r.deliveries, r.duplicate), (3, false));
    }
    wait_rows(&herald, "events", 5).await;
    wait_rows(&herald, "deliveries", 15).await;
    herald.stop().await;
}

#[tokio::test]
async fn a_fanout_larger_than_a_chunk_is_handed_off_in_chunks_completely() {
    // Chunks of 16 KiB hold 5 tasks of 2 KiB payloads (3 KiB counted each): 30 tasks, 6 chunks.
    let herald = Herald::start(Options {
        env: vec![
            ("HERALD_MAX_PAYLOAD_BYTES".into(), "4096".into()),
            ("HERALD_PUBLISH_CHUNK_BYTES".into(), "16384".into()),
            ("HERALD_PUBLISH_MEMORY".into(), "16384".into()),
        ],
        ..Default::default()
    })
    .await;
    let tenant = herald.tenant().await;
    let mut rx = Receiver::ok().await;
    for path in ["/a", "/b", "/c"] {
        herald
            .create_endpoint(
                &tenant,
                pb::CreateEndpointRequest {
                    url: rx.url(path),
                    event_types: vec!["fan.*".into()],
                    ..Default::default()
                },
            )
            .await;
    }
    let batch = pb::PublishBatchRequest {
        events: (0..10).map(|n| event(n, 2048)).collect(),
    };
    let results = herald
        .events()
        .await
        .publish_batch(authed(batch, &tenant.api_key))
        .await
        .expect("accepted")
        .into_inner()
        .results;
    let mut ids = Vec::new();
    for r in results {
        match r.outcome {
            Some(pb::publish_result::Outcome::Accepted(ok)) => {
                assert_eq!(ok.deliveries, 3);
                ids.push(ok.event_id);
            }
            other => panic!("not accepted: {other:?}"),
        }
    }
    let got = rx
        .exactly(30, Duration::from_secs(20), Duration::from_millis(500))
        .await;
    assert_eq!(got.len(), 30);
    for id in &ids {
        let ds = herald.wait_deliveries(&tenant, id, 3).await;
        assert_eq!(ds.len(), 3, "event {id}");
    }
    herald.stop().await;
}

/// Re-sends are publishes: `Redeliver`, `ReplayEndpoint` (ledger) and `SendTest` (ingest) take
/// from the tenant's publish bucket, a replay runs one at a time per tenant and a page at a
/// time, and test sends in progress are capped per tenant.
mod resends {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use herald_proto::v1 as pb;
    use herald_tests::receiver::{Receiver, Reply};
    use herald_tests::{ADMIN_TOKEN, Herald, Options, REDIS_URL, Tenant, authed};
    use tonic::Code;

    /// The `RetryInfo` delay of a refusal, checked against its `retry-after-ms` header.
    fn retry_hint(status: &tonic::Status) -> Duration {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains(
                "publish rate limit of 2 events/s for this tenant reached (re-sends count as publishes); retry after"
            ) || status.message().contains(
                "publish rate limit of 2 events/s for this tenant reached (test sends and re-sends count as publishes); retry after"
            ),
            "{}",
            status.message()
        );
        let hint = herald_tests::retry_delay(status);
        assert!(
            hint > Duration::ZERO && hint <= Duration::from_secs(1),
            "{hint:?}"
        );
        hint
    }

    async fn set_rate(herald: &Herald, tenant: &Tenant, rate: u32) {
        herald
            .admin()
            .await
            .update_tenant(authed(
                pb::UpdateTenantRequest {
                    id: tenant.id.clone(),
                    publish_rate_limit: Some(rate),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("set the tenant's publish rate");
    }

    fn replay(
        endpoint_id: &str,
        status: pb::DeliveryStatus,
        after: &str,
    ) -> pb::ReplayEndpointRequest {
        pb::ReplayEndpointRequest {
            endpoint_id: endpoint_id.into(),
            status: status as i32,
            after_delivery_id: after.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn resends_take_from_the_tenant_publish_rate_and_get_a_retry_hint() {
        let herald = Herald::start(Options::default()).await;
        let rx = Receiver::ok().await;
        let tenant = herald.tenant().await;
        let (ep, _) = herald
            .create_endpoint(
                &tenant,
                pb::CreateEndpointRequest {
                    url: rx.url("/hook"),
                    event_types: vec!["*".into()],
                    ..Default::default()
                },
            )
            .await;
        let mut delivered = Vec::new();
        for n in 0..5 {
            let event = herald
                .publish(&tenant, "resend.test", format!("{{\"n\":{n}}}").as_bytes())
                .await;
            delivered.push(
                herald.wait_deliveries(&tenant, &event.event_id, 1).await[0]
                    .id
                    .clone(),
            );
        }
        // 2 events/s with a burst of 1 s: two tokens.
        set_rate(&herald, &tenant, 2).await;
        let mut deliveries = herald.deliveries().await;
        let mut endpoints = herald.endpoints().await;

        // A replay of 5 takes a token each, a page (the burst) at a time: it stops after the
        // first page when the bucket is dry, and says where to go on.
        let first = deliveries
            .replay_endpoint(authed(
                replay(&ep.id, pb::DeliveryStatus::Success, ""),
                &tenant.api_key,
            ))
            .await
            .expect("the first page fits the burst")
            .into_inner();
        assert_eq!((first.queued, first.truncated), (2, true), "{first:?}");
        // Going on at once: nothing to take, refused whole with a hint.
        let refused = deliveries
            .replay_endpoint(authed(
                replay(&ep.id, pb::DeliveryStatus::Success, &first.last_delivery_id),
                &tenant.api_key,
            ))
            .await
            .unwrap_err();
        retry_hint(&refused);
        // Redeliver and SendTest take from the same bucket (ledger and ingest share it).
        let refused = deliveries
            .redeliver(authed(
                pb::RedeliverRequest {
                    delivery_id: delivered[0].clone(),
                },
                &tenant.api_key,
            ))
            .await
            .unwrap_err();
        retry_hint(&refused);
        let test = || {
            authed(
                pb::SendTestRequest {
                    endpoint_id: ep.id.clone(),
                    ..Default::default()
                },
                &tenant.api_key,
            )
        };
        let refused = endpoints.send_test(test()).await.unwrap_err();
        let hint = retry_hint(&refused);

        // Waiting as told is enough; two more re-sends fit, the third is refused again.
        tokio::time::sleep(hint + Duration::from_millis(500)).await;
        for id in &delivered[1..3] {
            deliveries
                .redeliver(authed(
                    pb::RedeliverRequest {
                        delivery_id: id.clone(),
                    },
                    &tenant.api_key,
                ))
                .await
                .expect("within the rate after waiting");
        }
        let refused = endpoints.send_test(test()).await.unwrap_err();
        let hint = retry_hint(&refused);
        tokio::time::sleep(hint).await;
        let sent = endpoints
            .send_test(test())
            .await
            .expect("a test send after waiting")
            .into_inner();
        assert!(sent.success, "{sent:?}");
        herald.stop().await;
    }

    /// Inserts `n` failed deliveries (with their events) of `endpoint` straight into the ledger.
    async fn failed_deliveries(
        herald: &Herald,
        tenant: &Tenant,
        endpoint: &str,
        n: usize,
    ) -> Vec<uuid::Uuid> {
        let tenant_id: uuid::Uuid = tenant.id.parse().unwrap();
        let endpoint_id: uuid::Uuid = endpoint.parse().unwrap();
        let events: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let payloads: Vec<String> = (0..n).map(|i| format!("{{\"n\":{i}}}")).collect();
        sqlx::query(
            "INSERT INTO events (id, tenant_id, event_type, occurred_at, accepted_at, payload)
             SELECT e, $2, 'replay.test', now(), now(), p FROM UNNEST($1::uuid[], $3::text[]) AS t(e, p)",
        )
        .bind(&events)
        .bind(tenant_id)
        .bind(&payloads)
        .execute(&herald.pool)
        .await
        .expect("insert events");
        sqlx::query(
            "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, attempt_count, last_error, created_at)
             SELECT d, $3, e, $4, 'replay.test', 'failed', 1, 'connection refused', now()
             FROM UNNEST($1::uuid[], $2::uuid[]) AS t(d, e)",
        )
        .bind(&ids)
        .bind(&events)
        .bind(tenant_id)
        .bind(endpoint_id)
        .execute(&herald.pool)
        .await
        .expect("insert deliveries");
        ids
    }

    /// Replays running for a tenant right now, as the ledgers' lease in Redis holds them.
    async fn leases(redis: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
        redis::cmd("ZCARD")
            .arg(key)
            .query_async(redis)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_replay_at_a_time_per_tenant_each_going_through_every_page() {
        let herald = Herald::start(Options {
            env: vec![("HERALD_REPLAY_PAGE".into(), "10".into())],
            ..Default::default()
        })
        .await;
        let mut rx = Receiver::ok().await;
        let tenant = herald.tenant().await;
        let other = herald.tenant().await;
        let (ep, _) = herald
            .create_endpoint(
                &tenant,
                pb::CreateEndpointRequest {
                    url: rx.url("/hook"),
                    event_types: vec!["*".into()],
                    ..Default::default()
                },
            )
            .await;
        let (other_ep, _) = herald
            .create_endpoint(
                &other,
                pb::CreateEndpointRequest {
                    url: rx.url("/other"),
                    event_types: vec!["*".into()],
                    ..Default::default()
                },
            )
            .await;
        let ids = failed_deliveries(&herald, &tenant, &ep.id, 1000).await;
        let key = format!("{}:replays:{}", herald.name, tenant.id);
        let mut redis = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();

        // 1,000 deliveries in pages of 10: the replay holds the tenant's lease meanwhile.
        let first = {
            let (mut deliveries, request) = (
                herald.deliveries().await,
                authed(
                    replay(&ep.id, pb::DeliveryStatus::Failed, ""),
                    &tenant.api_key,
                ),
            );
            tokio::spawn(async move { deliveries.replay_endpoint(request).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while leases(&mut redis, &key).await == 0 {
            assert!(
                !first.is_finished(),
                "the replay ended before its lease was seen"
            );
            assert!(Instant::now() < deadline, "no lease taken");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut deliveries = herald.deliveries().await;
        let refused = deliveries
            .replay_endpoint(authed(
                replay(&ep.id, pb::DeliveryStatus::Retrying, ""),
                &tenant.api_key,
            ))
            .await
            .unwrap_err();
        assert!(
            !first.is_finished(),
            "the first replay ended before the second was refused"
        );
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains(
                "at most 1 ReplayEndpoint call(s) of a tenant at once (HERALD_REPLAY_CONCURRENCY)"
            ),
            "{}",
            refused.message()
        );
        // Another tenant is not held up.
        deliveries
            .replay_endpoint(authed(
                replay(&other_ep.id, pb::DeliveryStatus::Failed, ""),
                &other.api_key,
            ))
            .await
            .expect("another tenant replays meanwhile");

        let done = first.await.unwrap().expect("the first replay").into_inner();
        assert_eq!(
            (done.queued, done.skipped, done.truncated),
            (1000, 0, false),
            "{done:?}"
        );
        assert_eq!(done.last_delivery_id, ids[999].to_string());
        let got = rx
            .exactly(1000, Duration::from_secs(90), Duration::from_millis(500))
            .await;
        let sent: HashSet<String> = got
            .iter()
            .filter_map(|r| r.header("webhook-delivery-id"))
            .collect();
        let expected: HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
        assert_eq!(got.len(), 1000, "every delivery once");
        assert_eq!(sent, expected);

        // The lease was given back; one left by a ledger that died blocks only until it expires.
        let deadline = Instant::now() + Duration::from_secs(5);
        while leases(&mut redis, &key).await != 0 {
            assert!(Instant::now() < deadline, "the lease was not given back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expires = chrono::Utc::now().timestamp_millis() + 1500;
        let _: i64 = redis::cmd("ZADD")
            .arg(&key)
            .arg(expires)
            .arg("a-ledger-killed-mid-replay")
            .query_async(&mut redis)
            .await
            .unwrap();
        let refused = deliveries
            .replay_endpoint(authed(
                replay(&ep.id, pb::DeliveryStatus::Retrying, ""),
                &tenant.api_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        tokio::time::sleep(Duration::from_millis(1600)).await;
        deliveries
            .replay_endpoint(authed(
                replay(&ep.id, pb::DeliveryStatus::Retrying, ""),
                &tenant.api_key,
            ))
            .await
            .expect("the dead ledger's lease expired");
        herald.stop().await;
    }

    #[tokio::test]
    async fn test_sends_past_the_tenant_cap_are_refused_at_once() {
        let herald = Herald::start(Options {
            dispatchers: 0,
            env: vec![("HERALD_SEND_TEST_CONCURRENCY".into(), "2".into())],
            ..Default::default()
        })
        .await;
        let mut rx = Receiver::start(|path, _| Reply {
            delay: if path == "/never" {
                Duration::from_secs(60)
            } else {
                Duration::ZERO
            },
            ..Reply::status(200)
        })
        .await;
        let tenant = herald.tenant().await;
        let other = herald.tenant().await;
        let endpoint = |path: &str| pb::CreateEndpointRequest {
            url: rx.url(path),
            event_types: vec!["*".into()],
            timeout_ms: Some(3000),
            ..Default::default()
        };
        let (never, _) = herald.create_endpoint(&tenant, endpoint("/never")).await;
        let (fine, _) = herald.create_endpoint(&tenant, endpoint("/fine")).await;
        let (others, _) = herald.create_endpoint(&other, endpoint("/other")).await;
        let send = |t: &Tenant, id: &str| {
            authed(
                pb::SendTestRequest {
                    endpoint_id: id.into(),
                    ..Default::default()
                },
                &t.api_key,
            )
        };

        // Two test sends to an endpoint that never answers hold the tenant's two slots.
        let mut hanging = Vec::new();
        for _ in 0..2 {
            let (mut endpoints, request) = (herald.endpoints().await, send(&tenant, &never.id));
            hanging.push(tokio::spawn(
                async move { endpoints.send_test(request).await },
            ));
        }
        for _ in 0..2 {
            assert_eq!(rx.next(Duration::from_secs(5)).await.path, "/never");
        }
        let mut endpoints = herald.endpoints().await;
        let started = Instant::now();
        let refused = endpoints
            .send_test(send(&tenant, &fine.id))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "refused after {:?}",
            started.elapsed()
        );
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains(
                "at most 2 test sends of a tenant at once (HERALD_SEND_TEST_CONCURRENCY)"
            ),
            "{}",
            refused.message()
        );
        // Another tenant's test send goes through meanwhile.
        let ok = endpoints
            .send_test(send(&other, &others.id))
            .await
            .expect("another tenant's test send")
            .into_inner();
        assert!(ok.success, "{ok:?}");

        // The hanging ones end at the endpoint's timeout and give their slots back.
        for call in hanging {
            let r = call
                .await
                .unwrap()
                .expect("answered at the timeout")
                .into_inner();
            assert!(!r.success, "{r:?}");
        }
        let ok = endpoints
            .send_test(send(&tenant, &fine.id))
            .await
            .expect("a slot is free again")
            .into_inner();
        assert!(ok.success, "{ok:?}");
        herald.stop().await;
    }
}

/// Unknown credentials are cheap: junk bearer tokens on ingest's tenant services, the ledger
/// and Admin cost no Postgres query each, and are refused before their message is read.
mod credentials {
    use std::time::{Duration, Instant};

    use bytes::{Buf, BufMut};
    use futures::StreamExt;
    use herald_proto::v1 as pb;
    use herald_tests::{ADMIN_TOKEN, Herald, Options, authed};
    use rand::Rng;
    use tonic::Code;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;

    /// Lookups of API keys Postgres made in this installation (index and sequential scans of
    /// `api_keys`, as its statistics count them; they arrive within about a second).
    async fn key_lookups(herald: &Herald) -> i64 {
        sqlx::query_scalar(
            "SELECT (COALESCE(idx_scan, 0) + seq_scan)::bigint FROM pg_stat_user_tables
             WHERE schemaname = $1 AND relname = 'api_keys'",
        )
        .bind(&herald.name)
        .fetch_one(&herald.pool)
        .await
        .expect("api_keys statistics")
    }

    async fn settled_key_lookups(herald: &Herald) -> i64 {
        let mut last = key_lookups(herald).await;
        loop {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let now = key_lookups(herald).await;
            if now == last {
                return now;
            }
            last = now;
        }
    }

    fn junk_token() -> String {
        let bytes: [u8; 32] = rand::rng().random();
        format!("hk_{}", hex(&bytes))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether a refusal of a junk token is one it may get: `UNAUTHENTICATED`, or (on tenant
    /// services, past the budget of lookups) `UNAVAILABLE` saying the key was not checked.
    fn junk_refusal(status: &tonic::Status, admin: bool) -> Code {
        let code = status.code();
        let unchecked = code == Code::Unavailable
            && status
                .message()
                .contains("the API key could not be checked now, retry shortly");
        assert!(
            code == Code::Unauthenticated || (unchecked && !admin),
            "{status:?}"
        );
        code
    }

    async fn list_types(c: Channel, key: String) -> Result<(), tonic::Status> {
        pb::event_types_client::EventTypesClient::new(c)
            .list_event_types(authed(pb::ListEventTypesRequest::default(), &key))
            .await
            .map(drop)
    }

    async fn list_deliveries(c: Channel, key: String) -> Result<(), tonic::Status> {
        pb::deliveries_client::DeliveriesClient::new(c)
            .list_deliveries(authed(pb::ListDeliveriesRequest::default(), &key))
            .await
            .map(drop)
    }

    #[derive(Clone, Copy)]
    enum Service {
        Tenant,
        Ledger,
        Admin,
    }

    /// One call with a junk token, and the code it was refused with.
    async fn junk_call(service: Service, ingest: Channel, ledger: Channel, token: String) -> Code {
        match service {
            Service::Tenant => junk_refusal(&list_types(ingest, token).await.unwrap_err(), false),
            Service::Ledger => {
                junk_refusal(&list_deliveries(ledger, token).await.unwrap_err(), false)
            }
            Service::Admin => {
                let status = pb::admin_client::AdminClient::new(ingest)
                    .get_tenant(authed(
                        pb::GetTenantRequest {
                            id: uuid::Uuid::nil().to_string(),
                        },
                        &token,
                    ))
                    .await
                    .unwrap_err();
                junk_refusal(&status, true)
            }
        }
    }

    #[tokio::test]
    async fn junk_tokens_cost_no_query_each_and_real_tenants_keep_working() {
        const FLOOD: usize = 2000;
        const RATE: i64 = 20;
        let herald = Herald::start(Options {
            dispatchers: 0,
            env: vec![("HERALD_AUTH_LOOKUP_RATE".into(), RATE.to_string())],
            ..Default::default()
        })
        .await;
        let tenant = herald.tenant().await;
        let (ingest, ledger) = (herald.ingest_channel().await, herald.ledger_channel().await);
        // The real tenant has connections of its own, and its key is known to both services
        // before the flood.
        let (own_ingest, own_ledger) =
            (herald.ingest_channel().await, herald.ledger_channel().await);
        list_types(own_ingest.clone(), tenant.api_key.clone())
            .await
            .unwrap();
        list_deliveries(own_ledger.clone(), tenant.api_key.clone())
            .await
            .unwrap();
        let before = settled_key_lookups(&herald).await;

        let started = Instant::now();
        let repeated = junk_token();
        let (i, l) = (ingest.clone(), ledger.clone());
        let calls = (0..FLOOD).flat_map(move |n| {
            let token = if n % 4 == 0 {
                repeated.clone()
            } else {
                junk_token()
            };
            let (i, l) = (i.clone(), l.clone());
            [Service::Tenant, Service::Ledger, Service::Admin]
                .map(move |s| junk_call(s, i.clone(), l.clone(), token.clone()))
        });
        let flood = tokio::spawn(async move {
            futures::stream::iter(calls)
                .buffer_unordered(64)
                .collect::<Vec<Code>>()
                .await
        });
        // A real tenant's calls meanwhile: all answered, and fast.
        let mut slowest = Duration::ZERO;
        let mut real_calls = 0;
        while !flood.is_finished() || real_calls < 3 {
            let t = Instant::now();
            list_types(own_ingest.clone(), tenant.api_key.clone())
                .await
                .expect("a real tenant's call");
            list_deliveries(own_ledger.clone(), tenant.api_key.clone())
                .await
                .expect("a real tenant's call");
            slowest = slowest.max(t.elapsed());
            real_calls += 1;
        }
        let codes = flood.await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(codes.len(), 3 * FLOOD);
        let unchecked = codes.iter().filter(|c| **c == Code::Unavailable).count();
        assert!(unchecked > 0, "the budget of lookups never ran out");
        assert!(
            slowest < Duration::from_secs(2),
            "a real tenant's calls took {slowest:?}"
        );

        // Each of the two processes looks up at most RATE unknown tokens a second, plus its
        // first second's worth (and the real key again once its entry is 10 s old): without
        // the budget, about 4,500 (the repeated token is looked up once).
        let lookups = settled_key_lookups(&herald).await - before;
        let bound = 2 * RATE * (elapsed.as_secs_f64().ceil() as i64 + 1) + 4;
        assert!(
            lookups >= RATE,
            "{lookups} lookups: the statistics saw none of them"
        );
        assert!(
            lookups <= bound,
            "{lookups} key lookups for {} junk calls in {elapsed:?} (bound {bound})",
            3 * FLOOD
        );
        herald.stop().await;
    }

    /// A codec of raw bytes: sends a message exactly as given (malformed if need be).
    #[derive(Clone, Copy, Default)]
    struct Raw;

    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }

    async fn raw_call(
        channel: Channel,
        path: &'static str,
        body: Vec<u8>,
        token: &str,
    ) -> tonic::Status {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        grpc.unary::<_, Vec<u8>, _>(authed(body, token), PathAndQuery::from_static(path), Raw)
            .await
            .expect_err("refused")
    }

    #[tokio::test]
    async fn admin_and_the_ledger_check_credentials_before_reading_the_message() {
        let herald = Herald::start(Options {
            dispatchers: 0,
            ..Default::default()
        })
        .await;
        let tenant = herald.tenant().await;
        let (ingest, ledger) = (herald.ingest_channel().await, herald.ledger_channel().await);
        const ADMIN: &str = "/herald.v1.Admin/CreateTenant";
        const LOG: &str = "/herald.v1.Deliveries/ListDeliveries";
        // Not protobuf: a varint that never ends.
        let malformed = || vec![0xff; 64];
        let oversized = || vec![0xff; 5 << 20];
        let junk = "hk_0000000000000000000000000000000000000000000";

        for body in [malformed(), oversized()] {
            let on_admin = raw_call(ingest.clone(), ADMIN, body.clone(), junk).await;
            assert_eq!(on_admin.code(), Code::Unauthenticated, "{on_admin:?}");
            assert_eq!(on_admin.message(), "invalid operator token");
            let tenant_on_admin =
                raw_call(ingest.clone(), ADMIN, body.clone(), &tenant.api_key).await;
            assert_eq!(
                tenant_on_admin.code(),
                Code::PermissionDenied,
                "{tenant_on_admin:?}"
            );
            let on_ledger = raw_call(ledger.clone(), LOG, body.clone(), junk).await;
            assert_eq!(on_ledger.code(), Code::Unauthenticated, "{on_ledger:?}");
            assert_eq!(on_ledger.message(), "invalid, expired or revoked API key");
            let operator_on_ledger = raw_call(ledger.clone(), LOG, body.clone(), ADMIN_TOKEN).await;
            assert_eq!(
                operator_on_ledger.code(),
                Code::PermissionDenied,
                "{operator_on_ledger:?}"
            );
        }
        // With the right credentials the same messages are read, and refused for what they are.
        let bad = raw_call(ingest.clone(), ADMIN, malformed(), ADMIN_TOKEN).await;
        assert!(bad.message().contains("decode"), "{bad:?}");
        let big = raw_call(ingest.clone(), ADMIN, oversized(), ADMIN_TOKEN).await;
        assert_eq!(big.code(), Code::ResourceExhausted, "{big:?}");
        let bad = raw_call(ledger.clone(), LOG, malformed(), &tenant.api_key).await;
        assert!(bad.message().contains("decode"), "{bad:?}");
        let big = raw_call(ledger.clone(), LOG, oversized(), &tenant.api_key).await;
        assert_eq!(big.code(), Code::ResourceExhausted, "{big:?}");
        herald.stop().await;
    }
}
