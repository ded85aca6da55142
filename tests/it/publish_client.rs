//! Herald's own publishing client (`herald_broker::client::ConfirmConnection`) against the real
//! RabbitMQ: what it publishes arrives as sent, exactly once; a call answers only after its
//! confirms; returns fail the call whose message was unroutable and no other; a broker-side
//! channel close fails the call and the connection instead of hanging; refused logins say why.

use std::time::Duration;

use futures::future::join_all;
use herald_broker::client::{ConfirmConnection, Endpoint};
use herald_broker::lapin::options::BasicGetOptions;
use herald_broker::lapin::types::AMQPValue;
use herald_broker::lapin::{Channel, Connection};
use herald_broker::{Error, Outgoing};
use herald_tests::AMQP_URL;

async fn queue() -> (Connection, Channel, String) {
    herald_tests::exclusive_queue("client").await
}

fn to_queue(queue: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Outgoing {
    Outgoing {
        exchange: String::new(),
        routing_key: queue.to_owned(),
        body,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

async fn open(channels: u16) -> ConfirmConnection {
    let endpoint = Endpoint::parse(AMQP_URL).unwrap();
    ConfirmConnection::open(&endpoint, "herald-tests-client", channels)
        .await
        .unwrap()
}

/// The bodies of every message in the queue, in order.
async fn bodies(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    drain(ch, queue)
        .await
        .into_iter()
        .map(|m| m.delivery.data)
        .collect()
}

/// Every message in the queue, in order, with its properties.
async fn drain(ch: &Channel, queue: &str) -> Vec<herald_broker::lapin::message::BasicGetMessage> {
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push(m);
    }
    got
}

#[tokio::test]
async fn concurrent_calls_on_several_channels_arrive_exactly_once_as_sent() {
    let (_conn, ch, q) = queue().await;
    let client = open(3).await;
    assert_eq!(client.channels(), 3);
    // 40 concurrent calls of 25 messages each, spread over the three channels.
    let calls = (0..40).map(|call| {
        let messages: Vec<_> = (0..25)
            .map(|i| {
                let body = format!("{{\"call\":{call},\"i\":{i}}}").into_bytes();
                to_queue(&q, body, &[("traceparent", "00-abc-def-01")])
            })
            .collect();
        let client = &client;
        async move { client.publish(call, &messages).await }
    });
    for outcome in join_all(calls).await {
        outcome.unwrap();
    }
    assert_eq!(client.in_flight(), 0, "every confirm settled");
    let got = drain(&ch, &q).await;
    assert_eq!(got.len(), 1000);
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.delivery.data.clone()).unwrap())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 1000, "no message twice");
    let props = &got[0].delivery.properties;
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        props.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    let headers = props.headers().as_ref().unwrap();
    assert_eq!(
        headers.inner().get("traceparent"),
        Some(&AMQPValue::LongString("00-abc-def-01".into()))
    );
    // Within one call on one channel, order is kept.
    let of_call_7: Vec<_> = got
        .iter()
        .map(|m| String::from_utf8(m.delivery.data.clone()).unwrap())
        .filter(|b| b.starts_with("{\"call\":7,"))
        .collect();
    let expected: Vec<_> = (0..25)
        .map(|i| format!("{{\"call\":7,\"i\":{i}}}"))
        .collect();
    assert_eq!(of_call_7, expected);
    client.close().await;
    assert!(!client.is_open());
}

#[tokio::test]
async fn a_body_larger_than_a_frame_arrives_whole() {
    let (_conn, ch, q) = queue().await;
    let client = open(1).await;
    let body: Vec<u8> = (0..400_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    client
        .publish(0, &[to_queue(&q, body.clone(), &[])])
        .await
        .unwrap();
    let got = drain(&ch, &q).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery.data, body);
    client.close().await;
}

