//! The ledger's Operations service, for operators: only the operator token opens it (checked
//! before the message is read); dead letters are listed (newest first, by tenant, replayed ones
//! on request), shown with their body and sent back where they died; queue depths cover every
//! queue of the installation with what it holds. `heraldctl dead-letters` and `heraldctl
//! queues` call it.

use std::time::{Duration, Instant};

use herald_core::wire::{DeliveryTask, Trigger, VERSION};
use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{ADMIN_TOKEN, Herald, Options, Tenant, authed};
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tonic::Code;
use tonic::transport::Channel;

use crate::page::{endpoint, status_is};

type Ops = pb::operations_client::OperationsClient<Channel>;

async fn ops(herald: &Herald) -> Ops {
    pb::operations_client::OperationsClient::new(herald.ledger_channel().await)
}

fn op<T>(msg: T) -> tonic::Request<T> {
    authed(msg, ADMIN_TOKEN)
}

fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    r.expect_err("refused")
}

#[tokio::test]
async fn only_the_operator_token_opens_operations() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let t = herald.tenant().await;
    let mut c = ops(&herald).await;
    let list = || pb::ListDeadLettersRequest::default();

    let key = refused(c.list_dead_letters(authed(list(), &t.api_key)).await);
    assert_eq!(key.code(), Code::PermissionDenied, "{key:?}");
    assert!(key.message().contains("operator token required"), "{key:?}");
    let key = refused(
        c.get_queue_depths(authed(pb::GetQueueDepthsRequest {}, &t.api_key))
            .await,
    );
    assert_eq!(key.code(), Code::PermissionDenied);
    let none = refused(c.list_dead_letters(list()).await);
    assert_eq!(none.code(), Code::Unauthenticated);
    let wrong = refused(c.list_dead_letters(authed(list(), "not-the-token")).await);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (Code::Unauthenticated, "invalid operator token")
    );
    // Checked before the message is read: a malformed id under a tenant key is still refused
    // for the credential.
    let early = refused(
        c.get_dead_letter(authed(
            pb::GetDeadLetterRequest { id: "x".into() },
            &t.api_key,
        ))
        .await,
    );
    assert_eq!(early.code(), Code::PermissionDenied);
    // The operator passes; a malformed id is then named.
    let bad = refused(
        c.get_dead_letter(op(pb::GetDeadLetterRequest { id: "x".into() }))
            .await,
    );
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("id \"x\""), "{bad:?}");
    assert!(c.list_dead_letters(op(list())).await.is_ok());
    herald.stop().await;
}

/// A delivery task of `t`'s endpoint, as a dispatcher would have taken it from the work queue.
fn task(t: &Tenant, endpoint_id: &str, payload: &str) -> DeliveryTask {
    let id = |s: &str| uuid::Uuid::parse_str(s).unwrap();
    DeliveryTask {
        v: VERSION,
        delivery_id: uuid::Uuid::now_v7(),
        event_id: uuid::Uuid::now_v7(),
        tenant_id: id(&t.id),
        endpoint_id: id(endpoint_id),
        event_type: "dead.letter".into(),
        attempt: 1,
        tiers: None,
        due: None,
        rest_ms: None,
        parked: None,
        turn: None,
        trigger: Trigger::Scheduled,
        created_at: chrono::Utc::now(),
        payload: payload.as_bytes().to_vec(),
    }
}

