//! Building the set of checks, and the handle that controls it at run time.
//!
//! [`HealthChecks::builder`] collects named checks, each with its own
//! [`CheckOptions`]. [`HealthChecksBuilder::build`] starts the one background
//! task that refreshes them and returns a [`HealthHandle`]. The handle makes
//! layers ([`HealthHandle::layer`]) and changes the set while it runs.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_health::{CheckOptions, CheckResult, HealthChecks, Probes};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_health::Error> {
//! let health = HealthChecks::builder()
//!     .version("1.4.2")
//!     // A dependency check: readiness only (the default), every 5 seconds.
//!     .check("cache", || async { CheckResult::healthy() })
//!     // An internal check that also decides liveness.
//!     .check_with(
//!         "event-loop",
//!         || async { Ok::<(), std::io::Error>(()) },
//!         CheckOptions::new()
//!             .probes(Probes::LIVENESS | Probes::READINESS)
//!             .interval(Duration::from_secs(1))
//!             .timeout(Duration::from_millis(500)),
//!     )
//!     .build()?;
//!
//! let layer = health.layer();
//! # drop(layer);
//! # Ok(())
//! # }
//! ```

use std::{
    fmt,
    future::Future,
    ops::{BitOr, BitOrAssign},
    sync::Arc,
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    Status,
    check::{Check, DynCheck},
    heartbeat::{Heartbeat, HeartbeatOptions},
    layer::HealthLayer,
    runner::{self, InFlightFilter, Owner, Shared},
    snapshot::ProbeStatus,
};

/// The probes a check belongs to.
///
/// Every check is part of the combined `/health`. `Probes` says which of
/// the Kubernetes probes also judge it. Combine with `|`.
///
/// The default for [`CheckOptions`] is [`Probes::READINESS`]: a dependency
/// check decides whether the instance gets traffic, never whether it is
/// restarted.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probes(u8);

impl Probes {
    /// Only the combined `/health`.
    pub const NONE: Self = Self(0);
    /// `/startupz`: must pass once before the instance counts as started.
    pub const STARTUP: Self = Self(1);
    /// `/livez`: failing restarts the container. Use for the process's own
    /// state, never for dependencies.
    pub const LIVENESS: Self = Self(2);
    /// `/readyz`: failing takes the instance out of the load balancer.
    pub const READINESS: Self = Self(4);

