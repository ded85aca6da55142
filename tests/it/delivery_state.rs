//! An endpoint's in-flight cap and its delivery state: `max_in_flight` round-trips through
//! create, update, get and list; GetEndpoint and ListEndpoints show the throttle note a
//! dispatcher leaves in Redis (`herald_redis::throttle_notes`), "healthy" without one,
//! "disabled" for an endpoint that is off, and "unknown" (not an error) while Redis is
//! unreachable. A new cap is announced on the change channel, so dispatchers' endpoint caches
//! drop the old one.
//!
//! No dispatcher runs here: the notes are written straight into Redis under the installation's
//! prefix, as a dispatcher would write them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use herald_proto::v1 as pb;
use herald_redis::throttle_notes::{self, Note, Reason};
use herald_store::CHANGES_CHANNEL;
use herald_tests::{DATABASE_URL, Herald, Options, REDIS_URL, Tenant, authed};
use sqlx::postgres::PgListener;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn endpoint(path: &str) -> pb::CreateEndpointRequest {
    pb::CreateEndpointRequest {
        // Nothing is delivered (no dispatcher): any allowed address will do.
        url: format!("http://127.0.0.1:9/{path}"),
        event_types: vec!["*".into()],
        ..Default::default()
    }
}

async fn get(herald: &Herald, t: &Tenant, id: &str) -> pb::Endpoint {
    herald
        .endpoints()
        .await
        .get_endpoint(authed(pb::GetEndpointRequest { id: id.into() }, &t.api_key))
        .await
        .expect("get endpoint")
        .into_inner()
}

async fn update(herald: &Herald, t: &Tenant, req: pb::UpdateEndpointRequest) -> pb::Endpoint {
    herald
        .endpoints()
        .await
        .update_endpoint(authed(req, &t.api_key))
        .await
        .expect("update endpoint")
        .into_inner()
}

async fn list(herald: &Herald, t: &Tenant) -> Vec<pb::Endpoint> {
    herald
        .endpoints()
        .await
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), &t.api_key))
        .await
        .expect("list endpoints")
        .into_inner()
        .endpoints
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Leaves a dispatcher's throttle note for endpoint `id` of this installation.
async fn write_note(herald: &Herald, id: &str, note: &Note) {
    let key = throttle_notes::key(&herald.name, id.parse().unwrap());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(serde_json::to_string(note).unwrap())
        .arg("EX")
        .arg(throttle_notes::NOTE_TTL_SECS)
        .query_async(&mut redis().await)
        .await
        .unwrap();
}

