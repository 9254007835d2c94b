//! `SqlxCheck<Sqlite>` on a real SQLite database file.

use std::time::Duration;

use sqlx::{
    Connection,
    sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePoolOptions},
};
use tower_health::{Check, Status, checks::sqlx::SqlxCheck};

use crate::{postgres::observed, support};

/// A directory of a test's own, removed when dropped (a failing test
/// included).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for a new database file in a directory of its own (returned,
/// removed when dropped).
fn options(name: &str) -> (TempDir, SqliteConnectOptions) {
    let dir = std::env::temp_dir().join(format!("tower-health-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.join("health.db"))
        .create_if_missing(true);
    (TempDir(dir), options)
}

/// A pool of one connection on a new database file in a directory of its
/// own (returned, removed when dropped).
async fn pool(name: &str) -> (TempDir, sqlx::SqlitePool) {
    let (dir, options) = options(name);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    (dir, pool)
}

/// A database file another connection holds an exclusive lock on refuses
/// the application's reads, and the check's (`SELECT 1` answered without
/// reading the file, so it passed).
#[tokio::test]
async fn sqlite_file_locked_by_another_connection_is_unhealthy() {
    let (_dir, options) = options("sqlite-locked");
    // No busy wait: a locked file is an error at once.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone().busy_timeout(Duration::ZERO))
        .await
        .unwrap();
    let check = SqlxCheck::new(pool.clone());
    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");

    let mut locker = SqliteConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    let read = sqlx::raw_sql("SELECT count(*) FROM sqlite_master")
        .execute(&pool)
        .await;
    assert!(read.is_err(), "the application's reads are refused too");
    support::settle(&pool, 1).await;
    let result = check.check().await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    let message = result.message().unwrap();
    assert!(
        message.starts_with("SQLite `PRAGMA schema_version` failed: "),
        "{message}"
    );
    assert!(message.contains("database is locked"), "{message}");
    assert!(
        message.contains("locks other connections or processes hold on it"),
        "the advice is for a file, not a server: {message}"
    );

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    support::settle(&pool, 1).await;
    let result = check.check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
}

#[tokio::test]
async fn sqlite_pool_is_healthy_waits_and_is_degraded_when_saturated_and_unhealthy_when_closed() {
    let (_dir, pool) = pool("sqlite").await;
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
}

/// Cut while every connection is held, the run says so in words for a
/// database file, not for a server.
#[tokio::test]
async fn sqlite_run_cut_waiting_for_a_held_connection_says_so() {
    let (_dir, pool) = pool("sqlite-cut").await;
    let (_health, app, _runs) = support::app_with("sqlite", SqlxCheck::new(pool.clone())).await;
    app.wait_for("/readyz", 200).await;
    let _held = pool.acquire().await.unwrap();
    let sqlite = app
        .wait_error("sqlite", |e| e.contains("no free connection"))
        .await;
    assert_eq!(
        sqlite["error"],
        format!(
            "timed out after {}ms: SQLite pool had no free connection: all 1 were in use, none \
             idle; the application holds them (slow queries, long transactions, connections held \
             too long)",
            support::TIMEOUT.as_millis()
        ),
        "{sqlite}"
    );
    assert_eq!(
        sqlite["observed"]["idle_connections"]["value"], 0,
        "{sqlite}"
    );
}
