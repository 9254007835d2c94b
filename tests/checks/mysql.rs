//! `SqlxCheck<MySql>` against a real MariaDB/MySQL.

use std::str::FromStr;

use sqlx::{
    MySqlPool,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};
use tower_health::{Check, Status, checks::sqlx::SqlxCheck};

use crate::{
    postgres::observed,
    support::{self, Proxy},
};

pub(crate) async fn options() -> Option<MySqlConnectOptions> {
    let url = support::mysql_url();
    let options = MySqlConnectOptions::from_str(&url).expect("MYSQL_URL must be a mysql URL");
    support::reachable("MariaDB/MySQL (MYSQL_URL)", &options)
        .await
        .then_some(options)
}

async fn pool(options: MySqlConnectOptions, max: u32) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(max)
        .connect_with(options)
        .await
        .expect("connect to MariaDB/MySQL")
}

#[tokio::test]
async fn select_1_is_healthy_and_reuses_the_pool() {
    let Some(options) = options().await else {
        return;
    };
    let pool = pool(options, 3).await;
    let check = SqlxCheck::new(pool.clone());
    for _ in 0..3 {
        support::settle(&pool, pool.size() as usize).await;
        let result = check.check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(observed(&result, "max_connections"), 3);
    }
    support::settle(&pool, pool.size() as usize).await;
    assert_eq!(pool.size(), 1, "the check must reuse the pool's connection");
}

/// A saturated pool is queried all the same: the run waits for the held
/// connection, then reports `degraded`; with a free connection, healthy.
#[tokio::test]
async fn saturated_pool_waits_for_a_connection_then_is_degraded() {
    let Some(options) = options().await else {
        return;
    };
    let pool = pool(options, 1).await;
    let check = SqlxCheck::new(pool.clone());
    let held = pool.acquire().await.unwrap();
    let result = support::run_while_saturated(&check, || drop(held)).await;
    assert_eq!(result.status(), Status::Degraded, "{result:?}");
    assert!(
        result.message().unwrap().contains("saturated"),
        "{result:?}"
    );
    assert_eq!(observed(&result, "connections"), 1);
    assert_eq!(observed(&result, "idle_connections"), 0);
    assert_eq!(observed(&result, "max_connections"), 1);
    support::settle(&pool, 1).await;
    assert_eq!(check.check().await.status(), Status::Healthy);
}

#[tokio::test]
async fn unknown_database_is_unhealthy() {
    let Some(options) = options().await else {
        return;
    };
    let missing = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.database("tower_health_no_such_database"));
    let result = SqlxCheck::new(missing).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(
        result
            .message()
            .unwrap()
            .contains("tower_health_no_such_database"),
        "{result:?}"
    );
}

#[tokio::test]
async fn outage_behind_a_proxy_refused_then_blackholed() {
    let Some(options) = options().await else {
        return;
    };
    let upstream = support::resolve(options.get_host(), options.get_port()).await;
    let proxy = Proxy::start(upstream).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(5)
        .connect_lazy_with(options.host("127.0.0.1").port(proxy.addr.port()));
    let (_health, app, runs) = support::app_with("mariadb", SqlxCheck::new(pool)).await;

    support::refused_then_blackholed(&app, &runs, "mariadb", "mariadb", &proxy).await;

    // The server stops answering on the open connection, which sqlx pings
    // before handing it out (`test_before_acquire`, on by default): the run
    // is cut waiting for a connection, in a pool that is not saturated.
    proxy.stall().await;
    let mariadb = app
        .wait_error("mariadb", |e| e.contains("MySQL pool"))
        .await;
    assert!(
        mariadb["error"].as_str().unwrap().starts_with(&format!(
            "timed out after {}ms: MySQL pool had no connection to hand out: opening a new \
             connection, or testing an idle one, got no answer",
            support::TIMEOUT.as_millis()
        )),
        "{mariadb}"
    );
    assert_eq!(
        mariadb["observed"]["max_connections"]["value"], 5,
        "{mariadb}"
    );
}
