//! The [`Check`] trait and what a check reports.
//!
//! A check is anything that can answer "is this dependency usable right now?"
//! asynchronously: a type implementing [`Check`], or an async closure. It
//! returns a [`CheckResult`]: a [`Status`], an optional message and optional
//! observed values (pool sizes, free bytes, ...).
//!
//! Checks never run on the request path. The background runner calls them on
//! their own schedule and publishes the results; probes read the published
//! results.
//!
//! # Example
//!
//! ```
//! use tower_health::{Check, CheckResult};
//!
//! struct QueueDepth {
//!     limit: usize,
//! }
//!
//! impl Check for QueueDepth {
//!     async fn check(&self) -> CheckResult {
//!         let depth = 3; // read it from your queue
//!         let result = if depth < self.limit {
//!             CheckResult::healthy()
//!         } else {
//!             CheckResult::degraded(format!("queue depth {depth} over {}", self.limit))
//!         };
//!         result.with_observation("depth", depth, None)
//!     }
//! }
//!
//! # tokio_test_block_on(async {
//! let result = QueueDepth { limit: 10 }.check().await;
//! assert_eq!(result.status(), tower_health::Status::Healthy);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::{borrow::Cow, fmt, future::Future, pin::Pin};

use serde::Serialize;

/// The status one check reports.
///
/// Ordered from best to worst, so the worst of several statuses is their
/// maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The dependency works.
    Healthy,
    /// The dependency works, but not fully (slow, nearly full, saturated).
    /// A degraded check never fails a probe on its own.
    Degraded,
    /// The dependency does not work.
    Unhealthy,
}

impl Status {
    /// The lowercase name used in JSON bodies (`healthy`, `degraded`, `unhealthy`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }

    /// `true` for [`Status::Healthy`] and [`Status::Degraded`]: the check did
    /// not fail.
    pub const fn is_passing(self) -> bool {
        !matches!(self, Status::Unhealthy)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value a check observed, such as a pool size or free disk space.
///
/// Observations appear in the detailed JSON (`?detailed=true`) under
/// `observed`, and in `application/health+json` as extra
/// `name:measurement` entries with `observedValue` and `observedUnit`,
/// only in answers to the requests allowed details (see
/// [`details`](crate::details)): like error texts, pool sizes, free space
/// or an upstream's status code are for operators, not for anyone who can
/// reach a probe path. With feature `metrics`, numeric ones are also
/// recorded as the gauge `health_check_observation` (see
/// [`metrics`](crate::metrics)).
///
/// A measurement observed twice in one result shows its last value in the
/// detailed JSON, whose `observed` is keyed by measurement, and both values
/// in `application/health+json`, whose entries are lists. A value that
/// JSON cannot hold (a float that is NaN or infinite) shows as `null`.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    measurement: Cow<'static, str>,
    value: serde_json::Value,
    unit: Option<Cow<'static, str>>,
}

impl Observation {
    /// A measurement name (e.g. `connections`), its value and an optional unit
    /// (e.g. `bytes`, `%`).
    pub fn new(
        measurement: impl Into<Cow<'static, str>>,
        value: impl Into<serde_json::Value>,
        unit: Option<&'static str>,
    ) -> Self {
        Self {
            measurement: measurement.into(),
            value: value.into(),
            unit: unit.map(Cow::Borrowed),
        }
    }

    /// The measurement name.
    pub fn measurement(&self) -> &str {
        &self.measurement
    }

    /// The observed value.
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// The unit, if any.
    pub fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }
}

/// What one run of a check found.
///
/// The message is treated as sensitive: it can hold host names, credentials
/// in URLs or SQL. It is logged through `tracing` and shown in responses only
/// to requests the layer's details predicate unlocks
/// ([`HealthLayer::reveal_details_if`](crate::HealthLayer::reveal_details_if)).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    status: Status,
    message: Option<Cow<'static, str>>,
    observations: Vec<Observation>,
}

impl CheckResult {
    /// A passing result.
    pub const fn healthy() -> Self {
        Self {
            status: Status::Healthy,
            message: None,
            observations: Vec::new(),
        }
    }

    /// A degraded result with a message saying what is wrong.
    pub fn degraded(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: Status::Degraded,
            message: Some(message.into()),
            observations: Vec::new(),
        }
    }

    /// A failing result with a message saying what is wrong.
    pub fn unhealthy(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: Status::Unhealthy,
            message: Some(message.into()),
            observations: Vec::new(),
        }
    }

    /// Adds an observed value (see [`Observation`]).
    #[must_use]
    pub fn with_observation(
        mut self,
        measurement: impl Into<Cow<'static, str>>,
        value: impl Into<serde_json::Value>,
        unit: Option<&'static str>,
    ) -> Self {
        self.observations
            .push(Observation::new(measurement, value, unit));
        self
    }

    /// Replaces the message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The status.
    pub const fn status(&self) -> Status {
        self.status
    }

    /// The message, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The observed values.
    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    pub(crate) fn into_parts(self) -> (Status, Option<Cow<'static, str>>, Vec<Observation>) {
        (self.status, self.message, self.observations)
    }
}

impl Default for CheckResult {
    fn default() -> Self {
        Self::healthy()
    }
}

