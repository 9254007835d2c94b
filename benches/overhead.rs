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
//! | `bare` | a `tower::service_fn` building a small JSON response with a content-type header; the body is a static byte string |
//! | `bare_serialized` | the same, serializing its body with `serde_json` on every call, as `axum::Json` does |
//! | `pass_through` | the same behind `HealthLayer`, on a non-health path (`x-process-time-ms` added) |
//! | `pass_through_no_header` | as `pass_through`, with `without_process_time_header()` |
//! | `readyz_hit` | `GET /readyz` behind the layer, answered from the cached snapshot |
//! | `readyz_hit_no_header` | as `readyz_hit`, with `without_process_time_header()` |
//!
//! The `_no_header` arms are not part of the issue's goals; they show how
//! much of the layer's cost is the processing-time header. `bare_serialized`
//! is not either: it shows where a cached answer stands against a handler
//! that builds its JSON per call, the usual kind. The goals are judged
//! against `bare`, the cheaper of the two.
//!
//! After criterion, the same arms are timed in interleaved rounds
//! (`OVERHEAD_ROUNDS`, 100, of `OVERHEAD_ROUND_CALLS`, 10,000, calls per arm;
//! `OVERHEAD_ROUNDS=0` skips them): each round times every arm, in an order
//! rotated one place every other round and reversed every other round (so
//! each arm runs as often before `bare` as after it, with an even number of
//! rounds), and each arm's ratio to `bare` is taken within the round. The medians over rounds are printed, and written to
//! the path in `OVERHEAD_INTERLEAVED` if it is set.
//!
//! With `OVERHEAD_COUNT=<arm>` the binary runs that arm `OVERHEAD_CALLS`
//! times (100,000) instead of benchmarking: `benches/instructions.sh` counts
//! its instructions under callgrind.

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

mod stats;

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Empty, Full};
use tower::{
    Layer, Service,
    util::{ServiceFn, service_fn},
};
use tower_health::{CheckOptions, CheckResult, Health, HealthChecks, HealthHandle};

use stats::{median, met};

type Req = Request<Empty<Bytes>>;

const BODY: &[u8] = br#"{"id":42,"name":"widget","in_stock":true}"#;

/// The bare service: a small JSON response with a content-type header.
///
/// A plain function returning a ready future rather than an `async fn`, so
/// the services' types can be named; the work is the same (the request is
/// dropped and the response built in the call).
fn handler(_request: Req) -> Handled {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    std::future::ready(Ok(response))
}

/// What `bare_serialized` serializes: the same bytes as [`BODY`].
#[derive(serde::Serialize)]
struct Item {
    id: u32,
    name: &'static str,
    in_stock: bool,
}

