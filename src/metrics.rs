//! Metrics about the checks and probes, through the [`metrics`] facade
//! (feature `metrics`).
//!
//! With the feature on, the checks report to whatever recorder the
//! application installs (`metrics-exporter-prometheus`, an OpenTelemetry
//! bridge, ...); with no recorder installed the calls do nothing. Nothing
//! here is on the request path: run metrics are recorded by the refresher
//! as each run finishes, statuses by a task of their own.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | [`health_check_runs_total`](CHECK_RUNS) | counter | `check`, `outcome` | finished runs; `outcome` is `healthy`, `degraded`, `unhealthy` (reported), `timeout` or `panic` |
//! | [`health_check_duration_seconds`](CHECK_DURATION) | histogram | `check` | how long each run took (a run cut at its timeout counts the timeout) |
//! | [`health_check_last_run_timestamp_seconds`](CHECK_LAST_RUN) | gauge | `check` | Unix time the last run finished |
//! | [`health_check_observation`](CHECK_OBSERVATION) | gauge | `check`, `measurement` | the value each run observed ([`Observation`](crate::Observation)s: pool sizes, free space, ...), in the observation's unit; numbers, and booleans as 1 or 0. A measurement the check reported before is NaN (unknown) after a run that reports no number for it (a failed run usually reports none), so an old value never stands for the current one. Each measurement is a series: name them from a fixed set |
//! | [`health_component_status`](COMPONENT_STATUS) | gauge | `component`, `status` | 1 for each check's and heartbeat's current status (`healthy`, `degraded`, `unhealthy`, `pending`), 0 for the others |
//! | [`health_probe_status`](PROBE_STATUS) | gauge | `probe`, `status` | 1 for each probe's (`health`, `liveness`, `readiness`, `startup`) current status (`healthy`, `degraded`, `unhealthy`, `starting`, `draining`), 0 for the others |
//!
//! The statuses are what the probes would answer, after flap damping and
//! with staleness judged as time passes, even when the refresher is held
//! up; the in-flight limit, which is per request, is left out. They are set
//! on every change and again after every check run, so a recorder
//! installed after the checks were built has them from the next run of any
//! check. A removed check or retired heartbeat keeps its status series at
//! 0, and every status series turns 0 once the checks are gone (every
//! handle and layer dropped, or the runtime they ran on shut down).
//!
//! A refresher that hangs stops the runs, and its results turn stale:
//! readiness and the status series show that. One that is gone without a
//! shutdown (it panicked) fails liveness and readiness at once, and the
//! probe series show that too; if it went with its runtime, so did this
//! task, and every status series is 0. To alert on it directly, compare
//! the last run's age with the check's interval plus timeout (the longer
//! interval, with a
//! [`failing_interval`](crate::CheckOptions::failing_interval), and at its
//! longest with [`jitter_percent`](crate::CheckOptions::jitter_percent)), e.g. in
//! Prometheus `time() - health_check_last_run_timestamp_seconds > 30` for
//! checks every 5 s with a 2 s timeout. A removed check's timestamp is set
//! to NaN, which no comparison matches, so such an alert stays quiet for
//! it; so are its observations.
//!
//! Observations, which HTTP answers show only to requests allowed details
//! (see [`details`](crate::details)), are recorded here for every check:
//! the recorder is the operator's, not the public's.
//!
//! The series carry no label that tells two [`HealthChecks`] apart: give
//! each recorder one set of checks (one per process, as a rule), or the
//! second overwrites the first's probe statuses.
//!
//! [`HealthChecks`]: crate::HealthChecks
//!
//! # Example
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use tower_health::{CheckResult, HealthChecks};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recorder = PrometheusBuilder::new().build_recorder();
//! let prometheus = recorder.handle();
//! // In an application: `metrics::set_global_recorder(recorder)?`, or
//! // `PrometheusBuilder::new().install()?` for its own scrape endpoint.
//! # let _guard = metrics::set_default_local_recorder(&recorder);
//! let health = HealthChecks::builder()
//!     .check("db", || async { CheckResult::healthy() })
//!     .build()?;
//! # tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//!
//! // What a scrape of `prometheus.render()` contains:
//! let text = prometheus.render();
//! assert!(text.contains(r#"health_probe_status{probe="readiness",status="healthy"} 1"#));
//! assert!(text.contains(r#"health_check_runs_total{check="db",outcome="healthy"} 1"#));
//! # drop(health);
//! # Ok(()) }
//! ```

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use tokio::sync::Notify;