impl From<Status> for CheckResult {
    fn from(status: Status) -> Self {
        Self {
            status,
            message: None,
            observations: Vec::new(),
        }
    }
}

/// `Ok(())` is healthy; `Err(e)` is unhealthy, with `e` and its sources
/// as the message (`connecting to db: connection refused`).
///
/// `E` is any error (anything `?` can turn into a
/// `Box<dyn Error + Send + Sync>`): an error type, an `anyhow::Error`, a
/// `String` or a `&str`. A source whose text the message already holds
/// (an error that prints its cause itself) is not repeated.
///
/// ```
/// use tower_health::{CheckResult, Status};
///
/// let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// #[derive(Debug)]
/// struct Connect(std::io::Error);
/// impl std::fmt::Display for Connect {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("cannot connect to the ledger")
///     }
/// }
/// impl std::error::Error for Connect {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let result = CheckResult::from(Err::<(), _>(Connect(refused)));
/// assert_eq!(result.status(), Status::Unhealthy);
/// assert_eq!(result.message(), Some("cannot connect to the ledger: refused"));
/// assert_eq!(CheckResult::from(Err::<(), _>("no quorum")).message(), Some("no quorum"));
/// ```
impl<E> From<Result<(), E>> for CheckResult
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Self::healthy(),
            Err(e) => Self::unhealthy(error_chain(&*e.into())),
        }
    }
}

/// An error and its sources, `: `-separated, leaving out a source whose
/// text is already there (hyper's top-level errors are terse, e.g. "client
/// error (Connect)"; others print their cause themselves).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// A health check.
///
/// Implement it for a type, or pass an async closure: any
/// `Fn() -> impl Future<Output = R>` where `R: Into<CheckResult>` (for
/// example `Result<(), E>` with `E` an error, a `String` or a `&str`) is a
/// `Check`.
///
/// A check should be cheap and must be async: the runner cuts it at its
/// timeout, which only works at an `.await`, and a check that blocks holds
/// up its runtime thread (on a current-thread runtime, every probe).
/// Blocking work (a synchronous client, a call on a network filesystem)
/// belongs in a [`BlockingCheck`](crate::checks::BlockingCheck), which runs
/// it on a thread of its own, one call at a time.
///
/// Each run is inside a `health_check` span with the check's name as its
/// `check` field, on a `BlockingCheck`'s thread too: what the check and
/// the clients it calls log is tied to it. The span has no parent, so a
/// tracer sees each run as a short trace of its own. It is an `INFO` span
/// with the target `tower_health::runner`: a filter that drops that target
/// at `INFO` (`tower_health=warn`) drops the span too.
///
/// See the [module example](crate::check).
pub trait Check: Send + Sync + 'static {
    /// Runs the check once.
    fn check(&self) -> impl Future<Output = CheckResult> + Send + '_;

    /// What the check looks at, for `application/health+json`'s
    /// `componentType`: `"component"` unless overridden. The built-in
    /// database and Redis checks say `"datastore"`, the disk and runtime checks
    /// `"system"`, as the IETF draft's examples do.
    /// [`CheckOptions::component_type`](crate::CheckOptions::component_type)
    /// overrides it per registration (and then this is not called). A check
    /// that wraps another should forward it. Called once, when the check is
    /// registered ([`check_with`](crate::HealthChecksBuilder::check_with),
    /// [`add_check`](crate::HealthHandle::add_check)): the answer stands
    /// for as long as the check is registered.
    ///
    /// ```
    /// use tower_health::{Check, CheckResult};
    ///
    /// struct LedgerCheck;
    ///
    /// impl Check for LedgerCheck {
    ///     async fn check(&self) -> CheckResult {
    ///         CheckResult::healthy() // ask the ledger database
    ///     }
    ///
    ///     fn component_type(&self) -> &'static str {
    ///         "datastore"
    ///     }
    /// }
    /// ```
    fn component_type(&self) -> &'static str {
        "component"
    }
}

impl<F, Fut> Check for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Into<CheckResult>,
{
    fn check(&self) -> impl Future<Output = CheckResult> + Send + '_ {
        let fut = self();
        async move { fut.await.into() }
    }
}

pub(crate) type BoxCheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// Object-safe form of [`Check`], so checks of different types share one list.
pub(crate) trait DynCheck: Send + Sync + 'static {
    fn run(&self) -> BoxCheckFuture<'_>;
}

impl<C: Check> DynCheck for C {
    fn run(&self) -> BoxCheckFuture<'_> {
        Box::pin(self.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closures_returning_results_are_checks() {
        let ok = || async { Ok::<(), String>(()) };
        let err = || async { Err::<(), _>("refused") };
        assert_eq!(ok.check().await.status(), Status::Healthy);
        let failed = err.check().await;
        assert_eq!(failed.status(), Status::Unhealthy);
        assert_eq!(failed.message(), Some("refused"));
    }

    #[test]
    fn worst_status_is_the_maximum() {
        let worst = [Status::Healthy, Status::Unhealthy, Status::Degraded]
            .into_iter()
            .max();
        assert_eq!(worst, Some(Status::Unhealthy));
        assert!(Status::Degraded.is_passing());
        assert!(!Status::Unhealthy.is_passing());
    }
}