/// `bare`, serializing its JSON body per call.
fn handler_serialized(_request: Req) -> Handled {
    let item = Item {
        id: 42,
        name: "widget",
        in_stock: true,
    };
    let body = serde_json::to_vec(&item).expect("an item serializes");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    std::future::ready(Ok(response))
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
#[inline(never)]
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

/// The benchmarked services, around one `HealthChecks` whose refresher runs
/// on its own runtime thread while the arms are polled on this one.
struct Arms {
    runtime: tokio::runtime::Runtime,
    health: HealthHandle,
    bare: Bare,
    bare_serialized: Bare,
    layered: Health<Bare>,
    layered_no_header: Health<Bare>,
}

type Bare = ServiceFn<fn(Req) -> Handled>;

type Handled = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn bare() -> Bare {
    service_fn(handler as fn(Req) -> Handled)
}

/// The arms, with the path each one requests.
const ARMS: [(&str, &str); 6] = [
    ("bare", "/api/items/42"),
    ("bare_serialized", "/api/items/42"),
    ("pass_through", "/api/items/42"),
    ("pass_through_no_header", "/api/items/42"),
    ("readyz_hit", "/readyz"),
    ("readyz_hit_no_header", "/readyz"),
];

impl Arms {
    fn new() -> Self {
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
        let mut arms = Self {
            bare: bare(),
            bare_serialized: service_fn(handler_serialized as fn(Req) -> Handled),
            layered: health.layer().layer(bare()),
            layered_no_header: health.layer().without_process_time_header().layer(bare()),
            runtime,
            health,
        };
        arms.sanity();
        arms
    }

    /// The arms do what they claim.
    fn sanity(&mut self) {
        let item = "/api/items/42";
        let check = |arm: &str, response: Response<()>, timed: bool| {
            assert_eq!(response.status(), StatusCode::OK, "{arm}");
            assert_eq!(
                response.headers().contains_key("x-process-time-ms"),
                timed,
                "{arm}"
            );
            let content_type = &response.headers()[CONTENT_TYPE];
            assert_eq!(content_type, "application/json", "{arm}");
        };
        check("bare", respond(&mut self.bare, item).map(drop), false);
        let (parts, body) = respond(&mut self.bare_serialized, item).into_parts();
        check("bare_serialized", Response::from_parts(parts, ()), false);
        assert_eq!(
            body_bytes(body),
            BODY,
            "bare_serialized builds the same body"
        );
        for (arm, path, timed) in [
            ("pass_through", item, true),
            ("readyz_hit", "/readyz", true),
            ("pass_through_no_header", item, false),
            ("readyz_hit_no_header", "/readyz", false),
        ] {
            let service = if timed {
                &mut self.layered
            } else {
                &mut self.layered_no_header
            };
            check(arm, respond(service, path).map(drop), timed);
        }
    }

    /// Runs `arm` once on `request`.
    fn run(&mut self, arm: &str, request: Req) -> StatusCode {
        match arm {
            "bare" => call_once(&mut self.bare, request),
            "bare_serialized" => call_once(&mut self.bare_serialized, request),
            "pass_through" | "readyz_hit" => call_once(&mut self.layered, request),
            "pass_through_no_header" | "readyz_hit_no_header" => {
                call_once(&mut self.layered_no_header, request)
            }
            _ => panic!("no arm named {arm:?}"),
        }
    }
}

/// One call, keeping the response.
fn respond<S, B>(service: &mut S, path: &'static str) -> Response<B>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let _ = service.poll_ready(&mut cx);
    let future = pin!(service.call(request(path)));
    let Poll::Ready(Ok(response)) = future.poll(&mut cx) else {
        panic!("{path} did not complete at once");
    };
    response
}

/// A ready body's bytes.
fn body_bytes(body: Full<Bytes>) -> Bytes {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(body.collect()).poll(&mut cx) {
        Poll::Ready(Ok(collected)) => collected.to_bytes(),
        _ => panic!("a full body is ready at once"),
    }
}

fn overhead(c: &mut Criterion, arms: &mut Arms) {
    let mut group = c.benchmark_group("overhead");
    for (arm, path) in ARMS {
        group.bench_function(arm, |b| {
            b.iter_batched(
                || request(path),
                |req| arms.run(arm, req),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The arms timed side by side: every round times each arm over `calls`
/// calls, in an order rotated one place every other round and reversed
/// every other round, and each arm is compared with `bare` within its
/// round. Criterion times one arm for seconds, then
/// the next, so a shared host that slows down between two arms shows up in
/// their ratio; here such drift touches both sides of a round's ratio, and
/// the median over rounds drops the rounds a preemption hit. The first round
/// is a warm-up and is not counted.
fn interleaved(arms: &mut Arms, rounds: usize, calls: usize) -> String {
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); ARMS.len()];
    for round in 0..=rounds {
        // Counted rounds pair up: the same rotation forward, then reversed.
        let counted = round.saturating_sub(1);
        let mut order: Vec<usize> = (0..ARMS.len())
            .map(|k| (k + counted / 2) % ARMS.len())
            .collect();
        if counted % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (arm, path) = ARMS[i];
            let requests: Vec<Req> = (0..calls).map(|_| request(path)).collect();
            let start = Instant::now();
            for request in requests {
                black_box(arms.run(arm, request));
            }
            let per_call = start.elapsed().as_nanos() as f64 / calls as f64;
            if round > 0 {
                ns[i].push(per_call);
            }
        }
    }
    assert_eq!(ARMS[0].0, "bare", "ratios are taken to the first arm");
    let bare = &ns[0];
    let mut table = format!(
        "## In-process overhead, interleaved (`benches/overhead.rs`)\n\n\
         {rounds} rounds of {calls} calls per arm, arms rotated every other round and reversed every other round; \
         medians over rounds of each arm's figure and of its ratio to `bare` \
         in the same round.\n\n\
         | arm | ns per call | ratio to bare | per-round ratios (10th – 90th percentile) | added ns | goal |\n\
         |---|---:|---:|---:|---:|---|\n"
    );
    for (i, (arm, _)) in ARMS.iter().enumerate() {
        let ratios: Vec<f64> = ns[i].iter().zip(bare).map(|(a, b)| a / b).collect();
        let added: Vec<f64> = ns[i].iter().zip(bare).map(|(a, b)| a - b).collect();
        let (ratio, added) = (
            median(ratios.iter().copied()),
            median(added.iter().copied()),
        );
        let goal = match *arm {
            "pass_through" => format!("adds < 100 ns: {}", met(added < 100.0)),
            "readyz_hit" => format!("≤ bare: {}", met(ratio <= 1.0)),
            _ => String::new(),
        };
        table.push_str(&format!(
            "| `{arm}` | {:.1} | {ratio:.3} | {:.3} – {:.3} | {added:+.1} | {goal} |\n",
            median(ns[i].iter().copied()),
            percentile(&ratios, 0.1),
            percentile(&ratios, 0.9),
        ));
    }
    table
}

/// The `p` quantile of `values` (nearest rank).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn main() {
    let mut arms = Arms::new();
    // `OVERHEAD_COUNT=arm` runs that arm `OVERHEAD_CALLS` times (100,000)
    // and nothing else, for counting instructions under callgrind
    // (`benches/instructions.sh`).
    if let Ok(arm) = std::env::var("OVERHEAD_COUNT") {
        let calls: u64 = std::env::var("OVERHEAD_CALLS")
            .ok()
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(100_000);
        let path = ARMS
            .iter()
            .find(|(name, _)| *name == arm)
            .map(|(_, path)| *path)
            .unwrap_or_else(|| panic!("no arm named {arm:?}"));
        for _ in 0..calls {
            arms.run(&arm, request(path));
        }
        println!("counted {arm} {calls}");
    } else {
        let mut criterion = Criterion::default().configure_from_args();
        overhead(&mut criterion, &mut arms);
        criterion.final_summary();
        let rounds = env_or("OVERHEAD_ROUNDS", 100);
        if rounds > 0 {
            let table = interleaved(&mut arms, rounds, env_or("OVERHEAD_ROUND_CALLS", 10_000));
            println!("\n{table}");
            if let Some(path) = std::env::var_os("OVERHEAD_INTERLEAVED") {
                std::fs::write(&path, table).expect("the interleaved report is writable");
            }
        }
    }
    arms.health.shutdown();
    drop(arms.runtime);
}