    /// Whether every probe in `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` less the probes in `other`.
    pub(crate) const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for Probes {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for Probes {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Probes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for (flag, name) in [
            (Self::STARTUP, "STARTUP"),
            (Self::LIVENESS, "LIVENESS"),
            (Self::READINESS, "READINESS"),
        ] {
            if self.contains(flag) {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// The shortest interval, timeout or heartbeat deadline.
pub(crate) const SHORTEST: Duration = Duration::from_millis(1);

/// The longest interval, timeout, `max_age` or heartbeat deadline: 100
/// years, "never" in practice. Longer ones are lowered to it, so that adding
/// one to an instant (and `2 × interval + timeout`) cannot overflow.
pub(crate) const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How one check is run and judged.
///
/// | option | default |
/// |---|---|
/// | [`interval`](Self::interval) | 5 s between the end of one run and the start of the next |
/// | [`failing_interval`](Self::failing_interval) | the interval: time between runs from a failed run until a passing run leaves the check passing |
/// | [`jitter_percent`](Self::jitter_percent) | 0: each time between runs is lengthened by a random part of up to this share of it, so that replicas started together do not check a shared dependency in step |
/// | [`timeout`](Self::timeout) | 2 s, then the run counts as failed ("timed out after 2s") |
/// | [`probes`](Self::probes) | [`Probes::READINESS`] |
/// | [`critical`](Self::critical) | `true`: failing makes the service unhealthy (503); `false`: degraded (200) |
/// | [`failure_threshold`](Self::failure_threshold) | 1 consecutive failure before a passing check counts as failing |
/// | [`failure_grace`](Self::failure_grace) | zero: how long a failure streak must have lasted, besides the count, before a passing check counts as failing |
/// | [`success_threshold`](Self::success_threshold) | 1 consecutive success before a failing check counts as passing |
/// | [`max_age`](Self::max_age) | `2 × interval + timeout` (the interval in force for the next run, with its jitter at most): an older result counts as failed ("stale") |
/// | [`slow_threshold`](Self::slow_threshold) | half the timeout: slower runs are logged (a run cut at its timeout is logged as timed out instead) |
/// | [`recheck_spacing`](Self::recheck_spacing) | 1 s: the least time from the end of a run to a run [`HealthHandle::recheck`] brings forward |
/// | [`component_type`](Self::component_type) | the check's own ([`Check::component_type`]): `datastore` for the database and Redis checks, `system` for the disk and runtime checks, `component` otherwise |
///
/// The thresholds damp flapping between two known states; the first result
/// of a check is taken as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    pub(crate) interval: Duration,
    pub(crate) failing_interval: Option<Duration>,
    pub(crate) timeout: Duration,
    pub(crate) probes: Probes,
    pub(crate) critical: bool,
    pub(crate) failure_threshold: u32,
    pub(crate) failure_grace: Duration,
    pub(crate) success_threshold: u32,
    pub(crate) max_age: Option<Duration>,
    pub(crate) slow_threshold: Option<Duration>,
    pub(crate) component_type: Option<&'static str>,
    pub(crate) recheck_spacing: Duration,
    pub(crate) jitter_percent: u32,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckOptions {
    /// The defaults in the table above.
    pub const fn new() -> Self {
        Self {
            interval: Duration::from_secs(5),
            failing_interval: None,
            timeout: Duration::from_secs(2),
            probes: Probes::READINESS,
            critical: true,
            failure_threshold: 1,
            failure_grace: Duration::ZERO,
            success_threshold: 1,
            max_age: None,
            slow_threshold: None,
            component_type: None,
            recheck_spacing: Duration::from_secs(1),
            jitter_percent: 0,
        }
    }

    /// Time between the end of one run and the start of the next. Values
    /// under 1 ms are raised to 1 ms, values over 100 years (such as
    /// `Duration::MAX`) lowered to 100 years.
    #[must_use]
    pub const fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Time between runs while the check is not settled as passing: from
    /// a failed run (counting towards
    /// [`failure_threshold`](Self::failure_threshold)) through failing
    /// until [`success_threshold`](Self::success_threshold) passing runs
    /// have brought it back. Defaults to [`interval`](Self::interval).
    ///
    /// Shorter than the interval, it confirms a failure and notices a
    /// recovery sooner while the steady state stays cheap: with
    /// `interval(30 s)` and `failing_interval(2 s)`, a healthy database
    /// gets one query per 30 s, and readiness comes back within about 2 s
    /// of it recovering instead of 30. Longer, it backs off a dependency
    /// that is down. The same limits as the interval apply.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_health::CheckOptions;
    ///
    /// let options = CheckOptions::new()
    ///     .interval(Duration::from_secs(30))
    ///     .failing_interval(Duration::from_secs(2));
    /// # drop(options);
    /// ```
    #[must_use]
    pub const fn failing_interval(mut self, interval: Duration) -> Self {
        self.failing_interval = Some(interval);
        self
    }

    /// How long one run may take before it is cut and counted as failed.
    /// Values under 1 ms are raised to 1 ms, values over 100 years lowered
    /// to 100 years.
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The probes that judge this check (see [`Probes`]).
    #[must_use]
    pub const fn probes(mut self, probes: Probes) -> Self {
        self.probes = probes;
        self
    }

    /// Whether failing makes the service unhealthy (`true`) or only
    /// degraded (`false`).
    #[must_use]
    pub const fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }

    /// Consecutive failures before a passing check counts as failing
    /// (0 is treated as 1; [`failure_grace`](Self::failure_grace) can ask
    /// for time in failure as well). A result that follows a stale one (older than
    /// [`max_age`](Self::max_age)) is taken as it is: the thresholds damp
    /// flapping between known states only.
    #[must_use]
    pub const fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// How long a failure streak must have lasted before a passing check
    /// counts as failing: from the end of the streak's first failed run to
    /// the end of the latest, judged at each run. Both this and
    /// [`failure_threshold`](Self::failure_threshold) must be reached.
    /// Default zero: the count alone decides. Values over 100 years are
    /// lowered to 100 years.
    ///
    /// Tolerance is usually stated as time ("ride out 30 s of database
    /// blips"), and this states it whatever the intervals: the check turns
    /// failing at the first failed run that ends 30 s or more after the
    /// streak's first failed run ended, so up to 30 s plus the interval in
    /// force (the [`failing_interval`](Self::failing_interval), while the
    /// streak lasts, with its [jitter](Self::jitter_percent)) plus the run's own time (up to the
    /// [`timeout`](Self::timeout), for a dependency that does not answer)
    /// after that. A passing run ends the streak. Like the threshold, it
    /// damps a known passing state only: a first result, or one after a
    /// stale result, is taken as it is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_health::CheckOptions;
    ///
    /// // Re-checked every 2 s while failing; readiness fails at the first
    /// // failed run 30 s or more into an unbroken streak of failures.
    /// let options = CheckOptions::new()
    ///     .failing_interval(Duration::from_secs(2))
    ///     .failure_grace(Duration::from_secs(30));
    /// ```
    #[must_use]
    pub const fn failure_grace(mut self, grace: Duration) -> Self {
        self.failure_grace = grace;
        self
    }

    /// Consecutive successes before a failing check counts as passing
    /// again (0 is treated as 1).
    #[must_use]
    pub const fn success_threshold(mut self, n: u32) -> Self {
        self.success_threshold = n;
        self
    }

    /// How old a result may be before it counts as failed with reason
    /// "stale". The default, `2 × interval + timeout`, tolerates one late
    /// run; after a run that leaves the next one a
    /// [`failing_interval`](Self::failing_interval) away, that interval
    /// counts instead, and with [`jitter_percent`](Self::jitter_percent)
    /// the interval counts at its longest. A `max_age` set by hand shorter
    /// than the longer interval (at its longest with jitter) plus the
    /// timeout logs a warning when the check is registered: its result
    /// would turn stale between runs. For "never stale", pass `Duration::MAX`: values over
    /// 100 years are lowered to 100 years.
    #[must_use]
    pub const fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Runs slower than this are logged at `warn` ("health check slow").
    /// Defaults to half the timeout. A run cut at its timeout is logged as
    /// timed out instead: as "health check failing" when it makes the check
    /// fail, or "health check timed out, below its failure threshold".
    #[must_use]
    pub const fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.slow_threshold = Some(threshold);
        self
    }

    /// What the check looks at, as `application/health+json`'s
    /// `componentType` names it: `"datastore"`, `"system"`, `"component"`,
    /// or a term of your own. Overrides the check's own
    /// [`Check::component_type`]. This is how a closure check (which has
    /// no `component_type` of its own) says it looks at a database.
    ///
    /// ```
    /// use tower_health::CheckOptions;
    ///
    /// let options = CheckOptions::new().component_type("datastore");
    /// ```
    #[must_use]
    pub const fn component_type(mut self, kind: &'static str) -> Self {
        self.component_type = Some(kind);
        self
    }

    /// The least time from the end of a run to a run that
    /// [`HealthHandle::recheck`] brings forward (default 1 s; values under
    /// 1 ms are raised to 1 ms, values over 100 years lowered to 100
    /// years). Asks never bring a run closer than this to the end of the
    /// run before, however often the application asks: one that asks on
    /// every failed query costs the dependency one check per
    /// `recheck_spacing` at most, not one per failed query. Raise it for a
    /// check that is expensive to run.
    #[must_use]
    pub const fn recheck_spacing(mut self, spacing: Duration) -> Self {
        self.recheck_spacing = spacing;
        self
    }

    /// Lengthens each time between runs (the [`interval`](Self::interval),
    /// or the [`failing_interval`](Self::failing_interval) while that is in
    /// force) by a random part of up to `percent` % of it, drawn anew for
    /// every run. Default 0: runs are exactly an interval apart. Values
    /// over 100 are lowered to 100.
    ///
    /// Replicas that start together (a deployment, a scale-up, a node
    /// coming back) would otherwise check a shared dependency in step, all
    /// of them in the same instant of every interval, for as long as they
    /// run. With jitter they part after their first wait and drift further
    /// apart at every run: slowly at a few percent (two replicas are about
    /// `p % × interval × √(runs / 6)` apart), quickly at 50 or more.
    /// Runs only ever come later than the interval, never sooner, so the
    /// dependency gets no more checks than without jitter. The first run
    /// is not delayed (startup waits for it), nor is one that
    /// [`HealthHandle::recheck`] brings forward. The default
    /// [`max_age`](Self::max_age) allows for the longest wait.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_health::CheckOptions;
    ///
    /// // 10 to 11 s between runs.
    /// let options = CheckOptions::new()
    ///     .interval(Duration::from_secs(10))
    ///     .jitter_percent(10);
    /// # drop(options);
    /// ```
    #[must_use]
    pub const fn jitter_percent(mut self, percent: u32) -> Self {
        self.jitter_percent = percent;
        self
    }

    pub(crate) fn normalized(mut self) -> Self {
        self.interval = self.interval.clamp(SHORTEST, LONGEST);
        self.failing_interval = self
            .failing_interval
            .map(|interval| interval.clamp(SHORTEST, LONGEST));
        self.timeout = self.timeout.clamp(SHORTEST, LONGEST);
        self.max_age = self.max_age.map(|max_age| max_age.min(LONGEST));
        self.failure_threshold = self.failure_threshold.max(1);
        self.failure_grace = self.failure_grace.min(LONGEST);
        self.success_threshold = self.success_threshold.max(1);
        self.recheck_spacing = self.recheck_spacing.clamp(SHORTEST, LONGEST);
        self.jitter_percent = self.jitter_percent.min(100);
        self
    }

    /// The time to the next run after one that left the check `settled`
    /// (passing, with a passing last run) or not.
    pub(crate) fn interval_after(&self, settled: bool) -> Duration {
        match self.failing_interval {
            Some(failing) if !settled => failing,
            _ => self.interval,
        }
    }

    /// `interval` with its jitter at its longest (at most 100 years, like
    /// the interval itself).
    fn longest_wait(&self, interval: Duration) -> Duration {
        (interval + interval * self.jitter_percent / 100).min(LONGEST)
    }

    /// The time to the next run after one that left the check `settled` or
    /// not, with a `fraction` (in `[0, 1)`, drawn only if there is jitter)
    /// of its most jitter added.
    pub(crate) fn wait_after(&self, settled: bool, fraction: impl FnOnce() -> f64) -> Duration {
        let interval = self.interval_after(settled);
        if self.jitter_percent == 0 {
            return interval;
        }
        let fraction = fraction();
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        interval + (self.longest_wait(interval) - interval).mul_f64(fraction)
    }

    /// The longer of the two intervals, with its jitter at its longest: the
    /// most a result waits for the next run.
    pub(crate) fn longest_interval(&self) -> Duration {
        self.longest_wait(
            self.failing_interval
                .map_or(self.interval, |failing| failing.max(self.interval)),
        )
    }

    /// How old a result may be, given the run that made it left the check
    /// `settled` or not: the default follows the interval then in force,
    /// with its jitter at its longest.
    pub(crate) fn max_age_after(&self, settled: bool) -> Duration {
        self.max_age
            .unwrap_or(self.longest_wait(self.interval_after(settled)) * 2 + self.timeout)
    }

    pub(crate) fn effective_slow_threshold(&self) -> Duration {
        self.slow_threshold.unwrap_or(self.timeout / 2)
    }
}

/// Errors from building or changing the set of checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A check or heartbeat name that cannot appear in a URL path or a
    /// health+json key.
    #[error(
        "invalid check name {0:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.' (not \
         \".\" or \"..\" alone)"
    )]
    InvalidName(String),
    /// Two checks or heartbeats with one name.
    #[error("a check or heartbeat named {0:?} is already registered")]
    DuplicateName(String),
    /// [`HealthChecksBuilder::build`] was called outside a Tokio runtime.
    #[error(
        "tower-health needs a Tokio runtime to run its checks: call build() from inside one \
         (for example in an async fn under #[tokio::main])"
    )]
    NoRuntime,
    /// [`HealthChecksBuilder::build`] was called in a Tokio runtime built
    /// without its time driver: checks run on intervals and are cut at
    /// their timeouts, so they need it.
    #[error(
        "tower-health needs the Tokio runtime's timers to run its checks: build the runtime \
         with enable_time() or enable_all() (#[tokio::main] does)"
    )]
    NoTimer,
    /// The checker was shut down ([`HealthHandle::shutdown`]), every
    /// handle and layer was dropped, or its refresher task is gone: it
    /// panicked, or went with the Tokio runtime
    /// [`build`](HealthChecksBuilder::build) was called in.
    #[error("the health checker has shut down")]
    ShutDown,
}

