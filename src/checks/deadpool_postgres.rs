//! `SELECT 1` on a [deadpool-postgres](https://docs.rs/deadpool-postgres)
//! pool (feature `deadpool-postgres`), for applications on
//! [tokio-postgres](https://docs.rs/tokio-postgres).
//!
//! # Why deadpool-postgres and not a bare `tokio_postgres::Client`
//!
//! A bare `tokio_postgres::Client` is one connection that never reconnects:
//! a check on it would report the same broken connection forever after a
//! database restart, and one connection shared by every request is not how
//! a server uses PostgreSQL. Servers on tokio-postgres use a pool, and
//! deadpool-postgres is the common one; it also exposes its
//! [`Status`](deadpool_postgres::Status) (size, idle objects, waiters), so
//! the check can report saturation. (For sqlx's `PgPool`, use
//! [`SqlxCheck`](super::sqlx::SqlxCheck) with the `postgres` feature.)
//!
//! # What a run does
//!
//! 1. Reads the pool's status (observations `connections`,
//!    `idle_connections`, `max_connections`, `waiting`).
//! 2. Takes a client from the pool (recycled as the pool is configured,
//!    newly created and kept in the pool, or, when the pool is saturated,
//!    the first one returned, after queuing for it like any request), runs
//!    `SELECT 1` with the simple query protocol and returns the client.
//! 3. `SELECT 1` succeeded: [`healthy`](crate::Status::Healthy), or
//!    [`degraded`](crate::Status::Degraded) if the pool was saturated (no
//!    idle client and at its maximum size) when the run started.
//!
//! A closed pool, an error creating a client or a failing query is
//! [`unhealthy`](crate::Status::Unhealthy). Waiting for a client is bounded
//! by the pool's own wait timeout if it has one, and always by the runner,
//! which cuts the run at the check's timeout: unhealthy, "timed out". So a
//! pool whose clients are all stuck on a dead server fails the check even
//! though it looks merely saturated, and so does a pool that stays
//! saturated by the application for longer than the timeout; see the
//! [trade-off](super#principles) and
//! [`failure_threshold`](crate::CheckOptions::failure_threshold). A cut run's
//! message says whether it was waiting for a client or for the answer to its
//! query, with the pool's numbers at the cut (`waiting` included) as
//! observations.
//!
//! # Replicas
//!
//! A standby answers `SELECT 1` like the primary, so by default a pool that
//! reaches one passes: right for an application that only reads. An
//! application that writes asks for more with
//! [`expect_writable`](DeadpoolPostgresCheck::expect_writable): each run
//! asks the server, instead of `SELECT 1`, whether it is in recovery or its
//! transactions are read-only, and fails if so. That is what a failover
//! leaves behind when the pool keeps its clients on the old primary, now a
//! standby, or a DNS name still points at it.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "deadpool-postgres")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use deadpool_postgres::{Config, Runtime, tokio_postgres::NoTls};
//! use tower_health::{HealthChecks, checks::deadpool_postgres::DeadpoolPostgresCheck};
//!
//! let mut config = Config::new();
//! config.url = Some("postgres://app@127.0.0.1:5432/app".into());
//! let pool = config.create_pool(Some(Runtime::Tokio1), NoTls)?;
//!
//! let health = HealthChecks::builder()
//!     // The application writes: a standby behind the URL must fail readiness.
//!     .check("postgres", DeadpoolPostgresCheck::new(pool.clone()).expect_writable())
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "deadpool-postgres"))]
//! # fn main() {}
//! ```

use deadpool_postgres::{Pool, PoolError, TimeoutType, tokio_postgres::SimpleQueryMessage};

use super::{
    PoolState,
    writable::{self, Writable},
};
use crate::{Check, CheckResult};

/// Checks a deadpool-postgres pool with `SELECT 1` (queuing for a client if
/// needed) and reports its saturation. See the [module documentation](self).
#[derive(Clone)]
pub struct DeadpoolPostgresCheck {
    pool: Pool,
    writable: Option<Writable>,
}

