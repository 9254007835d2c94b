//! `DeadpoolPostgresCheck` against a real PostgreSQL.

use deadpool_postgres::{Config, PoolConfig, Runtime, tokio_postgres::NoTls};
use tower_health::{Check, Status, checks::postgres::DeadpoolPostgresCheck};

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

    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    let result = check.check().await;
    assert_eq!(result.status(), Status::Degraded, "{result:?}");
    assert_eq!(observed(&result, "connections"), 2);
    assert_eq!(observed(&result, "idle_connections"), 0);
    assert_eq!(observed(&result, "max_connections"), 2);
    assert_eq!(observed(&result, "waiting"), 0);
    drop((a, b));
    assert_eq!(check.check().await.status(), Status::Healthy);

    pool.close();
    assert_eq!(check.check().await.status(), Status::Unhealthy);
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
    support::outage(
        &app,
        &runs,
        "postgres",
        "deadpool refused",
        false,
        async || proxy.down().await,
        async || proxy.restore().await,
    )
    .await;
    support::outage(
        &app,
        &runs,
        "postgres",
        "deadpool blackhole",
        true,
        async || proxy.blackhole().await,
        async || proxy.restore().await,
    )
    .await;
}
