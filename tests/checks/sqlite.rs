//! `SqlxCheck<Sqlite>` on a real SQLite database file.

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tower_health::{Check, Status, checks::sqlx::SqlxCheck};

use crate::{postgres::observed, support};

#[tokio::test]
async fn sqlite_pool_is_healthy_waits_and_is_degraded_when_saturated_and_unhealthy_when_closed() {
    let dir = std::env::temp_dir().join(format!("tower-health-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.join("health.db"))
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let check = SqlxCheck::new(pool.clone());

    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    assert_eq!(observed(&result, "max_connections"), 1);

    // Saturated: the run waits for the held connection, then is degraded.
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
    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");

    pool.close().await;
    let result = check.check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(result.message().unwrap().contains("closed"));
    let _ = std::fs::remove_dir_all(&dir);
}
