//! A plain hyper 1 server behind `HealthLayer`, without any framework.
//!
//! ```text
//! cargo run --example hyper
//! ```
//!
//! Serves on 127.0.0.1:3001 (`PORT` overrides the port). The application is
//! a `tower::service_fn`; the layer wraps it, and hyper-util's
//! `TowerToHyperService` adapts the result for hyper's connection builder
//! (HTTP/1.1 and HTTP/2 via `hyper_util::server::conn::auto`).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tower::{Layer, service_fn};
use tower_health::{CheckOptions, CheckResult, HealthChecks};

/// The application: every path that is not a health path lands here.
async fn app(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match request.uri().path() {
        "/" => (StatusCode::OK, "hello from plain hyper\n".to_owned()),
        // Start one, press Ctrl-C: it still gets its answer.
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (StatusCode::OK, "slow, but answered\n".to_owned())
        }
        path => (StatusCode::NOT_FOUND, format!("no route for {path}\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_health=info".into()),
        )
        .init();

    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT must be a port number, got {port:?}"))?,
        Err(_) => 3001,
    };

    let health = HealthChecks::builder()
        .version(env!("CARGO_PKG_VERSION"))
        .check_with(
            "upstream",
            || async { CheckResult::healthy() }, // e.g. a TCP connect to a dependency
            CheckOptions::new()
                .interval(Duration::from_secs(5))
                .timeout(Duration::from_secs(1)),
        )
        .build()?;

    // `Health<S>` needs `S: Clone`; `service_fn` over a fn item is.
    let service = health.layer().layer(service_fn(app));

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("tower-health hyper example listening on {base}");
    println!("try:");
    for path in [
        "/",
        "/slow",
        "/health",
        "/health?detailed=true",
        "/health/upstream",
        "/livez",
        "/readyz?verbose",
        "/startupz",
    ] {
        println!("  curl -i '{base}{path}'");
    }
    println!("  curl -i -H 'Accept: application/health+json' {base}/health");
    println!("  curl -i -X POST {base}/readyz   # 405, Allow: GET, HEAD");
    println!(
        "Ctrl-C or SIGTERM drains for 5s (readiness 503 `draining`, everything else served), \
         then finishes the requests in flight and exits."
    );

    // The same drain as with axum and tonic: on Ctrl-C or SIGTERM readiness
    // reports `draining` at once and this loop keeps accepting for the
    // drain delay, so load balancers see the instance go before it stops
    // listening.
    let shutdown = health.graceful_shutdown(tower_health::shutdown_signal());
    tokio::pin!(shutdown);
    let builder = auto::Builder::new(TokioExecutor::new());
    // Tracks the connections, so that the requests in flight at the end of
    // the drain are finished rather than cut off when `main` returns.
    let connections = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        // An accept error (out of file descriptors, a connection reset
        // before it was accepted) concerns one connection, not the server:
        // returning from `main` here would cut off every request in flight.
        // Wait a moment, as axum::serve does, and go on.
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Each connection finishes the request it is serving and then closes
    // (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY). Bounded: a client that
    // never reads its response must not hold the process up for ever.
    tokio::select! {
        () = connections.shutdown() => println!("connections closed; bye"),
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            println!("gave up on connections still open after 10s; bye");
        }
    }
    Ok(())
}
