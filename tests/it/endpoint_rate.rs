//! An endpoint's `rate_limit_per_second`: deliveries are spread out, never dropped, and the rate
//! holds across dispatchers.

use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Options, authed};

use crate::page::endpoint;

#[tokio::test]
async fn rate_limited_endpoint_gets_everything_spread_out() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                rate_limit_per_second: Some(5),
                ..endpoint(rx.url("/slow"), &["*"])
            },
        )
        .await;
    let start = Instant::now();
    for i in 0..15 {
        herald
            .publish(&t, "tick", format!("{{\"i\":{i}}}").as_bytes())
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..15 {
        got.push(rx.next(Duration::from_secs(20)).await);
    }
    // A burst of 5, then 5 per second: the 15th arrives after about 2 s, none is lost.
    let span = got.last().unwrap().at - start;
    assert!(span >= Duration::from_millis(1700), "{span:?}");
    let first_second = got
        .iter()
        .filter(|r| r.at - got[0].at < Duration::from_millis(900))
        .count();
    // At most the burst plus 0.9 s of refill.
    assert!(first_second <= 10, "{first_second} in the first 0.9 s");
    herald.stop().await;
}

#[tokio::test]
async fn rate_limit_holds_across_two_dispatchers_within_ten_percent() {
    let herald = Herald::start(Options {
        dispatchers: 2,
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    let rate = 20.0;
    herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                rate_limit_per_second: Some(rate as u32),
                ..endpoint(rx.url("/limited"), &["*"])
            },
        )
        .await;
    let n = 100;
    let batch = pb::PublishBatchRequest {
        events: (0..n)
            .map(|i| pb::PublishRequest {
                event_type: "tick".into(),
                payload: format!("{{\"i\":{i}}}").into_bytes(),
                ..Default::default()
            })
            .collect(),
    };
    herald
        .events()
        .await
        .publish_batch(authed(batch, &t.api_key))
        .await
        .unwrap();
    let mut at = Vec::new();
    for _ in 0..n {
        at.push(rx.next(Duration::from_secs(30)).await.at);
    }
    // After the initial burst (one second's worth), deliveries arrive at the limit.
    let burst = rate as usize;
    let span = (at[n - 1] - at[0]).as_secs_f64();
    let measured = (n - burst) as f64 / span;
    assert!(
        (measured - rate).abs() <= rate * 0.1,
        "measured {measured:.1}/s over {span:.2} s, limit {rate}/s"
    );
    assert!(rx.drain_for(Duration::from_millis(300)).await.is_empty());
    herald.stop().await;
}
