//! `SELECT 1` on an [sqlx](https://docs.rs/sqlx) pool: [`PgPool`](::sqlx::PgPool)
//! (feature `postgres`), [`MySqlPool`](::sqlx::MySqlPool) (feature `mysql`,
//! for MySQL and MariaDB) and [`SqlitePool`](::sqlx::SqlitePool) (feature
//! `sqlite`).
//!
//! There is one feature per database rather than one `sqlx` feature, so
//! `features = ["postgres"]` compiles only sqlx's PostgreSQL driver. The
//! features enable sqlx with `runtime-tokio` and no TLS; if your pool uses
//! TLS, your own sqlx dependency enables it (cargo unifies the features).
//!
//! # What a run does
//!
//! 1. Reads the pool's size, idle count and maximum size (reported as the
//!    observations `connections`, `idle_connections`, `max_connections`).
//! 2. Runs `SELECT 1` on the pool, exactly as the application's own queries
//!    do: on an idle connection, on a new one that then stays in the pool,
//!    or, when the pool is saturated (no idle connection and at its maximum
//!    size), on the first connection released, after queuing for it like
//!    any request.
//! 3. `SELECT 1` succeeded: [`healthy`](crate::Status::Healthy), or
//!    [`degraded`](crate::Status::Degraded) if the pool was saturated when
//!    the run started. A busy pool is not a reason to take the instance out
//!    of rotation.
//!
//! A closed pool ([`Pool::close`]), a connection error or a failing query is
//! [`unhealthy`](crate::Status::Unhealthy). A server that accepts the
//! connection but never answers, and a pool that hands out no connection in
//! time, are cut by the runner at the check's timeout: unhealthy, "timed
//! out". In particular a pool whose connections are all stuck on a dead
//! server looks saturated but fails the check, and so does a pool that stays
//! saturated by the application for longer than the timeout; see the
//! [trade-off](super#principles) and
//! [`failure_threshold`](crate::CheckOptions::failure_threshold).
//!
//! sqlx retries a refused connection until the pool's `acquire_timeout`
//! (30 s by default), so with the defaults an unreachable server shows as
//! "timed out" (the runner's cut) rather than with sqlx's error text. To get
//! the error text, give the pool an `acquire_timeout` shorter than the
//! check's [`timeout`](crate::CheckOptions::timeout).
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use sqlx::postgres::PgPoolOptions;
//! use tower_health::{CheckOptions, HealthChecks, checks::sqlx::SqlxCheck};
//!
//! let pool = PgPoolOptions::new()
//!     .max_connections(10)
//!     .connect("postgres://app@127.0.0.1:5432/app")
//!     .await?;
//!
//! let health = HealthChecks::builder()
//!     .check_with(
//!         "postgres",
//!         SqlxCheck::new(pool.clone()), // the application keeps using `pool`
//!         CheckOptions::new()
//!             .interval(Duration::from_secs(5))
//!             .timeout(Duration::from_secs(2)),
//!     )
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "postgres"))]
//! # fn main() {}
//! ```

use std::fmt;

use ::sqlx::{Database, Pool};

use super::PoolState;
#[allow(unused_imports)] // used by the per-database impls, each behind a feature
use crate::{Check, CheckResult};

/// Checks an sqlx pool with `SELECT 1` (queuing for a connection if
/// needed) and reports its saturation.
///
/// Implements [`Check`] for `SqlxCheck<Postgres>` (feature `postgres`),
/// `SqlxCheck<MySql>` (feature `mysql`) and `SqlxCheck<Sqlite>` (feature
/// `sqlite`). See the [module documentation](self).
pub struct SqlxCheck<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> SqlxCheck<DB> {
    /// A check on `pool`, a clone of the application's own pool (clones
    /// share the connections).
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }

    /// The pool this check uses.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    #[allow(dead_code)] // used by the per-database impls, each behind a feature
    fn state(&self) -> PoolState {
        PoolState {
            size: u64::from(self.pool.size()),
            idle: self.pool.num_idle() as u64,
            max: u64::from(self.pool.options().get_max_connections()),
        }
    }
}

impl<DB: Database> Clone for SqlxCheck<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for SqlxCheck<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxCheck")
            .field("database", &DB::NAME)
            .field("pool", &self.pool)
            .finish()
    }
}

/// One run: the same for every database, with concrete types so the
/// executor bounds stay simple.
macro_rules! impl_check {
    ($feature:literal, $db:ty, $what:literal) => {
        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl Check for SqlxCheck<$db> {
            async fn check(&self) -> CheckResult {
                let state = self.state();
                if self.pool.is_closed() {
                    return state.observe(CheckResult::unhealthy(concat!(
                        $what,
                        " pool is closed (Pool::close was called): the application cannot \
                         query the database until it creates a new pool"
                    )));
                }
                // A saturated pool is queried all the same: skipping the query
                // would report a pool full of connections stuck on a dead
                // server as merely busy. The runner's timeout bounds the wait.
                let saturated = state.saturated();
                // `&Pool` as the executor acquires a connection (an idle one,
                // a new one that then stays in the pool, or the first one
                // released) and returns it.
                match ::sqlx::raw_sql("SELECT 1").execute(&self.pool).await {
                    Ok(_) if saturated => state.saturated_result($what),
                    Ok(_) => state.observe(CheckResult::healthy()),
                    Err(e @ ::sqlx::Error::PoolTimedOut) => {
                        state.observe(CheckResult::unhealthy(format!(
                            concat!(
                                $what,
                                " `SELECT 1` failed: {}: no connection could be had within \
                                 the pool's acquire_timeout; check that the server is \
                                 reachable, or raise the pool's maximum size"
                            ),
                            e
                        )))
                    }
                    Err(e) => state.observe(CheckResult::unhealthy(format!(
                        concat!(
                            $what,
                            " `SELECT 1` failed: {}; check that the server is running and \
                             reachable from this host, and the pool's credentials and \
                             database name"
                        ),
                        e
                    ))),
                }
            }
        }
    };
}

impl_check!("postgres", ::sqlx::Postgres, "PostgreSQL");
impl_check!("mysql", ::sqlx::MySql, "MySQL");
impl_check!("sqlite", ::sqlx::Sqlite, "SQLite");
