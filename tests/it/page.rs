//! What the tests of the "Webhooks" page share: an endpoint request, a switchable receiver, and
//! waits on a delivery's status or an endpoint's card.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Tenant, authed};

pub(crate) fn endpoint(url: String, types: &[&str]) -> pb::CreateEndpointRequest {
    pb::CreateEndpointRequest {
        url,
        event_types: types.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub(crate) fn status_is(s: pb::DeliveryStatus) -> impl Fn(&pb::GetDeliveryResponse) -> bool {
    move |r| r.delivery.as_ref().is_some_and(|d| d.status == s as i32)
}

/// A receiver that answers 200 while `up` is true and 500 otherwise.
pub(crate) async fn switchable(up: Arc<AtomicBool>) -> Receiver {
    Receiver::start(move |_, _| {
        if up.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::status(500)
        }
    })
    .await
}

/// Waits until the one delivery of `event_id` has `status`.
pub(crate) async fn only_delivery(
    herald: &Herald,
    t: &Tenant,
    event_id: &str,
    status: pb::DeliveryStatus,
) -> pb::GetDeliveryResponse {
    let d = herald.wait_deliveries(t, event_id, 1).await;
    herald
        .wait_delivery(t, &d[0].id, Duration::from_secs(10), status_is(status))
        .await
}

/// Polls an endpoint until `check` accepts it, or fails after `within`; returns it.
pub(crate) async fn wait_endpoint(
    herald: &Herald,
    t: &Tenant,
    id: &str,
    within: Duration,
    check: impl Fn(&pb::Endpoint) -> bool,
) -> pb::Endpoint {
    let deadline = Instant::now() + within;
    loop {
        let e = get_endpoint(herald, t, id).await;
        if check(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "endpoint did not settle: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn last_status_is(s: pb::DeliveryStatus) -> impl Fn(&pb::Endpoint) -> bool {
    move |e| {
        e.stats
            .as_ref()
            .is_some_and(|st| st.last_status == s as i32)
    }
}

pub(crate) async fn get_endpoint(herald: &Herald, t: &Tenant, id: &str) -> pb::Endpoint {
    herald
        .endpoints()
        .await
        .get_endpoint(authed(pb::GetEndpointRequest { id: id.into() }, &t.api_key))
        .await
        .expect("get endpoint")
        .into_inner()
}