/// The longest check or heartbeat name, in bytes (ASCII).
pub(crate) const MAX_NAME_LEN: usize = 64;

pub(crate) fn validate_name(name: &str) -> Result<(), Error> {
    // `.` and `..` are dot-segments: clients and proxies remove them from
    // a path, so `/health/..` would never reach the check.
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// The warning to log when `name`, a new check's or heartbeat's, is also a
/// name the probes use for themselves: allowed, but ambiguous where both
/// show.
pub(crate) fn warn_if_shadowed(name: &str) -> Option<impl FnOnce() + Send + 'static> {
    let shadows = match name {
        "liveness" | "readiness" => "the gRPC health service's name for that probe",
        "startup" => {
            "the gRPC health service's name for the startup probe, and a line of the \
             `?verbose` text"
        }
        "started" | "shutdown" | "rotation" | "refresher" | "in-flight" | "mark_started" => {
            "a line of the `?verbose` text"
        }
        _ => return None,
    };
    let name = name.to_owned();
    Some(move || {
        tracing::warn!(
            name,
            "tower-health: {name:?} is also {shadows}, which then does not tell the two apart; \
             another name avoids that"
        );
    })
}

/// Entry point: `HealthChecks::builder()`.
///
/// See the [module example](crate::registry).
#[derive(Debug, Clone, Copy)]
pub struct HealthChecks {
    _private: (),
}