fn ts(t: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn assert_healthy(e: &pb::Endpoint) {
    assert_eq!(e.delivery_state, "healthy", "{e:?}");
    assert_eq!(e.in_flight_cap, 0, "{e:?}");
    assert_eq!(e.throttled_since, None, "{e:?}");
}

#[tokio::test]
async fn max_in_flight_round_trips_and_cards_show_the_dispatchers_throttle_note() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let t = herald.tenant().await;

    // Created with a cap of 4; another with the server default.
    let (capped, _) = herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                max_in_flight: Some(4),
                ..endpoint("capped")
            },
        )
        .await;
    assert_eq!(capped.max_in_flight, 4);
    assert_healthy(&capped);
    let (plain, _) = herald.create_endpoint(&t, endpoint("plain")).await;
    assert_eq!(plain.max_in_flight, 0, "absent: the server default");
    let got = get(&herald, &t, &capped.id).await;
    assert_eq!(got.max_in_flight, 4);
    assert_healthy(&got);

    // A dispatcher holds the capped endpoint at 2 because of timeouts.
    let since = Utc::now() - chrono::Duration::seconds(30);
    write_note(
        &herald,
        &capped.id,
        &Note {
            reason: Reason::Timeouts,
            cap: 2,
            max: 4,
            since,
            paced: None,
        },
    )
    .await;
    let got = get(&herald, &t, &capped.id).await;
    assert_eq!(got.delivery_state, "throttled: timeouts");
    assert_eq!(got.in_flight_cap, 2);
    assert_eq!(got.throttled_since, Some(ts(since)));
    assert_eq!(
        got.max_in_flight, 4,
        "the configured cap is not the current one"
    );
    // The list reads every card's note at once: the other endpoint is healthy.
    let listed = list(&herald, &t).await;
    let card = |id: &str| listed.iter().find(|e| e.id == id).expect("listed").clone();
    assert_eq!(card(&capped.id).delivery_state, "throttled: timeouts");
    assert_eq!(card(&capped.id).in_flight_cap, 2);
    assert_healthy(&card(&plain.id));

    // Errors on the other one; then it is switched off, which is what the card says.
    write_note(
        &herald,
        &plain.id,
        &Note {
            reason: Reason::Errors,
            cap: 1,
            max: 16,
            since,
            paced: None,
        },
    )
    .await;
    let got = get(&herald, &t, &plain.id).await;
    assert_eq!(got.delivery_state, "throttled: errors");
    assert_eq!(got.in_flight_cap, 1);
    let off = herald.set_enabled(&t, &plain.id, false).await;
    assert_eq!(off.delivery_state, "disabled");
    assert_eq!(off.in_flight_cap, 0);
    assert_eq!(get(&herald, &t, &plain.id).await.delivery_state, "disabled");

    // Update: a new cap, the default again, and a cap out of range refused with nothing
    // written (not even the valid change sent with it). A new cap is announced to the
    // dispatchers' endpoint caches like any change a delivery depends on.
    let mut notices = PgListener::connect(DATABASE_URL).await.unwrap();
    notices.listen(CHANGES_CHANNEL).await.unwrap();
    let e = update(
        &herald,
        &t,
        pb::UpdateEndpointRequest {
            id: capped.id.clone(),
            max_in_flight: Some(256),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(e.max_in_flight, 256);
    let announced = format!("{} {}", t.id, capped.id);
    tokio::time::timeout(Duration::from_secs(5), async {
        while notices.recv().await.unwrap().payload() != announced {}
    })
    .await
    .expect("a change notice for the new cap");
    assert_eq!(
        e.delivery_state, "throttled: timeouts",
        "update answers with the card"
    );
    let err = herald
        .endpoints()
        .await
        .update_endpoint(authed(
            pb::UpdateEndpointRequest {
                id: capped.id.clone(),
                description: Some("changed".into()),
                max_in_flight: Some(257),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 256"), "{err:?}");
    let got = get(&herald, &t, &capped.id).await;
    assert_eq!((got.max_in_flight, got.description.as_str()), (256, ""));
    let e = update(
        &herald,
        &t,
        pb::UpdateEndpointRequest {
            id: capped.id.clone(),
            max_in_flight: Some(0),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(e.max_in_flight, 0);
    let e = update(
        &herald,
        &t,
        pb::UpdateEndpointRequest {
            id: capped.id.clone(),
            max_in_flight: Some(8),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(e.max_in_flight, 8);
    // Leaving it out changes nothing.
    let e = update(
        &herald,
        &t,
        pb::UpdateEndpointRequest {
            id: capped.id.clone(),
            description: Some("kept".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((e.max_in_flight, e.description.as_str()), (8, "kept"));

    // The dispatcher is back at the full cap and removed its note.
    let _: () = redis::cmd("DEL")
        .arg(throttle_notes::key(
            &herald.name,
            capped.id.parse().unwrap(),
        ))
        .query_async(&mut redis().await)
        .await
        .unwrap();
    assert_healthy(&get(&herald, &t, &capped.id).await);
    herald.stop().await;
}

/// A TCP relay to Redis that the test can cut: every connection through it is closed and new
/// ones are refused from then on.
struct Relay {
    addr: SocketAddr,
    cut: CancellationToken,
}

async fn relay_to_redis() -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let inbound = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((mut inbound, _)) = inbound else {
                continue;
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect("127.0.0.1:6379").await else {
                    return;
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    Relay { addr, cut }
}

#[tokio::test]
async fn the_state_is_unknown_not_an_error_while_redis_is_unreachable() {
    let relay = relay_to_redis().await;
    let herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![("HERALD_REDIS_URL".into(), format!("redis://{}", relay.addr))],
        ..Default::default()
    })
    .await;
    let t = herald.tenant().await;
    let (on, _) = herald.create_endpoint(&t, endpoint("on")).await;
    let (off, _) = herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                enabled: Some(false),
                ..endpoint("off")
            },
        )
        .await;
    assert_eq!(off.delivery_state, "disabled");
    assert_healthy(&get(&herald, &t, &on.id).await);

    relay.cut.cancel();
    let started = Instant::now();
    let got = get(&herald, &t, &on.id).await;
    assert_eq!(got.delivery_state, "unknown");
    assert_eq!(got.in_flight_cap, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the call waited {:?} for Redis",
        started.elapsed()
    );
    let listed = list(&herald, &t).await;
    let state = |id: &str| {
        listed
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.delivery_state.clone())
    };
    assert_eq!(state(&on.id).as_deref(), Some("unknown"));
    assert_eq!(state(&off.id).as_deref(), Some("disabled"));
    herald.stop().await;
}
