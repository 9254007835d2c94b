//! The layer in real server stacks, over real TCP sockets on 127.0.0.1:
//! axum (`Router::layer` and wrapping the whole router), tonic (HTTP/1.1
//! with `accept_http1`, and gRPC over HTTP/2 through the layer) and plain
//! hyper 1 + hyper-util. Every request goes through hyper-util's legacy
//! client.
//!
//! The checks run in real time here (a server needs a real clock); the only
//! waiting is [`common::wait_ready`], bounded by a hang guard.

mod common;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    Router,
    response::IntoResponse,
    routing::{get, post},
};
use bytes::Bytes;
use common::{HttpClient, INNER_MARK, Reply, get as get_req, request, send};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::transport::{Channel, Server, server::TcpIncoming};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{Layer, service_fn};
use tower_health::{CheckOptions, CheckResult, HealthChecks, HealthHandle, ResponseBody};

/// One healthy readiness check, `db`, refreshed every second.
fn health() -> HealthHandle {
    HealthChecks::builder()
        .version("9.9.9")
        .check_with(
            "db",
            || async { CheckResult::healthy() },
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_secs(1)),
        )
        .build()
        .expect("valid checks")
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind 127.0.0.1:0");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    (listener, base)
}

fn url(base: &str, path: &str) -> String {
    format!("{base}{path}")
}