impl HealthChecks {
    /// A builder with no checks.
    pub fn builder() -> HealthChecksBuilder {
        HealthChecksBuilder::default()
    }
}

pub(crate) struct Registration {
    pub(crate) name: String,
    pub(crate) check: Arc<dyn DynCheck>,
    pub(crate) options: CheckOptions,
    /// The options' component type, or else the check's own: asked once,
    /// here, since the check's is the application's code and the runner
    /// would otherwise call it under its lock at every publish.
    pub(crate) component_type: &'static str,
}

impl Registration {
    fn new(name: impl Into<String>, check: impl Check, options: CheckOptions) -> Self {
        let component_type = options
            .component_type
            .unwrap_or_else(|| check.component_type());
        Self {
            name: name.into(),
            check: Arc::new(check),
            options: options.normalized(),
            component_type,
        }
    }
}

/// Collects checks and settings, then starts the refresher.
///
/// See the [module example](crate::registry).
#[must_use]
pub struct HealthChecksBuilder {
    pub(crate) checks: Vec<Registration>,
    pub(crate) version: Option<String>,
    pub(crate) require_mark_started: bool,
    pub(crate) drain_delay: Duration,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) in_flight_filter: Option<InFlightFilter>,
}

impl Default for HealthChecksBuilder {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            version: None,
            require_mark_started: false,
            drain_delay: Duration::from_secs(5),
            max_in_flight: None,
            in_flight_filter: None,
        }
    }
}

