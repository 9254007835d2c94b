//! `DeadpoolPostgresCheck` against a real PostgreSQL.

use deadpool_postgres::{Config, PoolConfig, Runtime, tokio_postgres::NoTls};
use std::time::{Duration, Instant};

use tower_health::{
    Check, CheckOptions, HealthChecks, Status, checks::deadpool_postgres::DeadpoolPostgresCheck,
};

use crate::{
    postgres::observed,
    support::{self, Proxy},
};

fn pool(url: &str, max: usize) -> deadpool_postgres::Pool {
    let mut config = Config::new();
    config.url = Some(url.to_owned());
    config.pool = Some(PoolConfig::new(max));
    config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .expect("create the deadpool pool")
}

#[tokio::test]
async fn deadpool_select_1_saturation_and_reuse() {
    // Same server, same skip rule as the sqlx PostgreSQL tests.
    if crate::postgres::options().await.is_none() {
        return;
    }
    let pool = pool(&support::database_url(), 2);
    let check = DeadpoolPostgresCheck::new(pool.clone());
    for _ in 0..3 {
        let result = check.check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
    }
    assert_eq!(
        pool.status().size,
        1,
        "the check must reuse the pool's client"
    );

    // Saturated: the run queues for a client, and is degraded once one is
    // returned and `SELECT 1` succeeds.
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let result = support::run_while_saturated(&check, || drop(a)).await;
    assert_eq!(result.status(), Status::Degraded, "{result:?}");
    assert!(
        result.message().unwrap().contains("saturated"),
        "{result:?}"
    );
    assert_eq!(observed(&result, "connections"), 2);
    assert_eq!(observed(&result, "idle_connections"), 0);
    assert_eq!(observed(&result, "max_connections"), 2);
    assert_eq!(observed(&result, "waiting"), 0);
    let names: Vec<_> = result
        .observations()
        .iter()
        .map(|o| o.measurement())
        .collect();
    assert_eq!(
        names,
        [
            "connections",
            "idle_connections",
            "max_connections",
            "waiting"
        ],
        "each observation once"
    );
    drop(b);
    assert_eq!(check.check().await.status(), Status::Healthy);

    pool.close();
    assert_eq!(check.check().await.status(), Status::Unhealthy);
}

/// The benchmark's bug, with deadpool: every client held for good used to
/// read as "saturated", so `degraded` (200) without a query. Now each run
/// queues, is cut at its timeout, and readiness stays 503 run after run.
#[tokio::test]
async fn deadpool_pool_stuck_for_good_keeps_readiness_503() {
    if crate::postgres::options().await.is_none() {
        return;
    }
    let pool = pool(&support::database_url(), 2);
    let _held = (pool.get().await.unwrap(), pool.get().await.unwrap());
    let runs = support::Runs::default();
    let since = Instant::now();
    let health = HealthChecks::builder()
        .check_with(
            "postgres",
            support::Recorded::new(DeadpoolPostgresCheck::new(pool.clone()), &runs),
            CheckOptions::new()
                .interval(Duration::from_millis(200))
                .timeout(Duration::from_millis(300)),
        )
        .build()
        .unwrap();
    let app = support::serve(&health).await;
    let first = runs.first_after(since).await;
    assert_eq!(
        first.status, None,
        "the first run must be cut at its timeout"
    );
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        r#"{"status":"unhealthy","reason":"failing: postgres"}"#
    );
    let (status, body) = app.get("/health/postgres").await;
    let component: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 503, "{component}");
    assert_eq!(component["reason"], "timed out after 300ms", "{component}");
    // Allowed details, the run says what it was cut waiting for, with the
    // pool's numbers at the cut (the run itself is the one waiting).
    let (_, body) = app.get_with("/health/postgres", true, None).await;
    let component: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        component["error"].as_str().is_some_and(|e| e.starts_with(
            "timed out after 300ms: PostgreSQL pool had no free connection: all 2 were in use"
        )),
        "{component}"
    );
    assert_eq!(
        component["observed"]["idle_connections"]["value"], 0,
        "{component}"
    );
    assert_eq!(component["observed"]["waiting"]["value"], 1, "{component}");
    support::hold_503(&app, &runs, "deadpool stuck", since, 6).await;
    assert!(
        runs.snapshot()
            .iter()
            .all(|r| r.ended.is_none() || r.status.is_none()),
        "every run must have been cut at its timeout: {:?}",
        runs.snapshot()
    );
    app.assert_alive().await;
}

#[tokio::test]
async fn deadpool_outage_behind_a_proxy() {
    let Some(options) = crate::postgres::options().await else {
        return;
    };
    let upstream = support::resolve(options.get_host(), options.get_port()).await;
    let proxy = Proxy::start(upstream).await;
    let database = options.get_database().unwrap_or("postgres");
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{database}",
        options.get_username(),
        proxy.addr.port()
    );
    let check = DeadpoolPostgresCheck::new(pool(&url, 4));
    let (_health, app, runs) = support::app_with("postgres", check).await;
    support::refused_then_blackholed(&app, &runs, "postgres", "deadpool", &proxy).await;

    // The server stops answering on the open connection (restored above,
    // and used by a passing run since): the run is cut in its query, and
    // says so.
    proxy.stall().await;
    let postgres = app
        .wait_error("postgres", |e| e.contains("did not answer"))
        .await;
    assert!(
        postgres["error"].as_str().unwrap().starts_with(
            "timed out after 500ms: PostgreSQL did not answer `SELECT 1` on a connection from \
             the pool"
        ),
        "{postgres}"
    );
}

/// The pool's own wait timeout (every client in use) is named as
/// saturation, not as a server that may be down.
#[tokio::test]
async fn a_pool_wait_timeout_is_named_as_saturation() {
    if crate::postgres::options().await.is_none() {
        return;
    }
    let mut config = Config::new();
    config.url = Some(support::database_url());
    let mut pool_config = PoolConfig::new(1);
    pool_config.timeouts.wait = Some(Duration::from_millis(50));
    config.pool = Some(pool_config);
    let pool = config
        .create_pool(Some(Runtime::Tokio1), NoTls)
        .expect("create the deadpool pool");
    let held = pool.get().await.unwrap();
    let result = DeadpoolPostgresCheck::new(pool.clone()).check().await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    let message = result.message().unwrap();
    assert!(
        message.contains("saturated") && message.contains("max_size"),
        "{message}"
    );
    drop(held);
    let result = DeadpoolPostgresCheck::new(pool).check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
}

/// A connection the pool's `post_create` hook refuses: the message names
/// the hook, not the network.
#[tokio::test]
async fn a_connection_refused_by_the_pools_hook_says_so() {
    use deadpool_postgres::{Hook, HookError, Manager, Pool};
    if crate::postgres::options().await.is_none() {
        return;
    }
    let config: deadpool_postgres::tokio_postgres::Config =
        support::database_url().parse().unwrap();
    let pool = Pool::builder(Manager::new(config, NoTls))
        .max_size(1)
        .post_create(Hook::sync_fn(|_, _| {
            Err(HookError::message("not this one"))
        }))
        .build()
        .unwrap();
    let result = DeadpoolPostgresCheck::new(pool).check().await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    let message = result.message().unwrap();
    assert!(
        message.contains("post_create hook refused") && message.contains("not this one"),
        "{message}"
    );
    assert!(!message.contains("reachable"), "{message}");
}
