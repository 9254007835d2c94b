//! In-process cost of `HealthLayer`, per call, against the bare service.
//!
//! ```text
//! cargo bench --bench overhead
//! ```
//!
//! (`bash benches/run.sh` runs this and the HTTP suite and writes the
//! report; see BENCHMARKS.md.)
//!
//! Every arm calls a service exactly as hyper would (`poll_ready`, `call`,
//! poll the response future) and drops the response. The futures here are
//! all ready on their first poll, so they are polled once with a no-op
//! waker: no executor cost is in the figures. Building the request is done
//! outside the timed section (`iter_batched`); dropping the response is
//! inside it.
//!
//! | id | what |
//! |---|---|
//! | `bare` | a `tower::service_fn` building a small JSON response with a content-type header |
//! | `pass_through` | the same behind `HealthLayer`, on a non-health path (`x-process-time-ms` added) |
//! | `pass_through_no_header` | as `pass_through`, with `without_process_time_header()` |
//! | `readyz_hit` | `GET /readyz` behind the layer, answered from the cached snapshot |
//! | `readyz_hit_no_header` | as `readyz_hit`, with `without_process_time_header()` |
//!
//! The `_no_header` arms are not part of the issue's goals; they show how
//! much of the layer's cost is the processing-time header.

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{Empty, Full};
use tower::{Layer, Service, service_fn};
use tower_health::{CheckOptions, CheckResult, HealthChecks};

type Req = Request<Empty<Bytes>>;

const BODY: &[u8] = br#"{"id":42,"name":"widget","in_stock":true}"#;

/// The bare service: a small JSON response with a content-type header.
async fn handler(_request: Req) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn request(path: &'static str) -> Req {
    Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .expect("a valid request")
}

/// `poll_ready`, `call`, one poll of the response future, drop the
/// response: everything a server does with the service per request except
/// I/O.
fn call_once<S, B>(service: &mut S, request: Req) -> StatusCode
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the benchmarked services are always ready"),
    }
    let future = pin!(service.call(request));
    match future.poll(&mut cx) {
        Poll::Ready(Ok(response)) => {
            let status = response.status();
            drop(black_box(response));
            status
        }
        _ => panic!("the benchmarked futures complete on their first poll"),
    }
}

fn overhead(c: &mut Criterion) {
    // The refresher needs a runtime; it runs on this runtime's worker while
    // the benchmark polls on the main thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let health = runtime.block_on(async {
        let health = HealthChecks::builder()
            .check_with(
                "database",
                || async { CheckResult::healthy() },
                CheckOptions::new().interval(Duration::from_secs(5)),
            )
            .build()
            .expect("valid checks");
        // Let the first check run so /readyz is a cached 200.
        tokio::time::sleep(Duration::from_millis(100)).await;
        health
    });

    let mut bare = service_fn(handler);
    let mut layered = health.layer().layer(service_fn(handler));
    let mut layered_no_header = health
        .layer()
        .without_process_time_header()
        .layer(service_fn(handler));

    // Sanity: the arms do what they claim.
    assert_eq!(
        call_once(&mut bare, request("/api/items/42")),
        StatusCode::OK
    );
    assert_eq!(call_once(&mut layered, request("/readyz")), StatusCode::OK);
    {
        let mut cx = Context::from_waker(Waker::noop());
        let _ = layered.poll_ready(&mut cx);
        let future = pin!(layered.call(request("/api/items/42")));
        let Poll::Ready(Ok(response)) = future.poll(&mut cx) else {
            panic!("pass-through did not complete at once");
        };
        assert!(response.headers().contains_key("x-process-time-ms"));
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    let mut group = c.benchmark_group("overhead");
    group.bench_function("bare", |b| {
        b.iter_batched(
            || request("/api/items/42"),
            |req| call_once(&mut bare, req),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("pass_through", |b| {
        b.iter_batched(
            || request("/api/items/42"),
            |req| call_once(&mut layered, req),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("pass_through_no_header", |b| {
        b.iter_batched(
            || request("/api/items/42"),
            |req| call_once(&mut layered_no_header, req),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("readyz_hit", |b| {
        b.iter_batched(
            || request("/readyz"),
            |req| call_once(&mut layered, req),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("readyz_hit_no_header", |b| {
        b.iter_batched(
            || request("/readyz"),
            |req| call_once(&mut layered_no_header, req),
            BatchSize::SmallInput,
        );
    });
    group.finish();

    health.shutdown();
    drop(runtime);
}

criterion_group!(benches, overhead);
criterion_main!(benches);
