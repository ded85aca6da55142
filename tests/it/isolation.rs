//! One slow endpoint never holds up anyone else: a hanging endpoint with a backlog holds at
//! most its cap of POSTs while another tenant's deliveries arrive within a bound; a tenant's
//! healthy backlog does not hold up a tenant on another work shard, nor one on its own (its
//! burst went to the shard's bulk queue); and tasks parked while their
//! endpoint had no room survive a kill -9 of the dispatcher that parked them without counting as
//! attempts.

use std::collections::HashMap;
use std::time::Duration;

use herald_broker::{DELAY_RUNGS_MS, QueueType, Topology};
use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{AMQP_URL, Herald, Options, Tenant, authed};
use tokio::time::Instant;

/// Most a quiet tenant's delivery may take, publish to receiver, beside a hanging endpoint
/// with a backlog. Alone it takes a few ms (a few hundred in a debug build beside the whole
/// test suite); before per-endpoint caps it took at least the hanging endpoint's 3 s timeout
/// (every POST slot waited on it).
const BOUND: Duration = Duration::from_millis(2000);

async fn endpoint(herald: &Herald, tenant: &Tenant, req: pb::CreateEndpointRequest) -> String {
    herald.create_endpoint(tenant, req).await.0.id
}

/// Publishes `n` events of `event_type` in batches of 100.
async fn backlog(herald: &Herald, tenant: &Tenant, event_type: &str, n: usize) {
    let mut events = herald.events().await;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch = pb::PublishBatchRequest {
            events: chunk
                .iter()
                .map(|i| pb::PublishRequest {
                    event_type: event_type.into(),
                    payload: format!("{{\"n\":{i}}}").into_bytes(),
                    ..Default::default()
                })
                .collect(),
        };
        events
            .publish_batch(authed(batch, &tenant.api_key))
            .await
            .expect("backlog accepted");
    }
}

#[tokio::test]
async fn a_hanging_endpoint_with_a_backlog_does_not_hold_up_another_tenant() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::start(|path, _| match path {
        "/hang" => Reply {
            delay: Duration::from_secs(30),
            ..Reply::status(200)
        },
        _ => Reply::status(200),
    })
    .await;
    let (noisy, quiet) = (herald.tenant().await, herald.tenant().await);
    let req = |path: &str, timeout_ms| pb::CreateEndpointRequest {
        url: rx.url(path),
        event_types: vec!["*".into()],
        timeout_ms,
        no_retries: true,
        ..Default::default()
    };
    endpoint(&herald, &noisy, req("/hang", Some(3_000))).await;
    endpoint(&herald, &quiet, req("/ok", None)).await;
    backlog(&herald, &noisy, "noisy.event", 600).await;
    // Let the dispatcher take in the backlog and fill the hanging endpoint's cap.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut sent = quiet_events(&herald, &quiet, 20).await;
    let (mut hanging, mut first_hang, mut worst) = (0, None, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sent.is_empty() && Instant::now() < deadline {
        let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(1), rx.rx.recv()).await else {
            continue;
        };
        if got.path == "/hang" {
            // Requests within the endpoint's 3 s timeout of the first were all in flight at once.
            let first = *first_hang.get_or_insert(got.at);
            hanging += usize::from(got.at.duration_since(first) < Duration::from_millis(2_900));
            continue;
        }
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        let i = body["i"].as_u64().expect("a quiet event");
        let published = sent
            .remove(&i)
            .unwrap_or_else(|| panic!("quiet event {i} arrived twice"));
        worst = worst.max(got.at.duration_since(published.sent.into_std()));
    }
    assert!(
        sent.is_empty(),
        "{} quiet deliveries never arrived",
        sent.len()
    );
    assert!(
        worst <= BOUND,
        "a quiet delivery took {worst:?} beside the hanging endpoint"
    );
    // The hanging endpoint kept at most its cap (16) in flight.
    assert!(
        (1..=16).contains(&hanging),
        "{hanging} requests reached the hanging endpoint within 3 s"
    );
    herald.stop().await;
}

/// When a quiet event was sent, and when Herald accepted it (the call returned: its delivery
/// task confirmed by the broker).
#[derive(Clone, Copy)]
struct Quiet {
    sent: Instant,
    accepted: Instant,
}

