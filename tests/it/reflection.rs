//! Server reflection as `grpcurl … list` uses it: every server answers v1alpha reflection
//! (the only version grpcurl before 1.9 asks for; without it grpcurl says "server does not
//! support the reflection API") besides v1.

use herald_tests::{Herald, Options};
use tonic::transport::Channel;
use tonic_reflection::pb::v1alpha;

/// The services a server lists through v1alpha reflection.
async fn services_v1alpha(channel: Channel) -> Vec<String> {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("v1alpha reflection served")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("expected a service list, got {other:?}"),
    }
}

#[tokio::test]
async fn every_server_lists_its_services_through_v1alpha_reflection() {
    let herald = Herald::start(Options::default()).await;
    let expected = [
        (herald.ingest_channel().await, "herald.v1.Events"),
        (herald.ledger_channel().await, "herald.v1.Deliveries"),
    ];
    for (channel, api) in expected {
        let services = services_v1alpha(channel).await;
        for name in [api, "grpc.health.v1.Health"] {
            assert!(services.iter().any(|s| s == name), "{name} in {services:?}");
        }
    }
    herald.stop().await;
}
