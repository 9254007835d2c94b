//! Built-in checks for real dependencies, each behind its own cargo feature
//! ([`BlockingCheck`], for your own blocking call,
//! [`SchedulingDelayCheck`](runtime::SchedulingDelayCheck), for the Tokio
//! runtime itself, and, on Linux, [`OpenFilesCheck`](files::OpenFilesCheck),
//! for the process's file descriptors, need none).
//!
//! None of these features is on by default. Enable the ones you need:
//!
//! ```toml
//! [dependencies]
//! tower-health = { version = "0.1", features = ["postgres", "redis"] }
//! ```
//!
//! | check | feature | what one run does | observations (besides the run's time) |
//! |---|---|---|---|
//! | [`SqlxCheck`](sqlx::SqlxCheck) for `PgPool` | `postgres` | `SELECT 1` on a connection of the application's pool, waiting for one if none is free; `degraded` if the pool was saturated | `connections`, `idle_connections`, `max_connections` |
//! | [`SqlxCheck`](sqlx::SqlxCheck) for `MySqlPool` | `mysql` | `SELECT 1`, as above (MySQL and MariaDB) | as above |
//! | [`SqlxCheck`](sqlx::SqlxCheck) for `SqlitePool` | `sqlite` | `PRAGMA schema_version`, as above: unlike `SELECT 1` it reads the database file, under its shared lock ([why](sqlx#sqlite)) | as above |
//! | [`DeadpoolPostgresCheck`](deadpool_postgres::DeadpoolPostgresCheck) | `deadpool-postgres` | `SELECT 1` on a client of the application's deadpool pool, waiting for one if none is free; `degraded` if the pool was saturated | `connections`, `idle_connections`, `max_connections`, `waiting` |
//! | [`RedisCheck`](redis::RedisCheck) | `redis` | `PING` on the application's `ConnectionManager` or `MultiplexedConnection`, expecting `PONG` | none |
//! | `expect_writable()` on each of the above but SQLite | | for an application that writes: instead of `SELECT 1` (beside `PING` for Redis), asks whether the server takes writes, and fails a replica (see [`SqlxCheck`'s replicas](sqlx#replicas)) | as above |
//! | [`HttpCheck`](http::HttpCheck) | `http-client` | a request to an upstream URL through hyper-util's client, on a new connection per run (`HttpCheck::new`; it follows DNS changes; `https://` with feature `https`) or on your own client's pool; status in a range, optionally a substring in the first bytes of the body | `status_code`, `body_bytes` |
//! | [`GrpcCheck`](grpc::GrpcCheck) | `tonic-health` | `grpc.health.v1.Health/Check` on the application's tonic channel, for the server or one service; `SERVING` passes | none |
//! | [`TcpCheck`](tcp::TcpCheck) | `tcp` | opens (and closes) a TCP connection to `host:port` | none |
//! | [`DiskSpaceCheck`](disk::DiskSpaceCheck) | `disk` (Unix) | `statvfs` on a path, on a thread of its own | `free_bytes`, `total_bytes`, `free_percent` |
//! | [`BlockingCheck`] | none | your blocking call (a synchronous client), on a thread of its own, one call at a time | yours |
//! | [`OpenFilesCheck`](files::OpenFilesCheck) | none (Linux) | counts `/proc/self/fd` against the soft limit on open files: connections or files leaking towards the point where the server can accept no connection; `degraded` above 80 % by default, `unhealthy` only above a threshold you set | `open`, `limit`, `used_percent` |
//! | [`SchedulingDelayCheck`](runtime::SchedulingDelayCheck) | none | sets a 1 ms timer a few times and times how late the Tokio runtime gets back to the check: CPU-heavy work or blocking calls on its workers; `degraded` above 100 ms by default, `unhealthy` only above a threshold you set | `delay_ms`, `workers`, `alive_tasks`, `global_queue_depth` |
//!
//! The runner times every run, shown as `responseTime` (milliseconds) in
//! `application/health+json` and `duration_ms` in `?detailed=true`, and cuts
//! each run at its [`timeout`](crate::CheckOptions::timeout), reporting
//! "timed out after ...", so none of these checks carries its own timeout.
//!
//! # Principles
//!
//! - **Reuse the application's clients.** The database, Redis and gRPC
//!   checks take the pool, connection or channel the application already
//!   uses (they are all cheap to clone) and never open a connection per run: a health check that
//!   works on a fresh connection proves little about the connections that
//!   serve traffic, and a probe storm must not become a connection storm.
//!   [`TcpCheck`](tcp::TcpCheck), and [`HttpCheck::new`](http::HttpCheck::new)'s
//!   own client, are the exceptions by design: connecting is part of what
//!   they check.
//! - **A pool check always queries.** Every run of a pool check waits for a
//!   connection like any request would and runs `SELECT 1` on it (SQLite:
//!   `PRAGMA schema_version`), so a server that no longer answers is
//!   reported, whatever the pool's state.
//!   The runner's [`timeout`](crate::CheckOptions::timeout) bounds the wait:
//!   a run that gets no connection in time is unhealthy, "timed out".
//! - **A run cut at its timeout says what it was waiting for.** Its message
//!   (shown only to requests allowed details) names the wait: no free
//!   connection (every one in use), no connection to hand out (opening or
//!   testing one got no answer), or no answer to the query on a connection
//!   it got; its observations are the pool's numbers at the cut. So
//!   `?detailed=true` tells a pool the application holds from a database
//!   that stopped answering.
//! - **Saturation is `degraded`, not `unhealthy`.** If the pool had every
//!   connection in use and none idle when the run started, and `SELECT 1`
//!   then succeeded (after waiting for a connection), the pool is busy, not
//!   broken: the check reports degraded (readiness stays 200) and shows the
//!   pool's numbers as observations.
//!
//!   The trade-off: a pool that stays saturated for longer than the check's
//!   timeout fails readiness. That is what it should do when the
//!   connections are stuck on a dead or unresponsive server (an outage must
//!   take the instance out of rotation, even though the pool looks merely
//!   full); it also happens when every connection is held longer than the
//!   timeout by the application itself. To ride out short bursts of
//!   saturation, give the check a
//!   [`failure_threshold`](crate::CheckOptions::failure_threshold) above 1
//!   or a [`failure_grace`](crate::CheckOptions::failure_grace), or a
//!   longer timeout.
//! - **Messages are actionable and private.** A failing check's message
//!   says what failed and what to look at. Messages are shown only to
//!   requests the layer's [details predicate](crate::details) unlocks, and
//!   logged through `tracing`; observations (numbers only) are shown only
//!   to those requests too. Name checks after
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
pub mod deadpool_postgres;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub mod http;