impl DeadpoolPostgresCheck {
    /// A check on `pool`, a clone of the application's own pool (clones
    /// share the connections).
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            writable: None,
        }
    }

    /// Fails unless the server takes writes: a standby
    /// (`pg_is_in_recovery()`) or a session whose transactions are
    /// read-only (`transaction_read_only`, from
    /// `default_transaction_read_only`) is unhealthy, with a message that
    /// says which. See [Replicas](self#replicas).
    #[must_use]
    pub fn expect_writable(mut self) -> Self {
        self.writable = Some(writable::POSTGRES);
        self
    }

    /// The pool this check uses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl std::fmt::Debug for DeadpoolPostgresCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadpoolPostgresCheck")
            .field("status", &self.pool.status())
            .field("expect_writable", &self.writable.is_some())
            .finish()
    }
}

/// The pool's state now.
fn pool_state(pool: &Pool) -> PoolState {
    let status = pool.status();
    PoolState {
        size: status.size as u64,
        idle: status.available as u64,
        max: status.max_size as u64,
        waiting: Some(status.waiting as u64),
    }
}

impl Check for DeadpoolPostgresCheck {
    fn component_type(&self) -> &'static str {
        "datastore"
    }

    async fn check(&self) -> CheckResult {
        let state = pool_state(&self.pool);
        if self.pool.is_closed() {
            return state.observe(CheckResult::unhealthy(
                "PostgreSQL pool is closed (Pool::close was called): the application cannot \
                 query the database until it creates a new pool",
            ));
        }
        // A saturated pool is queried all the same (see `SqlxCheck`): the
        // runner's timeout bounds the wait for a client.
        let saturated = state.saturated();
        let label = self
            .writable
            .map_or("`SELECT 1`", |writable| writable.label);
        // A run cut at its timeout says which wait it was cut in, with the
        // pool's numbers at that moment.
        let read = {
            let pool = self.pool.clone();
            move || pool_state(&pool)
        };
        let waiting = state.report_waiting(read.clone(), "PostgreSQL", true);
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(e) => {
                let hint = match &e {
                    PoolError::Timeout(TimeoutType::Wait) => {
                        "every client stayed in use for the pool's wait timeout: the pool is \
                         saturated; raise its max_size, find what holds its clients, or check \
                         whether the server stopped answering the queries that hold them"
                    }
                    PoolError::Timeout(TimeoutType::Create) => {
                        "a new connection took longer than the pool's create timeout; check \
                         that the server is reachable from this host and not overloaded"
                    }
                    // Closed after the look above.
                    PoolError::Closed => {
                        "the pool was closed (Pool::close): the application cannot query the \
                         database until it creates a new pool"
                    }
                    PoolError::PostCreateHook(_) => {
                        "the pool's post_create hook refused the new connection; look at what \
                         that hook checks"
                    }
                    // deadpool 0.13 never returns a recycle timeout (it
                    // drops the client and tries another), and refuses
                    // timeouts without a runtime when the pool is built.
                    _ => {
                        "check that the server is running and reachable from this host, and \
                         the pool's credentials and database name"
                    }
                };
                return state.observe(CheckResult::unhealthy(format!(
                    "PostgreSQL pool could not hand out a client: {e}; {hint}"
                )));
            }
        };
        drop(waiting);
        let _querying = PoolState::report_querying(read, "PostgreSQL", label, true);
        let query = self.writable.map_or("SELECT 1", |writable| writable.query);
        let messages = match client.simple_query(query).await {
            Ok(messages) => messages,
            Err(e) => {
                return state.observe(CheckResult::unhealthy(format!(
                    "PostgreSQL answered {label} with an error: {e}; the connection was \
                     established, so look at the server's state and logs"
                )));
            }
        };
        if let Some(writable) = self.writable {
            let answer = messages.iter().find_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("")),
                _ => None,
            });
            if let Some(refused) = (writable.judge)(answer.unwrap_or("")) {
                return state.observe(CheckResult::unhealthy(refused));
            }
        }
        if saturated {
            state.saturated_result("PostgreSQL")
        } else {
            state.observe(CheckResult::healthy())
        }
    }
}