impl fmt::Debug for HealthChecksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecksBuilder")
            .field(
                "checks",
                &self.checks.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .field("version", &self.version)
            .field("require_mark_started", &self.require_mark_started)
            .field("drain_delay", &self.drain_delay)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl HealthChecksBuilder {
    /// Registers a check with the default [`CheckOptions`].
    pub fn check(self, name: impl Into<String>, check: impl Check) -> Self {
        self.check_with(name, check, CheckOptions::new())
    }

    /// Registers a check with its own options.
    pub fn check_with(
        mut self,
        name: impl Into<String>,
        check: impl Check,
        options: CheckOptions,
    ) -> Self {
        self.checks.push(Registration::new(name, check, options));
        self
    }

    /// The application's version, shown as `version` in detailed JSON and
    /// `releaseId` in health+json.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Startup also waits for [`HealthHandle::mark_started`], for
    /// initialisation that is not a check (cache warm-up, migrations).
    pub fn require_mark_started(mut self) -> Self {
        self.require_mark_started = true;
        self
    }

    /// How long [`HealthHandle::graceful_shutdown`] keeps serving after
    /// readiness flips to draining, so load balancers notice. Default 5 s.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// Readiness reports 503 `busy` while this many passed-through requests
    /// (see [`count_in_flight_if`](Self::count_in_flight_if)) are in flight.
    ///
    /// A request counts from the moment it enters the layer (including
    /// while it waits for the inner service to be ready) until its
    /// response body is finished or dropped. A limit of 0 is treated as 1.
    /// Every layer of these checks a request passes through counts it:
    /// put one in front of the service (`wrap_axum` around a router that
    /// also has `.layer(health.layer())` counts each request twice).
    ///
    /// `busy` is judged at the instant of each probe, without the damping
    /// checks get: a probe that lands on a short burst fails. With a limit,
    /// give the readiness probe a `failureThreshold` of 2 or more, so a
    /// burst does not take the pod out of its Service (and push its load
    /// onto the others) for a whole probe period.
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = Some(limit.max(1));
        self
    }

    /// Counts only the requests the predicate selects toward
    /// [`max_in_flight`](Self::max_in_flight) (for example only
    /// `/transcribe` streams). Without `max_in_flight` nothing is counted,
    /// and [`build`](Self::build) logs a warning.
    pub fn count_in_flight_if<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.in_flight_filter = Some(Arc::new(predicate));
        self
    }

    /// Starts the background refresher and returns its handle.
    ///
    /// One refresher task is spawned, on the current Tokio runtime; however
    /// many layers are made, there is no other. It runs each check run as a
    /// short-lived child task, so a hung or panicking check is contained. It
    /// stops, aborting runs in flight, when [`HealthHandle::shutdown`] is
    /// called or when every handle, layer and service made from it is
    /// dropped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] or [`Error::DuplicateName`] for a bad check
    /// name, [`Error::NoRuntime`] outside a Tokio runtime,
    /// [`Error::NoTimer`] in one built without timers.
    pub fn build(self) -> Result<HealthHandle, Error> {
        if self.in_flight_filter.is_some() && self.max_in_flight.is_none() {
            tracing::warn!(
                "tower-health: count_in_flight_if has no effect without max_in_flight; nothing \
                 is counted"
            );
        }
        let owner = runner::start(self)?;
        Ok(HealthHandle {
            owner: Arc::new(owner),
        })
    }
}

