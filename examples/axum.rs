//! An axum application behind `HealthLayer`.
//!
//! ```text
//! cargo run --example axum
//! ```
//!
//! Serves on 127.0.0.1:3000 (`PORT` overrides the port). `POST /demo/fail`
//! makes the `demo` check fail, `POST /demo/recover` heals it. On Ctrl-C or
//! SIGTERM readiness reports `draining` for `DRAIN_SECS` seconds (default 5)
//! while every route still answers, then the server exits with status 0.
//!
//! With `DATABASE_URL` (PostgreSQL) and/or `REDIS_URL` set, it also runs the
//! built-in `postgres` and `redis` checks (`tower_health::checks`).
//!
//! With `HEALTH_PORT` set, the probes are also served alone on that port
//! (`HealthLayer::into_service`: a management port, where every other path
//! is a 404 listing the health paths).
//!
//! Error texts and observations are shown only to requests that send
//! `Authorization: Bearer <HEALTH_TOKEN>` (default `demo-token`).
//!
//! `cargo run --example axum -- healthcheck` is what a container's
//! `HEALTHCHECK` would run: it asks the running example's `/readyz` (on
//! `PORT`) and exits 0 if it is ready, 1 otherwise, printing what it got
//! (`tower_health::command`).
//!
//! `GET /metrics` is a Prometheus scrape of the checks' metrics (feature
//! `metrics`, recorded by `metrics-exporter-prometheus`): runs, durations,
//! the last run's time, the checks' observations and every probe's and
//! check's status. It is on the application's port here for the demo's
//! sake; an application serves its metrics where only operators reach
//! them, since they hold what HTTP answers show only with the token.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    response::Html,
    routing::{get, post},
};
use tower_health::{
    CheckOptions, CheckResult, HealthChecks, HealthHandle, checks::runtime::SchedulingDelayCheck,
    details::BearerToken,
};

fn main() -> std::process::ExitCode {
    // The container health-check command: the same binary, asking the
    // server it runs beside (images without curl can still be checked).
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
        return tower_health::command::healthcheck(&format!("http://127.0.0.1:{port}/readyz"));
    }
    match serve() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve() -> Result<(), Box<dyn std::error::Error>> {
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
        Err(_) => 3000,
    };
    let health_port: Option<u16> = match std::env::var("HEALTH_PORT") {
        Ok(port) => Some(
            port.parse()
                .map_err(|_| format!("HEALTH_PORT must be a port number, got {port:?}"))?,
        ),
        Err(_) => None,
    };
    let drain_secs: u64 = match std::env::var("DRAIN_SECS") {
        Ok(secs) => secs
            .parse()
            .map_err(|_| format!("DRAIN_SECS must be a whole number of seconds, got {secs:?}"))?,
        Err(_) => 5,
    };
    let token = std::env::var("HEALTH_TOKEN").unwrap_or_else(|_| "demo-token".to_owned());

    // The checks report through the `metrics` facade (feature `metrics`)
    // to the recorder installed here; `/metrics` renders what it holds.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    metrics::set_global_recorder(recorder)?;

    let demo_failing = Arc::new(AtomicBool::new(false));
    let flag = demo_failing.clone();
    let builder = HealthChecks::builder()
        .version(env!("CARGO_PKG_VERSION"))
        .drain_delay(Duration::from_secs(drain_secs))
        // A readiness check the demo routes can break and heal. Checked
        // every 10 s while it passes (breaking it asks for a run within a
        // second, `recheck`) and every second while it fails.
        .check_with(
            "demo",
            move || {
                let failing = flag.load(Ordering::SeqCst);
                async move {
                    if failing {
                        CheckResult::unhealthy("demo failure requested via POST /demo/fail")
                    } else {
                        CheckResult::healthy()
                    }
                }
            },
            CheckOptions::new()
                .interval(Duration::from_secs(10))
                .failing_interval(Duration::from_secs(1)),
        )
        // A non-critical check: when it fails the service is degraded, not down.
        .check_with(
            "clock",
            || async {
                let skew_ms = 3;
                CheckResult::healthy().with_observation("skew", skew_ms, Some("ms"))
            },
            CheckOptions::new().critical(false),
        )
        // A check of the process itself: how late the runtime gets to a
        // ready task. Degraded above 100 ms; never unhealthy unless given a
        // threshold, since load is shared by every replica.
        .check_with(
            "runtime",
            SchedulingDelayCheck::new(),
            CheckOptions::new().interval(Duration::from_secs(2)),
        );
    // The process's open file descriptors against its limit: a leak shows
    // as degraded (above 80 %) long before `accept` starts failing.
    #[cfg(target_os = "linux")]
    let builder = builder.check(
        "open-files",
        tower_health::checks::files::OpenFilesCheck::new(),
    );
    // Real dependencies, when DATABASE_URL / REDIS_URL are set.
    let builder = add_dependency_checks(builder)?;
    let health = builder.build()?;

    // An internal worker proves it is alive with a heartbeat, beaten from
    // its own loop after each round of work (a task that only beat on a
    // timer would prove that the timer runs, not the worker).
    let heartbeat = health.heartbeat("worker", Duration::from_secs(10))?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            // ... one round of the worker's job ...
            heartbeat.beat();
        }
    });

    let router = Router::new()
        .route("/", get(index))
        .route("/demo/fail", post(fail))
        .route("/demo/recover", post(recover))
        .with_state(Demo {
            failing: demo_failing,
            health: health.clone(),
        })
        .route("/metrics", get(move || std::future::ready(scrape.render())));
    // Error texts and observations only for requests with the token.
    let layer = health
        .layer()
        .reveal_details_if(BearerToken::new(token.as_str()));
    // Wrap the whole router (feature `axum`): probes are answered before any
    // routing. `router.layer(layer)` works too.
    let app = layer.clone().wrap_axum(router);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    // Run by systemd as a `Type=notify` unit: ready (once startup passes,
    // and the port is bound), watchdog and stopping follow the probes.
    // Outside one, nothing.
    #[cfg(unix)]
    if let Some(notifier) = tower_health::systemd::Notifier::from_env() {
        tokio::spawn(notifier.run(&health));
    }
    let base = format!("http://{}", listener.local_addr()?);
    println!("tower-health axum example listening on {base}");
    println!("try:");
    for path in [
        "/",
        "/health",
        "/health?detailed=true",
        "/health/demo",
        "/livez",
        "/readyz?verbose",
        "/startupz",
        "/metrics",
    ] {
        println!("  curl -i '{base}{path}'");
    }
    println!("  curl -i -H 'Accept: application/health+json' {base}/health");
    println!(
        "  curl -i -H 'Authorization: Bearer {token}' '{base}/health?detailed=true'  # error texts and observations"
    );
    println!("  curl -i -X POST {base}/demo/fail     # then /readyz answers 503");
    println!("  curl -i -X POST {base}/demo/recover  # and 200 again");
    println!(
        "Ctrl-C or SIGTERM drains for {drain_secs}s (readiness 503, every route still served), then exits."
    );

    // The probes alone on a management port, until the application's
    // server has finished (so the drain shows there too).
    if let Some(health_port) = health_port {
        let admin = tokio::net::TcpListener::bind(("127.0.0.1", health_port)).await?;
        println!(
            "probes alone on http://{}/readyz (any other path: 404)",
            admin.local_addr()?
        );
        let probes = Router::new().fallback_service(layer.into_service());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(admin, probes).await {
                eprintln!("the probes' port stopped serving: {error}");
            }
        });
    }

    axum::serve(listener, app)
        .with_graceful_shutdown(health.graceful_shutdown(tower_health::shutdown_signal()))
        .await?;
    println!("drained; bye");
    Ok(())
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><title>tower-health demo</title>\
         <h1>tower-health demo</h1>\
         <p>This page is an ordinary route; the layer passed it through.</p>\
         <ul>\
         <li><a href=\"/health\">/health</a> and <a href=\"/health?detailed=true\">/health?detailed=true</a></li>\
         <li><a href=\"/livez\">/livez</a>, <a href=\"/readyz?verbose\">/readyz?verbose</a>, <a href=\"/startupz\">/startupz</a></li>\
         <li><a href=\"/health/demo\">/health/demo</a>, <a href=\"/metrics\">/metrics</a></li>\
         </ul>\
         <p><code>curl -X POST localhost:3000/demo/fail</code> breaks the <code>demo</code> check; \
         <code>/demo/recover</code> heals it.</p>",
    )
}

