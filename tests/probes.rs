//! What a probe costs and what it survives, on tokio's paused clock: no
//! real time passes, the clock only jumps when every task is idle.
//!
//! - probes never run checks;
//! - probes answer while the inner service is saturated;
//! - a hung check times out and a panicking check is contained, without
//!   holding up the other checks;
//! - the refresher stops and frees everything when the last handle, layer
//!   and service are dropped, or at `shutdown`;
//! - axum calling `Layer::layer` once per route starts no extra refreshers.

mod common;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    routing::{get, post},
};
use bytes::Bytes;
use common::{Echo, INNER_MARK, Reply, call, counting_check, get as get_req, request};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::{sync::watch, time::Instant};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, limit::ConcurrencyLimitLayer, service_fn};
use tower_health::{CheckOptions, CheckResult, HealthChecks, HealthLayer};

/// A hang guard for the paused clock: if the awaited thing never
/// completes, the clock jumps ahead and the test fails instead of hanging.
/// Never a speed assertion.
async fn guard<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: never completed"))
}

/// Yields until `condition` holds; bounded.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{what}: condition never held");
}

fn count(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

/// Sleeps on the paused clock until `start + offset`.
async fn at(start: Instant, offset: Duration) {
    tokio::time::sleep_until(start + offset).await;
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

// ------------------------------------------------ (a) probes never run ---

#[tokio::test(start_paused = true)]
async fn a_thousand_probes_run_no_check() {
    let runs = Arc::new(AtomicUsize::new(0));
    let interval = Duration::from_secs(3600);
    let health = HealthChecks::builder()
        .check_with(
            "db",
            counting_check(&runs),
            CheckOptions::new()
                .interval(interval)
                .timeout(Duration::from_secs(1)),
        )
        .build()
        .expect("valid checks");
    let echo = Echo::default();
    let mut service = health.layer().layer(echo.clone());

    // Before the refresher has had a chance to run (nothing yielded yet):
    // probes answer "starting" from the first snapshot and start nothing.
    let reply = call(&service, get_req("/readyz")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.json()["status"], "starting");
    assert_eq!(count(&runs), 0, "a probe ran the check");

    // The one scheduled run.
    until("first result", || count(&runs) == 1).await;
    until("readiness", || {
        health.subscribe().borrow().readiness == tower_health::ProbeStatus::Healthy
    })
    .await;
    let start = Instant::now();

    /// Path, request headers, expected content type.
    type Probe<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let probes: [Probe<'_>; 12] = [
        ("/readyz", &[], "application/json"),
        ("/livez", &[], "application/json"),
        ("/healthz", &[], "application/json"),
        ("/startupz", &[], "application/json"),
        ("/health", &[], "application/json"),
        ("/health?detailed=true", &[], "application/json"),
        ("/health/db", &[], "application/json"),
        ("/readyz?verbose", &[], "text/plain; charset=utf-8"),
        ("/livez?verbose=1", &[], "text/plain; charset=utf-8"),
        ("/health?exclude=db&detailed=1", &[], "application/json"),
        (
            "/health",
            &[("accept", "application/health+json")],
            "application/health+json",
        ),
        (
            "/health/db",
            &[("accept", "application/health+json")],
            "application/health+json",
        ),
    ];
    for i in 0..1000 {
        let (path, headers, content_type) = probes[i % probes.len()];
        let method = if i % 7 == 0 {
            Method::HEAD
        } else {
            Method::GET
        };
        let response = ServiceExt::<Request<Full<Bytes>>>::ready(&mut service)
            .await
            .expect("always ready")
            .call(request(method, path, headers))
            .await
            .expect("infallible");
        let reply = common::read(response).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        reply.assert_health_headers(content_type);
    }
    assert_eq!(count(&runs), 1, "1000 probes changed the run count");
    assert_eq!(echo.calls(), 0, "a probe reached the inner service");
    assert_eq!(
        Instant::now(),
        start,
        "the probes let the paused clock move"
    );

    // The counter is live: one interval later the schedule, and only the
    // schedule, ran it once more; probes after that add nothing either.
    tokio::time::sleep(interval + ms(1)).await;
    assert_eq!(count(&runs), 2, "the scheduled second run");
    for path in [
        "/readyz",
        "/health?detailed=true",
        "/health/db",
        "/livez?verbose",
    ] {
        for _ in 0..50 {
            assert_eq!(call(&service, get_req(path)).await.status, StatusCode::OK);
        }
    }
    assert_eq!(count(&runs), 2);

    // Passed-through requests do reach the inner service (the counter
    // above could see them).
    let reply = call(&service, get_req("/work")).await;
    assert_eq!(reply.header(INNER_MARK), Some("yes"));
    assert_eq!(echo.calls(), 1);
    assert_eq!(count(&runs), 2);
}

// ------------------------------------------- (b) a saturated inner service ---

/// An inner service whose `/hold` requests wait for `release`; every call
/// is counted in `entered` when the handler starts.
fn holding_app(
    release: watch::Receiver<bool>,
    entered: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(move |request: Request<Full<Bytes>>| {
        let mut release = release.clone();
        let entered = entered.clone();
        async move {
            entered.fetch_add(1, Ordering::SeqCst);
            let path = request.uri().path().to_owned();
            if path == "/hold" {
                // Never completes until the test releases it.
                let _ = release.wait_for(|released| *released).await;
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                "done {path}"
            )))))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn probes_answer_while_the_inner_service_is_saturated() {
    let health = HealthChecks::builder()
        .check("db", || async { CheckResult::healthy() })
        .build()
        .expect("valid checks");
    let (release, released) = watch::channel(false);
    let entered = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(health.layer())
        .layer(ConcurrencyLimitLayer::new(1))
        .service(holding_app(released, entered.clone()));

    until("readiness", || {
        health.subscribe().borrow().readiness == tower_health::ProbeStatus::Healthy
    })
    .await;

    // The first request takes the only permit and holds it.
    let first = tokio::spawn(service.clone().oneshot(get_req("/hold")));
    until("the first request is in its handler", || {
        count(&entered) == 1
    })
    .await;

    // The probes still answer, with 200.
    for path in [
        "/livez",
        "/readyz",
        "/healthz",
        "/startupz",
        "/health",
        "/health/db",
    ] {
        let reply = guard(path, call(&service, get_req(path))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.json()["status"], "healthy", "{path}");
    }

    // An ordinary second request waits for the permit: after a virtual hour
    // (every runnable task ran, the refresher kept refreshing) it has not
    // reached its handler.
    let second = tokio::spawn(service.clone().oneshot(get_req("/second")));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !second.is_finished(),
        "the second request got past a full concurrency limit"
    );
    assert!(!first.is_finished());
    assert_eq!(count(&entered), 1);

    // Probes still answer while one request holds the permit and one waits,
    // from a snapshot the refresher kept fresh all that hour.
    for path in ["/livez", "/readyz"] {
        let reply = guard(path, call(&service, get_req(path))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.text(), r#"{"status":"healthy"}"#);
        reply.assert_process_time();
    }

    // Release: the first completes, then the second gets the permit.
    release.send(true).expect("the handler still listens");
    let first = guard("first", first)
        .await
        .expect("task")
        .expect("infallible");
    let first = common::read(first).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.text(), "done /hold");
    first.assert_process_time();
    let second = guard("second", second)
        .await
        .expect("task")
        .expect("infallible");
    let second = common::read(second).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.text(), "done /second");
    second.assert_process_time();
    assert_eq!(count(&entered), 2);
}

