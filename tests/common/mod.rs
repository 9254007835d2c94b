//! Helpers shared by `stacks.rs`, `probes.rs` and `props.rs`.
//!
//! Each test file compiles this module on its own and uses a different part
//! of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tower::{Service, ServiceExt};
use tower_health::PROCESS_TIME_HEADER;

/// The longest any single step of a socket test may take before the test
/// fails as hung. Never a speed assertion: only a guard against hanging CI.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(header::CONTENT_TYPE)
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the processing-time header is there, once, and is a
    /// non-negative decimal number of milliseconds.
    pub fn assert_process_time(&self) -> f64 {
        assert_process_time(&self.headers)
    }

    /// Asserts the headers every health answer carries.
    pub fn assert_health_headers(&self, content_type: &str) {
        assert_eq!(self.content_type(), Some(content_type), "{self:?}");
        assert_eq!(
            self.header(header::CACHE_CONTROL),
            Some("no-store"),
            "{self:?}"
        );
        self.assert_process_time();
    }
}

/// `x-process-time-ms` is present exactly once and parses as a decimal
/// number (digits, one dot, digits) that is finite and non-negative.
pub fn assert_process_time(headers: &HeaderMap) -> f64 {
    let values: Vec<&HeaderValue> = headers.get_all(PROCESS_TIME_HEADER).iter().collect();
    assert_eq!(
        values.len(),
        1,
        "one {PROCESS_TIME_HEADER} header: {headers:?}"
    );
    let text = values[0].to_str().expect("ASCII");
    let (whole, frac) = text
        .split_once('.')
        .unwrap_or_else(|| panic!("{PROCESS_TIME_HEADER} {text:?} has no decimal point"));
    assert!(
        !whole.is_empty()
            && !frac.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "{PROCESS_TIME_HEADER} {text:?} is not a decimal number"
    );
    let millis: f64 = text.parse().expect("a decimal number parses as f64");
    assert!(millis.is_finite() && millis >= 0.0, "{text:?}");
    millis
}

/// Reads a response body to its end.
pub async fn read<B>(response: Response<B>) -> Reply
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body reads").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET request with an empty body.
pub fn get(uri: &str) -> Request<Full<Bytes>> {
    request(Method::GET, uri, &[])
}

/// A request with the given method and headers and an empty body.
pub fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// Sends one request through a service in-process and reads the answer.
pub async fn call<S, B>(service: &S, request: Request<Full<Bytes>>) -> Reply
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service
        .clone()
        .oneshot(request)
        .await
        .expect("service call");
    read(response).await
}

/// An HTTP/1.1 client for the socket tests.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge client (what gRPC speaks).
pub fn http2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request over the socket and reads the answer, failing the test
/// if that hangs past [`HANG_GUARD`].
pub async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Reply {
    let what = format!("{} {}", request.method(), request.uri());
    let exchange = async {
        let response = client.request(request).await.expect("request succeeds");
        read(response).await
    };
    guard(&what, exchange).await
}

/// Awaits `future`, failing the test if it takes longer than [`HANG_GUARD`].
pub async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: hung for {HANG_GUARD:?}"))
}

/// Polls `GET {base}/readyz` until it answers 200, i.e. every check has its
/// first result (they run at once, in real time, on the server's runtime).
/// Bounded: fails after [`HANG_GUARD`].
pub async fn wait_ready(client: &HttpClient, base: &str) {
    let poll = async {
        for _ in 0..2_000 {
            let reply = send(client, get(&format!("{base}/readyz"))).await;
            if reply.status == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{base}/readyz never answered 200");
    };
    guard("waiting for readiness", poll).await;
}

/// An inner service that answers every request with 200, an
/// `x-inner: yes` header and the body `inner {METHOD} {path?query}`, and
/// counts its calls.
#[derive(Clone, Default)]
pub struct Echo {
    pub calls: Arc<AtomicUsize>,
}

impl Echo {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

pub const INNER_MARK: &str = "x-inner";

pub fn echo_body<B>(request: &Request<B>) -> String {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    format!("inner {} {target}", request.method())
}

impl<B> Service<Request<B>> for Echo {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut response = Response::new(Full::new(Bytes::from(echo_body(&request))));
        response
            .headers_mut()
            .insert(INNER_MARK, HeaderValue::from_static("yes"));
        std::future::ready(Ok(response))
    }
}

/// A check that counts its runs and is always healthy.
pub fn counting_check(
    counter: &Arc<AtomicUsize>,
) -> impl Fn() -> std::future::Ready<tower_health::CheckResult> + Send + Sync + 'static {
    let counter = counter.clone();
    move || {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::ready(tower_health::CheckResult::healthy())
    }
}