use crate::{
    Overview, ProbeStatus, Status,
    follow::Follow,
    runner::Shared,
    snapshot::{Failure, Run},
};

/// Counter of finished runs, by `check` and `outcome`.
pub const CHECK_RUNS: &str = "health_check_runs_total";
/// Histogram of run durations in seconds, by `check`.
pub const CHECK_DURATION: &str = "health_check_duration_seconds";
/// Gauge: Unix time in seconds at which the last run of `check` finished.
pub const CHECK_LAST_RUN: &str = "health_check_last_run_timestamp_seconds";
/// Gauge: the value a check last observed, by `check` and `measurement`.
pub const CHECK_OBSERVATION: &str = "health_check_observation";
/// Gauge, 1 or 0, by `component` (a check or heartbeat) and `status`.
pub const COMPONENT_STATUS: &str = "health_component_status";
/// Gauge, 1 or 0, by `probe` and `status`.
pub const PROBE_STATUS: &str = "health_probe_status";

const COMPONENT_STATUSES: [&str; 4] = ["healthy", "degraded", "unhealthy", "pending"];
const PROBE_STATUSES: [ProbeStatus; 5] = [
    ProbeStatus::Healthy,
    ProbeStatus::Degraded,
    ProbeStatus::Unhealthy,
    ProbeStatus::Starting,
    ProbeStatus::Draining,
];

/// Records a finished run. Called by the refresher without its lock held:
/// the recorder is the application's code.
pub(crate) fn ran(check: &Arc<str>, run: &Run, gauged: &[Arc<str>]) {
    let outcome = match run.failure {
        Some(Failure::TimedOut(_)) => "timeout",
        Some(Failure::Panicked) => "panic",
        Some(Failure::Reported) | None => run.status.as_str(),
    };
    counter!(CHECK_RUNS, "check" => check.clone(), "outcome" => outcome).increment(1);
    histogram!(CHECK_DURATION, "check" => check.clone()).record(run.duration.as_secs_f64());
    stamp(check, run, gauged);
}

/// Adds to `gauged`, a check's measurements on the observation gauge, the
/// ones `run` gives a number for. (Called under the runner's lock, before
/// [`ran`]: no recorder call.)
pub(crate) fn track(gauged: &mut Vec<Arc<str>>, run: &Run) {
    for (measurement, value) in last_values(run) {
        if value.is_some() && gauged.iter().all(|g| **g != *measurement) {
            gauged.push(Arc::from(measurement));
        }
    }
}

/// Sets a check's last run time and observations to `run`'s: each of
/// `gauged` to the number `run` last reported for it, or NaN (unknown) if
/// it reported none, or something that is not a number, so that a value
/// from an earlier run does not stand for the current one.
pub(crate) fn stamp(check: &Arc<str>, run: &Run, gauged: &[Arc<str>]) {
    let finished = run
        .at_wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    gauge!(CHECK_LAST_RUN, "check" => check.clone()).set(finished.as_secs_f64());
    let values = last_values(run);
    for measurement in gauged {
        let value = values
            .iter()
            .find(|(m, _)| **m == **measurement)
            .and_then(|(_, value)| *value);
        observed(check, measurement).set(value.unwrap_or(f64::NAN));
    }
}

/// Marks a removed check's last run and observations as unknown (NaN), so
/// an alert on them does not fire for a check that no longer runs.
pub(crate) fn removed(check: &Arc<str>, gauged: &[Arc<str>]) {
    gauge!(CHECK_LAST_RUN, "check" => check.clone()).set(f64::NAN);
    for measurement in gauged {
        observed(check, measurement).set(f64::NAN);
    }
}