#[tokio::test(start_paused = true)]
async fn readiness_reports_busy_at_the_in_flight_limit_and_liveness_does_not() {
    let health = HealthChecks::builder()
        .check("db", || async { CheckResult::healthy() })
        .max_in_flight(1)
        .build()
        .expect("valid checks");
    let (release, released) = watch::channel(false);
    let entered = Arc::new(AtomicUsize::new(0));
    let service = health.layer().layer(holding_app(released, entered.clone()));
    until("readiness", || {
        health.subscribe().borrow().readiness == tower_health::ProbeStatus::Healthy
    })
    .await;
    assert_eq!(
        call(&service, get_req("/readyz")).await.status,
        StatusCode::OK
    );

    let held = tokio::spawn(service.clone().oneshot(get_req("/hold")));
    until("the request is in its handler", || count(&entered) == 1).await;

    let reply = guard("readyz", call(&service, get_req("/readyz"))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.json()["status"], "busy", "{reply:?}");
    let reply = guard("livez", call(&service, get_req("/livez"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    release.send(true).expect("the handler still listens");
    let held = guard("held", held)
        .await
        .expect("task")
        .expect("infallible");
    // In flight until its body is finished.
    let reply = common::read(held).await;
    assert_eq!(reply.text(), "done /hold");
    let reply = call(&service, get_req("/readyz")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
}

// ------------------------------------------ (c) hung and panicking checks ---

async fn exploding() -> CheckResult {
    panic!("check exploded on purpose")
}

#[tokio::test(start_paused = true)]
async fn a_hung_check_times_out_and_a_panicking_check_is_contained() {
    let (ok_runs, hung_runs, boom_runs) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let every_second = CheckOptions::new()
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_secs(1));
    let (hung, boom) = (hung_runs.clone(), boom_runs.clone());
    let start = Instant::now();
    let health = HealthChecks::builder()
        .check_with(
            "hung",
            move || {
                hung.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<CheckResult>()
            },
            CheckOptions::new()
                .interval(Duration::from_secs(10))
                .timeout(Duration::from_secs(2)),
        )
        .check_with(
            "boom",
            move || {
                boom.fetch_add(1, Ordering::SeqCst);
                exploding()
            },
            every_second.clone(),
        )
        .check_with("ok", counting_check(&ok_runs), every_second)
        .build()
        .expect("valid checks");
    let service = health.layer().layer(Echo::default());
    let component =
        async |name: &str| -> Reply { call(&service, get_req(&format!("/health/{name}"))).await };
    let detailed = async || -> Reply { call(&service, get_req("/health?detailed=true")).await };

    // t = 1.5 s: "hung" has been running for 1.5 s; "ok" and "boom" ran at
    // 0 s and 1 s regardless.
    at(start, ms(1500)).await;
    assert_eq!(count(&hung_runs), 1);
    assert_eq!(count(&ok_runs), 2, "the hung check delayed another check");
    assert_eq!(count(&boom_runs), 2, "a panic stopped the check's schedule");
    let reply = component("hung").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.json()["status"], "unknown", "{reply:?}");
    let reply = component("ok").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["consecutive_successes"], 2, "{reply:?}");
    let reply = component("boom").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let json = reply.json();
    assert_eq!(json["status"], "unhealthy", "{json}");
    assert_eq!(json["reason"], "panicked", "{json}");
    assert_eq!(json["consecutive_failures"], 2, "{json}");
    assert!(
        json.get("error").is_none(),
        "the panic message is not public: {json}"
    );

    // t = 2.5 s: "hung" was cut at its 2 s timeout.
    at(start, ms(2500)).await;
    let reply = component("hung").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let json = reply.json();
    assert_eq!(json["status"], "unhealthy", "{json}");
    assert_eq!(json["reason"], "timed out after 2s", "{json}");
    assert_eq!(json["consecutive_failures"], 1, "{json}");
    let reply = detailed().await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let json = reply.json();
    assert_eq!(json["status"], "unhealthy", "{json}");
    assert_eq!(
        json["components"]["hung"]["reason"], "timed out after 2s",
        "{json}"
    );
    assert_eq!(json["components"]["boom"]["reason"], "panicked", "{json}");
    assert_eq!(json["components"]["ok"]["status"], "healthy", "{json}");
    assert_eq!(
        json["components"]["ok"]["consecutive_successes"], 3,
        "{json}"
    );
    for name in ["hung", "boom"] {
        assert!(
            json["reason"].as_str().is_some_and(|r| r.contains(name)),
            "{name} not named as failing: {json}"
        );
    }
    assert!(
        !json["reason"].as_str().unwrap_or("").contains("ok"),
        "ok named as failing: {json}"
    );

    // t = 6.5 s: "ok" and "boom" kept their 1 s schedule; "hung" waits for
    // its 10 s interval (from the end of its run at 2 s) and was not rerun.
    at(start, ms(6500)).await;
    assert_eq!(count(&ok_runs), 7);
    assert_eq!(count(&boom_runs), 7);
    assert_eq!(count(&hung_runs), 1);
    let json = detailed().await.json();
    assert_eq!(
        json["components"]["ok"]["consecutive_successes"], 7,
        "{json}"
    );
    assert_eq!(
        json["components"]["boom"]["consecutive_failures"], 7,
        "{json}"
    );

    // t = 12.5 s: "hung" ran again at 12 s and is still running.
    at(start, ms(12_500)).await;
    assert_eq!(count(&hung_runs), 2);
    assert_eq!(count(&ok_runs), 13);

    // Revealed details show the panic message itself.
    let revealing = health
        .layer()
        .reveal_details_if(|_: &http::request::Parts| true)
        .layer(Echo::default());
    let json = call(&revealing, get_req("/health/boom")).await.json();
    assert_eq!(json["error"], "check exploded on purpose", "{json}");
}

/// A closure check whose synchronous part panics, before it returns its
/// future (`|| { let conn = pool.get().unwrap(); async move { .. } }`), is
/// a panicking check like any other: reported unhealthy ("panicked") and
/// retried on its schedule, while the other checks keep refreshing.
#[tokio::test(start_paused = true)]
async fn a_check_that_panics_before_returning_its_future_is_contained() {
    let (ok_runs, sync_runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let every_second = CheckOptions::new()
        .interval(Duration::from_secs(1))
        .timeout(Duration::from_secs(1));
    let calls = sync_runs.clone();
    let start = Instant::now();
    let health = HealthChecks::builder()
        .check_with(
            "sync-panic",
            move || {
                // Healthy on the first call, then the synchronous part panics.
                if calls.fetch_add(1, Ordering::SeqCst) > 0 {
                    panic!("panicked before returning a future");
                }
                std::future::ready(CheckResult::healthy())
            },
            every_second.clone(),
        )
        .check_with("ok", counting_check(&ok_runs), every_second)
        .build()
        .expect("valid checks");
    let service = health.layer().layer(Echo::default());

    // t = 0.5 s: the first run passed.
    at(start, ms(500)).await;
    let reply = call(&service, get_req("/health/sync-panic")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    // t = 1.5 s: the second run panicked in the closure itself.
    at(start, ms(1500)).await;
    assert_eq!(count(&sync_runs), 2);
    assert_eq!(count(&ok_runs), 2);
    let reply = call(&service, get_req("/health/sync-panic")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let json = reply.json();
    assert_eq!(json["status"], "unhealthy", "{json}");
    assert_eq!(json["reason"], "panicked", "{json}");

    // t = 4.5 s: it was retried every second, like "ok".
    at(start, ms(4500)).await;
    assert_eq!(count(&ok_runs), 5);
    assert_eq!(
        count(&sync_runs),
        5,
        "a synchronous panic stopped the check's schedule"
    );
    let json = call(&service, get_req("/health/sync-panic")).await.json();
    assert_eq!(json["reason"], "panicked", "{json}");
    assert_eq!(json["consecutive_failures"], 4, "{json}");
}

// ----------------------------------------------- (d) nothing leaks -------

/// Lets the runtime run every runnable task and fire every timer due in
/// the next `d` of virtual time.
async fn settle(d: Duration) {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(d).await;
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// Registers two checks that hold clones of `sentinel`: "held" in its
/// closure (and briefly in each run), "hung" in its closure and in its one
/// run, which never finishes.
fn sentinel_checks(
    sentinel: &Arc<()>,
    runs: &Arc<AtomicUsize>,
) -> tower_health::HealthChecksBuilder {
    let (held, hung) = (sentinel.clone(), sentinel.clone());
    let runs = runs.clone();
    HealthChecks::builder()
        .check_with(
            "held",
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                let held = held.clone();
                async move {
                    let _held = held;
                    CheckResult::healthy()
                }
            },
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_secs(1)),
        )
        .check_with(
            "hung",
            move || {
                let hung = hung.clone();
                async move {
                    let _hung = hung;
                    std::future::pending::<CheckResult>().await
                }
            },
            CheckOptions::new().timeout(Duration::from_secs(24 * 3600)),
        )
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_layer_and_service_stops_the_refresher() {
    let sentinel = Arc::new(());
    let runs = Arc::new(AtomicUsize::new(0));
    let health = sentinel_checks(&sentinel, &runs)
        .build()
        .expect("valid checks");
    let layer: HealthLayer = health.layer();
    let service = layer.layer(Echo::default());
    let clone = service.clone();
    let router: Router = Router::new()
        .route("/", get(|| async { "hi" }))
        .layer(health.layer());

    settle(ms(2500)).await;
    assert_eq!(count(&runs), 3, "runs at 0, 1 and 2 s");
    // Two closures plus the hung run hold it.
    assert_eq!(Arc::strong_count(&sentinel), 4);
    assert_eq!(
        call(&service, get_req("/livez")).await.status,
        StatusCode::OK
    );

    // Anything still holding a layer or service keeps the refresher alive.
    drop(health);
    drop(layer);
    drop(service);
    settle(ms(2000)).await;
    assert_eq!(
        count(&runs),
        5,
        "the refresher stopped while a service was alive"
    );
    drop(clone);
    settle(ms(2000)).await;
    assert_eq!(
        count(&runs),
        7,
        "the refresher stopped while the router was alive"
    );
    assert_eq!(Arc::strong_count(&sentinel), 4);

    // The last one: the task ends, the hung run is cancelled, the checks
    // are freed, and nothing runs again.
    drop(router);
    settle(ms(2000)).await;
    assert_eq!(
        Arc::strong_count(&sentinel),
        1,
        "a check or run outlived every handle"
    );
    let frozen = count(&runs);
    settle(Duration::from_secs(60)).await;
    assert_eq!(
        count(&runs),
        frozen,
        "a check ran after everything was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_refresher_and_cancels_runs_in_flight() {
    let sentinel = Arc::new(());
    let runs = Arc::new(AtomicUsize::new(0));
    let health = sentinel_checks(&sentinel, &runs)
        .build()
        .expect("valid checks");
    let service = health.layer().layer(Echo::default());

    settle(ms(1500)).await;
    assert_eq!(count(&runs), 2);
    assert_eq!(Arc::strong_count(&sentinel), 4);

    health.shutdown();
    settle(ms(100)).await;
    // The hung run was cancelled; the registrations themselves stay with
    // the handle until it is dropped.
    assert_eq!(
        Arc::strong_count(&sentinel),
        3,
        "the hung run survived shutdown"
    );
    settle(Duration::from_secs(60)).await;
    assert_eq!(count(&runs), 2, "a check ran after shutdown");
    assert!(matches!(
        health.add_check(
            "late",
            || async { CheckResult::healthy() },
            CheckOptions::new()
        ),
        Err(tower_health::Error::ShutDown)
    ));
    // Probes still answer (from the last snapshot; the checks went stale).
    let reply = call(&service, get_req("/health/held")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(
        reply.json()["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("stale")),
        "{reply:?}"
    );

    drop(health);
    drop(service);
    settle(ms(100)).await;
    assert_eq!(
        Arc::strong_count(&sentinel),
        1,
        "a check outlived every handle"
    );
}

// --------------------------------- (e) axum layers once per route ---------

/// Wraps a layer and counts how often `Layer::layer` is called on it.
#[derive(Clone)]
struct CountingLayer<L> {
    inner: L,
    calls: Arc<AtomicUsize>,
}

impl<L: Layer<S>, S> Layer<S> for CountingLayer<L> {
    type Service = L::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.layer(inner)
    }
}

#[tokio::test(start_paused = true)]
async fn axum_layering_every_route_starts_no_extra_refreshers() {
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let health = HealthChecks::builder()
        .check_with(
            "db",
            counting_check(&runs),
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_secs(1)),
        )
        .build()
        .expect("valid checks");
    let layer_calls = Arc::new(AtomicUsize::new(0));
    let counted = || CountingLayer {
        inner: health.layer(),
        calls: layer_calls.clone(),
    };
    let api: Router = Router::new()
        .route("/x", get(|| async { "x" }))
        .route("/y", post(|| async { "y" }))
        .layer(counted());
    let router: Router = Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b", get(|| async { "b" }).post(|| async { "b!" }))
        .route("/c", post(|| async { "c" }))
        .route("/d", get(|| async { "d" }))
        .nest("/api", api)
        .route_layer(counted())
        .layer(counted());
    let layered = count(&layer_calls);
    assert!(layered > 4, "axum called Layer::layer only {layered} times");

    // Traffic while the time passes: probes and ordinary routes.
    for second in 0..10u64 {
        at(start, Duration::from_millis(second * 1000 + 500)).await;
        for path in ["/readyz", "/livez", "/health/db", "/a", "/api/x"] {
            let reply = call(&router, get_req(path)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
            reply.assert_process_time();
        }
        let reply = call(&router, request(Method::POST, "/b", &[])).await;
        assert_eq!(reply.text(), "b!");
    }
    // One refresher runs the check at 0, 1, ..., 9 s: ten runs, however
    // many times the layer was applied.
    at(start, ms(9900)).await;
    assert_eq!(count(&runs), 10, "after {layered} Layer::layer calls");
    let json = call(&router, get_req("/health/db")).await.json();
    assert_eq!(json["consecutive_successes"], 10, "{json}");
}

/// Where the layer sits in axum decides which paths it sees: `route_layer`
/// and a layer on a nested router wrap matched routes only, so unrouted
/// health paths never reach them (axum's 404, no timing header). Only a
/// `Router::layer` on the outermost router (or wrapping the whole router)
/// answers the probes.
#[tokio::test(start_paused = true)]
async fn axum_placement_route_layer_and_nest() {
    let health = HealthChecks::builder()
        .check("db", || async { CheckResult::healthy() })
        .build()
        .expect("valid checks");
    until("readiness", || {
        health.subscribe().borrow().readiness == tower_health::ProbeStatus::Healthy
    })
    .await;

    let route_layered: Router = Router::new()
        .route("/a", get(|| async { "a" }))
        .route_layer(health.layer());
    let reply = call(&route_layered, get_req("/readyz")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert!(
        reply
            .headers
            .get(tower_health::PROCESS_TIME_HEADER)
            .is_none()
    );
    call(&route_layered, get_req("/a"))
        .await
        .assert_process_time();

    let nested: Router = Router::new().route("/", get(|| async { "root" })).nest(
        "/api",
        Router::new()
            .route("/x", get(|| async { "x" }))
            .layer(health.layer()),
    );
    for path in ["/api/readyz", "/readyz", "/api/health/db"] {
        let reply = call(&nested, get_req(path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        assert!(
            reply
                .headers
                .get(tower_health::PROCESS_TIME_HEADER)
                .is_none()
        );
    }
    // The nested layer does wrap the nested routes.
    let reply = call(&nested, get_req("/api/x")).await;
    assert_eq!(reply.text(), "x");
    reply.assert_process_time();

    // The same routes with the layer outermost: answered.
    let outer: Router = nested.layer(health.layer());
    let reply = call(&outer, get_req("/readyz")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.text(), r#"{"status":"healthy"}"#);
}
