//! How long the Tokio runtime takes to get to a task that is ready to run
//! (no feature needed).
//!
//! [`SchedulingDelayCheck`] tells a saturated runtime from an idle one:
//! workers kept busy by CPU-heavy work, or held by a blocking call that
//! should have gone to `spawn_blocking`. While they are, a request that has
//! arrived waits before its task is even polled, whatever the dependencies
//! are doing. Each run sets a 1 ms timer a few times in a row
//! ([`samples`](SchedulingDelayCheck::samples), default 5) and times how
//! late the check gets back after each one has fired. The runtime notices
//! fired timers in the same step as it notices sockets that became
//! readable, so the lateness is what an arriving request waits too. The
//! longest lateness of the run is its measure:
//!
//! | longest lateness | status |
//! |---|---|
//! | up to the degraded threshold (default 100 ms) | healthy |
//! | above it | degraded |
//! | above the unhealthy threshold (none by default) | unhealthy |
//!
//! The lateness includes up to about a millisecond of the timer's own
//! granularity, so an idle runtime shows a fraction of a millisecond.
//!
//! **Which runtimes.** On a current-thread runtime any task that holds the
//! thread shows, for as long as it holds it. On a multi-thread runtime a
//! worker that is free notices timers and I/O for the others, so one
//! worker stuck in a blocking call does not show (the runtime still answers
//! new requests on the other workers, which also take over the stuck
//! worker's queue; only the task in its next-task slot waits for it):
//! every worker busy does. The observations
//! `workers`, `alive_tasks` and `global_queue_depth` (tasks waiting in the
//! runtime's shared queue) come from Tokio's runtime metrics at the end of
//! the run.
//!
//! **Bounded runs.** A run stops sampling once it has lasted longer than
//! the lowest threshold, and so also at its first lateness above one: its
//! time stays near that threshold plus one lateness. A runtime that
//! stalls for longer than the run's [`timeout`](crate::CheckOptions::timeout)
//! is reported as that lateness, not as a timeout, because the runtime
//! wakes the check's timer no later than the runner's. Keep the timeout
//! above the lowest threshold (the default 2 s is above the default
//! 100 ms): a run cut at its timeout is unhealthy, like any check's.
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
//! [`build`](crate::HealthChecksBuilder::build) was called on. Each run
//! looks at a few milliseconds of it, so a runtime that stays saturated for
//! a while shows, and a short stall between two runs does not. A runtime so blocked that
//! no task runs at all cannot run this check either: its probes go
//! unanswered, which is what a liveness probe's timeout is for. The check
//! reads Tokio's clock, so under a paused test clock it sees virtual time.
//!
//! Observations: `delay_ms`, the longest lateness of the run (unit `ms`,
//! three decimals); `workers`, `alive_tasks` and `global_queue_depth`.
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

/// The timer each sample sets.
const TIMER: Duration = Duration::from_millis(1);

/// Times how late the Tokio runtime gets to a task whose timer has fired.
/// See the [module documentation](self).
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
    /// Five samples per run; degraded when the longest lateness is above
    /// 100 ms, never unhealthy.
    pub const fn new() -> Self {
        Self {
            degraded: Duration::from_millis(100),
            unhealthy: None,
            samples: 5,
        }
    }

    /// Degraded when the runtime is more than `delay` late (default
    /// 100 ms).
    #[must_use]
    pub const fn degraded_above(mut self, delay: Duration) -> Self {
        self.degraded = delay;
        self
    }

    /// Unhealthy when the runtime is more than `delay` late (default:
    /// never). Read the [module documentation](self) on load and readiness
    /// first.
    #[must_use]
    pub const fn unhealthy_above(mut self, delay: Duration) -> Self {
        self.unhealthy = Some(delay);
        self
    }

    /// How many timers one run sets, one after the other, at least one
    /// (default 5).
    #[must_use]
    pub const fn samples(mut self, samples: u32) -> Self {
        self.samples = if samples == 0 { 1 } else { samples };
        self
    }

    /// The threshold `late` is above, if any: unhealthy first.
    fn level(&self, late: Duration) -> Option<(&'static str, Duration)> {
        match self.unhealthy {
            Some(limit) if late > limit => Some(("unhealthy", limit)),
            _ if late > self.degraded => Some(("degraded", self.degraded)),
            _ => None,
        }
    }
}