/// Controls a running set of checks. Cheap to clone.
///
/// Dropping every handle, layer and service made from one builder stops the
/// refresher; [`shutdown`](Self::shutdown) stops it at once.
///
/// A check must not own a `HealthHandle` (or a layer): the refresher owns its
/// checks, so that would keep the refresher alive after the application
/// dropped everything else. Call [`shutdown`](Self::shutdown) explicitly if
/// you need that.
#[derive(Clone)]
pub struct HealthHandle {
    pub(crate) owner: Arc<Owner>,
}

impl fmt::Debug for HealthHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthHandle").finish_non_exhaustive()
    }
}

impl HealthHandle {
    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// A layer with the default paths, answering from these checks.
    ///
    /// Call it as often as needed (axum calls `Layer::layer` once per
    /// route): every layer reads the same snapshot, no task is started.
    ///
    /// The first call in a process also chooses and calibrates the clock
    /// that times responses for `x-process-time-ms` (the CPU's counter where
    /// the cores' counters agree: about half a millisecond of calibration,
    /// at most 200 ms), so that no request pays for it.
    pub fn layer(&self) -> HealthLayer {
        HealthLayer::new(self.owner.clone())
    }

    /// Adds a check while running. Probes show it (as pending) at once.
    ///
    /// Startup passes once, and for good: at [`build`] already if no check
    /// was registered by then and no mark is required. A check added after
    /// that does not hold `/startupz` back, even one in
    /// [`Probes::STARTUP`] (a warning says so). Register the checks startup
    /// must wait for with the builder, or use
    /// [`require_mark_started`](HealthChecksBuilder::require_mark_started)
    /// and [`mark_started`](Self::mark_started) once they have passed.
    ///
    /// [`build`]: HealthChecksBuilder::build
    ///
    /// # Errors
    ///
    /// A bad or taken name, or [`Error::ShutDown`].
    pub fn add_check(
        &self,
        name: impl Into<String>,
        check: impl Check,
        options: CheckOptions,
    ) -> Result<(), Error> {
        self.shared()
            .add_check(Registration::new(name, check, options))
    }

    /// Removes a check while running. Returns whether it existed.
    pub fn remove_check(&self, name: &str) -> bool {
        self.shared().remove_check(name)
    }

    /// Asks for the check `name` to run again soon, because the application
    /// has seen a sign that its answer changed: a query failed with a
    /// connection error, an upstream started answering 503. The first
    /// failed run then ends a [`recheck_spacing`](CheckOptions::recheck_spacing)
    /// (default 1 s) and a run's time after the sign at most (plus the rest
    /// of a run in flight, if any), instead of up to an
    /// [`interval`](CheckOptions::interval) later, and readiness fails with
    /// it unless a failure threshold or grace holds it; a healthy
    /// dependency is still checked once an interval.
    ///
    /// The check is never run in the call: the refresher runs it, at once
    /// if its last run ended at least a spacing ago, otherwise when that
    /// much time has passed. Further asks before that run change nothing,
    /// so calling this on every failed request is safe: the dependency sees
    /// at most one check per spacing, never a storm. A run in flight when
    /// asked may have started before the failure, so the next run comes a
    /// spacing after it ends, if it leaves the check passing. The call
    /// takes a lock and looks the name up; it never waits for a run.
    ///
    /// Asks bring a run forward only while the check is passing, with a
    /// passing last run: it is how a new failure is noticed sooner. Once a
    /// run has failed, the check's own schedule stands, so asks neither
    /// undo a [`failing_interval`](CheckOptions::failing_interval) that
    /// backs off a dependency that is down nor hurry a
    /// [`failure_threshold`](CheckOptions::failure_threshold) or
    /// [`failure_grace`](CheckOptions::failure_grace) towards failing.
    ///
    /// Returns whether a check of that name is registered (a heartbeat's
    /// name is not a check's) and the checker still runs: `true` even when
    /// the ask changes nothing (the check is failing, has not started its
    /// first run, or runs sooner anyway). A name that is not a check's is logged
    /// at `debug`. A check removed and added again starts over, with its
    /// first run at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_health::{CheckOptions, CheckResult, HealthChecks};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_health::Error> {
    /// let health = HealthChecks::builder()
    ///     .check_with(
    ///         "ledger",
    ///         || async { CheckResult::healthy() }, // ask the ledger service
    ///         CheckOptions::new().interval(Duration::from_secs(30)),
    ///     )
    ///     .build()?;
    ///
    /// // In a handler, after a call to the ledger service failed:
    /// health.recheck("ledger");
    /// # Ok(())
    /// # }
    /// ```
    pub fn recheck(&self, name: &str) -> bool {
        self.shared().recheck(name)
    }

