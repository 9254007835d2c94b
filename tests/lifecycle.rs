//! End-to-end lifecycle paths over a real socket: startup, failure and
//! recovery, heartbeat loss, load-aware readiness, graceful drain, and the
//! axum example's SIGTERM handling.
//!
//! These run on the real clock because a real server is involved. Waiting
//! for a state is polling with a generous cap that only guards against a
//! hang; no test asserts how fast anything happened.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::{Notify, Semaphore};
use tower_health::{CheckOptions, CheckResult, HealthChecks, HealthHandle, Probes};

const HANG_GUARD: Duration = Duration::from_secs(20);

struct Reply {
    status: StatusCode,
    body: String,
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn call(method: Method, addr: SocketAddr, path: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap();
    let response = tokio::time::timeout(HANG_GUARD, client().request(request))
        .await
        .unwrap_or_else(|_| panic!("{path} hung"))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get_path(addr: SocketAddr, path: &str) -> Reply {
    call(Method::GET, addr, path).await
}

/// Polls `path` until it answers `status`; panics after the hang guard.
async fn wait_for(addr: SocketAddr, path: &str, status: u16) -> Reply {
    wait_until(addr, path, &format!("status {status}"), |reply| {
        reply.status == status
    })
    .await
}

/// Polls `path` until its reply satisfies `wanted` (described as `what`).
async fn wait_until(
    addr: SocketAddr,
    path: &str,
    what: &str,
    wanted: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let reply = get_path(addr, path).await;
        if wanted(&reply) {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never answered with {what}; last {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn app(health: &HealthHandle) -> Router {
    Router::new()
        .route("/", get(|| async { "app" }))
        .layer(health.layer())
}

#[tokio::test]
async fn startup_then_ready() {
    let warm = Arc::new(Notify::new());
    let gate = warm.clone();
    let health = HealthChecks::builder()
        .require_mark_started()
        .check_with(
            "warmup",
            move || {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    CheckResult::healthy()
                }
            },
            CheckOptions::new()
                .probes(Probes::STARTUP | Probes::READINESS)
                .interval(Duration::from_millis(50))
                .timeout(Duration::from_secs(30)),
        )
        .build()
        .unwrap();
    let addr = serve(app(&health)).await;

    let startup = get_path(addr, "/startupz").await;
    assert_eq!(startup.status, 503);
    assert_eq!(
        startup.body,
        r#"{"status":"starting","reason":"waiting for: warmup, mark_started"}"#
    );
    assert_eq!(get_path(addr, "/readyz").await.status, 503);
    assert_eq!(get_path(addr, "/livez").await.status, 200);
    assert_eq!(get_path(addr, "/").await.body, "app");

    warm.notify_one();
    // Warmed up: startup waits for `mark_started` alone.
    let startup = wait_until(addr, "/startupz?verbose", "warmup passed", |reply| {
        !reply.body.contains("warmup")
    })
    .await;
    assert_eq!(startup.status, 503);
    assert_eq!(
        startup.body,
        "[-]mark_started failed: not started yet\nstartupz check failed\n"
    );
    health.mark_started();
    assert_eq!(
        wait_for(addr, "/startupz", 200).await.body,
        r#"{"status":"healthy"}"#
    );
    warm.notify_waiters();
    wait_for(addr, "/readyz", 200).await;
}

#[tokio::test]
async fn dependency_failure_and_recovery() {
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let health = HealthChecks::builder()
        .check_with(
            "db",
            move || {
                let ok = flag.load(Ordering::SeqCst);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("connection refused")
                    }
                }
            },
            CheckOptions::new().interval(Duration::from_millis(50)),
        )
        .build()
        .unwrap();
    let addr = serve(app(&health)).await;
    wait_for(addr, "/readyz", 200).await;

    up.store(false, Ordering::SeqCst);
    let ready = wait_for(addr, "/readyz", 503).await;
    assert_eq!(
        ready.body,
        r#"{"status":"unhealthy","reason":"failing: db"}"#
    );
    assert_eq!(
        get_path(addr, "/livez").await.status,
        200,
        "liveness ignores dependencies"
    );
    assert_eq!(get_path(addr, "/").await.body, "app");

    up.store(true, Ordering::SeqCst);
    wait_for(addr, "/readyz", 200).await;
}

#[tokio::test]
async fn lost_heartbeat_fails_liveness() {
    let health = HealthChecks::builder().build().unwrap();
    let addr = serve(app(&health)).await;
    let heartbeat = Arc::new(
        health
            .heartbeat("consumer", Duration::from_millis(200))
            .unwrap(),
    );
    // The consumer beats every 20 ms while `beating` is set: a loaded
    // machine that holds this test up for longer than the deadline while
    // it waits for liveness to pass must not make it fail.
    let beating = Arc::new(AtomicBool::new(true));
    let consumer = tokio::spawn({
        let heartbeat = heartbeat.clone();
        let beating = beating.clone();
        async move {
            loop {
                if beating.load(Ordering::SeqCst) {
                    heartbeat.beat();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    wait_for(addr, "/livez", 200).await;
    // The consumer stalls: no beats.
    beating.store(false, Ordering::SeqCst);
    let live = wait_for(addr, "/livez", 503).await;
    assert_eq!(
        live.body,
        r#"{"status":"unhealthy","reason":"failing: consumer"}"#
    );
    beating.store(true, Ordering::SeqCst);
    wait_for(addr, "/livez", 200).await;
    // The consumer's task ends without retiring its heartbeat.
    consumer.abort();
    let _ = consumer.await;
    drop(Arc::into_inner(heartbeat).expect("the consumer's clone is gone"));
    wait_for(addr, "/livez", 503).await;
}

/// Where the layer sits in an axum application.
#[derive(Clone, Copy)]
enum Placement {
    RouterLayer,
    WrapAxum,
}

async fn busy_while_at_the_in_flight_limit(placement: Placement) {
    let health = HealthChecks::builder().max_in_flight(1).build().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let router = Router::new().route(
        "/transcribe",
        get(move || {
            let held = held.clone();
            async move {
                let _permit = held.acquire().await.unwrap();
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match placement {
        Placement::RouterLayer => {
            let app = router.layer(health.layer());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        Placement::WrapAxum => {
            let app = health.layer().wrap_axum(router);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
    }
    wait_for(addr, "/readyz", 200).await;

    let stream = tokio::spawn(async move { get_path(addr, "/transcribe").await });
    let busy = wait_for(addr, "/readyz", 503).await;
    assert_eq!(
        busy.body,
        r#"{"status":"busy","reason":"at the limit of 1 requests in flight"}"#
    );
    assert_eq!(get_path(addr, "/livez").await.status, 200);
    gate.add_permits(1);
    assert_eq!(stream.await.unwrap().body, "done");
    // Once the request is done it no longer counts.
    wait_for(addr, "/readyz", 200).await;
}

#[tokio::test]
async fn busy_while_at_the_in_flight_limit_router_layer() {
    busy_while_at_the_in_flight_limit(Placement::RouterLayer).await;
}

#[tokio::test]
async fn busy_while_at_the_in_flight_limit_wrap_axum() {
    busy_while_at_the_in_flight_limit(Placement::WrapAxum).await;
}

#[tokio::test]
async fn graceful_drain_keeps_serving_then_stops() {
    // Long enough for the requests below on a loaded machine: the server
    // stops accepting when it ends.
    let health = HealthChecks::builder()
        .drain_delay(Duration::from_secs(2))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // The recommended placement: the whole router wrapped, probes answered
    // before any routing, served by `axum::serve` as it is.
    let router = Router::new().route("/", get(|| async { "app" }));
    let server = tokio::spawn(
        axum::serve(listener, health.layer().wrap_axum(router))
            .with_graceful_shutdown(health.graceful_shutdown(rx))
            .into_future(),
    );
    wait_for(addr, "/readyz", 200).await;
    tx.send(()).unwrap();
    let ready = wait_for(addr, "/readyz", 503).await;
    assert_eq!(
        ready.body,
        r#"{"status":"draining","reason":"shutting down"}"#
    );
    // Still serving everything else while load balancers catch up.
    assert_eq!(get_path(addr, "/livez").await.status, 200);
    assert_eq!(get_path(addr, "/").await.body, "app");
    tokio::time::timeout(HANG_GUARD, server)
        .await
        .expect("server did not stop after the drain delay")
        .unwrap()
        .unwrap();
}

/// Writes `GET path` on a kept-alive HTTP/1.1 connection and reads the
/// response's head and body (the response must have a `content-length`).
async fn exchange(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .expect("a content-length")
                    .parse::<usize>()
                    .unwrap();
                if body.len() >= length {
                    return text;
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "connection closed mid-response: {text}");
            response.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(HANG_GUARD, read)
        .await
        .unwrap_or_else(|_| panic!("{path} hung"))
}

/// Readiness only turns new connections away: a client keeping its
/// connection alive is told to close it with its next response once
/// draining starts, and the server does.
#[tokio::test]
async fn draining_closes_kept_alive_connections_after_their_next_response() {
    use tokio::io::AsyncReadExt;
    let health = HealthChecks::builder()
        .drain_delay(Duration::from_secs(60))
        .build()
        .unwrap();
    let router = Router::new().route("/", get(|| async { "app" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = health.graceful_shutdown(async { rx.await.unwrap_or(()) });
    tokio::spawn(async move {
        axum::serve(listener, health.layer().wrap_axum(router))
            .with_graceful_shutdown(shutdown)
            .await
    });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    wait_for(addr, "/readyz", 200).await;
    let before = exchange(&mut stream, "/").await;
    assert!(before.ends_with("\r\n\r\napp"), "{before}");
    assert!(!before.contains("connection:"), "{before}");

    tx.send(()).unwrap();
    wait_for(addr, "/readyz", 503).await;
    // The same connection: still served, and told to close.
    let after = exchange(&mut stream, "/").await;
    assert!(after.ends_with("\r\n\r\napp"), "{after}");
    assert!(after.contains("\r\nconnection: close\r\n"), "{after}");
    let mut rest = [0u8; 64];
    let closed = tokio::time::timeout(HANG_GUARD, stream.read(&mut rest))
        .await
        .expect("the server kept the connection open");
    assert_eq!(closed.unwrap(), 0, "the server sent more after closing");
}

/// A plain `cargo test` builds the examples next to the test binaries;
/// `cargo test --test lifecycle` does not, so build it then.
fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join("examples").join(name);
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let built = std::process::Command::new(cargo)
            .args(["build", "--all-features", "--example", name])
            .status()
            .unwrap();
        assert!(built.success(), "building example {name} failed");
    }
    binary
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(unix)]
#[tokio::test]
async fn axum_example_drains_on_sigterm_and_exits_cleanly() {
    let binary = example_binary("axum");
    assert!(
        binary.exists(),
        "{} missing: run through `cargo test`, which builds the examples",
        binary.display()
    );
    let port = free_port();
    let mut child = tokio::process::Command::new(&binary)
        .env("PORT", port.to_string())
        .env("DRAIN_SECS", "3")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // Wait for it to listen.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "example never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(addr, "/readyz", 200).await;
    assert!(get_path(addr, "/").await.body.contains("tower-health demo"));

    assert_eq!(call(Method::POST, addr, "/demo/fail").await.status, 200);
    let ready = wait_for(addr, "/readyz", 503).await;
    assert_eq!(
        ready.body,
        r#"{"status":"unhealthy","reason":"failing: demo"}"#
    );
    assert_eq!(get_path(addr, "/livez").await.status, 200);
    assert_eq!(call(Method::POST, addr, "/demo/recover").await.status, 200);
    wait_for(addr, "/readyz", 200).await;

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let ready = wait_for(addr, "/readyz", 503).await;
    assert_eq!(
        ready.body,
        r#"{"status":"draining","reason":"shutting down"}"#
    );
    assert!(get_path(addr, "/").await.body.contains("tower-health demo"));
    let status = tokio::time::timeout(HANG_GUARD, child.wait())
        .await
        .expect("example did not exit after draining")
        .unwrap();
    assert!(status.success(), "example exited with {status}");
}