/// What the demo routes change.
#[derive(Clone)]
struct Demo {
    failing: Arc<AtomicBool>,
    health: HealthHandle,
}

async fn fail(State(demo): State<Demo>) -> &'static str {
    demo.failing.store(true, Ordering::SeqCst);
    // As an application would after a failed call to a dependency: the
    // check runs now (or a `recheck_spacing`, default 1 s, after its last
    // run), not at its next interval.
    demo.health.recheck("demo");
    "demo check fails from its next run, within a second (recheck)\n"
}

async fn recover(State(demo): State<Demo>) -> &'static str {
    demo.failing.store(false, Ordering::SeqCst);
    // No `recheck` here: a failing check is run every `failing_interval`.
    "demo check passes from its next run, within a second (failing_interval)\n"
}

/// Adds the built-in `postgres` (sqlx `PgPool`, `SELECT 1`) and `redis`
/// (`ConnectionManager`, `PING`) checks when `DATABASE_URL` / `REDIS_URL`
/// are set. Both connect lazily, so the server starts even while a
/// dependency is down: readiness says so until it is up. In a real service
/// the application's own queries would use these same pool and connection.
fn add_dependency_checks(
    mut builder: tower_health::HealthChecksBuilder,
) -> Result<tower_health::HealthChecksBuilder, Box<dyn std::error::Error>> {
    use tower_health::checks::{redis::RedisCheck, sqlx::SqlxCheck};
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            // Under the check's 2 s timeout, so an unreachable server shows
            // sqlx's error instead of "timed out".
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy(&url)?;
        // Every replica checks the same database: 5 to 5.5 s between
        // queries, so replicas started together do not query it in step.
        builder = builder.check_with(
            "postgres",
            SqlxCheck::new(pool),
            CheckOptions::new().jitter_percent(10),
        );
        println!("checking PostgreSQL (DATABASE_URL) as `postgres`");
    }
    if let Ok(url) = std::env::var("REDIS_URL") {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)));
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)?;
        builder = builder.check("redis", RedisCheck::new(connection));
        println!("checking Redis (REDIS_URL) as `redis`");
    }
    Ok(builder)
}