    /// Marks initialisation done (see
    /// [`HealthChecksBuilder::require_mark_started`]). Startup latches:
    /// once started, `/startupz` never fails again.
    pub fn mark_started(&self) {
        self.shared().mark_started();
    }

    /// Flips readiness (and `/health`) to 503 `{"status":"draining"}` at
    /// once. Liveness stays as it was, but for heartbeats: one whose
    /// handle was dropped already, or is dropped from now on, is removed
    /// as if retired (a component stopping with the process), and HTTP/1
    /// responses to requests received from now on
    /// carry `Connection: close` (see
    /// [`HealthLayer::without_connection_close`](crate::HealthLayer::without_connection_close)).
    /// There is no way back: draining is the start of shutdown.
    pub fn drain(&self) {
        self.shared().drain();
    }

    /// Whether [`drain`](Self::drain) was called.
    pub fn is_draining(&self) -> bool {
        self.shared().snapshot.load().draining
    }

    /// Takes this instance out of rotation until
    /// [`return_to_rotation`](Self::return_to_rotation): readiness and
    /// `/health` answer 503 `{"status":"draining","reason":"taken out of
    /// rotation"}` at once, while liveness, startup and every other route
    /// answer as before. For maintenance or debugging without a restart:
    /// load balancers stop sending new traffic, the process keeps running.
    /// (Envoy's `/healthcheck/fail` does the same.) As while draining,
    /// HTTP/1 responses ask their clients to close the connection, so that
    /// kept-alive connections move too (see
    /// [`HealthLayer::without_connection_close`](crate::HealthLayer::without_connection_close)).
    ///
    /// A [`drain`](Self::drain) (shutdown) takes precedence and is not
    /// undone by returning to rotation; a lost refresher shows as such.
    /// [`subscribe`](Self::subscribe)'s [`Overview`] shows either as
    /// [`ProbeStatus::Draining`]: [`is_draining`](Self::is_draining) and
    /// [`is_out_of_rotation`](Self::is_out_of_rotation) tell them apart.
    /// The status code is the `Draining` one (503 unless
    /// [`HealthLayer::status_code`](crate::HealthLayer::status_code)
    /// changes it). Wire these to an endpoint only
    /// behind your own authentication: the layer adds none.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_health::{HealthChecks, ProbeStatus};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_health::Error> {
    /// let health = HealthChecks::builder().build()?;
    /// health.take_out_of_rotation();
    /// assert_eq!(health.subscribe().borrow().readiness, ProbeStatus::Draining);
    /// health.return_to_rotation();
    /// assert_eq!(health.subscribe().borrow().readiness, ProbeStatus::Healthy);
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_out_of_rotation(&self) {
        self.shared().set_out_of_rotation(true);
    }

    /// Returns this instance to rotation after
    /// [`take_out_of_rotation`](Self::take_out_of_rotation): readiness and
    /// `/health` are judged by the checks again (unless draining).
    pub fn return_to_rotation(&self) {
        self.shared().set_out_of_rotation(false);
    }

    /// Whether the instance is out of rotation
    /// ([`take_out_of_rotation`](Self::take_out_of_rotation) without a
    /// [`return_to_rotation`](Self::return_to_rotation) since).
    pub fn is_out_of_rotation(&self) -> bool {
        self.shared().snapshot.load().out_of_rotation
    }

