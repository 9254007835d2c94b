//! `HttpCheck` against real HTTP servers on 127.0.0.1.

use std::net::SocketAddr;

use axum::{Router, http::StatusCode, routing::get};
use http::{HeaderName, HeaderValue};
use tower_health::{Check, Status, checks::http::HttpCheck};

use crate::{
    postgres::observed,
    support::{self, Proxy},
};

/// An upstream with a few routes; aborted when the test ends.
async fn upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/ok", get(|| async { r#"{"status":"healthy"}"# }))
        .route(
            "/broken",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/big",
            get(|| async { format!("{}needle", "x".repeat(200_000)) }),
        )
        .route(
            "/auth",
            get(|headers: http::HeaderMap| async move {
                if headers.get("x-token").is_some_and(|v| v == "s3cret") {
                    (StatusCode::OK, "welcome")
                } else {
                    (StatusCode::UNAUTHORIZED, "no")
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

fn uri(addr: SocketAddr, path: &str) -> http::Uri {
    format!("http://{addr}{path}").parse().unwrap()
}

#[tokio::test]
async fn status_range_and_body_substring() {
    let (addr, server) = upstream().await;

    let result = HttpCheck::new(uri(addr, "/ok"))
        .expect_body_contains("\"status\":\"healthy\"")
        .check()
        .await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    assert_eq!(observed(&result, "status_code"), 200);

    let result = HttpCheck::new(uri(addr, "/broken")).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert_eq!(observed(&result, "status_code"), 503);
    assert!(result.message().unwrap().contains("503"), "{result:?}");

    let teapot = HttpCheck::new(uri(addr, "/teapot")).expect_status(418..=418);
    assert_eq!(teapot.check().await.status(), Status::Healthy);

    let result = HttpCheck::new(uri(addr, "/ok"))
        .expect_body_contains("degraded")
        .check()
        .await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(
        result.message().unwrap().contains("did not contain"),
        "{result:?}"
    );

    let auth = HttpCheck::new(uri(addr, "/auth"));
    assert_eq!(auth.clone().check().await.status(), Status::Unhealthy);
    let auth = auth.header(
        HeaderName::from_static("x-token"),
        HeaderValue::from_static("s3cret"),
    );
    assert_eq!(auth.check().await.status(), Status::Healthy);
    server.abort();
}

#[tokio::test]
async fn body_reading_is_bounded() {
    let (addr, server) = upstream().await;
    // The needle sits after 200,000 bytes: beyond a 1 KiB limit...
    let result = HttpCheck::new(uri(addr, "/big"))
        .max_body_bytes(1024)
        .expect_body_contains("needle")
        .check()
        .await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    assert_eq!(observed(&result, "body_bytes"), 1024);
    assert!(
        result.message().unwrap().contains("first 1024 bytes"),
        "{result:?}"
    );
    // ...and within a 1 MiB one.
    let result = HttpCheck::new(uri(addr, "/big"))
        .max_body_bytes(1 << 20)
        .expect_body_contains("needle")
        .check()
        .await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    server.abort();
}

#[tokio::test]
async fn credentials_in_the_url_stay_out_of_messages() {
    let port = support::free_port(); // nothing listens there
    let result = HttpCheck::new(
        format!("http://user:hunter2@127.0.0.1:{port}/x?token=abc")
            .parse()
            .unwrap(),
    )
    .check()
    .await;
    assert_eq!(result.status(), Status::Unhealthy);
    let message = result.message().unwrap();
    assert!(
        !message.contains("hunter2") && !message.contains("abc"),
        "{message}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{port}/x")),
        "{message}"
    );
}

#[tokio::test]
async fn upstream_outage_refused_then_blackholed() {
    let (addr, server) = upstream().await;
    let proxy = Proxy::start(addr).await;
    let check = HttpCheck::new(uri(proxy.addr, "/ok")).expect_body_contains("healthy");
    let (_health, app, runs) = support::app_with("upstream", check).await;
    support::refused_then_blackholed(&app, &runs, "upstream", "http", &proxy).await;
    server.abort();
}
