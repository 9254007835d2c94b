//! `SELECT 1` on an [sqlx](https://docs.rs/sqlx) pool: [`PgPool`](::sqlx::PgPool)
//! (feature `postgres`), [`MySqlPool`](::sqlx::MySqlPool) (feature `mysql`,
//! for MySQL and MariaDB) and [`SqlitePool`](::sqlx::SqlitePool) (feature
//! `sqlite`, where a run reads `PRAGMA schema_version` instead).
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
//! 2. Runs `SELECT 1` ([SQLite](#sqlite): `PRAGMA schema_version`) on the
//!    pool, exactly as the application's own queries do: on an idle
//!    connection, on a new one that then stays in the pool, or, when the
//!    pool is saturated (no idle connection and at its maximum size), on the
//!    first connection released, after queuing for it like any request.
//! 3. The query succeeded: [`healthy`](crate::Status::Healthy), or
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
//! [`failure_threshold`](crate::CheckOptions::failure_threshold). A cut run's
//! message says which wait it was cut in, with the pool's numbers at the cut
//! as observations: "timed out after 2s: PostgreSQL pool had no free
//! connection: all 10 were in use, none idle; ...", or "... did not answer
//! `SELECT 1` on a connection from the pool: ...".
//!
//! sqlx retries a refused connection until the pool's `acquire_timeout`
//! (30 s by default) and then reports only that it timed out, never the
//! connection's own error. So with the defaults an unreachable server shows
//! as the runner's cut, "timed out after 2s: PostgreSQL pool had no
//! connection to hand out: opening a new connection ... got no answer";
//! with an `acquire_timeout` shorter than the check's
//! [`timeout`](crate::CheckOptions::timeout), as sqlx's "pool timed out
//! while waiting for an open connection", with a hint that depends on
//! whether the pool was saturated. Errors sqlx does not retry, such as a
//! wrong password or an unknown database, show with the server's own
//! text either way.
//!
//! # SQLite
//!
//! A run on a [`SqlitePool`](::sqlx::SqlitePool) reads the schema version
//! (`PRAGMA schema_version`) instead of `SELECT 1`, which SQLite answers
//! without touching the database file. Reading it takes the file's shared
//! lock, as the application's queries do, so a file another connection or
//! process holds an exclusive lock on (a stuck writer, a migration) fails
//! the check with "database is locked", once the connection's
//! `busy_timeout` (5 s by default) has passed, or is cut at the check's
//! timeout if that comes first. A database in WAL mode lets readers in
//! beside a writer: there the check passes while a writer waits, as the
//! application's reads do.
//!
//! # Replicas
//!
//! A replica answers `SELECT 1` like the primary, so by default a pool that
//! reaches one passes: right for an application that only reads. An
//! application that writes asks for more with
//! [`expect_writable`](SqlxCheck::expect_writable) (PostgreSQL and MySQL):
//! each run asks the server, instead of `SELECT 1`, whether it takes writes,
//! and a standby, a read-only session or a `read_only` (or `innodb_read_only`)
//! server is unhealthy.
//! That is what a failover leaves behind when a pool keeps its connections
//! to the old primary, now a replica, or a DNS name still points at it.
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
//!         // The application keeps using `pool`; it writes, so a replica
//!         // behind the URL must fail readiness.
//!         SqlxCheck::new(pool.clone()).expect_writable(),
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

#[allow(unused_imports)] // used by the per-database impls, each behind a feature
use ::sqlx::Row as _;

use super::{PoolState, writable::Writable};
#[allow(unused_imports)] // used by the per-database impls, each behind a feature
use crate::{Check, CheckResult};

/// A connection the run took from the pool, closed instead of returned
/// if the run is cut before the server answered: sqlx would otherwise
/// ping it before taking it back, with no time limit, and a connection to
/// a server that stopped answering would stay counted in the pool (one
/// more for every cut run, up to its maximum) until the operating system
/// gave up on it, long after a failover. Closing is bounded (sqlx gives
/// it 5 s).
struct CloseIfCut<DB: Database> {
    connection: ::sqlx::pool::PoolConnection<DB>,
    answered: bool,
}

