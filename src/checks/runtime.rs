//! How long a task that is ready to run waits for the Tokio runtime (no
//! feature needed).
//!
//! [`SchedulingDelayCheck`] tells a saturated runtime from an idle one:
//! workers kept busy by CPU-heavy work, or held by a blocking call that
//! should have gone to `spawn_blocking`. While they are, every request
//! waits before it is even read, whatever the dependencies are doing. Each
//! run yields to the runtime a few times ([`samples`](SchedulingDelayCheck::samples),
//! default 5) and times how long each yield takes to come back: the time
//! the runtime needs to get round to a ready task (the tasks queued ahead
//! of it, and the I/O and timer events it picks up on the way). The
//! longest wait is the run's measure:
//!
//! | longest wait | status |
//! |---|---|
//! | up to the degraded threshold (default 100 ms) | healthy |
//! | above it | degraded |
//! | above the unhealthy threshold (none by default) | unhealthy |
//!
//! A run stops at the first wait above a threshold, so a stalled runtime
//! is reported as a long wait rather than cut at the run's timeout
//! (a single wait longer than the timeout is still reported as such, not
//! as a timeout).
//!
//! **Why never unhealthy by default.** Load is shared: when one instance
//! is saturated, its siblings usually are too, and a readiness probe that
//! fails on load takes them all out of rotation together, which turns an
//! overload into an outage. So by default a saturated runtime is
//! `degraded` (readiness stays 200, and `?detailed=true`, the logs and the
//! metrics show it). Set [`unhealthy_above`](SchedulingDelayCheck::unhealthy_above)
//! to shed load from a saturated instance deliberately, with a
//! [`failure_grace`](crate::CheckOptions::failure_grace) so that one burst
//! does not flip it.
//!
//! It measures the runtime the checks run on: the one
//! [`build`](crate::HealthChecksBuilder::build) was called on. Each run is
//! one sample of it, so a runtime that is saturated for a while shows,
//! and a stall of a few milliseconds between two runs does not. A
//! runtime so blocked that no task runs at all cannot run this check
//! either: its probes go unanswered, which is what a liveness probe's
//! timeout is for.
//!
//! Observation: `delay_ms`, the longest wait of the run (unit `ms`, three
//! decimals).
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_health::Error> {
//! use std::time::Duration;
//! use tower_health::{CheckOptions, HealthChecks, checks::runtime::SchedulingDelayCheck};
//!
//! let health = HealthChecks::builder()
//!     .check_with(
//!         "runtime",
//!         SchedulingDelayCheck::new().degraded_above(Duration::from_millis(50)),
//!         CheckOptions::new().interval(Duration::from_secs(5)),
//!     )
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use tokio::time::Instant;

use crate::{Check, CheckResult};

/// Times how long a ready task waits for the Tokio runtime. See the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct SchedulingDelayCheck {
    degraded: Duration,
    unhealthy: Option<Duration>,
    samples: u32,
}

impl Default for SchedulingDelayCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulingDelayCheck {
    /// Five samples per run; degraded when the longest wait is above
    /// 100 ms, never unhealthy.
    pub const fn new() -> Self {
        Self {
            degraded: Duration::from_millis(100),
            unhealthy: None,
            samples: 5,
        }
    }

    /// Degraded when a wait is longer than `delay` (default 100 ms).
    #[must_use]
    pub const fn degraded_above(mut self, delay: Duration) -> Self {
        self.degraded = delay;
        self
    }

    /// Unhealthy when a wait is longer than `delay` (default: never). Read
    /// the [module documentation](self) on load and readiness first.
    #[must_use]
    pub const fn unhealthy_above(mut self, delay: Duration) -> Self {
        self.unhealthy = Some(delay);
        self
    }

    /// How many waits one run times, at least one (default 5).
    #[must_use]
    pub const fn samples(mut self, samples: u32) -> Self {
        self.samples = if samples == 0 { 1 } else { samples };
        self
    }

    /// The threshold `wait` is above, if any: unhealthy first.
    fn level(&self, wait: Duration) -> Option<(&'static str, Duration)> {
        match self.unhealthy {
            Some(limit) if wait > limit => Some(("unhealthy", limit)),
            _ if wait > self.degraded => Some(("degraded", self.degraded)),
            _ => None,
        }
    }
}

impl Check for SchedulingDelayCheck {
    async fn check(&self) -> CheckResult {
        let mut longest = Duration::ZERO;
        for _ in 0..self.samples {
            let start = Instant::now();
            tokio::task::yield_now().await;
            longest = longest.max(start.elapsed());
            // No more waits once one is over a threshold: the next could
            // outlast the run's timeout on a stalled runtime.
            if self.level(longest).is_some() {
                break;
            }
        }
        let mut result = match self.level(longest) {
            None => CheckResult::healthy(),
            Some((level, limit)) => {
                let message = format!(
                    "a task ready to run waited {} for the runtime, above the {level} \
                     threshold of {}: its workers are busy; look for blocking calls on them \
                     (move those to spawn_blocking) and CPU-heavy work, or give the process \
                     more CPU",
                    millis(longest),
                    millis(limit),
                );
                if level == "unhealthy" {
                    CheckResult::unhealthy(message)
                } else {
                    CheckResult::degraded(message)
                }
            }
        };
        let shown = (longest.as_secs_f64() * 1e6).round() / 1e3;
        result = result.with_observation("delay_ms", shown, Some("ms"));
        result
    }

