//! `SqlxCheck<Sqlite>` on a real SQLite database file.

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tower_health::{Check, Status, checks::sqlx::SqlxCheck};

use crate::postgres::observed;

#[tokio::test]
async fn sqlite_pool_is_healthy_degraded_when_saturated_and_unhealthy_when_closed() {
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

    let held = pool.acquire().await.unwrap();
    assert_eq!(check.check().await.status(), Status::Degraded);
    drop(held);

    pool.close().await;
    let result = check.check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    assert!(result.message().unwrap().contains("closed"));
    let _ = std::fs::remove_dir_all(&dir);
}