impl<DB: Database> Drop for CloseIfCut<DB> {
    fn drop(&mut self) {
        if !self.answered {
            self.connection.close_on_drop();
        }
    }
}

/// Checks an sqlx pool with `SELECT 1` (SQLite: `PRAGMA schema_version`),
/// queuing for a connection if needed, and reports its saturation.
///
/// Implements [`Check`] for `SqlxCheck<Postgres>` (feature `postgres`),
/// `SqlxCheck<MySql>` (feature `mysql`) and `SqlxCheck<Sqlite>` (feature
/// `sqlite`). See the [module documentation](self).
pub struct SqlxCheck<DB: Database> {
    pool: Pool<DB>,
    writable: Option<Writable>,
}

impl<DB: Database> SqlxCheck<DB> {
    /// A check on `pool`, a clone of the application's own pool (clones
    /// share the connections).
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            writable: None,
        }
    }

    /// The pool this check uses.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

fn pool_state<DB: Database>(pool: &Pool<DB>) -> PoolState {
    PoolState {
        size: u64::from(pool.size()),
        idle: pool.num_idle() as u64,
        max: u64::from(pool.options().get_max_connections()),
        waiting: None,
    }
}

/// `expect_writable` for one database, whose docs differ in what the
/// server is asked.
macro_rules! expect_writable {
    ($feature:literal, $db:ty, $writable:expr, $doc:literal) => {
        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl SqlxCheck<$db> {
            #[doc = $doc]
            ///
            /// The question replaces `SELECT 1`, so a run is still one
            /// round trip. Use it for an application that writes: without
            /// it, a connection to a replica passes, since it answers
            /// queries.
            #[must_use]
            pub fn expect_writable(mut self) -> Self {
                self.writable = Some($writable);
                self
            }
        }
    };
}

expect_writable!(
    "postgres",
    ::sqlx::Postgres,
    super::writable::POSTGRES,
    "Fails unless the server takes writes: a standby (`pg_is_in_recovery()`) \
     or a session whose transactions are read-only (`transaction_read_only`, \
     from `default_transaction_read_only`) is unhealthy, with a message that \
     says which."
);
expect_writable!(
    "mysql",
    ::sqlx::MySql,
    super::writable::MYSQL,
    "Fails unless the server takes writes: a server with `@@global.read_only` \
     on, as replicas are, or with `@@global.innodb_read_only` on, as an Aurora \
     MySQL reader instance is, is unhealthy, with a message that says which. \
     A read-only default for transactions (`transaction_read_only`, \
     `tx_read_only`) is not asked: the two servers know it by different names. \
     A MySQL-compatible server without `innodb_read_only` (one without InnoDB) \
     fails the query, and so every run, naming the unknown variable."
);

impl<DB: Database> Clone for SqlxCheck<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            writable: self.writable,
        }
    }
}

impl<DB: Database> fmt::Debug for SqlxCheck<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxCheck")
            .field("database", &DB::NAME)
            .field("pool", &self.pool)
            .field("expect_writable", &self.writable.is_some())
            .finish()
    }
}

