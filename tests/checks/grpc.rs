//! `GrpcCheck` against a real tonic server running tonic-health's service
//! on 127.0.0.1, asked over a tonic channel as an application would.

use std::net::SocketAddr;

use tokio::{net::TcpListener, task::JoinHandle};
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_health::{Check, CheckResult, Status, checks::grpc::GrpcCheck};

use crate::support::{self, Proxy};

/// A tonic server with tonic-health's service, and its reporter.
async fn serve() -> (SocketAddr, HealthReporter, JoinHandle<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, reporter, server)
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

async fn run(check: &impl Check) -> CheckResult {
    support::within(std::time::Duration::from_secs(20), check.check())
        .await
        .expect("a gRPC health check hung")
}

#[tokio::test]
async fn serving_passes_and_every_other_answer_fails_with_its_reason() {
    let (addr, reporter, server) = serve().await;
    let channel = channel(addr);

    // The server as a whole: tonic-health reports it serving.
    let result = run(&GrpcCheck::new(channel.clone())).await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");

    let orders = GrpcCheck::new(channel.clone()).service("shop.Orders");
    assert_eq!(orders.service_name(), "shop.Orders");
    reporter
        .set_service_status("shop.Orders", ServingStatus::NotServing)
        .await;
    let result = run(&orders).await;
    assert_eq!(result.status(), Status::Unhealthy);
    let message = result.message().unwrap();
    assert!(
        message.contains(r#"service "shop.Orders""#) && message.contains("NOT_SERVING"),
        "{message}"
    );
    reporter
        .set_service_status("shop.Orders", ServingStatus::Serving)
        .await;
    let result = run(&orders).await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");

    let result = run(&GrpcCheck::new(channel).service("shop.Nope")).await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(
        result.message().unwrap().contains("NOT_FOUND"),
        "{result:?}"
    );
    server.abort();
}

/// A gRPC server without the health service answers UNIMPLEMENTED.
#[tokio::test]
async fn a_server_without_the_health_service_is_named_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    let result = run(&GrpcCheck::new(channel(addr))).await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(
        result.message().unwrap().contains("UNIMPLEMENTED"),
        "{result:?}"
    );
    server.abort();
}

#[tokio::test]
async fn nothing_listening_fails_with_the_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let result = run(&GrpcCheck::new(channel(addr))).await;
    assert_eq!(result.status(), Status::Unhealthy);
    let message = result.message().unwrap();
    // The cause, not tonic's debug print of it.
    assert!(
        message.contains("(UNAVAILABLE): transport error")
            && message.contains("Connection refused")
            && !message.contains("ConnectError("),
        "{message}"
    );
}

/// The upstream's port closes and reopens (the channel's connection is
/// cut with it), then it black-holes: readiness follows, through the
/// application's one channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_outage_and_recovery() {
    let (addr, _reporter, server) = serve().await;
    let proxy = Proxy::start(addr).await;
    let check = GrpcCheck::new(channel(proxy.addr));
    let (_health, app, runs) = support::app_with("inventory", check).await;
    support::refused_then_blackholed(&app, &runs, "inventory", "grpc", &proxy).await;
    server.abort();
}