impl Check for SchedulingDelayCheck {
    async fn check(&self) -> CheckResult {
        let started = Instant::now();
        let budget = self
            .unhealthy
            .map_or(self.degraded, |u| u.min(self.degraded));
        let mut longest = Duration::ZERO;
        for _ in 0..self.samples {
            let fires = Instant::now() + TIMER;
            tokio::time::sleep_until(fires).await;
            longest = longest.max(Instant::now().saturating_duration_since(fires));
            // No more samples once the run has taken longer than the lowest
            // threshold (so also after a lateness above one): on a busy
            // runtime more of them could outlast the run's timeout.
            if started.elapsed() > budget {
                break;
            }
        }
        let result = match self.level(longest) {
            None => CheckResult::healthy(),
            Some((level, limit)) => {
                let message = format!(
                    "the runtime got to a ready task {} late, above the {level} threshold of \
                     {}: its workers are busy; look for blocking calls on them (move those to \
                     spawn_blocking) and CPU-heavy work, or give the process more CPU",
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
        let metrics = tokio::runtime::Handle::current().metrics();
        result
            .with_observation("delay_ms", crate::render::millis(longest), Some("ms"))
            .with_observation("workers", metrics.num_workers(), None)
            .with_observation("alive_tasks", metrics.num_alive_tasks(), None)
            .with_observation("global_queue_depth", metrics.global_queue_depth(), None)
    }

    fn component_type(&self) -> &'static str {
        "system"
    }
}

/// `150 ms`, `100.4 ms`, `0.042 ms`: to the microsecond, so that a
/// lateness just above a threshold does not read as the threshold itself.
fn millis(duration: Duration) -> String {
    format!("{} ms", crate::render::millis(duration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::test_util::observed;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The check, run while another task keeps the runtime busy at every
    /// turn, so that each of the check's timers is `late` late (the task
    /// moves the paused clock on by the timer's 1 ms plus `late`, which is
    /// what a task computing for that long looks like to the check's
    /// clock). Returns the result and how long the run took.
    async fn run_beside_hog(
        check: SchedulingDelayCheck,
        late: Duration,
    ) -> (CheckResult, Duration) {
        let turn = TIMER + late;
        let hog = tokio::spawn(async move {
            loop {
                tokio::time::advance(turn).await;
            }
        });
        // Let the hog take its first turn, so it runs between the check's.
        tokio::task::yield_now().await;
        let start = Instant::now();
        let result = check.check().await;
        let took = start.elapsed();
        hog.abort();
        (result, took)
    }

    fn delay_ms(result: &CheckResult) -> f64 {
        let unit = result
            .observations()
            .iter()
            .find(|o| o.measurement() == "delay_ms")
            .and_then(|o| o.unit());
        assert_eq!(unit, Some("ms"));
        observed(result, "delay_ms").as_f64().expect("a number")
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_runtime_is_healthy() {
        let start = Instant::now();
        let result = SchedulingDelayCheck::new().check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(result.message(), None);
        assert_eq!(delay_ms(&result), 0.0);
        // Five timers of 1 ms, each on time.
        assert_eq!(start.elapsed(), ms(5));
        // The runtime's own numbers: this test's runtime has one worker
        // (a current-thread runtime counts as one) and nothing queued.
        assert_eq!(observed(&result, "workers"), 1);
        assert_eq!(observed(&result, "global_queue_depth"), 0);
        assert_eq!(observed(&result, "alive_tasks"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_runtime_is_degraded_and_never_unhealthy_by_default() {
        let (result, _) = run_beside_hog(SchedulingDelayCheck::new(), ms(150)).await;
        assert_eq!(result.status(), Status::Degraded, "{result:?}");
        assert_eq!(delay_ms(&result), 150.0);
        let message = result.message().expect("a message");
        assert!(
            message.contains("150 ms late") && message.contains("degraded threshold of 100 ms"),
            "{message}"
        );
        // The hog is a task of this runtime.
        assert_eq!(observed(&result, "alive_tasks"), 1);
        // Far above any threshold, still only degraded.
        let (result, _) = run_beside_hog(SchedulingDelayCheck::new(), ms(60_000)).await;
        assert_eq!(result.status(), Status::Degraded, "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn lateness_up_to_the_threshold_is_healthy() {
        let (result, _) = run_beside_hog(SchedulingDelayCheck::new(), ms(40)).await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(delay_ms(&result), 40.0);
        // Exactly at the threshold is not above it.
        let (result, _) = run_beside_hog(SchedulingDelayCheck::new(), ms(100)).await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(delay_ms(&result), 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_above_its_threshold_which_wins_over_degraded() {
        let check = SchedulingDelayCheck::new()
            .degraded_above(ms(50))
            .unhealthy_above(ms(200));
        let (result, _) = run_beside_hog(check.clone(), ms(120)).await;
        assert_eq!(result.status(), Status::Degraded, "{result:?}");
        let (result, _) = run_beside_hog(check, ms(250)).await;
        assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
        let message = result.message().expect("a message");
        assert!(
            message.contains("250 ms late") && message.contains("unhealthy threshold of 200 ms"),
            "{message}"
        );
        // An unhealthy threshold below the degraded one still decides first.
        let check = SchedulingDelayCheck::new().unhealthy_above(ms(20));
        let (result, _) = run_beside_hog(check, ms(30)).await;
        assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_stops_at_its_first_lateness_over_a_threshold() {
        let check = SchedulingDelayCheck::new().samples(50);
        let (result, took) = run_beside_hog(check, ms(150)).await;
        assert_eq!(result.status(), Status::Degraded);
        // One turn of the hog (the timer's 1 ms and 150 ms late), not fifty.
        assert_eq!(took, ms(151));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_stops_sampling_once_it_has_lasted_longer_than_a_threshold() {
        // Each sample 11 ms (1 ms timer, 10 ms late): the run stops after
        // the first that ends past 100 ms, the tenth, instead of taking 50.
        let check = SchedulingDelayCheck::new().samples(50);
        let (result, took) = run_beside_hog(check, ms(10)).await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(delay_ms(&result), 10.0);
        assert_eq!(took, ms(110));
        // The lowest threshold sets the budget.
        let check = SchedulingDelayCheck::new()
            .samples(50)
            .unhealthy_above(ms(30));
        let (result, took) = run_beside_hog(check, ms(10)).await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(took, ms(33));
        // Within the budget, every sample is taken.
        let (_, took) = run_beside_hog(SchedulingDelayCheck::new(), ms(10)).await;
        assert_eq!(took, ms(55));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_samples_is_one() {
        let check = SchedulingDelayCheck::new().samples(0);
        let (result, took) = run_beside_hog(check, ms(10)).await;
        assert_eq!(result.status(), Status::Healthy);
        assert_eq!(delay_ms(&result), 10.0);
        assert_eq!(took, ms(11));
    }

    /// On a real clock: a task that blocks its thread (the mistake this
    /// check exists to show) holds the check's next turn for as long,
    /// less the 1 ms the timer waited anyway. (A lower bound only: a sleep
    /// lasts at least what it was asked.)
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
        assert!(delay_ms(&result) >= 299.0, "{result:?}");
    }

    #[test]
    fn lateness_is_shown_in_milliseconds() {
        assert_eq!(millis(ms(150)), "150 ms");
        assert_eq!(millis(Duration::from_micros(100_400)), "100.4 ms");
        assert_eq!(millis(Duration::from_micros(100_001)), "100.001 ms");
        assert_eq!(millis(Duration::ZERO), "0 ms");
        assert_eq!(millis(Duration::from_micros(42)), "0.042 ms");
    }
}