/// Each measurement of `run` with the value it was last given (as the
/// detailed JSON shows it), as a gauge's: `None` if not a number.
fn last_values(run: &Run) -> Vec<(&str, Option<f64>)> {
    let mut values: Vec<(&str, Option<f64>)> = Vec::with_capacity(run.observations.len());
    for observation in &run.observations {
        let value = number(observation.value());
        match values
            .iter_mut()
            .find(|(m, _)| *m == observation.measurement())
        {
            Some(slot) => slot.1 = value,
            None => values.push((observation.measurement(), value)),
        }
    }
    values
}

fn observed(check: &Arc<str>, measurement: &str) -> ::metrics::Gauge {
    gauge!(
        CHECK_OBSERVATION,
        "check" => check.clone(),
        "measurement" => measurement.to_owned()
    )
}

/// An observed value as a gauge's: numbers, and booleans as 1 or 0.
fn number(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
        value => value.as_f64().filter(|v| v.is_finite()),
    }
}

/// Spawns the task that keeps the status gauges in step, woken by the
/// refresher after every run (`Shared::ran`).
pub(crate) fn follow(shared: &Arc<Shared>) {
    let mut statuses = Statuses {
        follow: Follow::new(shared),
        ran: shared.ran.clone(),
        shown: Vec::new(),
    };
    tokio::spawn(async move { statuses.run().await });
}

struct Statuses {
    follow: Follow,
    ran: Arc<Notify>,
    /// The components whose series were set last time.
    shown: Vec<Arc<str>>,
}

impl Statuses {
    async fn run(&mut self) {
        let mut told = false;
        while let Some(overview) = self.follow.judge() {
            // The recorder is the application's code: a panic in it must not
            // end the task and leave every status as it was set last.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.set(&overview))) {
                if !std::mem::replace(&mut told, true) {
                    tracing::error!(
                        "health: the metrics recorder panicked setting the statuses; \
                         they are set again at the next change"
                    );
                }
                crate::runner::drop_quietly(payload);
            }
            tokio::select! {
                more = self.follow.changed() => if !more { break },
                () = self.ran.notified() => {}
            }
        }
        // The checks are gone: `drop` clears the statuses.
    }

    fn set(&mut self, overview: &Overview) {
        describe();
        for (probe, status) in PROBES.into_iter().zip([
            overview.health,
            overview.liveness,
            overview.readiness,
            overview.startup,
        ]) {
            set_probe(probe, Some(status));
        }
        // `shown` holds every component that may have a series set, until
        // it is cleared: a name leaves it only once cleared, and joins it
        // before it is set, so a recorder's panic half-way loses none.
        for (name, _) in &overview.components {
            if !self.shown.contains(name) {
                self.shown.push(name.clone());
            }
        }
        let mut i = 0;
        while i < self.shown.len() {
            if overview.components.iter().all(|(c, _)| *c != self.shown[i]) {
                set_component(&self.shown[i], None);
                self.shown.swap_remove(i);
            } else {
                i += 1;
            }
        }
        for (name, status) in &overview.components {
            let status = status.map_or("pending", Status::as_str);
            set_component(name, Some(status));
        }
    }
}

/// However the task ends (the checks gone, or its runtime shut down with
/// the handles still held), no status it set is current any more.
impl Drop for Statuses {
    fn drop(&mut self) {
        // A panic in the recorder is already unwinding: do not call it again.
        if std::thread::panicking() {
            return;
        }
        for probe in PROBES {
            set_probe(probe, None);
        }
        for name in std::mem::take(&mut self.shown) {
            set_component(&name, None);
        }
    }
}

const PROBES: [&str; 4] = ["health", "liveness", "readiness", "startup"];

/// Sets `probe`'s series: 1 for `current`, 0 for the others.
fn set_probe(probe: &'static str, current: Option<ProbeStatus>) {
    for status in PROBE_STATUSES {
        let value = if current == Some(status) { 1.0 } else { 0.0 };
        gauge!(PROBE_STATUS, "probe" => probe, "status" => status.as_str()).set(value);
    }
}

/// Sets `component`'s series: 1 for `current`, 0 for the others.
fn set_component(component: &Arc<str>, current: Option<&str>) {
    for status in COMPONENT_STATUSES {
        let value = if current == Some(status) { 1.0 } else { 0.0 };
        gauge!(COMPONENT_STATUS, "component" => component.clone(), "status" => status).set(value);
    }
}

