//! Built-in checks for real dependencies, each behind its own cargo feature.
//!
//! None of these features is on by default. Enable the ones you need:
//!
//! ```toml
//! [dependencies]
//! tower-health = { version = "0.1", features = ["postgres", "redis"] }
//! ```
//!
//! | check | feature | what one run does | observations (besides `responseTime`) |
//! |---|---|---|---|
//! | [`SqlxCheck`](sqlx::SqlxCheck) for `PgPool` | `postgres` | `SELECT 1` on a connection of the application's pool | `connections`, `idle_connections`, `max_connections` |
//! | [`SqlxCheck`](sqlx::SqlxCheck) for `MySqlPool` | `mysql` | `SELECT 1`, as above (MySQL and MariaDB) | as above |
//! | [`SqlxCheck`](sqlx::SqlxCheck) for `SqlitePool` | `sqlite` | `SELECT 1`, as above | as above |
//! | [`DeadpoolPostgresCheck`](postgres::DeadpoolPostgresCheck) | `deadpool-postgres` | `SELECT 1` on a client of the application's deadpool pool | `connections`, `idle_connections`, `max_connections`, `waiting` |
//! | [`RedisCheck`](redis::RedisCheck) | `redis` | `PING` on the application's `ConnectionManager` or `MultiplexedConnection`, expecting `PONG` | none |
//! | [`HttpCheck`](http::HttpCheck) | `http-client` | a request to an upstream URL through a pooled hyper-util client; status in a range, optionally a substring in the first bytes of the body | `status_code`, `body_bytes` |
//! | [`TcpCheck`](tcp::TcpCheck) | `tcp` | opens (and closes) a TCP connection to `host:port` | none |
//! | [`DiskSpaceCheck`](disk::DiskSpaceCheck) | `disk` (Unix) | `statvfs` on a path, in a blocking task | `free_bytes`, `total_bytes`, `free_percent` |
//!
//! The runner adds `responseTime` (milliseconds) to every check and cuts
//! each run at its [`timeout`](crate::CheckOptions::timeout), reporting
//! "timed out after ...", so none of these checks carries its own timeout.
//!
//! # Principles
//!
//! - **Reuse the application's clients.** The database and Redis checks take
//!   the pool or connection the application already uses (they are all cheap
//!   to clone) and never open a connection per run: a health check that
//!   works on a fresh connection proves little about the connections that
//!   serve traffic, and a probe storm must not become a connection storm.
//!   [`TcpCheck`](tcp::TcpCheck) is the exception by design: connecting is
//!   what it checks.
//! - **Saturation is `degraded`, not `unhealthy`.** A pool with every
//!   connection in use and none idle is busy, not broken; the check reports
//!   it as degraded (readiness stays 200) without waiting in the pool's
//!   queue, and shows the pool's numbers as observations.
//! - **Messages are actionable and private.** A failing check's message
//!   says what failed and what to look at. Messages are shown only to
//!   requests the layer's [details predicate](crate::details) unlocks, and
//!   logged through `tracing`. Observations, in contrast, are shown to every
//!   `?detailed=true` request, so they hold only numbers. Name checks after
//!   the dependency's role (`postgres`, `sessions-redis`), never after a
//!   connection URL: names are public and URLs may hold credentials.
//! - **Register dependencies for readiness only** (the default
//!   [`Probes::READINESS`](crate::Probes::READINESS)): a database outage
//!   should take an instance out of the load balancer, not restart it.
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "tcp", unix, feature = "disk"))]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_health::{CheckOptions, HealthChecks, checks::{disk::DiskSpaceCheck, tcp::TcpCheck}};
//!
//! let health = HealthChecks::builder()
//!     .check_with(
//!         "smtp",
//!         TcpCheck::new("127.0.0.1:25"),
//!         CheckOptions::new().interval(Duration::from_secs(10)).critical(false),
//!     )
//!     .check("data-disk", DiskSpaceCheck::new("/"))
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "tcp", unix, feature = "disk")))]
//! # fn main() {}
//! ```

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite")))
)]
pub mod sqlx;

#[cfg(feature = "deadpool-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "deadpool-postgres")))]
pub mod postgres;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub mod http;

#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub mod tcp;

#[cfg(all(feature = "disk", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "disk", unix))))]
pub mod disk;

/// Observations of a connection pool, shared by the pool checks.
#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "sqlite",
    feature = "deadpool-postgres"
))]
#[derive(Debug, Clone, Copy)]
struct PoolState {
    size: u64,
    idle: u64,
    max: u64,
}

#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "sqlite",
    feature = "deadpool-postgres"
))]
impl PoolState {
    /// No idle connection and the pool at its maximum size: a new request
    /// for a connection has to wait.
    fn saturated(self) -> bool {
        self.idle == 0 && self.size >= self.max
    }

    fn observe(self, result: crate::CheckResult) -> crate::CheckResult {
        result
            .with_observation("connections", self.size, None)
            .with_observation("idle_connections", self.idle, None)
            .with_observation("max_connections", self.max, None)
    }

    fn saturated_result(self, what: &str) -> crate::CheckResult {
        self.observe(crate::CheckResult::degraded(format!(
            "{what} pool saturated: all {} connections in use, none idle, so requests wait \
             for a connection (the server was not queried this run); raise the pool's maximum \
             size or look for slow queries and connections held too long",
            self.max
        )))
    }
}
