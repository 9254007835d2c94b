//! `SqlxCheck<Postgres>` against a real PostgreSQL.

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use sqlx::{
    Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tower_health::{Check, CheckOptions, HealthChecks, Status, checks::sqlx::SqlxCheck};

use crate::support::{self, Proxy, within};

/// The server's options, or `None` after `unavailable` when it cannot be reached.
pub(crate) async fn options() -> Option<PgConnectOptions> {
    let url = support::database_url();
    let options = PgConnectOptions::from_str(&url).expect("DATABASE_URL must be a postgres URL");
    support::reachable("PostgreSQL (DATABASE_URL)", &options)
        .await
        .then_some(options)
}

pub(crate) fn observed(result: &tower_health::CheckResult, name: &str) -> serde_json::Value {
    result
        .observations()
        .iter()
        .find(|o| o.measurement() == name)
        .unwrap_or_else(|| panic!("no observation {name} in {result:?}"))
        .value()
        .clone()
}

async fn pool(options: PgConnectOptions, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .connect_with(options)
        .await
        .expect("connect to PostgreSQL")
}

#[tokio::test]
async fn select_1_is_healthy_and_reports_the_pool() {
    let Some(options) = options().await else {
        return;
    };
    // Named, so the server can say which of its sessions is the pool's.
    let name = format!("tower-health-reuse-{}", std::process::id());
    let pool = pool(options.clone().application_name(&name), 4).await;
    support::settle(&pool, 1).await;
    sqlx::raw_sql("SELECT 'before the check'")
        .execute(&pool)
        .await
        .unwrap();
    support::settle(&pool, 1).await;
    let check = SqlxCheck::new(pool.clone());
    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    assert_eq!(observed(&result, "max_connections"), 4);
    assert!(observed(&result, "connections").as_u64().unwrap() >= 1);
    // The check reused the pool's connection: still one, and idle again.
    for _ in 0..3 {
        support::settle(&pool, pool.size() as usize).await;
        let again = check.check().await;
        assert_eq!(again.status(), Status::Healthy);
    }
    support::settle(&pool, pool.size() as usize).await;
    assert_eq!(pool.size(), 1, "the check must reuse the pool's connection");
    // And the server agrees: the pool's one session ran the check's query
    // last (a connection of the check's own would have left it at the
    // query above).
    let mut observer = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let sessions: Vec<(String,)> =
        sqlx::query_as("SELECT query FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_all(&mut observer)
            .await
            .unwrap();
    assert_eq!(sessions, [("SELECT 1".to_owned(),)]);
}

/// A saturated pool is queried all the same: the run queues for a
/// connection, and once it gets one and `SELECT 1` succeeds it reports
/// `degraded` with the pool's numbers as they were when the run started.
#[tokio::test]
async fn saturated_pool_waits_for_a_connection_then_is_degraded_then_healthy() {
    let Some(options) = options().await else {
        return;
    };
    let pool = pool(options, 2).await;
    let check = SqlxCheck::new(pool.clone());
    let first = pool.acquire().await.unwrap();
    let second = pool.acquire().await.unwrap();
    let result = support::run_while_saturated(&check, || drop(first)).await;
    assert_eq!(result.status(), Status::Degraded, "{result:?}");
    let message = result.message().unwrap();
    assert!(message.contains("saturated"), "{message}");
    assert!(
        message.contains("all 2 connections were in use")
            && message.contains("only after waiting for a connection"),
        "{message}"
    );
    assert_eq!(observed(&result, "connections"), 2);
    assert_eq!(observed(&result, "idle_connections"), 0);
    assert_eq!(observed(&result, "max_connections"), 2);
    drop(second);
    support::settle(&pool, 1).await;
    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
}

/// GET `path` through `app` (in-process, no socket): status and body.
async fn oneshot(app: &axum::Router, path: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let request = http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = within(support::CAP, app.clone().oneshot(request))
        .await
        .unwrap_or_else(|| panic!("GET {path} took over {:?}", support::CAP))
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The benchmark's bug: a pool whose every connection is stuck (here held
/// by the test for good) used to be reported as saturated, so `degraded`
/// without any query, and readiness went back to 200 during an outage.
/// Now each run queues for a connection, the runner cuts it at its timeout,
/// and readiness stays 503 run after run.
#[tokio::test]
async fn pool_stuck_for_good_keeps_readiness_503() {
    let Some(options) = options().await else {
        return;
    };
    let pool = pool(options, 2).await;
    let _held = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
    assert_eq!(
        (pool.size(), pool.num_idle()),
        (2, 0),
        "the pool is saturated"
    );
    let health = HealthChecks::builder()
        .check_with(
            "postgres",
            SqlxCheck::new(pool.clone()),
            CheckOptions::new()
                .interval(Duration::from_millis(200))
                .timeout(Duration::from_millis(300)),
        )
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(health.layer());

    // Capped polling until the first run has been cut at its timeout.
    let start = Instant::now();
    loop {
        let (status, body) = oneshot(&app, "/health/postgres").await;
        let component: serde_json::Value = serde_json::from_str(&body).unwrap();
        if component["consecutive_failures"].as_u64() >= Some(1) {
            assert_eq!(status, 503, "{component}");
            assert_eq!(component["status"], "unhealthy", "{component}");
            assert_eq!(component["reason"], "timed out after 300ms", "{component}");
            break;
        }
        assert_ne!(
            component["status"], "degraded",
            "a stuck pool must not be reported as degraded: {component}"
        );
        assert!(
            start.elapsed() < support::CAP,
            "no run ended within {:?}: {component}",
            support::CAP
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Several more runs, each cut at its timeout: readiness never flips.
    let mut polls = 0_u32;
    loop {
        let (status, body) = oneshot(&app, "/readyz").await;
        polls += 1;
        assert_eq!(
            status, 503,
            "readiness must stay 503 (poll {polls}): {body}"
        );
        assert_eq!(
            body,
            r#"{"status":"unhealthy","reason":"failing: postgres"}"#
        );
        let (_, body) = oneshot(&app, "/health/postgres").await;
        let component: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(component["status"], "unhealthy", "{component}");
        assert_eq!(component["reason"], "timed out after 300ms", "{component}");
        if component["consecutive_failures"].as_u64() >= Some(6) {
            break;
        }
        assert!(
            start.elapsed() < support::CAP,
            "fewer than 6 runs within {:?}: {component}",
            support::CAP
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(oneshot(&app, "/").await, (200, "hello".to_owned()));
}

#[tokio::test]
async fn closed_pool_and_unknown_database_are_unhealthy() {
    let Some(options) = options().await else {
        return;
    };
    let pool = pool(options.clone(), 2).await;
    pool.close().await;
    let result = SqlxCheck::new(pool).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(result.message().unwrap().contains("closed"), "{result:?}");

    // Nothing listens on this port; sqlx retries until acquire_timeout.
    let port = support::free_port();
    let refused = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with(options.clone().host("127.0.0.1").port(port));
    let result = SqlxCheck::new(refused).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    let message = result.message().unwrap();
    assert!(message.contains("acquire_timeout"), "{message}");
    // The pool was not saturated: the advice is about the server, not the
    // pool's size.
    assert!(
        message.contains("check that the server is running"),
        "{message}"
    );
    assert!(!message.contains("maximum size"), "{message}");

    let missing = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.database("tower_health_no_such_database"));
    let result = SqlxCheck::new(missing).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    let message = result.message().unwrap();
    assert!(
        message.contains("tower_health_no_such_database"),
        "{message}"
    );
    assert!(
        message.contains("database name"),
        "the message says what to check: {message}"
    );
}

/// A run cut while the server sits on its query gives its connection
/// up: it is closed, not handed back to the pool through a ping that a
/// server which stopped answering never answers (which kept it counted in
/// the pool, one more for every cut run, until the operating system gave
/// up on it).
#[tokio::test]
async fn a_run_cut_mid_query_does_not_keep_its_connection() {
    let Some(options) = options().await else {
        return;
    };
    let (proxy, pool) = proxied_pool(options).await;
    let check = SqlxCheck::new(pool.clone());
    assert_eq!(check.check().await.status(), Status::Healthy);
    support::settle(&pool, 1).await;
    assert_eq!((pool.size(), pool.num_idle()), (1, 1));

    // The server stops answering on the open connection; the run is cut
    // as the runner cuts it at its timeout.
    proxy.stall().await;
    let cut = tokio::time::timeout(Duration::from_millis(300), check.check()).await;
    assert!(cut.is_err(), "a stalled server cannot answer: {cut:?}");
    // sqlx gives a close 5 s; the ping it sent instead was never answered.
    let start = Instant::now();
    while pool.size() > 0 && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pool.size(),
        0,
        "the cut run's connection is still counted in the pool after {:?}",
        start.elapsed()
    );
}

/// A pool of 2 that reaches the server through a [`Proxy`] and hands out
/// idle connections without a ping.
async fn proxied_pool(options: PgConnectOptions) -> (Proxy, PgPool) {
    let upstream = support::resolve(options.get_host(), options.get_port()).await;
    let proxy = Proxy::start(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .connect_lazy_with(options.host("127.0.0.1").port(proxy.addr.port()));
    (proxy, pool)
}

#[tokio::test]
async fn outage_behind_a_proxy_refused_then_blackholed() {
    let Some(options) = options().await else {
        return;
    };
    // A small pool, and no ping before handing out an idle connection (as
    // in the benchmark that found the bug), so that in the stalled phase
    // below the pool fills with connections that never come back.
    let (proxy, pool) = proxied_pool(options).await;
    let (_health, app, runs) = support::app_with("postgres", SqlxCheck::new(pool.clone())).await;

    app.wait_for("/readyz", 200).await;
    let details = app.details().await;
    let postgres = &details["components"]["postgres"];
    assert_eq!(postgres["status"], "healthy", "{details}");
    assert_eq!(
        postgres["observed"]["max_connections"]["value"], 2,
        "{details}"
    );
    for reveal in [true, false] {
        let (_, health_json) = app
            .get_with("/health", reveal, Some("application/health+json"))
            .await;
        let health_json: serde_json::Value = serde_json::from_str(&health_json).unwrap();
        assert_eq!(
            health_json["checks"]["postgres:responseTime"][0]["componentType"], "datastore",
            "{health_json}"
        );
        assert_eq!(
            health_json["checks"].get("postgres:connections").is_some(),
            reveal,
            "pool observations appear in health+json for requests allowed details only: \
             {health_json}"
        );
    }

    support::refused_then_blackholed(&app, &runs, "postgres", "postgres", &proxy).await;

    // The benchmark's outage: the server stops answering on the open
    // connections too. Both pooled connections are open when it starts;
    // each run cut at its timeout leaves one stuck (sqlx pings it before
    // taking it back, and the ping never returns), so after two runs the
    // pool is full of stuck connections: the old check then reported
    // "saturated", degraded, and readiness went back to 200. Held for
    // many runs past that point, readiness must stay 503.
    app.wait_for("/readyz", 200).await;
    {
        let (a, b) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
        drop((a, b));
    }
    support::settle(&pool, 2).await;
    support::outage(
        &app,
        &runs,
        "postgres",
        "postgres stalled",
        true,
        10,
        async || proxy.stall().await,
        async || proxy.restore().await,
    )
    .await;
}

/// A run cut at its timeout says which wait it was cut in, with the pool's
/// numbers at the cut: every connection held by the application, then a
/// server that stops answering on open connections (runs cut while
/// querying, whose connections are closed, then runs cut opening a new
/// one), then a server that never answers a new connection.
#[tokio::test]
async fn a_run_cut_at_its_timeout_says_what_it_was_waiting_for() {
    let Some(options) = options().await else {
        return;
    };
    let (proxy, pool) = proxied_pool(options.clone()).await;
    let (_health, app, _runs) = support::app_with("postgres", SqlxCheck::new(pool.clone())).await;
    app.wait_for("/readyz", 200).await;
    let timed_out = format!("timed out after {}ms: ", support::TIMEOUT.as_millis());

    // Held by the application.
    let held = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
    let postgres = app
        .wait_error("postgres", |e| e.contains("no free connection"))
        .await;
    let error = postgres["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "{timed_out}PostgreSQL pool had no free connection: all 2 were in use, none idle"
        )),
        "{postgres}"
    );
    assert!(
        error.ends_with("or they wait on a server that stopped answering"),
        "{postgres}"
    );
    assert_eq!(
        postgres["reason"],
        format!("timed out after {}ms", support::TIMEOUT.as_millis())
    );
    assert_eq!(
        postgres["observed"]["connections"]["value"], 2,
        "{postgres}"
    );
    assert_eq!(
        postgres["observed"]["idle_connections"]["value"], 0,
        "{postgres}"
    );
    // The same words in the other formats, for a caller allowed details;
    // the public text keeps only the timeout.
    let (status, text) = app.get_with("/readyz?verbose", true, None).await;
    assert_eq!(status, 503);
    assert!(
        text.contains(&format!(
            "[-]postgres failed: {timed_out}PostgreSQL pool had no free"
        )),
        "{text}"
    );
    let (_, text) = app.get("/readyz?verbose").await;
    let public = format!(
        "[-]postgres failed: timed out after {}ms\n",
        support::TIMEOUT.as_millis()
    );
    assert!(text.contains(&public), "{text}");
    assert!(!text.contains("no free"), "{text}");
    drop(held);
    support::settle(&pool, 2).await;
    app.wait_for("/readyz", 200).await;

    // The server stops answering on the open connections: each run is cut
    // in its query, and its connection is closed rather than left stuck in
    // the pool; once none is left, runs are cut opening a new one, with
    // no connection but that one counted.
    proxy.stall().await;
    let postgres = app
        .wait_error("postgres", |e| e.contains("did not answer"))
        .await;
    assert!(
        postgres["error"].as_str().unwrap().starts_with(&format!(
            "{timed_out}PostgreSQL did not answer `SELECT 1` on a connection from the pool: \
             the server holds the connection but does not answer"
        )),
        "{postgres}"
    );
    assert_eq!(
        postgres["observed"]["max_connections"]["value"], 2,
        "{postgres}"
    );
    let details = app
        .wait_details("no connection to hand out, one counted", |details| {
            let postgres = &details["components"]["postgres"];
            postgres["error"]
                .as_str()
                .is_some_and(|e| e.contains("no connection to hand out"))
                && postgres["observed"]["connections"]["value"] == 1
        })
        .await;
    let postgres = &details["components"]["postgres"];
    assert!(
        postgres["error"].as_str().unwrap().starts_with(&format!(
            "{timed_out}PostgreSQL pool had no connection to hand out: opening a new connection"
        )),
        "{postgres}"
    );

    // A server that accepts new connections and never answers them. One
    // connection at most: the pool counts the one it is opening for the
    // run, so at the cut it looks saturated, though the run never queued.
    proxy.blackhole().await;
    let fresh = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.host("127.0.0.1").port(proxy.addr.port()));
    let (_fresh_health, fresh_app, _) = support::app_with("fresh", SqlxCheck::new(fresh)).await;
    let component = fresh_app
        .wait_error("fresh", |e| e.contains("no connection to hand out"))
        .await;
    assert!(
        component["error"].as_str().unwrap().starts_with(&format!(
            "{timed_out}PostgreSQL pool had no connection to hand out: opening a new connection"
        )),
        "{component}"
    );
    assert_eq!(
        component["observed"]["idle_connections"]["value"], 0,
        "{component}"
    );
}