/// One run: the same for every database, with concrete types so the
/// executor bounds stay simple.
macro_rules! impl_check {
    ($feature:literal, $db:ty, $what:literal, $server:literal, $query:literal) => {
        #[cfg(feature = $feature)]
        #[cfg_attr(docsrs, doc(cfg(feature = $feature)))]
        impl Check for SqlxCheck<$db> {
            fn component_type(&self) -> &'static str {
                "datastore"
            }

            async fn check(&self) -> CheckResult {
                let state = pool_state(&self.pool);
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
                let label = self
                    .writable
                    .map_or(concat!("`", $query, "`"), |writable| writable.label);
                // A run cut at its timeout says which wait it was cut in,
                // with the pool's numbers at that moment.
                let read = {
                    let pool = self.pool.clone();
                    move || pool_state(&pool)
                };
                let waiting = state.report_waiting(read.clone(), $what, $server);
                // A connection as the application's queries get one: an idle
                // one, a new one that then stays in the pool, or the first
                // one released. It goes back to the pool when dropped, or
                // is closed if the run is cut before the answer.
                let answered = match self.pool.acquire().await {
                    Ok(connection) => {
                        drop(waiting);
                        let _querying = PoolState::report_querying(read, $what, label, $server);
                        let mut connection = CloseIfCut {
                            connection,
                            answered: false,
                        };
                        // `Executor`'s own methods, whose boxed futures keep
                        // this one `Send` (`RawSql::execute` on a
                        // `&mut Connection` trips rustc's higher-ranked
                        // lifetime check).
                        let answer = &mut *connection.connection;
                        let answered = match self.writable {
                            None => {
                                ::sqlx::Executor::execute(answer, ::sqlx::raw_sql($query))
                                    .await
                                    .map(|_| None)
                            }
                            Some(writable) => ::sqlx::Executor::fetch_one(
                                answer,
                                ::sqlx::raw_sql(writable.query),
                            )
                            .await
                            .and_then(|row| row.try_get::<String, _>(0))
                            .map(|answer| (writable.judge)(&answer)),
                        };
                        connection.answered = true;
                        answered
                    }
                    Err(e) => Err(e),
                };
                match answered {
                    Ok(Some(refused)) => state.observe(CheckResult::unhealthy(refused)),
                    Ok(None) if saturated => state.saturated_result($what),
                    Ok(None) => state.observe(CheckResult::healthy()),
                    // sqlx retries a connection it could not open (refused,
                    // say) until `acquire_timeout`, and then says only that
                    // it timed out: what to look at depends on whether the
                    // run queued behind busy connections or opened its own.
                    Err(e @ ::sqlx::Error::PoolTimedOut) => {
                        let hint = match (saturated, $server) {
                            (true, _) => {
                                "every connection stayed in use: raise the pool's maximum \
                                 size, look for slow queries and connections held too long, \
                                 or check whether the server stopped answering the queries \
                                 that hold them"
                            }
                            (false, true) => {
                                "opening a connection did not succeed in that time (sqlx \
                                 retries a refused one until then): check that the server is \
                                 running and reachable from this host"
                            }
                            (false, false) => {
                                "opening the database file did not succeed in that time: \
                                 check the file's path, permissions and disk"
                            }
                        };
                        state.observe(CheckResult::unhealthy(format!(
                            concat!(
                                $what,
                                " {} failed: {}: no connection could be had within the \
                                 pool's acquire_timeout; {}"
                            ),
                            label, e, hint
                        )))
                    }
                    Err(e) => state.observe(CheckResult::unhealthy(format!(
                        concat!($what, " {} failed: {}; {}"),
                        label,
                        e,
                        if $server {
                            "check that the server is running and reachable from this host, \
                             and the pool's credentials and database name"
                        } else {
                            "check the database file, its disk, and locks other connections \
                             or processes hold on it"
                        }
                    ))),
                }
            }
        }
    };
}

impl_check!("postgres", ::sqlx::Postgres, "PostgreSQL", true, "SELECT 1");
impl_check!("mysql", ::sqlx::MySql, "MySQL", true, "SELECT 1");
// `SELECT 1` would not read the database file: SQLite answers it without
// taking a lock, so a file another process holds locked, or one the disk
// fails to read, would pass. Reading the schema cookie takes the shared
// lock and reads the file's header, as any query of the application's does.
impl_check!(
    "sqlite",
    ::sqlx::Sqlite,
    "SQLite",
    false,
    "PRAGMA schema_version"
);