/// Publishes quiet events `0..n` (payload `{"i": n}`) 50 ms apart.
async fn quiet_events(herald: &Herald, tenant: &Tenant, n: u64) -> HashMap<u64, Quiet> {
    let mut events = herald.events().await;
    let mut sent = HashMap::new();
    for i in 0..n {
        let at = Instant::now();
        events
            .publish(authed(
                pb::PublishRequest {
                    event_type: "quiet.event".into(),
                    payload: format!("{{\"i\":{i}}}").into_bytes(),
                    ..Default::default()
                },
                &tenant.api_key,
            ))
            .await
            .expect("quiet publish");
        let quiet = Quiet {
            sent: at,
            accepted: Instant::now(),
        };
        sent.insert(i, quiet);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent
}

#[tokio::test]
async fn a_healthy_backlog_does_not_hold_up_a_tenant_on_another_shard() {
    overtakes_a_backlog(false).await;
}

/// The same on the backlogged tenant's own shard: its burst past its fresh allowance (100 tasks
/// a second here) went to the shard's bulk queue, so the quiet tenant's fresh deliveries are
/// behind a few hundred of its tasks at most, not all 6,000 (with the allowance off, 5,700 of
/// them overtook a quiet delivery).
#[tokio::test]
async fn a_burst_does_not_hold_up_a_tenant_on_the_same_shard() {
    overtakes_a_backlog(true).await;
}

/// A busy tenant publishes a backlog of 6,000 deliveries, then a quiet tenant (on the busy
/// one's shard or on another) 10 events: the quiet deliveries must overtake the backlog.
async fn overtakes_a_backlog(same_shard: bool) {
    // Across shards with the defaults (the busy tenant's burst mostly in its own shard's bulk
    // queue); on one shard with a small allowance, so the bound does not depend on how long
    // the backlog takes to publish on a loaded machine. The endpoint cache at its default TTL
    // (the harness's 100 ms would make every quiet delivery look its endpoint up again, on
    // the one thread the whole of Herald shares in this test).
    let mut env = vec![("HERALD_ENDPOINT_CACHE_TTL".into(), "5s".into())];
    if same_shard {
        env.push(("HERALD_TENANT_FRESH_RATE".into(), "100".into()));
    }
    let herald = Herald::start(Options {
        env,
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::start(|_, _| Reply::status(200)).await;
    let busy = herald.tenant().await;
    let shard = |t: &Tenant| herald_broker::shard_of(t.id.parse().unwrap());
    let mut quiet = herald.tenant().await;
    while (shard(&quiet) == shard(&busy)) != same_shard {
        quiet = herald.tenant().await;
    }
    for i in 0..20 {
        let req = pb::CreateEndpointRequest {
            url: rx.url(&format!("/busy{i}")),
            event_types: vec!["*".into()],
            ..Default::default()
        };
        endpoint(&herald, &busy, req).await;
    }
    let req = pb::CreateEndpointRequest {
        url: rx.url("/quiet"),
        event_types: vec!["*".into()],
        ..Default::default()
    };
    endpoint(&herald, &quiet, req).await;
    // The quiet tenant has delivered before (its endpoint is known to the dispatcher), like a
    // tenant with steady traffic: what is measured is queueing, not a cold lookup competing
    // with the backlog for this test's one thread.
    quiet_events(&herald, &quiet, 1).await;
    let first = tokio::time::timeout(Duration::from_secs(10), rx.rx.recv()).await;
    assert!(
        matches!(first, Ok(Some(ref got)) if got.path == "/quiet"),
        "the first quiet delivery arrives"
    );
    // 300 events to 20 endpoints: a backlog of 6,000 deliveries, seconds of work here.
    backlog(&herald, &busy, "busy.event", 300).await;
    let mut sent = quiet_events(&herald, &quiet, 10).await;
    let (mut worst, mut busy, mut overtaken) = (Duration::ZERO, Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sent.is_empty() && Instant::now() < deadline {
        let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(1), rx.rx.recv()).await else {
            continue;
        };
        if got.path != "/quiet" {
            busy.push(got.at);
            continue;
        }
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        let i = body["i"].as_u64().expect("a quiet event");
        let quiet = sent.remove(&i).expect("each quiet event once");
        worst = worst.max(got.at.duration_since(quiet.sent.into_std()));
        overtaken.push((quiet.accepted.into_std(), got.at));
    }
    assert!(
        sent.is_empty(),
        "{} quiet deliveries never arrived",
        sent.len()
    );
    // Once accepted, a quiet delivery overtook the backlog accepted before it: in one FIFO
    // queue it would come after all of the backlog still queued (thousands), whatever the
    // machine's speed. Counted from acceptance, so how long the broker takes to confirm a
    // publish on a loaded machine (while the backlog is being delivered) does not count.
    let most_overtaking = overtaken
        .iter()
        .map(|(accepted, arrived)| {
            busy.iter()
                .filter(|at| (*accepted..*arrived).contains(*at))
                .count()
        })
        .max()
        .unwrap_or_default();
    assert!(
        most_overtaking < 1_500,
        "{most_overtaking} busy deliveries, accepted before a quiet one, arrived after it was \
         accepted and before it arrived"
    );
    // Loose (the whole suite shares two cores): the overtaking above is the isolation.
    assert!(
        worst <= 2 * BOUND,
        "a quiet delivery took {worst:?} beside a backlog"
    );
    herald.stop().await;
}

/// Messages waiting in the installation's delay queues.
async fn parked_messages(name: &str) -> u32 {
    let topology = Topology::new(name, QueueType::Quorum);
    let admin = herald_broker::Admin::connect(AMQP_URL, "herald-tests-probe")
        .await
        .expect("broker reachable");
    let queues = admin
        .queues(
            &DELAY_RUNGS_MS
                .iter()
                .map(|ms| topology.delay_queue(*ms))
                .collect::<Vec<_>>(),
        )
        .await;
    admin.close().await;
    queues.iter().map(|q| q.messages).sum()
}

#[tokio::test]
async fn parked_deliveries_survive_a_kill_9_and_are_not_attempts() {
    const EVENTS: usize = 60;
    let mut herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![
            ("HERALD_ENDPOINT_MAX_IN_FLIGHT".into(), "2".into()),
            ("HERALD_PARK_MAX".into(), "2s".into()),
        ],
        ..Default::default()
    })
    .await;
    let dispatcher = herald.spawn_dispatcher_process();
    let mut rx = Receiver::start(|_, _| Reply {
        delay: Duration::from_millis(400),
        ..Reply::status(200)
    })
    .await;
    let tenant = herald.tenant().await;
    endpoint(
        &herald,
        &tenant,
        pb::CreateEndpointRequest {
            url: rx.url("/slow"),
            event_types: vec!["*".into()],
            ..Default::default()
        },
    )
    .await;
    backlog(&herald, &tenant, "slow.event", EVENTS).await;
    // Wait until some tasks are parked (on delay queues, out of the dispatcher), then kill it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while parked_messages(&herald.name).await == 0 {
        assert!(Instant::now() < deadline, "nothing was parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    herald.kill_dispatcher_process(dispatcher);
    herald.restart_dispatcher_process(dispatcher);

    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < EVENTS && Instant::now() < deadline {
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(1), rx.rx.recv()).await {
            *seen.entry(got.header("webhook-id").unwrap()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), EVENTS, "every parked delivery is delivered");
    // What was in flight at the kill (at most the cap, 2) goes out again; a task parked but not
    // yet acked at the kill comes back beside its parked twin, and the delivered mark stops
    // the later one unless both are in flight at once (the cap, 2, again).
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(duplicates <= 4, "{duplicates} duplicates");
    // Parking is no attempt: deliveries that went out once have one attempt in the ledger.
    let ids: Vec<String> = seen.keys().cloned().collect();
    let mut one_attempt = 0;
    for id in &ids {
        let r = herald
            .wait_delivery(&tenant, id, Duration::from_secs(10), |r| {
                r.delivery
                    .as_ref()
                    .is_some_and(|d| d.status == pb::DeliveryStatus::Success as i32)
            })
            .await;
        one_attempt += usize::from(r.delivery.unwrap().attempt_count == 1);
    }
    assert!(
        one_attempt >= EVENTS - 2,
        "{one_attempt} of {EVENTS} have one attempt"
    );
    herald.stop().await;
}

/// An endpoint that answers 500 at once with a backlog is paced once it has failed 5 times in
/// a row: its attempts (first attempts parked until their turns, retries scheduled at them)
/// come at `HERALD_FAILING_ENDPOINT_RATE` a second instead of as fast as the machine goes;
/// parking for a turn is no attempt, and every delivery still ends as its schedule says.
#[tokio::test]
async fn an_endpoint_that_keeps_failing_fast_is_paced() {
    const EVENTS: usize = 60;
    const RATE: usize = 20;
    let herald = Herald::start(Options {
        env: vec![("HERALD_FAILING_ENDPOINT_RATE".into(), RATE.to_string())],
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::start(|_, _| Reply::status(500)).await;
    let tenant = herald.tenant().await;
    let req = pb::CreateEndpointRequest {
        url: rx.url("/fail"),
        event_types: vec!["*".into()],
        retry_schedule_ms: vec![100],
        ..Default::default()
    };
    let id = endpoint(&herald, &tenant, req).await;
    backlog(&herald, &tenant, "fail.event", EVENTS).await;
    // Two attempts per delivery: the first and one retry.
    let (mut arrivals, mut retried, mut resent, mut resend) = (Vec::new(), None, None, None);
    let deadline = Instant::now() + Duration::from_secs(40);
    while arrivals.len() < 2 * EVENTS && Instant::now() < deadline {
        let Ok(Some(got)) = tokio::time::timeout(Duration::from_secs(1), rx.rx.recv()).await else {
            continue;
        };
        match got.header("webhook-attempt").as_deref() {
            Some("3") => resent = Some(got.at),
            Some("2") => retried = retried.or(got.header("webhook-id")),
            _ => {}
        }
        if got.header("webhook-attempt").as_deref() != Some("3") {
            arrivals.push(got.at);
        }
        // Well into the paced backlog (turns given out seconds ahead), a re-send of a delivery
        // that is done goes at once: re-sends are not paced.
        if arrivals.len() >= 40
            && resend.is_none()
            && let Some(id) = retried.clone()
        {
            let mut deliveries = herald.deliveries().await;
            let req = authed(pb::RedeliverRequest { delivery_id: id }, &tenant.api_key);
            deliveries.redeliver(req).await.expect("redeliver");
            resend = Some(Instant::now());
        }
    }
    let resend = resend.expect("a delivery had its retry by the 40th attempt");
    let resent = resent.expect("the re-send arrived");
    assert!(
        resent.duration_since(resend.into_std()) < Duration::from_secs(1),
        "a re-send took {:?} at a paced endpoint",
        resent.duration_since(resend.into_std())
    );
    assert_eq!(
        arrivals.len(),
        2 * EVENTS,
        "every attempt the schedule makes"
    );
    // Unpaced they all come within a second or two; paced, past the first few they are spread
    // at RATE a second (a turn is exact; a task waits for a near one here, or is parked).
    // Unpaced: up to the endpoint's cap (16) of first attempts that went out before a failure
    // was known, the 5 failures that start the pacing (PACE_AFTER), and the retries of those
    // concluded before it started.
    let paced = &arrivals[16 + 2 * 5..];
    let span = *paced.last().unwrap() - paced[0];
    let least = Duration::from_secs_f64((paced.len() - 1) as f64 / RATE as f64 * 0.8);
    assert!(span >= least, "{} attempts within {span:?}", paced.len());
    let busiest = paced
        .iter()
        .map(|t| {
            paced
                .iter()
                .filter(|u| (*t..*t + Duration::from_secs(1)).contains(*u))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= RATE + RATE / 2,
        "{busiest} attempts within one second: {:?}",
        paced
            .iter()
            .map(|a| a.duration_since(arrivals[0]).as_millis())
            .collect::<Vec<_>>()
    );
    // Its card says why its deliveries come slower than their schedule.
    let card = crate::page::get_endpoint(&herald, &tenant, &id).await;
    assert_eq!(card.delivery_state, "throttled: errors");
    assert_eq!(card.paced_attempts_per_second, RATE as u32);
    // Parking for a turn is no attempt: the ledger holds two per delivery (and the re-send),
    // all failed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = "deliveries WHERE status = 'failed'";
    let want = (2 * EVENTS as i64 + 1, EVENTS as i64);
    while (herald.count("attempts").await, herald.count(failed).await) != want {
        assert!(
            Instant::now() < deadline,
            "{} attempts, {} deliveries failed",
            herald.count("attempts").await,
            herald.count(failed).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    herald.stop().await;
}
