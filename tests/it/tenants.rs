//! What one tenant may do and see: its own policies (HTTPS only) and none of another tenant's
//! resources.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Options, authed};
use tonic::Code;

use crate::page::{endpoint, get_endpoint};

#[tokio::test]
async fn tenant_can_require_https() {
    let herald = Herald::start(Options::default()).await;
    let admin_tenant = herald
        .admin()
        .await
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "strict".into(),
                require_https: Some(true),
                ..Default::default()
            },
            herald_tests::ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(admin_tenant.require_https);
    let key = herald
        .admin()
        .await
        .create_api_key(authed(
            pb::CreateApiKeyRequest {
                tenant_id: admin_tenant.id.clone(),
                name: "k".into(),
                ..Default::default()
            },
            herald_tests::ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let e = herald
        .endpoints()
        .await
        .create_endpoint(authed(
            endpoint("http://127.0.0.1:9/hook".into(), &["*"]),
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("https"), "{}", e.message());
    assert_eq!(herald.count("endpoints").await, 0);
    herald.stop().await;
}

#[tokio::test]
async fn tenant_b_gets_not_found_for_every_tenant_a_resource() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let a = herald.tenant().await;
    let b = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&a, endpoint(rx.url("/a"), &["*"]))
        .await;
    let mut types = herald.event_types().await;
    types
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: "a.only".into(),
                ..Default::default()
            },
            &a.api_key,
        ))
        .await
        .unwrap();
    let p = herald.publish(&a, "a.only", b"{}").await;
    rx.next(Duration::from_secs(10)).await;
    let d = herald.wait_deliveries(&a, &p.event_id, 1).await;
    let delivery = d[0].id.clone();

    let mut endpoints = herald.endpoints().await;
    let mut deliveries = herald.deliveries().await;
    let key = &b.api_key;
    let id = || ep.id.clone();
    let codes = vec![
        (
            "GetEndpoint",
            endpoints
                .get_endpoint(authed(pb::GetEndpointRequest { id: id() }, key))
                .await
                .map(|_| ()),
        ),
        (
            "UpdateEndpoint",
            endpoints
                .update_endpoint(authed(
                    pb::UpdateEndpointRequest {
                        id: id(),
                        enabled: Some(false),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "GetEndpointSecret",
            endpoints
                .get_endpoint_secret(authed(pb::GetEndpointSecretRequest { id: id() }, key))
                .await
                .map(|_| ()),
        ),
        (
            "RotateSecret",
            endpoints
                .rotate_secret(authed(
                    pb::RotateSecretRequest {
                        endpoint_id: id(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "SendTest",
            endpoints
                .send_test(authed(
                    pb::SendTestRequest {
                        endpoint_id: id(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "DeleteEndpoint",
            endpoints
                .delete_endpoint(authed(pb::DeleteEndpointRequest { id: id() }, key))
                .await
                .map(|_| ()),
        ),
        (
            "UpdateEventType",
            types
                .update_event_type(authed(
                    pb::UpdateEventTypeRequest {
                        name: "a.only".into(),
                        archived: Some(true),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "GetDelivery",
            deliveries
                .get_delivery(authed(
                    pb::GetDeliveryRequest {
                        id: delivery.clone(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "Redeliver",
            deliveries
                .redeliver(authed(
                    pb::RedeliverRequest {
                        delivery_id: delivery.clone(),
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "ReplayEndpoint",
            deliveries
                .replay_endpoint(authed(
                    pb::ReplayEndpointRequest {
                        endpoint_id: id(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
    ];
    for (call, result) in codes {
        assert_eq!(
            result.as_ref().map_err(|s| s.code()),
            Err(Code::NotFound),
            "{call} with tenant B's key"
        );
    }
    // Lists show B nothing of A's.
    let listed = deliveries
        .list_deliveries(authed(
            pb::ListDeliveriesRequest {
                endpoint_id: Some(id()),
                ..Default::default()
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.deliveries.is_empty());
    let eps = endpoints
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), key))
        .await
        .unwrap()
        .into_inner();
    assert!(eps.endpoints.is_empty());
    let ts = types
        .list_event_types(authed(
            pb::ListEventTypesRequest {
                include_archived: true,
                ..Default::default()
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ts.event_types.is_empty());
    // And A's resources are untouched.
    let card = get_endpoint(&herald, &a, &ep.id).await;
    assert!(card.enabled);
    herald.stop().await;
}
