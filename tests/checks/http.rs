//! `HttpCheck` against real HTTP servers on 127.0.0.1.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{Router, http::StatusCode, routing::get};
use http::{HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_health::{
    Check, Status,
    checks::http::{Connector, HttpCheck},
};

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
            "/moved",
            get(|| async {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(http::header::LOCATION, "/ok/?session=abc")],
                )
            }),
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

/// An upstream answering every request with `{"status":"healthy"}` in two
/// chunks (no length: chunked); aborted when the test ends.
async fn chunked_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut connection, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let Ok(byte) = connection.read_u8().await else {
                        return;
                    };
                    request.push(byte);
                }
                let _ = connection
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
                          a\r\n{\"status\":\r\na\r\n\"healthy\"}\r\n0\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

fn uri(addr: SocketAddr, path: &str) -> http::Uri {
    format!("http://{addr}{path}").parse().unwrap()
}

/// A check through a client that keeps idle connections, as an
/// application's own client passed to `with_client` does.
fn pooled(uri: http::Uri) -> HttpCheck {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(Connector::new());
    HttpCheck::with_client(client, uri)
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
    // The message tells a whole body from the part read, also when the
    // body is exactly as long as the limit, with a length or chunked.
    let body = r#"{"status":"healthy"}"#.len();
    let (chunked, chunked_server) = chunked_upstream().await;
    for url in [uri(addr, "/ok"), uri(chunked, "/ok")] {
        for (limit, read) in [
            (body + 1, format!("its {body}-byte body")),
            (body, format!("its {body}-byte body")),
            (
                body - 1,
                format!("the first {} bytes of its body", body - 1),
            ),
        ] {
            let result = HttpCheck::new(url.clone())
                .expect_body_contains("degraded")
                .max_body_bytes(limit)
                .check()
                .await;
            let message = result.message().unwrap();
            assert!(
                message.contains(&format!("answered 200, but {read} did not contain")),
                "{url}, limit {limit}: {message}"
            );
        }
    }

    chunked_server.abort();

    // A redirect is not followed; the message says where it points.
    let result = HttpCheck::new(uri(addr, "/moved")).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert_eq!(observed(&result, "status_code"), 301);
    let message = result.message().unwrap();
    assert!(
        message.contains("a redirect, which the check does not follow, to /ok/?…"),
        "{message}"
    );
    assert!(!message.contains("session"), "{message}");
    let moved = HttpCheck::new(uri(addr, "/moved")).expect_status(200..=399);
    assert_eq!(moved.check().await.status(), Status::Healthy);

    let auth = HttpCheck::new(uri(addr, "/auth"));
    assert_eq!(auth.clone().check().await.status(), Status::Unhealthy);
    let auth = auth.header(
        HeaderName::from_static("x-token"),
        HeaderValue::from_static("s3cret"),
    );
    assert_eq!(auth.check().await.status(), Status::Healthy);
    server.abort();
}

/// `HttpCheck::new`'s own resolver (the system's `getaddrinfo`, one lookup
/// at a time) finds the upstream by name.
#[tokio::test]
async fn a_host_name_is_resolved() {
    let (addr, server) = upstream().await;
    let uri = format!("http://localhost:{}/ok", addr.port())
        .parse()
        .unwrap();
    let check = HttpCheck::new(uri);
    for _ in 0..2 {
        let result = check.check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
    }
    server.abort();
    let result = HttpCheck::new("http://no-such-host.invalid/".parse().unwrap())
        .check()
        .await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(
        result.message().unwrap().contains("dns error"),
        "{result:?}"
    );
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

/// A raw HTTP/1.1 upstream that answers the first `answered` requests on each
/// connection with `200 ok` (kept alive) and, when the next one arrives,
/// reads it and closes the connection without answering, as a server whose
/// idle timeout fires just as a kept-alive connection is reused does.
/// Counts the connections it accepts and the requests it left unanswered.
struct Closer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    unanswered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Closer {
    async fn start(answered: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let unanswered = Arc::new(AtomicUsize::new(0));
        let (c, u) = (connections.clone(), unanswered.clone());
        let task = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                let u = u.clone();
                tokio::spawn(async move {
                    for n in 0.. {
                        if !read_head(&mut socket).await {
                            return; // the client closed it
                        }
                        if n == answered {
                            u.fetch_add(1, Ordering::SeqCst);
                            return; // closed without an answer
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if socket.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            unanswered,
            task,
        }
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.unanswered.load(Ordering::SeqCst),
        )
    }
}

/// Reads one request head (the checks send no body); false at end of stream.
async fn read_head(socket: &mut tokio::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn a_kept_alive_connection_closed_unanswered_is_retried_once() {
    // One answer per connection: the second run finds its pooled connection
    // closed under it, and is sent again on a new one.
    let upstream = Closer::start(1).await;
    let check = pooled(uri(upstream.addr, "/ok"));
    assert_eq!(check.check().await.status(), Status::Healthy);
    // Let hyper-util's idle task put the first connection back in the pool
    // (real time; nothing is asserted about durations). Had it not, the
    // second run would open a new connection and the counts below would be
    // (2, 0): the test fails rather than passing without a reuse.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    assert_eq!(upstream.counts(), (2, 1), "one reuse, closed unanswered");
    upstream.task.abort();

    // An upstream that never answers: one retry, not more, and the error
    // says what happened.
    let upstream = Closer::start(0).await;
    let result = pooled(uri(upstream.addr, "/ok")).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(
        result
            .message()
            .unwrap()
            .contains("closed before message completed"),
        "{result:?}"
    );
    assert_eq!(upstream.counts(), (2, 2));

    // A method that is not idempotent is never sent twice.
    let result = pooled(uri(upstream.addr, "/ok"))
        .method(http::Method::POST)
        .check()
        .await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert_eq!(upstream.counts(), (3, 3));
    upstream.task.abort();

    // `HttpCheck::new`'s connection is always new, so no idle timeout
    // closed it: an upstream that drops it fails the run, without a retry
    // that would hide it and load the upstream twice.
    let upstream = Closer::start(0).await;
    let result = HttpCheck::new(uri(upstream.addr, "/ok")).check().await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    assert_eq!(upstream.counts(), (1, 1));
    upstream.task.abort();
}

#[tokio::test]
async fn a_needle_split_across_frames_is_found() {
    // A chunked body whose chunks arrive as separate frames; the needles
    // straddle chunk boundaries.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                while read_head(&mut socket).await {
                    let mut body =
                        String::from("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
                    for chunk in ["xx", "ne", "e", "dle", "yy", "n", "o", "pe", "zz"] {
                        body.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
                    }
                    body.push_str("0\r\n\r\n");
                    if socket.write_all(body.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    for needle in ["needle", "eedl", "yyno", "nope", "xxneedleyynopezz"] {
        let result = HttpCheck::new(uri(addr, "/chunked"))
            .expect_body_contains(needle)
            .check()
            .await;
        assert_eq!(result.status(), Status::Healthy, "{needle}: {result:?}");
    }
    let result = HttpCheck::new(uri(addr, "/chunked"))
        .expect_body_contains("needlf")
        .check()
        .await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    server.abort();
}

#[tokio::test]
async fn a_streaming_body_is_not_waited_for_without_a_needle() {
    // A 200 whose chunked body sends one chunk and then nothing, holding the
    // connection open, like an event stream or a stalled upstream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            if read_head(&mut socket).await {
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
            }
            held.push(socket);
        }
    });
    // The status decides: the run does not wait for the rest of the body.
    // (Bounded, so that a regression fails instead of hanging.)
    let bounded = std::time::Duration::from_secs(10);
    let result = tokio::time::timeout(bounded, HttpCheck::new(uri(addr, "/events")).check())
        .await
        .expect("the run does not wait for a body nobody asked about");
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    assert_eq!(observed(&result, "status_code"), 200);
    // A needle in the part that has arrived is found without waiting either.
    let result = tokio::time::timeout(
        bounded,
        HttpCheck::new(uri(addr, "/events"))
            .expect_body_contains("hello")
            .check(),
    )
    .await
    .expect("the needle is in the first chunk");
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chunked_body_keeps_a_pooled_connection_without_a_needle() {
    // Chunked, the last chunk written a moment after the rest, as servers
    // that stream their JSON do. The run waits that moment (and on a
    // multi-threaded runtime the rest of a body may reach it a moment after
    // the head anyway), so every run of a check on a pooling client reuses
    // the first connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let server = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while read_head(&mut socket).await {
                    let reply = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                                 f\r\n{\"status\":\"up\"}\r\n";
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    // A moment: far inside the run's 100 ms for the rest
                    // of a body, even on a loaded machine.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    if socket.write_all(b"0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let check = pooled(uri(addr, "/health"));
    for _ in 0..12 {
        let result = check.check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(observed(&result, "body_bytes"), 15);
        // Let hyper-util's pool take the connection back (real time;
        // nothing is asserted about durations).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
    server.abort();
}

#[tokio::test]
async fn a_body_cut_short_fails_only_a_check_that_looks_in_it() {
    // A 200 that promises 100 bytes, sends 2 and closes: an upstream
    // restarting mid-answer, or a proxy's reset stream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            if read_head(&mut socket).await {
                let cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nok";
                let _ = socket.write_all(cut).await;
            }
        }
    });
    // Without a needle the status decides, as documented.
    let result = HttpCheck::new(uri(addr, "/cut")).check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    assert_eq!(observed(&result, "body_bytes"), 2);
    // With one, the body it was to be found in broke off.
    let result = HttpCheck::new(uri(addr, "/cut"))
        .expect_body_contains("healthy")
        .check()
        .await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    assert!(
        result
            .message()
            .unwrap()
            .contains("answered 200 but its body failed after 2 bytes"),
        "{result:?}"
    );
    server.abort();
}
