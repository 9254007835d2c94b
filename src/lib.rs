//! Health endpoints for any tower service, answered from a cache that one
//! background task keeps fresh.
//!
//! `tower-health` is a middleware, [`HealthLayer`], that sits in front of an
//! axum router, a tonic server or a plain hyper service. It answers
//! `/health`, `/livez`, `/readyz` and `/startupz` itself and passes every
//! other request through, adding an `x-process-time-ms` header to every
//! response (and, once a drain has begun, `Connection: close` to HTTP/1
//! ones: [`HealthLayer::without_connection_close`]).
//! [`HealthLayer::into_service`] serves the health paths alone, on
//! a management port of their own.
//!
//! A probe never runs a check. One background task runs each registered
//! check on its own schedule, cuts it at its timeout, and publishes an
//! immutable snapshot with the answers already rendered; a probe is a load
//! of that snapshot and a copy of a reference-counted buffer. A storm of
//! probes is not a storm of database queries, and a hung database cannot
//! make a probe hang.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower::ServiceExt;
//! use tower_health::{CheckOptions, CheckResult, HealthChecks};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let health = HealthChecks::builder()
//!     .version(env!("CARGO_PKG_VERSION"))
//!     .check_with(
//!         "database",
//!         || async { CheckResult::healthy() }, // e.g. `SELECT 1` on your pool
//!         CheckOptions::new().interval(Duration::from_secs(5)),
//!     )
//!     .build()?;
//!
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(health.layer());
//!
//! # tokio::time::sleep(Duration::from_millis(50)).await;
//! let response = app
//!     .oneshot(http::Request::get("/readyz").body(axum::body::Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! assert!(response.headers().contains_key("x-process-time-ms"));
//! # Ok(())
//! # }
//! ```
//!
//! # Endpoints
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 `{"status":"healthy"}`, 200 `{"status":"degraded","reason":"degraded: cache"}`, 503 `{"status":"unhealthy","reason":"failing: database"}` |
//! | `GET /health?detailed=true` | in plain JSON, adds `components` (per check: `status`, `duration_ms`, `checked_at`, `consecutive_failures`, `failing_since`, ...), `uptime_seconds`, `version` |
//! | `GET /health/{name}` | one component; 404 `{"status":"error",...}` for an unknown name |
//! | `GET /livez` (`/healthz`) | liveness checks and liveness heartbeats only |
//! | `GET /readyz` | started, not draining or out of rotation, not busy, readiness checks and heartbeats pass |
//! | `GET /startupz` | latches once started |
//! | `?verbose` | Kubernetes text: `[+]database ok` ... `readyz check passed` |
//! | `?exclude=NAME` | leaves a check out (repeatable, up to 64 times) |
//! | `Accept: application/health+json` | the IETF health check draft format (with a `componentType` per check: [`Check::component_type`]) |
//! | `HEAD` | as `GET`, no body; other methods 405 with `Allow: GET, HEAD` |
//!
//! Unknown query parameters are ignored; `detailed` or `verbose` with a value
//! other than `true`/`1`/`false`/`0`/empty is a 400 with a JSON body naming
//! the parameter.
//!
//! # Probe semantics
//!
//! - **Liveness** judges only checks registered with [`Probes::LIVENESS`]
//!   and [heartbeats](heartbeat) (those made with
//!   [`heartbeat_with`](HealthHandle::heartbeat_with) judge the probes
//!   given there). Dependency checks default to readiness, so
//!   a database outage never restarts healthy pods. Before startup completes
//!   only liveness heartbeats count, as Kubernetes runs no liveness probe
//!   before the startup probe passes.
//! - **Readiness** is started, not draining (nor out of rotation), under
//!   the in-flight limit, and every critical readiness check (and
//!   readiness heartbeat) passing. A
//!   check with no result yet counts as failing (so a non-critical one
//!   makes readiness degraded).
//! - **Startup** passes once every check has a first result, every
//!   [`Probes::STARTUP`] check passes (a stale result does not), and
//!   [`mark_started`](HealthHandle::mark_started) was called if
//!   [required](HealthChecksBuilder::require_mark_started). Then it latches.
//! - **Staleness**: a result older than its
//!   [`max_age`](CheckOptions::max_age) counts as failed ("stale"), checked
//!   at request time, so a dead or starved refresher turns readiness 503
//!   instead of serving a frozen "healthy".
//! - **A lost refresher**: if the task that runs the checks ends without a
//!   [`shutdown`](HealthHandle::shutdown) (it panicked, or the runtime
//!   [`build`](HealthChecksBuilder::build) ran in was dropped), no check
//!   will run again, so liveness fails too, with readiness and `/health`
//!   ("health checks stopped running"): only a restart helps.
//!
//! # Shutdown
//!
//! [`graceful_shutdown`](HealthHandle::graceful_shutdown) takes a signal
//! (feature `signal`: [`shutdown_signal`], SIGTERM or Ctrl-C) and returns
//! the future to give a server's own graceful shutdown (axum's
//! `with_graceful_shutdown`, tonic's `serve_with_shutdown`): on the signal,
//! readiness answers 503 `draining` at once while every route is still
//! served, and after the [`drain_delay`](HealthChecksBuilder::drain_delay)
//! (5 s by default) the future completes and the server stops accepting.
//!
//! # Details and privacy
//!
//! Answers name a failing check (`failing: database`) but not its error:
//! error texts go to `tracing`, and responses show them, with the checks'
//! observations (pool sizes, free space), only to requests that
//! [`reveal_details_if`](HealthLayer::reveal_details_if) allows, such as
//! those carrying a [`BearerToken`]; the rest read
//! "reason withheld". The `x-process-time-ms` header tells every client how
//! long the handler took: on a public port where that time depends on a
//! secret, turn it off with
//! [`without_process_time_header`](HealthLayer::without_process_time_header).
//!
//! # Features
//!
//! None is on by default. The built-in checks ([`checks`]) each need
//! their own (`postgres`, `mysql`, `sqlite`, `deadpool-postgres`, `redis`,
//! `http-client` and `https`, `tcp`, `disk`), except the blocking and
//! runtime checks; `axum` adds [`HealthLayer::wrap_axum`], `tonic-health`
//! the gRPC health service and check, `metrics` the metrics, `signal`
//! [`shutdown_signal`], `systemd` the systemd notifications
//! (`systemd::Notifier`: ready, watchdog, stopping), and `http-client` also
//! the container health-check command ([`command`]).

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The docs link to every integration (docs.rs builds with all of them); a
// build without some has nothing at those links. `.ci/run` checks the links
// with every feature on.
#![cfg_attr(
    not(all(
        feature = "axum",
        feature = "deadpool-postgres",
        feature = "disk",
        feature = "http-client",
        feature = "https",
        feature = "metrics",
        feature = "mysql",
        feature = "postgres",
        feature = "redis",
        feature = "signal",
        feature = "sqlite",
        feature = "tcp",
        feature = "tonic-health",
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod check;
pub mod checks;
#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub mod command;
pub mod details;
#[cfg(feature = "tonic-health")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic-health")))]
pub mod grpc;
pub mod heartbeat;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod registry;
#[cfg(feature = "signal")]
#[cfg_attr(docsrs, doc(cfg(feature = "signal")))]
pub mod signal;
#[cfg(all(feature = "systemd", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "systemd", unix))))]
pub mod systemd;

mod body;
mod clock;
#[cfg(any(
    feature = "tonic-health",
    feature = "metrics",
    all(feature = "systemd", unix)
))]
mod follow;
mod future;
mod layer;
mod render;
mod runner;
mod service;
mod snapshot;
mod standalone;
#[cfg(test)]
mod test_util;

#[cfg(feature = "signal")]
#[cfg_attr(docsrs, doc(cfg(feature = "signal")))]
pub use crate::signal::shutdown_signal;
pub use crate::{
    body::ResponseBody,
    check::{Check, CheckResult, Observation, Status},
    details::{BearerToken, RevealDetails},
    future::ResponseFuture,
    heartbeat::{Heartbeat, HeartbeatOptions},
    layer::{HealthLayer, PROCESS_TIME_HEADER},
    registry::{
        CheckOptions, Error, HealthChecks, HealthChecksBuilder, HealthHandle, Overview, Probes,
    },
    service::Health,
    snapshot::{Probe, ProbeStatus},
    standalone::NotFound,
};