#[tokio::test]
async fn an_unroutable_message_fails_its_call_and_no_other() {
    let (_conn, ch, q) = queue().await;
    let client = open(1).await;
    let nowhere = format!("herald-client-nowhere-{}", uuid::Uuid::new_v4().simple());
    // Interleaved on one channel: routable, mixed, routable.
    let ok_first = vec![to_queue(&q, b"1".to_vec(), &[])];
    let mixed = vec![
        to_queue(&q, b"2".to_vec(), &[]),
        to_queue(&nowhere, b"lost".to_vec(), &[]),
    ];
    let ok_last = vec![to_queue(&q, b"3".to_vec(), &[])];
    let (a, b, c) = tokio::join!(
        client.publish(0, &ok_first),
        client.publish(0, &mixed),
        client.publish(0, &ok_last)
    );
    a.unwrap();
    c.unwrap();
    match b {
        Err(Error::Unroutable { routing_key, .. }) => assert_eq!(routing_key, nowhere),
        other => panic!("expected unroutable, got {other:?}"),
    }
    assert!(client.is_open(), "a return does not break the connection");
    // Many unroutable messages under one call: still one failed call, connection fine.
    let all_lost: Vec<_> = (0..50)
        .map(|_| to_queue(&nowhere, b"x".to_vec(), &[]))
        .collect();
    assert!(matches!(
        client.publish(0, &all_lost).await,
        Err(Error::Unroutable { .. })
    ));
    client
        .publish(0, &[to_queue(&q, b"4".to_vec(), &[])])
        .await
        .unwrap();
    let bodies = bodies(&ch, &q).await;
    assert_eq!(
        bodies,
        [b"1".to_vec(), b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
    );
    client.close().await;
}

#[tokio::test]
async fn a_channel_closed_by_the_broker_fails_the_call_and_the_connection() {
    let client = open(1).await;
    let missing = Outgoing {
        exchange: format!(
            "herald-client-no-such-exchange-{}",
            uuid::Uuid::new_v4().simple()
        ),
        routing_key: "k".into(),
        body: b"{}".to_vec(),
        headers: Vec::new(),
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), client.publish(0, &[missing]))
        .await
        .expect("the call ends instead of hanging");
    match outcome {
        Err(Error::Unavailable(why)) => assert!(why.contains("NOT_FOUND"), "{why}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(!client.is_open());
    let again = client
        .publish(0, &[to_queue("any", b"{}".to_vec(), &[])])
        .await;
    assert!(matches!(again, Err(Error::Unavailable(_))), "{again:?}");
}

#[tokio::test]
async fn a_message_that_cannot_be_encoded_is_refused_before_anything_is_sent() {
    let (_conn, ch, q) = queue().await;
    let client = open(1).await;
    let long_key = "k".repeat(256);
    let batch = vec![
        to_queue(&q, b"never".to_vec(), &[]),
        to_queue(&long_key, b"never".to_vec(), &[]),
    ];
    assert!(matches!(
        client.publish(0, &batch).await,
        Err(Error::Invalid(_))
    ));
    assert!(client.is_open());
    client
        .publish(0, &[to_queue(&q, b"after".to_vec(), &[])])
        .await
        .unwrap();
    let bodies = bodies(&ch, &q).await;
    assert_eq!(
        bodies,
        [b"after".to_vec()],
        "nothing of the refused call reached the queue"
    );
    client.close().await;
}

#[tokio::test]
async fn a_refused_login_says_why() {
    let mut endpoint = Endpoint::parse(AMQP_URL).unwrap();
    endpoint.password = "not-the-password".into();
    let err = ConfirmConnection::open(&endpoint, "herald-tests-client", 1)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("ACCESS_REFUSED"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");

    let mut endpoint = Endpoint::parse(AMQP_URL).unwrap();
    endpoint.vhost = format!("no-such-vhost-{}", uuid::Uuid::new_v4().simple());
    let err = ConfirmConnection::open(&endpoint, "herald-tests-client", 1)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("vhost"), "{err}");
}
