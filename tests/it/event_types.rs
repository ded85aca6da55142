//! The event catalogue: groups, archiving, paging, and the tenant's optional strict mode.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::{Herald, Options, authed};
use tonic::Code;

#[tokio::test]
async fn event_types_have_groups_archive_and_an_optional_strict_mode() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let mut types = herald.event_types().await;
    for (name, group) in [
        ("call.started", "Calls"),
        ("call.ended", "Calls"),
        ("sms.sent", ""),
    ] {
        types
            .create_event_type(authed(
                pb::CreateEventTypeRequest {
                    name: name.into(),
                    description: format!("when a {name} happens"),
                    group: group.into(),
                },
                &t.api_key,
            ))
            .await
            .unwrap();
    }
    let calls = types
        .list_event_types(authed(
            pb::ListEventTypesRequest {
                group: Some("Calls".into()),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    assert_eq!(calls.len(), 2);
    let archived = types
        .update_event_type(authed(
            pb::UpdateEventTypeRequest {
                name: "sms.sent".into(),
                archived: Some(true),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(archived.archived);
    let live = types
        .list_event_types(authed(pb::ListEventTypesRequest::default(), &t.api_key))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    assert_eq!(live.len(), 2, "archived types are hidden by default");
    let all = types
        .list_event_types(authed(
            pb::ListEventTypesRequest {
                include_archived: true,
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    assert_eq!(all.len(), 3);

    // Strict tenants refuse unknown and archived types; lenient ones accept anything.
    let publish = |event_type: &'static str| {
        let herald = &herald;
        let key = t.api_key.clone();
        async move {
            herald
                .events()
                .await
                .publish(authed(
                    pb::PublishRequest {
                        event_type: event_type.into(),
                        payload: b"{}".to_vec(),
                        idempotency_key: Some(format!("k-{event_type}")),
                        occurred_at: None,
                    },
                    &key,
                ))
                .await
        }
    };
    assert!(publish("made.up").await.is_ok());
    herald
        .admin()
        .await
        .update_tenant(authed(
            pb::UpdateTenantRequest {
                id: t.id.clone(),
                reject_unknown_event_types: Some(true),
                ..Default::default()
            },
            herald_tests::ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // subscription cache
    let e = publish("never.created").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("never.created"), "{}", e.message());
    assert_eq!(
        publish("sms.sent").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(publish("call.started").await.is_ok());
    // A refused event does not burn its idempotency key.
    types
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: "never.created".into(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap();
    let ok = publish("never.created").await.unwrap().into_inner();
    assert!(!ok.duplicate);
    herald.stop().await;
}
