//! A tonic gRPC server behind `HealthLayer`.
//!
//! ```text
//! cargo run --example tonic
//! ```
//!
//! Serves the gRPC health service (`grpc.health.v1.Health`, tonic-health's,
//! kept in step with the checks by `tower_health::grpc`; so the example
//! needs no protobuf code generation) on 127.0.0.1:50051 (`PORT` overrides
//! the port). The server accepts HTTP/1.1 (`accept_http1(true)`) so plain
//! `curl` can reach the HTTP health endpoints, and HTTP/2 for gRPC.
//!
//! The layer goes on the `Server` (`Server::builder().layer(..)`), so it sees
//! every request before tonic's router does. That matters: tonic answers a
//! path it has no service for with HTTP 200 and `grpc-status: 12`
//! (UNIMPLEMENTED), so without the layer in front, `/readyz` would look
//! "up" to an HTTP prober no matter what.

use std::{net::SocketAddr, time::Duration};

use tonic::transport::{Server, server::TcpIncoming};
use tower_health::{CheckOptions, CheckResult, HealthChecks, Probes};

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
        Err(_) => 50051,
    };

    let health = HealthChecks::builder()
        .version(env!("CARGO_PKG_VERSION"))
        // A dependency check: readiness only (the default).
        .check_with(
            "database",
            || async { CheckResult::healthy() }, // e.g. `SELECT 1` on your pool
            CheckOptions::new()
                .interval(Duration::from_secs(5))
                .timeout(Duration::from_secs(1)),
        )
        // A check of the process itself, which also decides liveness.
        .check_with(
            "runtime",
            || async {
                tokio::task::yield_now().await;
                CheckResult::healthy()
            },
            CheckOptions::new()
                .probes(Probes::LIVENESS | Probes::READINESS)
                .interval(Duration::from_secs(2)),
        )
        .build()?;

    // The gRPC health service (`grpc.health.v1.Health`, what
    // grpc_health_probe, Kubernetes `grpc` probes and gRPC load balancers
    // ask), answered from the same checks: `""` and `readiness` are
    // readiness, `liveness` and `startup` the other probes, and each check
    // is a service of its own.
    let grpc_health = tower_health::grpc::health_service(&health).await;

    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    println!("tower-health tonic example listening on {base} (HTTP/1.1 and HTTP/2)");
    println!("HTTP health endpoints, answered by the layer before tonic routes:");
    for path in [
        "/health",
        "/health?detailed=true",
        "/health/database",
        "/livez",
        "/readyz?verbose",
        "/startupz",
    ] {
        println!("  curl -i '{base}{path}'");
    }
    println!("  curl -i -H 'Accept: application/health+json' {base}/health");
    println!("anything else goes to tonic (an unknown path: 200 with grpc-status 12):");
    println!("  curl -i {base}/no.such.Service/Method");
    println!("gRPC through the same port:");
    println!("  grpcurl -plaintext {addr} grpc.health.v1.Health/Check");
    println!("  grpc_health_probe -addr={addr}");
    println!("  grpc_health_probe -addr={addr} -service=liveness");
    println!("  grpc_health_probe -addr={addr} -service=database");
    println!(
        "Ctrl-C or SIGTERM drains for 5s (readiness 503 `draining`, everything else served), then exits."
    );

    Server::builder()
        .accept_http1(true)
        // Outermost: probes are answered before tonic's router sees the path.
        .layer(health.layer())
        .add_service(grpc_health)
        // Ctrl-C or SIGTERM: readiness reports `draining` at once while
        // everything is still served for the drain delay (default 5 s),
        // then tonic stops.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener),
            health.graceful_shutdown(tower_health::shutdown_signal()),
        )
        .await?;
    println!("bye");
    Ok(())
}