#[cfg(feature = "tcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "tcp")))]
pub mod tcp;

#[cfg(feature = "tonic-health")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic-health")))]
pub mod grpc;

#[cfg(all(feature = "disk", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "disk", unix))))]
pub mod disk;

#[cfg(target_os = "linux")]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
pub mod files;

pub mod runtime;

mod blocking;
pub use blocking::BlockingCheck;

#[cfg(any(feature = "tcp", feature = "http-client"))]
mod dns;

#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "sqlite",
    feature = "deadpool-postgres"
))]
mod writable;

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
    /// Requests queued for a connection, where the pool counts them.
    waiting: Option<u64>,
}

#[cfg(any(
    feature = "postgres",
    feature = "mysql",
    feature = "sqlite",
    feature = "deadpool-postgres"
))]
impl PoolState {
    /// No idle connection and the pool at its maximum size: a new request
    /// for a connection has to wait for one to be released.
    fn saturated(self) -> bool {
        self.idle == 0 && self.size >= self.max
    }

    fn observe(self, result: crate::CheckResult) -> crate::CheckResult {
        let result = result
            .with_observation("connections", self.size, None)
            .with_observation("idle_connections", self.idle, None)
            .with_observation("max_connections", self.max, None);
        match self.waiting {
            Some(waiting) => result.with_observation("waiting", waiting, None),
            None => result,
        }
    }

    /// While the returned guard lives, a run cut at its timeout says it was
    /// waiting for a connection, with the state `read` gives at the cut.
    /// `self` is the state when the run asked for its connection.
    fn report_waiting(
        self,
        read: impl Fn() -> Self + Send + 'static,
        what: &'static str,
        server: bool,
    ) -> crate::runner::CutGuard {
        let queued = self.saturated();
        crate::runner::if_cut(move || {
            let state = read();
            state.observe(state.cut_waiting(queued, what, server))
        })
    }

    /// While the returned guard lives, a run cut at its timeout says it was
    /// waiting for the answer to `label`, with the state `read` gives at
    /// the cut.
    fn report_querying(
        read: impl Fn() -> Self + Send + 'static,
        what: &'static str,
        label: &'static str,
        server: bool,
    ) -> crate::runner::CutGuard {
        crate::runner::if_cut(move || read().observe(Self::cut_querying(what, label, server)))
    }

    /// What a run cut at its timeout while waiting for a connection says
    /// (`self` is the state at the cut). `queued`: the pool was saturated
    /// when the run asked, so it queued for a connection to be released.
    /// `server`: the database is a server reached over the network, not a
    /// file (SQLite).
    ///
    /// Saturated at the cut alone is not enough to say the run queued: a
    /// pool counts a connection it is opening, or an idle one it is testing
    /// for the run, as in use, so a run cut while its own connection was
    /// opened in the pool's last slot would look saturated at the cut.
    fn cut_waiting(self, queued: bool, what: &str, server: bool) -> crate::CheckResult {
        let max = self.max;
        crate::CheckResult::unhealthy(match (queued && self.saturated(), server) {
            (true, true) => format!(
                "{what} pool had no free connection: all {max} were in use, none idle; either the \
                 application holds them (slow queries, connections held too long) or they wait \
                 on a server that stopped answering"
            ),
            (true, false) => format!(
                "{what} pool had no free connection: all {max} were in use, none idle; the \
                 application holds them (slow queries, long transactions, connections held too \
                 long)"
            ),
            (false, true) => format!(
                "{what} pool had no connection to hand out: opening a new connection, or \
                 testing an idle one, got no answer; check that the server is reachable from \
                 this host"
            ),
            (false, false) => format!(
                "{what} pool had no connection to hand out: opening the database, or testing \
                 an idle connection, did not finish; check the database file's disk and locks"
            ),
        })
    }

    /// What a run cut at its timeout after it got a connection says.
    fn cut_querying(what: &str, label: &str, server: bool) -> crate::CheckResult {
        crate::CheckResult::unhealthy(if server {
            format!(
                "{what} did not answer {label} on a connection from the pool: the server holds \
                 the connection but does not answer (overloaded, locked, or the network drops \
                 its packets)"
            )
        } else {
            format!(
                "{what} did not finish {label} on a connection from the pool: the connection's \
                 worker is blocked (a slow disk, or a lock on the database file)"
            )
        })
    }

    /// The result of a run that found the pool saturated (`self` is the
    /// state when it started) and whose query (`SELECT 1`, or the writability
    /// query) then succeeded.
    fn saturated_result(self, what: &str) -> crate::CheckResult {
        self.observe(crate::CheckResult::degraded(format!(
            "{what} pool saturated: all {} connections were in use, none idle, and the check's \
             query succeeded only after waiting for a connection, as requests do; raise the pool's \
             maximum size or look for slow queries and connections held too long",
            self.max
        )))
    }
}