fn describe() {
    describe_counter!(CHECK_RUNS, "Finished health check runs, by outcome");
    describe_histogram!(CHECK_DURATION, Unit::Seconds, "Health check run durations");
    describe_gauge!(
        CHECK_LAST_RUN,
        Unit::Seconds,
        "Unix time at which the health check's last run finished"
    );
    describe_gauge!(
        CHECK_OBSERVATION,
        "The value the health check last observed (pool sizes, free space, ...), in the \
         observation's unit; booleans as 1 or 0"
    );
    describe_gauge!(
        COMPONENT_STATUS,
        "1 for the health check's or heartbeat's current status, 0 for the others"
    );
    describe_gauge!(
        PROBE_STATUS,
        "1 for the probe's current status, 0 for the others"
    );
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, Ordering},
        time::Duration,
    };

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

    use super::*;
    use crate::{
        CheckOptions, CheckResult, HealthChecks,
        test_util::{advance, aging, settle, slow_switch},
    };

    /// The value of the series `name{labels}` in a Prometheus scrape.
    fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
    }

    /// The status series of `probe` that are 1.
    fn probe(scrape: &PrometheusHandle, probe: &str) -> Vec<&'static str> {
        let text = scrape.render();
        PROBE_STATUSES
            .iter()
            .map(|s| s.as_str())
            .filter(|s| {
                let labels = format!(r#"probe="{probe}",status="{s}""#);
                value(&text, PROBE_STATUS, &labels).expect(&labels) == 1.0
            })
            .collect()
    }

    /// The status series of `component` that are 1.
    fn component(scrape: &PrometheusHandle, component: &str) -> Vec<&'static str> {
        let text = scrape.render();
        COMPONENT_STATUSES
            .into_iter()
            .filter(|s| {
                let labels = format!(r#"component="{component}",status="{s}""#);
                value(&text, COMPONENT_STATUS, &labels).expect(&labels) == 1.0
            })
            .collect()
    }

    fn runs(scrape: &PrometheusHandle, check: &str, outcome: &str) -> f64 {
        let labels = format!(r#"check="{check}",outcome="{outcome}""#);
        value(&scrape.render(), CHECK_RUNS, &labels).unwrap_or(0.0)
    }

    #[tokio::test(start_paused = true)]
    async fn runs_and_statuses_are_recorded() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);

        let up = Arc::new(AtomicBool::new(true));
        let every = |secs| CheckOptions::new().interval(Duration::from_secs(secs));
        let health = HealthChecks::builder()
            .check_with("db", slow_switch(&up, Duration::from_millis(250)), every(5))
            .check_with(
                "hangs",
                std::future::pending::<CheckResult>,
                every(5).timeout(Duration::from_secs(1)).critical(false),
            )
            .check_with("slow", || async { CheckResult::degraded("slow") }, every(5))
            .check_with(
                "panics",
                || async {
                    if true {
                        panic!("boom");
                    }
                    CheckResult::healthy()
                },
                every(5).critical(false),
            )
            .build()
            .unwrap();
        let _worker = health.heartbeat("worker", Duration::from_secs(60)).unwrap();

        settle().await;
        assert_eq!(component(&scrape, "db"), ["pending"]);
        assert_eq!(component(&scrape, "worker"), ["healthy"]);
        assert_eq!(probe(&scrape, "readiness"), ["starting"]);
        assert_eq!(probe(&scrape, "liveness"), ["healthy"]);

        advance(Duration::from_millis(1100)).await;
        assert_eq!(component(&scrape, "db"), ["healthy"]);
        assert_eq!(component(&scrape, "hangs"), ["unhealthy"]);
        assert_eq!(probe(&scrape, "readiness"), ["degraded"]);
        assert_eq!(runs(&scrape, "db", "healthy"), 1.0);
        assert_eq!(runs(&scrape, "hangs", "timeout"), 1.0);
        assert_eq!(runs(&scrape, "panics", "panic"), 1.0);
        assert_eq!(runs(&scrape, "slow", "degraded"), 1.0);
        assert_eq!(component(&scrape, "slow"), ["degraded"]);
        let text = scrape.render();
        // Paused, the clock moves only when told: the run took its 250 ms
        // exactly, and the cut one its 1 s timeout.
        assert_eq!(
            value(&text, CHECK_DURATION, r#"check="db",quantile="1""#),
            Some(0.25)
        );
        assert_eq!(
            value(
                &text,
                &format!("{CHECK_DURATION}_count"),
                r#"check="hangs""#
            ),
            Some(1.0)
        );
        let last = value(&text, CHECK_LAST_RUN, r#"check="db""#).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - 60.0..=now).contains(&last), "{last} vs {now}");

        up.store(false, Ordering::SeqCst);
        advance(Duration::from_secs(5)).await;
        assert_eq!(runs(&scrape, "db", "unhealthy"), 1.0);
        assert_eq!(runs(&scrape, "db", "healthy"), 1.0);
        assert_eq!(component(&scrape, "db"), ["unhealthy"]);
        assert_eq!(probe(&scrape, "readiness"), ["unhealthy"]);
        assert_eq!(probe(&scrape, "liveness"), ["healthy"]);

        // Changes made outside a run show too.
        health.take_out_of_rotation();
        settle().await;
        assert_eq!(probe(&scrape, "readiness"), ["draining"]);
        assert_eq!(probe(&scrape, "liveness"), ["healthy"]);
        health.return_to_rotation();
        settle().await;
        assert_eq!(probe(&scrape, "readiness"), ["unhealthy"]);
        health.drain();
        settle().await;
        assert_eq!(probe(&scrape, "readiness"), ["draining"]);
        assert!(health.remove_check("db"));
        settle().await;
        assert_eq!(component(&scrape, "db"), [""; 0]);
        // No age for an alert to judge: it no longer runs.
        let last = value(&scrape.render(), CHECK_LAST_RUN, r#"check="db""#).unwrap();
        assert!(last.is_nan(), "{last}");

        // The checks are gone: no status is current.
        drop(_worker);
        drop(health);
        settle().await;
        for name in PROBES {
            assert_eq!(probe(&scrape, name), [""; 0], "{name}");
        }
        assert_eq!(component(&scrape, "hangs"), [""; 0]);
        assert_eq!(component(&scrape, "worker"), [""; 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn observations_are_gauges_of_the_last_run() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let health = HealthChecks::builder()
            .check_with(
                "pool",
                move || {
                    let up = flag.load(Ordering::SeqCst);
                    async move {
                        if up {
                            CheckResult::healthy()
                                .with_observation("connections", 3, None)
                                .with_observation("saturated", true, None)
                                .with_observation("mode", "primary", None)
                                .with_observation("lag", 1, None)
                                .with_observation("lag", 2, None)
                        } else {
                            // A failed run: no connections to count, a lag
                            // that is not a number any more.
                            CheckResult::unhealthy("down")
                                .with_observation("saturated", false, None)
                                .with_observation("lag", 2, None)
                                .with_observation("lag", f64::NAN, None)
                        }
                    }
                },
                CheckOptions::new().interval(Duration::from_secs(5)),
            )
            .build()
            .unwrap();
        settle().await;
        let observed = |measurement: &str| {
            let labels = format!(r#"check="pool",measurement="{measurement}""#);
            value(&scrape.render(), CHECK_OBSERVATION, &labels)
        };
        assert_eq!(observed("connections"), Some(3.0));
        assert_eq!(observed("saturated"), Some(1.0));
        assert_eq!(observed("mode"), None, "not a number");
        assert_eq!(observed("lag"), Some(2.0), "the last value given");

        // What the last run did not give a number for is unknown, not the
        // value an earlier run saw.
        up.store(false, Ordering::SeqCst);
        advance(Duration::from_secs(5)).await;
        assert!(observed("connections").unwrap().is_nan());
        assert_eq!(observed("saturated"), Some(0.0));
        assert!(observed("lag").unwrap().is_nan());

        up.store(true, Ordering::SeqCst);
        advance(Duration::from_secs(5)).await;
        assert_eq!(observed("connections"), Some(3.0));
        assert!(health.remove_check("pool"));
        for measurement in ["connections", "saturated", "lag"] {
            assert!(observed(measurement).unwrap().is_nan(), "{measurement}");
        }
        drop(health);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_show_as_components() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let health = HealthChecks::builder().build().unwrap();
        let worker = health.heartbeat("worker", Duration::from_secs(10)).unwrap();
        settle().await;
        assert_eq!(component(&scrape, "worker"), ["healthy"]);
        assert_eq!(probe(&scrape, "liveness"), ["healthy"]);

        // No beat: the deadline passes with no check run to set anything.
        advance(Duration::from_secs(11)).await;
        assert_eq!(component(&scrape, "worker"), ["unhealthy"]);
        assert_eq!(probe(&scrape, "liveness"), ["unhealthy"]);
        worker.beat();
        settle().await;
        assert_eq!(component(&scrape, "worker"), ["healthy"]);

        worker.retire();
        settle().await;
        assert_eq!(component(&scrape, "worker"), [""; 0]);
        assert_eq!(probe(&scrape, "liveness"), ["healthy"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_removed_while_its_run_is_recorded_has_no_last_run_time() {
        // The first run of `db` recorded removes it (`remove_check` from the
        // recorder, when `ran` has counted the run and not yet stamped its
        // time): the order a `remove_check` on another thread can take
        // between the refresher's unlock and `ran`.
        let handle = Arc::new(std::sync::OnceLock::<crate::HealthHandle>::new());
        let removed = Arc::new(AtomicBool::new(false));
        let (remover, flag) = (handle.clone(), removed.clone());
        let recorder = Hooked {
            on_counter: Box::new(move |key| {
                if key.name() == CHECK_RUNS
                    && key
                        .labels()
                        .any(|l| l.key() == "check" && l.value() == "db")
                    && let Some(handle) = remover.get()
                    && !flag.swap(true, Ordering::SeqCst)
                {
                    assert!(handle.remove_check("db"));
                }
            }),
            ..Hooked::default()
        };
        let scrape = recorder.inner.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let health = HealthChecks::builder()
            .check("db", || async {
                CheckResult::healthy().with_observation("rows", 7, None)
            })
            .check("cache", || async { CheckResult::healthy() })
            .build()
            .unwrap();
        handle.set(health.clone()).unwrap();
        settle().await;
        assert!(removed.load(Ordering::SeqCst), "a run was recorded");
        let text = scrape.render();
        let db = value(&text, CHECK_LAST_RUN, r#"check="db""#).unwrap();
        assert!(db.is_nan(), "removed, its last run is unknown: {db}");
        let rows = value(&text, CHECK_OBSERVATION, r#"check="db",measurement="rows""#).unwrap();
        assert!(rows.is_nan(), "and so is what it observed: {rows}");
        let cache = value(&text, CHECK_LAST_RUN, r#"check="cache""#).unwrap();
        assert!(cache > 0.0, "{cache}");
        drop(health);
    }

    /// Prometheus, with `on_counter` and `on_gauge` called as each counter
    /// or gauge is registered (that is, before each value is set).
    struct Hooked {
        inner: metrics_exporter_prometheus::PrometheusRecorder,
        on_counter: Hook,
        on_gauge: Hook,
    }

    type Hook = Box<dyn Fn(&::metrics::Key) + Send + Sync>;

    impl Default for Hooked {
        fn default() -> Self {
            Self {
                inner: PrometheusBuilder::new().build_recorder(),
                on_counter: Box::new(|_| {}),
                on_gauge: Box::new(|_| {}),
            }
        }
    }

    impl ::metrics::Recorder for Hooked {
        fn describe_counter(
            &self,
            key: ::metrics::KeyName,
            unit: Option<Unit>,
            description: ::metrics::SharedString,
        ) {
            self.inner.describe_counter(key, unit, description);
        }
        fn describe_gauge(
            &self,
            key: ::metrics::KeyName,
            unit: Option<Unit>,
            description: ::metrics::SharedString,
        ) {
            self.inner.describe_gauge(key, unit, description);
        }
        fn describe_histogram(
            &self,
            key: ::metrics::KeyName,
            unit: Option<Unit>,
            description: ::metrics::SharedString,
        ) {
            self.inner.describe_histogram(key, unit, description);
        }
        fn register_counter(
            &self,
            key: &::metrics::Key,
            metadata: &::metrics::Metadata<'_>,
        ) -> ::metrics::Counter {
            (self.on_counter)(key);
            self.inner.register_counter(key, metadata)
        }
        fn register_gauge(
            &self,
            key: &::metrics::Key,
            metadata: &::metrics::Metadata<'_>,
        ) -> ::metrics::Gauge {
            (self.on_gauge)(key);
            self.inner.register_gauge(key, metadata)
        }
        fn register_histogram(
            &self,
            key: &::metrics::Key,
            metadata: &::metrics::Metadata<'_>,
        ) -> ::metrics::Histogram {
            self.inner.register_histogram(key, metadata)
        }
    }

    std::thread_local! {
        /// Set on the thread whose next last-run gauge `Hooked` holds back.
        static HOLD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// The order a `remove_check` on one thread and an `add_check` of the
    /// same name on another can take: the check added again has its first
    /// run recorded before the removal marks the name's last run unknown.
    #[tokio::test(start_paused = true)]
    async fn a_check_added_again_during_its_removal_keeps_its_last_run_time() {
        let (held_tx, held) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = std::sync::Mutex::new(go_rx);
        let recorder = Arc::new(Hooked {
            on_gauge: Box::new(move |key| {
                if key.name() == CHECK_LAST_RUN && HOLD.with(|hold| hold.replace(false)) {
                    held_tx.send(()).unwrap();
                    let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(60));
                }
            }),
            ..Hooked::default()
        });
        let scrape = recorder.inner.handle();
        let _local = ::metrics::set_default_local_recorder(&*recorder);
        // The first `db` observes `rows` too: its removal marks `rows` unknown.
        let health = HealthChecks::builder()
            .check("db", || async {
                CheckResult::healthy().with_observation("rows", 5, None)
            })
            .build()
            .unwrap();
        settle().await;
        let remover = {
            let (health, recorder) = (health.clone(), recorder.clone());
            std::thread::spawn(move || {
                let _local = ::metrics::set_default_local_recorder(&*recorder);
                HOLD.with(|hold| hold.set(true));
                assert!(health.remove_check("db"));
            })
        };
        // `db` is removed, and its last run is about to be marked unknown.
        held.recv_timeout(Duration::from_secs(60)).unwrap();
        let observing = || async { CheckResult::healthy().with_observation("rows", 7, None) };
        health
            .add_check("db", observing, CheckOptions::new())
            .unwrap();
        settle().await;
        let last_run = || value(&scrape.render(), CHECK_LAST_RUN, r#"check="db""#).unwrap();
        let rows = || {
            value(
                &scrape.render(),
                CHECK_OBSERVATION,
                r#"check="db",measurement="rows""#,
            )
            .unwrap()
        };
        let first = last_run();
        assert!(first > 0.0, "{first}");
        assert_eq!(rows(), 7.0);
        go.send(()).unwrap();
        remover.join().unwrap();
        assert_eq!(last_run(), first, "the check added again has run");
        assert_eq!(rows(), 7.0, "and observed");
        drop(health);
    }

    /// The statuses task outlives a recorder that panicked once.
    #[tokio::test(start_paused = true)]
    async fn the_statuses_survive_a_recorder_that_panicked() {
        let panicked = Arc::new(AtomicBool::new(false));
        let once = panicked.clone();
        let recorder = Hooked {
            on_gauge: Box::new(move |key| {
                if key.name() == PROBE_STATUS && !once.swap(true, Ordering::SeqCst) {
                    panic!("recorder bug");
                }
            }),
            ..Hooked::default()
        };
        let scrape = recorder.inner.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::healthy() })
            .build()
            .unwrap();
        settle().await;
        assert!(panicked.load(Ordering::SeqCst));
        health.take_out_of_rotation();
        settle().await;
        assert_eq!(probe(&scrape, "readiness"), ["draining"]);
        assert_eq!(component(&scrape, "db"), ["healthy"]);
        drop(health);
    }

    /// A panic half-way through setting the components loses track of
    /// none: one removed later is still cleared.
    #[tokio::test(start_paused = true)]
    async fn a_component_set_before_a_recorder_panic_is_cleared_when_removed() {
        let armed = Arc::new(AtomicBool::new(false));
        let trigger = armed.clone();
        let recorder = Hooked {
            on_gauge: Box::new(move |key| {
                if key.name() == COMPONENT_STATUS && trigger.swap(false, Ordering::SeqCst) {
                    panic!("recorder bug");
                }
            }),
            ..Hooked::default()
        };
        let scrape = recorder.inner.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let healthy = || async { CheckResult::healthy() };
        let health = HealthChecks::builder()
            .check("a", healthy)
            .check("b", healthy)
            .build()
            .unwrap();
        settle().await;
        assert_eq!(component(&scrape, "b"), ["healthy"]);
        armed.store(true, Ordering::SeqCst);
        health.take_out_of_rotation();
        settle().await;
        assert!(!armed.load(Ordering::SeqCst), "the recorder panicked");
        assert!(health.remove_check("b"));
        settle().await;
        assert_eq!(component(&scrape, "b"), [""; 0]);
        assert_eq!(component(&scrape, "a"), ["healthy"]);
        drop(health);
    }

    /// A recorder with a bug: it panics whenever a metric is registered.
    struct Panics;

    impl ::metrics::Recorder for Panics {
        fn describe_counter(
            &self,
            _: ::metrics::KeyName,
            _: Option<Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: ::metrics::KeyName,
            _: Option<Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: ::metrics::KeyName,
            _: Option<Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Counter {
            panic!("recorder bug")
        }
        fn register_gauge(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Gauge {
            panic!("recorder bug")
        }
        fn register_histogram(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Histogram {
            panic!("recorder bug")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_recorder_does_not_stop_the_checks() {
        let _local = ::metrics::set_default_local_recorder(&Panics);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        let health = HealthChecks::builder()
            .check_with(
                "db",
                move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { CheckResult::healthy() }
                },
                CheckOptions::new().interval(Duration::from_secs(5)),
            )
            .build()
            .unwrap();
        advance(Duration::from_secs(11)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        // Nor does it escape `remove_check`, whose removal is done.
        assert!(health.remove_check("db"));
        assert!(!health.remove_check("db"));
        drop(health);
    }

    #[test]
    fn statuses_are_cleared_when_the_runtime_shuts_down_under_the_handles() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let health = runtime.block_on(async {
            let health = HealthChecks::builder()
                .check("db", || async { CheckResult::healthy() })
                .build()
                .unwrap();
            settle().await;
            health
        });
        assert_eq!(probe(&scrape, "readiness"), ["healthy"]);
        assert_eq!(component(&scrape, "db"), ["healthy"]);

        // The handle lives on, but nothing keeps the statuses current.
        drop(runtime);
        assert_eq!(probe(&scrape, "readiness"), [""; 0]);
        assert_eq!(component(&scrape, "db"), [""; 0]);
        drop(health);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorder_installed_late_has_the_statuses_after_the_next_run() {
        let health = HealthChecks::builder()
            .check_with(
                "db",
                || async { CheckResult::healthy() },
                CheckOptions::new().interval(Duration::from_secs(5)),
            )
            .build()
            .unwrap();
        settle().await;

        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        // Nothing changes and nothing runs: nothing is set yet.
        settle().await;
        let text = scrape.render();
        assert_eq!(
            value(&text, PROBE_STATUS, r#"probe="readiness",status="healthy""#),
            None
        );
        advance(Duration::from_secs(5)).await;
        assert_eq!(probe(&scrape, "readiness"), ["healthy"]);
        assert_eq!(component(&scrape, "db"), ["healthy"]);
        drop(health);
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_turning_stale_shows_without_the_refresher() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let health = aging(&[("db", 30)]);
        settle().await;
        assert_eq!(component(&scrape, "db"), ["healthy"]);

        health.shutdown();
        advance(Duration::from_secs(29)).await;
        assert_eq!(component(&scrape, "db"), ["healthy"]);
        advance(Duration::from_secs(2)).await;
        assert_eq!(component(&scrape, "db"), ["unhealthy"]);
        assert_eq!(probe(&scrape, "readiness"), ["unhealthy"]);
        assert_eq!(runs(&scrape, "db", "healthy"), 1.0);
    }
}
