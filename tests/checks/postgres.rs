//! `SqlxCheck<Postgres>` against a real PostgreSQL.

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tower_health::{Check, Status, checks::sqlx::SqlxCheck};

use crate::support::{self, Proxy, unavailable, within};

/// The server's options, or `None` after `unavailable` when it cannot be reached.
pub(crate) async fn options() -> Option<PgConnectOptions> {
    let url = support::database_url();
    let options = PgConnectOptions::from_str(&url).expect("DATABASE_URL must be a postgres URL");
    match within(
        Duration::from_secs(5),
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await
    {
        Some(Ok(connection)) => {
            let _ = sqlx::Connection::close(connection).await;
            Some(options)
        }
        Some(Err(e)) => {
            unavailable("PostgreSQL (DATABASE_URL)", e);
            None
        }
        None => {
            unavailable("PostgreSQL (DATABASE_URL)", "no answer within 5s");
            None
        }
    }
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
    let pool = pool(options, 4).await;
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
}

#[tokio::test]
async fn saturated_pool_is_degraded_then_healthy() {
    let Some(options) = options().await else {
        return;
    };
    let pool = pool(options, 2).await;
    let check = SqlxCheck::new(pool.clone());
    let first = pool.acquire().await.unwrap();
    let second = pool.acquire().await.unwrap();
    let result = check.check().await;
    assert_eq!(result.status(), Status::Degraded, "{result:?}");
    assert!(
        result.message().unwrap().contains("saturated"),
        "{result:?}"
    );
    assert_eq!(observed(&result, "connections"), 2);
    assert_eq!(observed(&result, "idle_connections"), 0);
    assert_eq!(observed(&result, "max_connections"), 2);
    drop(first);
    support::settle(&pool, 1).await;
    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    drop(second);
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
    assert!(
        result.message().unwrap().contains("acquire_timeout"),
        "{result:?}"
    );

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

#[tokio::test]
async fn outage_behind_a_proxy_refused_then_blackholed() {
    let Some(options) = options().await else {
        return;
    };
    let upstream = support::resolve(options.get_host(), options.get_port()).await;
    let proxy = Proxy::start(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect_lazy_with(options.host("127.0.0.1").port(proxy.addr.port()));
    let (_health, app, runs) = support::app_with("postgres", SqlxCheck::new(pool)).await;

    app.wait_for("/readyz", 200).await;
    let details = app.details().await;
    let postgres = &details["components"]["postgres"];
    assert_eq!(postgres["status"], "healthy", "{details}");
    assert_eq!(
        postgres["observed"]["max_connections"]["value"], 5,
        "{details}"
    );
    let (_, health_json) = app
        .get_with("/health", false, Some("application/health+json"))
        .await;
    let health_json: serde_json::Value = serde_json::from_str(&health_json).unwrap();
    assert!(
        health_json["checks"].get("postgres:connections").is_some(),
        "pool observations appear in health+json: {health_json}"
    );

    support::outage(
        &app,
        &runs,
        "postgres",
        "postgres refused",
        false,
        async || proxy.down().await,
        async || proxy.restore().await,
    )
    .await;
    support::outage(
        &app,
        &runs,
        "postgres",
        "postgres blackhole",
        true,
        async || proxy.blackhole().await,
        async || proxy.restore().await,
    )
    .await;
}