/// Dead-letters `body` as the broker does when a work shard rejects it: onto the dead-letter
/// exchange with the first-death headers.
async fn dead_letter(ch: &lapin::Channel, herald: &Herald, tenant: &str, body: &[u8]) {
    let topology =
        herald_broker::Topology::new(herald.name.as_str(), herald_broker::QueueType::Quorum);
    let shard = herald_broker::shard_of(uuid::Uuid::parse_str(tenant).unwrap());
    let mut headers = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    headers.insert(
        "x-first-death-queue".into(),
        text(&topology.shard_queue(shard)),
    );
    headers.insert("x-first-death-reason".into(), text("rejected"));
    headers.insert("x-note".into(), text("from the test"));
    ch.basic_publish(
        topology.dead_exchange().as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

async fn list(c: &mut Ops, r: pb::ListDeadLettersRequest) -> pb::ListDeadLettersResponse {
    c.list_dead_letters(op(r)).await.expect("list").into_inner()
}

/// The ledger's dead letters of a tenant (empty: all), newest first, once there are `n`.
async fn wait_letters(c: &mut Ops, n: usize) -> Vec<pb::DeadLetter> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = list(c, pb::ListDeadLettersRequest::default()).await;
        if got.dead_letters.len() == n {
            return got.dead_letters;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_sent_back() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let (a, b) = (herald.tenant().await, herald.tenant().await);
    let (ep_a, _) = herald
        .create_endpoint(&a, endpoint(rx.url("/a"), &["*"]))
        .await;
    let (ep_b, _) = herald
        .create_endpoint(&b, endpoint(rx.url("/b"), &["*"]))
        .await;
    let conn = herald_tests::amqp_connection("herald-tests-operations").await;
    let ch = conn.create_channel().await.unwrap();
    let readable = task(&a, &ep_a.id, r#"{"dead":"a"}"#);
    dead_letter(&ch, &herald, &a.id, &readable.encode()).await;
    let mut c = ops(&herald).await;
    wait_letters(&mut c, 1).await;
    dead_letter(&ch, &herald, &a.id, b"not a task at all").await;
    wait_letters(&mut c, 2).await;
    dead_letter(
        &ch,
        &herald,
        &b.id,
        &task(&b, &ep_b.id, r#"{"dead":"b"}"#).encode(),
    )
    .await;
    let all = wait_letters(&mut c, 3).await;

    // Newest first, a page at a time.
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(ids, sorted);
    assert!(
        all.iter().all(|d| d.body.is_empty() && d.body_bytes > 0),
        "lists leave bodies out"
    );
    let first = list(
        &mut c,
        pb::ListDeadLettersRequest {
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(first.dead_letters.len(), 2);
    let rest = list(
        &mut c,
        pb::ListDeadLettersRequest {
            page_size: 2,
            cursor: first.next_cursor.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rest.dead_letters.len(), 1);
    assert_eq!(rest.dead_letters[0].id, ids[2]);
    assert!(rest.next_cursor.is_empty());
    // By tenant: the unreadable letter belongs to nobody.
    let of_a = list(
        &mut c,
        pb::ListDeadLettersRequest {
            tenant_id: Some(a.id.clone()),
            ..Default::default()
        },
    )
    .await
    .dead_letters;
    assert_eq!(of_a.len(), 1);
    let letter = &of_a[0];
    assert_eq!(letter.delivery_id, readable.delivery_id.to_string());
    assert_eq!(letter.endpoint_id, ep_a.id);
    let unreadable = all
        .iter()
        .find(|d| d.tenant_id.is_empty())
        .expect("unreadable letter");
    assert!(!unreadable.error.is_empty());

    // Shown with its body and headers.
    let shown = c
        .get_dead_letter(op(pb::GetDeadLetterRequest {
            id: letter.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.body, readable.encode());
    assert_eq!(shown.body_bytes as usize, shown.body.len());
    assert_eq!(
        (shown.queue.as_str(), shown.reason.as_str()),
        ("work", "rejected")
    );
    assert_eq!(
        shown.headers.get("x-note").map(String::as_str),
        Some("from the test")
    );
    assert!(shown.replayed_at.is_none() && shown.dead_lettered_at.is_some());
    let missing = c
        .get_dead_letter(op(pb::GetDeadLetterRequest {
            id: uuid::Uuid::now_v7().to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Sent back: the readable one is delivered, the unreadable one skipped; once only.
    let replay = |ids: Vec<String>| pb::ReplayDeadLettersRequest { ids };
    let r = c
        .replay_dead_letters(op(replay(vec![letter.id.clone(), unreadable.id.clone()])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.replayed, r.skipped), (1, 1));
    let got = rx.next(Duration::from_secs(15)).await;
    assert_eq!(got.path, "/a");
    assert_eq!(&got.body[..], br#"{"dead":"a"}"#);
    herald
        .wait_delivery(
            &a,
            &readable.delivery_id.to_string(),
            Duration::from_secs(15),
            status_is(pb::DeliveryStatus::Success),
        )
        .await;
    let again = c
        .replay_dead_letters(op(replay(vec![letter.id.clone()])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.replayed, again.skipped), (0, 1));
    let pending = list(&mut c, pb::ListDeadLettersRequest::default())
        .await
        .dead_letters;
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|d| d.id != letter.id));
    let with_replayed = list(
        &mut c,
        pb::ListDeadLettersRequest {
            include_replayed: true,
            ..Default::default()
        },
    )
    .await
    .dead_letters;
    let replayed = with_replayed.iter().find(|d| d.id == letter.id).unwrap();
    assert!(replayed.replayed_at.is_some());

    // Refusals name what to fix.
    let none = c.replay_dead_letters(op(replay(vec![]))).await.unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument);
    assert!(none.message().contains("1 to 1000"), "{none:?}");
    let unknown = c
        .replay_dead_letters(op(replay(vec![uuid::Uuid::now_v7().to_string()])))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let bad = c
        .replay_dead_letters(op(replay(vec!["nope".into()])))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // The command line shows the same letters (run without blocking the runtime that serves
    // the ledger it calls).
    let ctl = tokio::process::Command::new(herald_tests::bin_dir().join("heraldctl"))
        .args(["--json", "dead-letters", "list", "--tenant", &b.id])
        .env_clear()
        .env(
            "HERALD_LEDGER_URL",
            format!("http://{}", herald.ledger_addr),
        )
        .env("HERALD_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("heraldctl runs (cargo build --bins)");
    assert!(ctl.status.success(), "{ctl:?}");
    let out: serde_json::Value = serde_json::from_slice(&ctl.stdout).unwrap();
    let letters = out["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{out}");
    assert_eq!(letters[0]["tenant_id"], b.id.as_str());
    let _ = conn.close(200, "done".into()).await;
    herald.stop().await;
}

#[tokio::test]
async fn queue_depths_cover_every_queue_and_what_it_holds() {
    // No dispatcher: published tasks stay in their tenant's work shard.
    let herald = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let t = herald.tenant().await;
    herald
        .create_endpoint(&t, endpoint("http://127.0.0.1:9/q".into(), &["*"]))
        .await;
    for n in 0..3 {
        herald
            .publish(&t, "queue.fill", format!("{{\"n\":{n}}}").as_bytes())
            .await;
    }
    let shard = format!(
        "deliveries.work.{}",
        herald_broker::shard_of(uuid::Uuid::parse_str(&t.id).unwrap())
    );
    let mut c = ops(&herald).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let queues = loop {
        let r = c
            .get_queue_depths(op(pb::GetQueueDepthsRequest {}))
            .await
            .expect("queue depths")
            .into_inner();
        assert!(r.sampled_at.is_some());
        let held = r
            .queues
            .iter()
            .find(|q| q.name == shard)
            .map(|q| q.messages);
        // The ledger's consumers may still be starting when the first depths are read.
        let consumed = |name: &str| r.queues.iter().any(|q| q.name == name && q.consumers >= 1);
        if held == Some(3) && consumed("ledger.records") && consumed("dead.letters") {
            break r.queues;
        }
        assert!(
            Instant::now() < deadline,
            "{shard} never held 3 beside the ledger's consumers: {:?}",
            r.queues
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kind = |k: &str| queues.iter().filter(|q| q.kind == k).collect::<Vec<_>>();
    assert_eq!(
        kind("work").len(),
        25,
        "8 fresh shards, 8 returning, 8 bulk, the legacy queue"
    );
    assert_eq!(kind("delay").len(), herald_broker::DELAY_RUNGS_MS.len());
    let ledger = kind("ledger");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].name, "ledger.records");
    assert!(ledger[0].consumers >= 1, "the ledger consumes its queue");
    let dead = kind("dead_letter");
    assert_eq!((dead.len(), dead[0].name.as_str()), (1, "dead.letters"));
    assert!(dead[0].consumers >= 1);
    assert!(
        queues.iter().all(|q| !q.name.starts_with(&herald.name)),
        "names are unprefixed"
    );
    let shard_queue = queues.iter().find(|q| q.name == shard).unwrap();
    assert_eq!(
        (shard_queue.kind.as_str(), shard_queue.consumers),
        ("work", 0)
    );
    let others: u64 = kind("work")
        .iter()
        .filter(|q| q.name != shard)
        .map(|q| q.messages)
        .sum();
    assert_eq!(others, 0);
    herald.stop().await;
}