    fn component_type(&self) -> &'static str {
        "system"
    }
}

/// `150 ms`, `0.042 ms`.
fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if ms >= 1.0 {
        format!("{} ms", ms.round())
    } else {
        format!("{:.3} ms", ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The check, run while another task keeps the runtime busy for
    /// `busy` at every turn (by moving the paused clock on, which is what
    /// a task computing for that long looks like to the check's clock).
    async fn run_beside_hog(check: SchedulingDelayCheck, busy: Duration) -> CheckResult {
        let hog = tokio::spawn(async move {
            loop {
                tokio::time::advance(busy).await;
            }
        });
        // Let the hog take its first turn, so it is queued ahead.
        tokio::task::yield_now().await;
        let result = check.check().await;
        hog.abort();
        result
    }

    fn delay_ms(result: &CheckResult) -> f64 {
        let observation = result
            .observations()
            .iter()
            .find(|o| o.measurement() == "delay_ms")
            .expect("a delay_ms observation");
        assert_eq!(observation.unit(), Some("ms"));
        observation.value().as_f64().expect("a number")
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_runtime_is_healthy() {
        let result = SchedulingDelayCheck::new().check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(result.message(), None);
        assert_eq!(delay_ms(&result), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_runtime_is_degraded_and_never_unhealthy_by_default() {
        let result = run_beside_hog(SchedulingDelayCheck::new(), ms(150)).await;
        assert_eq!(result.status(), Status::Degraded, "{result:?}");
        assert_eq!(delay_ms(&result), 150.0);
        let message = result.message().expect("a message");
        assert!(
            message.contains("waited 150 ms") && message.contains("degraded threshold of 100 ms"),
            "{message}"
        );
        // Far above any threshold, still only degraded.
        let result = run_beside_hog(SchedulingDelayCheck::new(), ms(60_000)).await;
        assert_eq!(result.status(), Status::Degraded, "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn waits_under_the_threshold_are_healthy() {
        let result = run_beside_hog(SchedulingDelayCheck::new(), ms(40)).await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(delay_ms(&result), 40.0);
        // Exactly at the threshold is not above it.
        let result = run_beside_hog(SchedulingDelayCheck::new(), ms(100)).await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_above_its_threshold_which_wins_over_degraded() {
        let check = SchedulingDelayCheck::new()
            .degraded_above(ms(50))
            .unhealthy_above(ms(200));
        let result = run_beside_hog(check.clone(), ms(120)).await;
        assert_eq!(result.status(), Status::Degraded, "{result:?}");
        let result = run_beside_hog(check, ms(250)).await;
        assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
        let message = result.message().expect("a message");
        assert!(
            message.contains("waited 250 ms") && message.contains("unhealthy threshold of 200 ms"),
            "{message}"
        );
        // An unhealthy threshold below the degraded one still decides first.
        let check = SchedulingDelayCheck::new().unhealthy_above(ms(20));
        let result = run_beside_hog(check, ms(30)).await;
        assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_stops_at_the_first_wait_over_a_threshold() {
        let start = Instant::now();
        let result = run_beside_hog(SchedulingDelayCheck::new().samples(50), ms(150)).await;
        assert_eq!(result.status(), Status::Degraded);
        // One wait of 150 ms, not fifty.
        assert!(start.elapsed() < ms(500), "{:?}", start.elapsed());
        // Under the threshold every sample is taken.
        let start = Instant::now();
        let result = run_beside_hog(SchedulingDelayCheck::new().samples(50), ms(10)).await;
        assert_eq!(result.status(), Status::Healthy);
        assert!(start.elapsed() >= ms(500), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_samples_is_one() {
        let start = Instant::now();
        let result = run_beside_hog(SchedulingDelayCheck::new().samples(0), ms(10)).await;
        assert_eq!(result.status(), Status::Healthy);
        assert_eq!(delay_ms(&result), 10.0);
        assert!(start.elapsed() < ms(50), "{:?}", start.elapsed());
    }

    /// On a real clock: a task that blocks its thread (the mistake this
    /// check exists to show) holds the check's next turn for at least as
    /// long. (A lower bound only: a sleep lasts at least what it was asked.)
    #[test]
    fn a_blocking_task_shows_as_its_whole_block() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let check = SchedulingDelayCheck::new();
        let result = runtime.block_on(async {
            let (result, ()) = tokio::join!(check.check(), async {
                tokio::spawn(async { std::thread::sleep(ms(300)) });
            });
            result
        });
        assert_eq!(result.status(), Status::Degraded, "{result:?}");
        assert!(delay_ms(&result) >= 300.0, "{result:?}");
    }

    #[test]
    fn delays_are_shown_in_milliseconds() {
        assert_eq!(millis(ms(150)), "150 ms");
        assert_eq!(millis(Duration::from_micros(1_499)), "1 ms");
        assert_eq!(millis(Duration::from_micros(42)), "0.042 ms");
    }
}
