//! Per-tenant publish rate limits: the server default, a tenant's own limit and "unlimited";
//! a call over the rate gets RESOURCE_EXHAUSTED with a standard RetryInfo detail and a
//! `retry-after-ms` header, and nothing of it is stored; waiting that long is enough; a batch
//! larger than the burst is refused with how many events fit in one call.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::{ADMIN_TOKEN, Herald, Options, authed};
use tonic::Code;

fn event(n: usize) -> pb::PublishRequest {
    pb::PublishRequest {
        event_type: "rate.test".into(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        ..Default::default()
    }
}

#[tokio::test]
async fn publishing_over_the_tenant_rate_is_refused_with_a_retry_hint() {
    let herald = Herald::start(Options {
        dispatchers: 0,
        env: vec![
            ("HERALD_PUBLISH_RATE_LIMIT".into(), "10".into()),
            ("HERALD_PUBLISH_BURST".into(), "2s".into()),
        ],
        ..Default::default()
    })
    .await;
    let limited = herald.tenant().await;
    let mut events = herald.events().await;

    // Burst of 2 s at 10/s: 20 events at once, then the 21st within the same instant is refused.
    let batch = pb::PublishBatchRequest {
        events: (0..15).map(event).collect(),
    };
    events
        .publish_batch(authed(batch, &limited.api_key))
        .await
        .expect("15 events fit in the burst");
    let mut refused = None;
    for n in 0..10 {
        match events
            .publish(authed(event(100 + n), &limited.api_key))
            .await
        {
            Ok(_) => continue,
            Err(status) => {
                refused = Some((n, status));
                break;
            }
        }
    }
    let (accepted_singles, status) = refused.expect("the rate limit never refused a publish");
    assert!(
        (4..=6).contains(&accepted_singles),
        "{accepted_singles} singles accepted after 15"
    );
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("publish rate limit of 10 events/s for this tenant reached; retry after"),
        "{}",
        status.message()
    );
    let hint = herald_tests::retry_delay(&status);
    assert!(
        hint > Duration::ZERO && hint <= Duration::from_millis(100),
        "{hint:?}"
    );

    // Waiting as told is enough.
    tokio::time::sleep(hint).await;
    events
        .publish(authed(event(200), &limited.api_key))
        .await
        .expect("accepted after the hinted delay");

    // More than the burst in one call can never fit: told how many do.
    let too_big = pb::PublishBatchRequest {
        events: (0..21).map(event).collect(),
    };
    let status = events
        .publish_batch(authed(too_big, &limited.api_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("send at most 20 events per call"),
        "{}",
        status.message()
    );

    // Only the accepted events were stored: 15 + the singles + the one after waiting.
    let expected = 15 + accepted_singles as i64 + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&herald.pool)
            .await
            .unwrap();
        if n == expected {
            break;
        }
        assert!(n < expected, "{n} events stored, {expected} accepted");
        assert!(
            std::time::Instant::now() < deadline,
            "{n} of {expected} events in the ledger"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A tenant's own limit wins over the default; 0 is unlimited; it can go back to the default.
    let mut admin = herald.admin().await;
    let unlimited = herald.tenant().await;
    let t = admin
        .update_tenant(authed(
            pb::UpdateTenantRequest {
                id: unlimited.id.clone(),
                publish_rate_limit: Some(0),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.publish_rate_limit, Some(0));
    let fifty = pb::PublishBatchRequest {
        events: (0..50).map(event).collect(),
    };
    events
        .publish_batch(authed(fifty, &unlimited.api_key))
        .await
        .expect("an unlimited tenant is not limited");
    let strict = herald.tenant().await;
    admin
        .update_tenant(authed(
            pb::UpdateTenantRequest {
                id: strict.id.clone(),
                publish_rate_limit: Some(2),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let mut ok = 0;
    while events
        .publish(authed(event(ok), &strict.api_key))
        .await
        .is_ok()
    {
        ok += 1;
        assert!(ok < 10, "the tenant's own limit of 2/s was not applied");
    }
    assert_eq!(ok, 4, "burst of 2 s at 2/s");
    let both = admin
        .update_tenant(authed(
            pb::UpdateTenantRequest {
                id: strict.id.clone(),
                publish_rate_limit: Some(5),
                default_publish_rate_limit: true,
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    let back = admin
        .update_tenant(authed(
            pb::UpdateTenantRequest {
                id: strict.id.clone(),
                default_publish_rate_limit: true,
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.publish_rate_limit, None);
    herald.stop().await;
}