/// Everything the layer answers itself, the same on every stack.
async fn assert_health_surface(client: &HttpClient, base: &str) {
    // The probes: 200, JSON, `{"status":"healthy"}`, no-store, timed, and
    // never seen by the inner service.
    for path in ["/health", "/livez", "/healthz", "/readyz", "/startupz"] {
        let reply = send(client, get_req(&url(base, path))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        reply.assert_health_headers("application/json");
        assert_eq!(reply.text(), r#"{"status":"healthy"}"#, "{path}");
        assert!(
            reply.headers.get(INNER_MARK).is_none(),
            "{path} reached the inner service"
        );
        assert!(
            reply.headers.get("grpc-status").is_none(),
            "{path} reached tonic"
        );
    }

    // One component.
    let reply = send(client, get_req(&url(base, "/health/db"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.assert_health_headers("application/json");
    let json = reply.json();
    assert_eq!(json["name"], "db", "{json}");
    assert_eq!(json["status"], "healthy", "{json}");

    // An unknown component: 404 with a JSON error naming it.
    let reply = send(client, get_req(&url(base, "/health/nosuch"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    reply.assert_health_headers("application/json");
    let json = reply.json();
    assert_eq!(json["status"], "error", "{json}");
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("nosuch")),
        "{json}"
    );

    // Detailed.
    let reply = send(client, get_req(&url(base, "/health?detailed=true"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.assert_health_headers("application/json");
    let json = reply.json();
    assert_eq!(json["status"], "healthy", "{json}");
    assert_eq!(json["components"]["db"]["status"], "healthy", "{json}");
    assert_eq!(json["version"], "9.9.9", "{json}");

    // Kubernetes verbose text.
    let reply = send(client, get_req(&url(base, "/readyz?verbose"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.assert_health_headers("text/plain; charset=utf-8");
    assert_eq!(reply.text(), "[+]db ok\nreadyz check passed\n");

    // application/health+json.
    let reply = send(
        client,
        request(
            Method::GET,
            &url(base, "/health"),
            &[("accept", "application/health+json")],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.assert_health_headers("application/health+json");
    let json = reply.json();
    assert_eq!(json["status"], "pass", "{json}");
    assert_eq!(json["releaseId"], "9.9.9", "{json}");
    assert_eq!(
        json["checks"]["db:responseTime"][0]["status"], "pass",
        "{json}"
    );

    // HEAD: the GET's status and headers, no body.
    let get_len = send(client, get_req(&url(base, "/readyz")))
        .await
        .body
        .len();
    let reply = send(client, request(Method::HEAD, &url(base, "/readyz"), &[])).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.assert_health_headers("application/json");
    assert!(reply.body.is_empty(), "HEAD with a body: {reply:?}");
    assert_eq!(
        reply.header(header::CONTENT_LENGTH),
        Some(get_len.to_string().as_str()),
        "{reply:?}"
    );

    // Other methods: 405 with `Allow: GET, HEAD` and a JSON error.
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for path in ["/readyz", "/health/db"] {
            let reply = send(client, request(method.clone(), &url(base, path), &[])).await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {reply:?}"
            );
            reply.assert_health_headers("application/json");
            assert_eq!(reply.header(header::ALLOW), Some("GET, HEAD"), "{reply:?}");
            assert_eq!(reply.json()["status"], "error");
            assert!(reply.headers.get(INNER_MARK).is_none());
        }
    }

    // A malformed known parameter: 400 naming it.
    let reply = send(client, get_req(&url(base, "/readyz?verbose=maybe"))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    reply.assert_health_headers("application/json");
    let json = reply.json();
    assert_eq!(json["status"], "error", "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("verbose")),
        "{json}"
    );
}

// ---------------------------------------------------------------- axum ---

fn axum_routes() -> Router {
    Router::new()
        .route("/", get(|| async { "hello from axum" }))
        .route(
            "/echo",
            post(|body: String| async move { format!("echo: {body}") }),
        )
}

async fn assert_axum_passthrough(client: &HttpClient, base: &str) {
    let reply = send(client, get_req(&url(base, "/"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "hello from axum");
    reply.assert_process_time();
    assert!(
        reply.headers.get(header::CACHE_CONTROL).is_none(),
        "{reply:?}"
    );

    let mut echo = request(Method::POST, &url(base, "/echo"), &[]);
    *echo.body_mut() = Full::new(Bytes::from_static(b"ping"));
    let reply = send(client, echo).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), "echo: ping");
    reply.assert_process_time();

    // Paths that merely look like health paths are the router's: axum's 404.
    for path in [
        "/nope",
        "/readyz/",
        "/health/db/extra",
        "/healthy",
        "/Readyz",
    ] {
        let reply = send(client, get_req(&url(base, path))).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        assert!(
            reply.body.is_empty(),
            "{path}: axum's fallback has no body: {reply:?}"
        );
        assert!(
            reply.headers.get(header::CACHE_CONTROL).is_none(),
            "{path}: {reply:?}"
        );
        reply.assert_process_time();
    }
    // A method the route does not have is the router's 405, not ours.
    let reply = send(client, request(Method::DELETE, &url(base, "/"), &[])).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{reply:?}");
    assert_eq!(
        reply.header(header::ALLOW),
        Some("GET,HEAD"),
        "axum's own Allow: {reply:?}"
    );
    reply.assert_process_time();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_router_layer() {
    let health = health();
    let app = axum_routes().layer(health.layer());
    let (listener, base) = bind().await;
    let server: JoinHandle<_> = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = common::http1_client();
    common::wait_ready(&client, &base).await;
    assert_health_surface(&client, &base).await;
    assert_axum_passthrough(&client, &base).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_whole_router_wrapped() {
    let health = health();
    // `Health<Router>` answers `Response<ResponseBody<axum::body::Body>>`;
    // `axum::serve` insists on `Response<axum::body::Body>`, so the
    // response is mapped back with `IntoResponse`.
    let app = tower::ServiceBuilder::new()
        .map_response(|response: Response<ResponseBody<axum::body::Body>>| response.into_response())
        .layer(health.layer())
        .service(axum_routes());
    let (listener, base) = bind().await;
    let server =
        tokio::spawn(async move { axum::serve(listener, tower::make::Shared::new(app)).await });

    let client = common::http1_client();
    common::wait_ready(&client, &base).await;
    assert_health_surface(&client, &base).await;
    assert_axum_passthrough(&client, &base).await;
    server.abort();
}

// --------------------------------------------------------------- tonic ---

/// tonic-health's gRPC service behind the layer, on a server that speaks
/// HTTP/1.1 as well as HTTP/2.
async fn serve_tonic(
    health: &HealthHandle,
) -> (String, JoinHandle<Result<(), tonic::transport::Error>>) {
    let (reporter, grpc_health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("stacks.Db", tonic_health::ServingStatus::NotServing)
        .await;
    let (listener, base) = bind().await;
    let server = Server::builder()
        .accept_http1(true)
        .layer(health.layer())
        .add_service(grpc_health)
        .serve_with_incoming(TcpIncoming::from(listener));
    let task = tokio::spawn(async move {
        // Keep the reporter alive with the server.
        let _reporter = reporter;
        server.await
    });
    (base, task)
}

/// A gRPC-shaped request (what tonic routes on), empty message.
fn grpc_request(base: &str, path: &str) -> Request<Full<Bytes>> {
    request(
        Method::POST,
        &url(base, path),
        &[("content-type", "application/grpc"), ("te", "trailers")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_http1_health_paths_are_answered_before_routing() {
    let health = health();
    let (base, server) = serve_tonic(&health).await;
    let client = common::http1_client();
    common::wait_ready(&client, &base).await;
    assert_health_surface(&client, &base).await;

    // Not health paths: tonic answers them, with its HTTP 200 and
    // grpc-status 12 (UNIMPLEMENTED). The layer still times them.
    for path in [
        "/no.such.Service/Method",
        "/readyz/extra",
        "/health/db/extra",
        "/healthy",
        "/",
    ] {
        let reply = send(&client, get_req(&url(&base, path))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.header("grpc-status"), Some("12"), "{path}: {reply:?}");
        assert!(
            reply.headers.get(header::CACHE_CONTROL).is_none(),
            "{path}: {reply:?}"
        );
        reply.assert_process_time();
    }
    let reply = send(&client, grpc_request(&base, "/no.such.Service/Method")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("grpc-status"), Some("12"), "{reply:?}");
    reply.assert_process_time();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_grpc_over_http2_still_works_through_the_layer() {
    let health = health();
    let (base, server) = serve_tonic(&health).await;
    let channel = common::guard(
        "connecting a tonic channel",
        Channel::from_shared(base.clone())
            .expect("valid URI")
            .connect(),
    )
    .await
    .expect("channel connects");
    let mut grpc = HealthClient::new(channel);

    // The server's overall status: SERVING, with the layer's header in the
    // response metadata.
    let response = common::guard(
        "grpc Check",
        grpc.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("gRPC Check succeeds through the layer");
    let process_time = response
        .metadata()
        .get(tower_health::PROCESS_TIME_HEADER.as_str())
        .expect("gRPC response carries x-process-time-ms")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        process_time.parse::<f64>().is_ok_and(|ms| ms >= 0.0),
        "{process_time:?}"
    );
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);

    // A named service reported NOT_SERVING, and an unknown one: gRPC's own
    // answers come through unchanged.
    let response = common::guard(
        "grpc Check stacks.Db",
        grpc.check(HealthCheckRequest {
            service: "stacks.Db".into(),
        }),
    )
    .await
    .expect("gRPC Check succeeds");
    assert_eq!(response.into_inner().status(), ServingStatus::NotServing);
    let status = common::guard(
        "grpc Check unknown",
        grpc.check(HealthCheckRequest {
            service: "no.such.Service".into(),
        }),
    )
    .await
    .expect_err("unknown service is a gRPC error");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // A server-streaming call: the stream's first message arrives through
    // the layer's response body.
    let mut stream = common::guard(
        "grpc Watch",
        grpc.watch(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("gRPC Watch starts")
    .into_inner();
    let first = common::guard("first Watch message", stream.message())
        .await
        .expect("stream item")
        .expect("a first message");
    assert_eq!(first.status(), ServingStatus::Serving);

    // The HTTP health paths over HTTP/2 as well, and an unknown gRPC method
    // still reaches tonic: 200 with grpc-status 12.
    let h2 = common::http2_client();
    common::wait_ready(&h2, &base).await;
    let reply = send(&h2, get_req(&url(&base, "/readyz"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.assert_health_headers("application/json");
    assert_eq!(reply.text(), r#"{"status":"healthy"}"#);
    let reply = send(
        &h2,
        grpc_request(&base, "/grpc.health.v1.Health/NoSuchMethod"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("grpc-status"), Some("12"), "{reply:?}");
    reply.assert_process_time();
    server.abort();
}

/// `tower_health::grpc`'s service on a real tonic server, asked over
/// HTTP/2 by tonic-health's own client: the probes and the check are
/// services, a Watch stream follows a check going down, and one on a
/// removed check hears it is not serving before its stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_service_answers_from_the_checks() {
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let db_up = up.clone();
    let health = HealthChecks::builder()
        .check_with(
            "db",
            move || {
                let up = db_up.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if up {
                        CheckResult::healthy()
                    } else {
                        CheckResult::unhealthy("down")
                    }
                }
            },
            CheckOptions::new().interval(Duration::from_millis(100)),
        )
        .check("cache", || async { CheckResult::healthy() })
        .build()
        .expect("valid checks");
    let grpc_health = tower_health::grpc::health_service(&health).await;
    let (listener, base) = bind().await;
    let server = tokio::spawn(
        Server::builder()
            .layer(health.layer())
            .add_service(grpc_health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = common::guard(
        "connecting a tonic channel",
        Channel::from_shared(base).expect("valid URI").connect(),
    )
    .await
    .expect("channel connects");
    let mut grpc = HealthClient::new(channel);
    let mut status_of = async |service: &str| {
        common::guard(
            "grpc Check",
            grpc.check(HealthCheckRequest {
                service: service.into(),
            }),
        )
        .await
        .map(|response| response.into_inner().status())
    };

    // Until db's first result, readiness is not serving (bounded wait).
    let mut ready = status_of("").await.expect("the server's status");
    for _ in 0..1_000 {
        if ready == ServingStatus::Serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = status_of("").await.expect("the server's status");
    }
    assert_eq!(ready, ServingStatus::Serving);
    for service in ["readiness", "liveness", "startup", "db"] {
        assert_eq!(
            status_of(service).await.expect(service),
            ServingStatus::Serving,
            "{service}"
        );
    }
    let unknown = status_of("nosuch").await.expect_err("not a service");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // A Watch on db sees it go down.
    let mut watch = start_watch(&mut grpc, "db").await;
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::Serving));
    up.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        next_status(&mut watch).await,
        Some(ServingStatus::NotServing)
    );

    // A Watch on a check that is removed while serving hears it is not
    // serving, then its stream ends.
    let mut watch = start_watch(&mut grpc, "cache").await;
    assert_eq!(next_status(&mut watch).await, Some(ServingStatus::Serving));
    assert!(health.remove_check("cache"));
    assert_eq!(
        next_status(&mut watch).await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(next_status(&mut watch).await, None, "the stream ends");
    server.abort();
}

/// A gRPC `Watch` stream on `service` (bounded wait).
async fn start_watch(
    grpc: &mut HealthClient<Channel>,
    service: &str,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    common::guard(
        "grpc Watch",
        grpc.watch(HealthCheckRequest {
            service: service.into(),
        }),
    )
    .await
    .expect("gRPC Watch starts")
    .into_inner()
}

/// The next status a `Watch` stream sends; `None` when it ends (bounded
/// wait).
async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> Option<ServingStatus> {
    common::guard("a Watch message", watch.message())
        .await
        .expect("stream item")
        .map(|response| response.status())
}

// --------------------------------------------------------------- hyper ---

async fn hyper_app(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from(common::echo_body(&request))));
    response
        .headers_mut()
        .insert(INNER_MARK, http::HeaderValue::from_static("yes"));
    if request.uri().path() != "/" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(response)
}

/// Serves `service` on 127.0.0.1 with hyper-util (HTTP/1.1 and HTTP/2),
/// one task per connection.
async fn serve_hyper<S>(service: S) -> (JoinHandle<()>, String)
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (listener, base) = bind().await;
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_hyper_service_fn() {
    let health = health();
    let service = health.layer().layer(service_fn(hyper_app));
    let (server, base) = serve_hyper(service).await;

    for client in [common::http1_client(), common::http2_client()] {
        common::wait_ready(&client, &base).await;
        assert_health_surface(&client, &base).await;

        let reply = send(&client, get_req(&url(&base, "/?a=1"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.text(), "inner GET /?a=1");
        assert_eq!(reply.header(INNER_MARK), Some("yes"));
        reply.assert_process_time();
        for path in [
            "/nope",
            "/readyz/",
            "/health/db/x",
            "/livez.json",
            "/HEALTH",
        ] {
            let reply = send(&client, request(Method::DELETE, &url(&base, path), &[])).await;
            let reply: Reply = reply;
            assert_eq!(reply.header(INNER_MARK), Some("yes"), "{path}: {reply:?}");
            assert_eq!(reply.text(), format!("inner DELETE {path}"));
            reply.assert_process_time();
        }
    }
    server.abort();
}

// ------------------------------------------------------ a port of its own ---

/// What the standalone service answers that is not a health path.
async fn assert_not_found(client: &HttpClient, base: &str) {
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/api/items/1?x=y"),
        (Method::POST, "/metrics"),
        (Method::DELETE, "/readyz/"),
    ] {
        let reply = send(client, request(method.clone(), &url(base, path), &[])).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {path}: {reply:?}"
        );
        reply.assert_health_headers("application/json");
        let json = reply.json();
        assert_eq!(json["status"], "error", "{json}");
        assert_eq!(
            json["error"],
            "not a health path; the health paths are /health, /health/{name}, /livez, \
             /healthz, /readyz, /startupz",
            "{method} {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_paths_alone_on_a_hyper_port() {
    let health = health();
    let service = health.layer().into_service();
    let (server, base) = serve_hyper(service).await;

    for client in [common::http1_client(), common::http2_client()] {
        common::wait_ready(&client, &base).await;
        assert_health_surface(&client, &base).await;
        assert_not_found(&client, &base).await;
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_paths_alone_as_an_axum_fallback() {
    let health = health();
    let admin = Router::new().fallback_service(health.layer().into_service());
    let (listener, base) = bind().await;
    let server = tokio::spawn(async move { axum::serve(listener, admin).await });

    let client = common::http1_client();
    common::wait_ready(&client, &base).await;
    assert_health_surface(&client, &base).await;
    assert_not_found(&client, &base).await;
    server.abort();
}