    /// A future for `with_graceful_shutdown`: waits for `signal`, drains
    /// (readiness 503 at once, everything else still served), waits the
    /// drain delay so load balancers stop sending traffic, then resolves
    /// so the server stops accepting and finishes in-flight requests.
    /// While it drains, HTTP/1 responses through the layer ask their
    /// clients to close the connection (see
    /// [`HealthLayer::without_connection_close`](crate::HealthLayer::without_connection_close)).
    ///
    /// `signal` is any future: [`shutdown_signal`](crate::shutdown_signal)
    /// (feature `signal`) waits for SIGTERM, which Kubernetes and Docker
    /// stop a process with, or Ctrl-C; `tokio::signal::ctrl_c()` alone
    /// waits for Ctrl-C only, and a server waiting for it never drains
    /// under an orchestrator.
    ///
    /// ```no_run
    /// # use tower_health::HealthChecks;
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let health = HealthChecks::builder().build()?;
    /// let app = axum::Router::new().layer(health.layer());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// axum::serve(listener, app)
    ///     .with_graceful_shutdown(health.graceful_shutdown(tower_health::shutdown_signal()))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn graceful_shutdown<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future + Send + 'static,
    {
        let handle = self.clone();
        async move {
            signal.await;
            let delay = handle.shared().drain_delay;
            tracing::info!(
                drain_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "shutdown signal received: readiness now reports draining"
            );
            handle.drain();
            tokio::time::sleep(delay).await;
        }
    }

    /// A heartbeat for an internal component (a worker loop, a consumer):
    /// it must call [`Heartbeat::beat`] at least once per `deadline`, or
    /// liveness fails naming it (a deadline under 1 ms is raised to 1 ms,
    /// one over 100 years lowered to 100 years). The component shows in
    /// `/livez` and `/health` under `name`. The name of a heartbeat whose
    /// handle was dropped (see [`heartbeat`](crate::heartbeat)) can be taken
    /// again, so a supervisor can restart the component under the same
    /// name. [`heartbeat_with`](Self::heartbeat_with) lets it fail
    /// readiness instead.
    ///
    /// # Errors
    ///
    /// A bad or taken name, or [`Error::ShutDown`].
    pub fn heartbeat(
        &self,
        name: impl Into<String>,
        deadline: Duration,
    ) -> Result<Heartbeat, Error> {
        self.heartbeat_with(name, deadline, HeartbeatOptions::new())
    }

    /// A [`heartbeat`](Self::heartbeat) judged as `options` say: which
    /// probes a missed deadline fails, and whether it fails them or makes
    /// them degraded (see [`HeartbeatOptions`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_health::{HealthChecks, HeartbeatOptions, Probes};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_health::Error> {
    /// let health = HealthChecks::builder().build()?;
    /// // A stalled price feed takes the instance out of rotation; a
    /// // restart would not bring the prices back.
    /// let prices = health.heartbeat_with(
    ///     "price-feed",
    ///     Duration::from_secs(30),
    ///     HeartbeatOptions::new().probes(Probes::READINESS),
    /// )?;
    /// tokio::spawn(async move {
    ///     loop {
    ///         // refresh the prices, then:
    ///         prices.beat();
    ///         tokio::time::sleep(Duration::from_secs(10)).await;
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A bad or taken name, or [`Error::ShutDown`].
    pub fn heartbeat_with(
        &self,
        name: impl Into<String>,
        deadline: Duration,
        options: HeartbeatOptions,
    ) -> Result<Heartbeat, Error> {
        Shared::heartbeat(self.shared(), name.into(), deadline, &options)
    }

    /// A receiver of the probes' statuses, updated whenever a check
    /// result, the set of checks, startup, draining or rotation, a
    /// heartbeat or a result turning stale changes what a probe would
    /// answer (the in-flight limit is per request and not included).
    ///
    /// After [`shutdown`](Self::shutdown) no check runs. The overview still
    /// follows draining, rotation, startup marks and heartbeats that beat,
    /// recover or are dropped, but a result turning stale or a heartbeat
    /// missing its deadline shows in it only while the gRPC service or the
    /// metrics task (features `tonic-health`, `metrics`) runs; probes judge
    /// both themselves either way.
    ///
    /// As with any `watch` receiver, do not hold `borrow()` while calling
    /// into this handle or a heartbeat on the same thread.
    pub fn subscribe(&self) -> watch::Receiver<Overview> {
        self.shared().overview.subscribe()
    }

    /// Stops the refresher now. Probes keep answering from the last
    /// snapshot until results age past their `max_age`, then report them
    /// stale; adding checks fails with [`Error::ShutDown`].
    pub fn shutdown(&self) {
        self.shared().stop();
    }
}

/// What each probe would answer, for [`HealthHandle::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Overview {
    /// `/health`.
    pub health: ProbeStatus,
    /// `/livez`.
    pub liveness: ProbeStatus,
    /// `/readyz` (not counting in-flight load).
    pub readiness: ProbeStatus,
    /// `/startupz`.
    pub startup: ProbeStatus,
    /// Each component's status by name; `None` before its first result.
    pub components: Vec<(Arc<str>, Option<Status>)>,
}
