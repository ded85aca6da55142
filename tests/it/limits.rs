//! No tenant can starve the service: each test tries to spend more than a tenant may (event
//! types, pages, message bytes, statement time, call time) and checks the bound holds with a
//! precise status, never INTERNAL; and that what a tenant is told leaks nothing from inside.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{ADMIN_TOKEN, Herald, Options, Tenant, authed};
use tonic::Code;

fn options(env: &[(&str, &str)]) -> Options {
    Options {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        dispatchers: 0,
        ..Default::default()
    }
}

async fn create_event_type(
    herald: &Herald,
    t: &Tenant,
    name: &str,
    group: &str,
) -> Result<pb::EventType, tonic::Status> {
    herald
        .event_types()
        .await
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: name.into(),
                group: group.into(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn list_event_types(
    herald: &Herald,
    t: &Tenant,
    req: pb::ListEventTypesRequest,
) -> Result<pb::ListEventTypesResponse, tonic::Status> {
    herald
        .event_types()
        .await
        .list_event_types(authed(req, &t.api_key))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn event_types_per_tenant_are_bounded_and_listed_a_page_at_a_time() {
    let herald = Herald::start(options(&[("HERALD_MAX_EVENT_TYPES_PER_TENANT", "60")])).await;
    let t = herald.tenant().await;
    for i in 0..60 {
        let group = if i % 3 == 0 { "Calls" } else { "" };
        create_event_type(&herald, &t, &format!("type.n{i:02}"), group)
            .await
            .unwrap();
    }
    herald
        .event_types()
        .await
        .update_event_type(authed(
            pb::UpdateEventTypeRequest {
                name: "type.n01".into(),
                archived: Some(true),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap();
    // The 61st is refused, naming the limit; archiving made no room; nothing was written.
    let err = create_event_type(&herald, &t, "type.extra", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("HERALD_MAX_EVENT_TYPES_PER_TENANT")
            && err.message().contains("limit is 60"),
        "{err:?}"
    );
    assert_eq!(herald.count("event_types").await, 60);
    // A name taken is still told apart from the limit.
    let err = create_event_type(&herald, &t, "type.n05", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // Another tenant has its own budget.
    let other = herald.tenant().await;
    create_event_type(&herald, &other, "type.extra", "")
        .await
        .unwrap();

    // An old client (no page_size) gets the default page of 50 and a cursor it may ignore.
    let all = pb::ListEventTypesRequest {
        include_archived: true,
        ..Default::default()
    };
    let first = list_event_types(&herald, &t, all.clone()).await.unwrap();
    assert_eq!(first.event_types.len(), 50);
    assert!(!first.next_cursor.is_empty());
    let whole = list_event_types(
        &herald,
        &t,
        pb::ListEventTypesRequest {
            page_size: 10_000,
            ..all.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(whole.event_types.len(), 60, "page_size is clamped to 500");
    assert!(whole.next_cursor.is_empty());
    // Pages of 7 walk the same order, each type once; groups first by group, then by name.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = list_event_types(
            &herald,
            &t,
            pb::ListEventTypesRequest {
                page_size: 7,
                cursor,
                ..all.clone()
            },
        )
        .await
        .unwrap();
        assert!(page.event_types.len() <= 7);
        paged.extend(page.event_types.into_iter().map(|e| (e.group, e.name)));
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let expected: Vec<_> = whole
        .event_types
        .iter()
        .map(|e| (e.group.clone(), e.name.clone()))
        .collect();
    assert_eq!(paged, expected);
    assert!(expected[..40].iter().all(|(g, _)| g.is_empty()));
    assert!(expected[40..].iter().all(|(g, _)| g == "Calls"));
    // Paging within one group, archived hidden.
    let calls = list_event_types(
        &herald,
        &t,
        pb::ListEventTypesRequest {
            group: Some("Calls".into()),
            page_size: 15,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(calls.event_types.len(), 15);
    let rest = list_event_types(
        &herald,
        &t,
        pb::ListEventTypesRequest {
            group: Some("Calls".into()),
            page_size: 15,
            cursor: calls.next_cursor,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(rest.event_types.len(), 5);
    assert!(rest.next_cursor.is_empty());
    let err = list_event_types(
        &herald,
        &t,
        pb::ListEventTypesRequest {
            cursor: "not a cursor".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    herald.stop().await;
}

async fn get_delivery(
    herald: &Herald,
    t: &Tenant,
    id: &str,
    attempts_page_size: u32,
    attempts_cursor: String,
) -> Result<pb::GetDeliveryResponse, tonic::Status> {
    herald
        .deliveries()
        .await
        .get_delivery(authed(
            pb::GetDeliveryRequest {
                id: id.into(),
                attempts_page_size,
                attempts_cursor,
            },
            &t.api_key,
        ))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn get_delivery_pages_the_attempts_of_a_delivery_resent_many_times() {
    let herald = Herald::start(Options::default()).await;
    let rx = Receiver::ok().await;
    let t = herald.tenant().await;
    herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                url: rx.url("/h"),
                event_types: vec!["*".into()],
                ..Default::default()
            },
        )
        .await;
    let event = herald.publish(&t, "a.b", b"{}").await;
    let d = herald
        .wait_deliveries(&t, &event.event_id, 1)
        .await
        .remove(0);
    herald
        .wait_delivery(&t, &d.id, Duration::from_secs(10), |r| {
            r.attempts.len() == 1
        })
        .await;
    // 600 manual attempts more, as many Redeliver calls would leave (ids UUIDv7 made at the
    // attempt, as the dispatcher makes them: the ledger reads a delivery's attempts from the
    // partitions of its lifetime).
    let ids: Vec<uuid::Uuid> = (0..600).map(|_| uuid::Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt, trigger, status,
             started_at, latency_ms, response_status, response_body)
         SELECT $4[n], $1, $2, $3, 1 + n, 'manual', 'success',
             now() + n * interval '1 ms', 5, 200, 'ok'
         FROM generate_series(1, 600) AS n",
    )
    .bind(uuid::Uuid::parse_str(&d.id).unwrap())
    .bind(uuid::Uuid::parse_str(&t.id).unwrap())
    .bind(uuid::Uuid::parse_str(&d.endpoint_id).unwrap())
    .bind(&ids)
    .execute(&herald.pool)
    .await
    .unwrap();

    // An old client (no page size) gets the first 100 attempts.
    let first = get_delivery(&herald, &t, &d.id, 0, String::new())
        .await
        .unwrap();
    assert_eq!(first.attempts.len(), 100);
    assert_eq!(first.attempts[0].attempt, 1);
    assert!(!first.next_attempts_cursor.is_empty());
    // At most 500 per call, whatever is asked.
    let most = get_delivery(&herald, &t, &d.id, 1_000_000, String::new())
        .await
        .unwrap();
    assert_eq!(most.attempts.len(), 500);
    assert!(!most.next_attempts_cursor.is_empty());
    // The cursor walks every attempt once, oldest first.
    let mut numbers = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get_delivery(&herald, &t, &d.id, 70, cursor).await.unwrap();
        assert!(page.attempts.len() <= 70);
        assert_eq!(page.delivery.unwrap().id, d.id);
        numbers.extend(page.attempts.iter().map(|a| a.attempt));
        if page.next_attempts_cursor.is_empty() {
            break;
        }
        cursor = page.next_attempts_cursor;
    }
    assert_eq!(numbers, (1..=601).collect::<Vec<u32>>());
    let err = get_delivery(&herald, &t, &d.id, 10, "nope".into())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    herald.stop().await;
}

#[tokio::test]
async fn a_query_past_the_statement_timeout_is_cancelled_with_a_precise_status() {
    let herald = Herald::start(options(&[("HERALD_STATEMENT_TIMEOUT", "500ms")])).await;
    let t = herald.tenant().await;
    create_event_type(&herald, &t, "a.b", "").await.unwrap();
    let (h, key) = (&herald, t.api_key.as_str());
    let list_deliveries = move || async move {
        h.deliveries()
            .await
            .list_deliveries(authed(pb::ListDeliveriesRequest::default(), key))
            .await
    };
    let tenant = &t;
    let list_types = move || list_event_types(h, tenant, pb::ListEventTypesRequest::default());
    list_deliveries().await.expect("fast enough");
    list_types().await.expect("fast enough");
    // A query that cannot finish in time, here for want of the table it reads (as a scan of
    // millions of rows would): cancelled at the timeout, the connection given back.
    let mut blocker = herald.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE deliveries, event_types IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let err = list_deliveries().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("narrow it"), "{err:?}");
    let err = list_types().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("statement timeout"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    blocker.rollback().await.unwrap();
    list_deliveries().await.expect("answered again");
    list_types().await.expect("answered again");
    herald.stop().await;
}

/// A name other than `localhost` that the hosts file points at a loopback address only, and
/// that address (Debian gives the machine's name 127.0.1.1).
async fn loopback_name() -> (String, IpAddr) {
    let hosts = std::fs::read_to_string("/etc/hosts").expect("/etc/hosts");
    for line in hosts.lines() {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if !ip.is_loopback() {
            continue;
        }
        for name in words {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("localhost") || lower.ends_with(".localhost") {
                continue;
            }
            let Ok(addrs) = tokio::net::lookup_host((name, 80)).await else {
                continue;
            };
            let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            if !addrs.is_empty() && addrs.iter().all(IpAddr::is_loopback) {
                return (name.to_owned(), ip);
            }
        }
    }
    panic!("this test needs a name besides localhost for a loopback address in /etc/hosts");
}

#[tokio::test]
async fn a_host_name_resolving_inside_is_refused_without_saying_where() {
    // Loopback is not allowed here, as in production.
    let herald = Herald::start(options(&[("HERALD_ALLOW_NETWORKS", "198.51.100.0/24")])).await;
    let t = herald.tenant().await;
    let (name, ip) = loopback_name().await;
    let url = format!("http://{name}:8080/hook");
    let mut endpoints = herald.endpoints().await;
    let refused_create = endpoints
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: url.clone(),
                event_types: vec!["*".into()],
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap_err();
    let ep = endpoints
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: "https://198.51.100.7/hook".into(),
                event_types: vec!["*".into()],
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    let refused_update = endpoints
        .update_endpoint(authed(
            pb::UpdateEndpointRequest {
                id: ep.id,
                url: Some(url),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap_err();
    for err in [refused_create, refused_update] {
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let m = err.message();
        assert!(m.contains("resolves to a private address"), "{m}");
        for leak in [ip.to_string().as_str(), "127.", "::1", "loopback"] {
            assert!(!m.contains(leak), "{m:?} gives away {leak:?}");
        }
    }
    herald.stop().await;
}

/// A message over its service's limit is refused as a size limit, the limit named.
fn assert_too_large<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>, limit: usize) {
    let err = r.expect_err(what);
    assert_eq!(err.code(), Code::ResourceExhausted, "{what}: {err:?}");
    assert!(
        err.message()
            .contains(&format!("the limit is: {limit} bytes")),
        "{what}: {err:?}"
    );
}

#[tokio::test]
async fn every_service_bounds_the_messages_it_reads() {
    let herald = Herald::start(options(&[
        ("HERALD_GRPC_MAX_MESSAGE_BYTES", "65536"),
        ("HERALD_MAX_PAYLOAD_BYTES", "1024"),
        ("HERALD_MAX_BATCH", "2"),
    ]))
    .await;
    let t = herald.tenant().await;
    let big = "x".repeat(100_000);
    let admin = herald
        .admin()
        .await
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: big.clone(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await;
    assert_too_large("Admin", admin, 65536);
    let endpoints = herald
        .endpoints()
        .await
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: "https://198.51.100.7/hook".into(),
                description: big.clone(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await;
    assert_too_large("Endpoints", endpoints, 65536);
    let event_types = herald
        .event_types()
        .await
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: "a.b".into(),
                description: big.clone(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await;
    assert_too_large("EventTypes", event_types, 65536);
    let deliveries = herald
        .deliveries()
        .await
        .list_deliveries(authed(
            pb::ListDeliveriesRequest {
                event_type: Some(big.clone()),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await;
    assert_too_large("Deliveries", deliveries, 65536);
    // Events: the payload limit times the batch limit, plus 1 MiB for the envelope.
    let events_limit = 1024 * 2 + (1 << 20);
    let events = herald
        .events()
        .await
        .publish(authed(
            pb::PublishRequest {
                event_type: "a.b".into(),
                payload: vec![b' '; events_limit + 1],
                ..Default::default()
            },
            &t.api_key,
        ))
        .await;
    assert_too_large("Events", events, events_limit);
    // Under the bound a message is read and judged on its content.
    let small = herald
        .event_types()
        .await
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: "a.b".into(),
                description: "x".repeat(60_000),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await;
    if let Err(e) = &small {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    herald.stop().await;
}

#[tokio::test]
async fn a_call_longer_than_the_request_timeout_is_cut_off() {
    let herald = Herald::start(options(&[("HERALD_GRPC_REQUEST_TIMEOUT", "1s")])).await;
    let t = herald.tenant().await;
    // A receiver that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (ep, _) = herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                url: format!("http://{}/hook", silent.local_addr().unwrap()),
                event_types: vec!["*".into()],
                timeout_ms: Some(20_000),
                ..Default::default()
            },
        )
        .await;
    let started = Instant::now();
    let err = herald
        .endpoints()
        .await
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: ep.id,
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    assert!(err.message().contains("Timeout expired"), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    herald.stop().await;
}

#[tokio::test]
async fn idempotency_keys_k_and_k_fp_are_two_keys() {
    let herald = Herald::start(options(&[])).await;
    let t = herald.tenant().await;
    let (h, tenant) = (&herald, &t);
    let publish = move |key: &'static str, payload: &'static str| async move {
        let req = pb::PublishRequest {
            event_type: "a.b".into(),
            payload: payload.as_bytes().to_vec(),
            idempotency_key: Some(key.into()),
            occurred_at: None,
        };
        h.events()
            .await
            .publish(authed(req, &tenant.api_key))
            .await
            .map(tonic::Response::into_inner)
    };
    let first = publish("order-1:fp", r#"{"n":1}"#).await.unwrap();
    assert!(!first.duplicate);
    // `order-1`'s reservation once kept its fingerprint under `order-1:fp`, overwriting (and
    // then deleting) the record of the key `order-1:fp`.
    let other = publish("order-1", r#"{"n":2}"#).await.unwrap();
    assert!(!other.duplicate);
    assert_ne!(other.event_id, first.event_id);
    let again = publish("order-1:fp", r#"{"n":1}"#).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.event_id, first.event_id);
    let again = publish("order-1", r#"{"n":2}"#).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.event_id, other.event_id);
    herald.stop().await;
}
