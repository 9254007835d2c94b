//! Heartbeats: liveness (or readiness) for internal components that cannot
//! be polled.
//!
//! A worker loop, a queue consumer or a websocket pump proves it is alive by
//! calling [`Heartbeat::beat`] regularly. If it misses its deadline, `/livez`
//! fails and names it, and Kubernetes restarts the container. A component
//! a restart would not mend (a cache refresher, a config watcher) takes
//! readiness instead, with
//! [`HealthHandle::heartbeat_with`](crate::HealthHandle::heartbeat_with)
//! and [`HeartbeatOptions::probes`].
//!
//! Dropping a [`Heartbeat`] without [`Heartbeat::retire`] counts as a
//! failure at once (reason "heartbeat handle dropped"): a task that panics
//! or returns by mistake drops its handle, and that is exactly what a
//! liveness probe should catch. A component that stops on purpose calls
//! `retire`, which removes it. While the instance drains (a shutdown
//! signal reached `graceful_shutdown`, or `drain` was called), a dropped
//! handle is a component stopping with the process: it is removed as if
//! retired, and no longer counts. So is one dropped before the drain
//! began, when it began: a worker woken by the same signal may stop before
//! `graceful_shutdown` does, and a liveness probe failing during the drain
//! could have the container killed before it ends.
//!
//! Beat from the component's own loop, where its work happens: a task of
//! its own that only beats on a timer proves that the timer runs, not that
//! the component does. A loop that can wait for work longer than its
//! deadline (a consumer on a quiet queue) wakes on a timer as well, and
//! beats then too:
//!
//! ```
//! # use std::time::Duration;
//! # async fn handle(_job: u32) {}
//! # async fn consume(
//! #     mut jobs: tokio::sync::mpsc::Receiver<u32>,
//! #     heartbeat: tower_health::heartbeat::Heartbeat,
//! # ) {
//! let mut idle = tokio::time::interval(Duration::from_secs(5));
//! loop {
//!     tokio::select! {
//!         job = jobs.recv() => match job {
//!             Some(job) => handle(job).await,
//!             None => break,
//!         },
//!         _ = idle.tick() => {}
//!     }
//!     heartbeat.beat();
//! }
//! heartbeat.retire();
//! # }
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_health::HealthChecks;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_health::Error> {
//! let health = HealthChecks::builder().build()?;
//! let heartbeat = health.heartbeat("worker", Duration::from_secs(10))?;
//!
//! let worker = tokio::spawn(async move {
//!     for _job in 0..3 {
//!         // ... handle one job ...
//!         heartbeat.beat();
//!     }
//!     heartbeat.retire(); // stopping on purpose
//! });
//! worker.await.unwrap();
//! # Ok(())
//! # }
//! ```

use std::{
    fmt,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use crate::{Probes, runner::Shared};

/// How a heartbeat is judged, for
/// [`HealthHandle::heartbeat_with`](crate::HealthHandle::heartbeat_with).
///
/// | option | default |
/// |---|---|
/// | [`probes`](Self::probes) | [`Probes::LIVENESS`]: a missed deadline restarts the container |
/// | [`critical`](Self::critical) | `true`: a missed deadline fails those probes; `false`: makes them degraded (200) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOptions {
    pub(crate) probes: Probes,
    pub(crate) critical: bool,
}

impl Default for HeartbeatOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl HeartbeatOptions {
    /// The defaults in the table above.
    pub const fn new() -> Self {
        Self {
            probes: Probes::LIVENESS,
            critical: true,
        }
    }

    /// The probes a missed deadline (or a dropped handle) fails.
    ///
    /// [`Probes::READINESS`] is for a component whose stall makes the
    /// instance serve wrong answers but that a restart would not mend, or
    /// not soon: a cache refresher, a config watcher, a replication
    /// follower. Missing its deadline takes the instance out of the load
    /// balancer until it beats again, and nothing restarts it.
    /// `LIVENESS | READINESS` does both. [`Probes::STARTUP`] means nothing
    /// for a heartbeat (it is alive from the start) and is ignored;
    /// [`Probes::NONE`] shows it in `/health` only.
    #[must_use]
    pub const fn probes(mut self, probes: Probes) -> Self {
        self.probes = probes;
        self
    }

    /// Whether a missed deadline (or a dropped handle) fails the probes
    /// (`true`) or only makes them degraded, still 200 (`false`), as for
    /// a check: for a component worth seeing in `/health` and on
    /// dashboards that neither a restart nor taking the instance out of
    /// rotation would help (a metrics flusher, a cache warmer).
    #[must_use]
    pub const fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }
}

/// The shared state of one heartbeat, read by the runner and by probes.
pub(crate) struct HeartbeatSlot {
    pub(crate) name: Arc<str>,
    pub(crate) deadline: Duration,
    /// The probes a missed beat fails (never startup).
    pub(crate) probes: Probes,
    /// Whether a missed beat fails them or makes them degraded.
    pub(crate) critical: bool,
    base: Instant,
    base_wall: SystemTime,
    /// Nanoseconds since `base` of the last beat.
    last_beat: AtomicU64,
    dropped: AtomicBool,
    /// Set by the runner when it publishes the heartbeat as missed, so the
    /// next beat knows to wake it.
    expired: AtomicBool,
    /// The state last published ([`Beat::kind`]), so that only changes are
    /// logged. Written by the runner under its state lock.
    reported: AtomicU8,
    shared: Weak<Shared>,
}

/// How a heartbeat stands at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Beat in time; `Instant` is when its deadline runs out.
    Alive {
        last: Instant,
        due: Instant,
    },
    Missed {
        last: Instant,
    },
    Dropped,
}

impl Beat {
    const ALIVE: u8 = 0;
    const MISSED: u8 = 1;
    const DROPPED: u8 = 2;

    fn kind(self) -> u8 {
        match self {
            Self::Alive { .. } => Self::ALIVE,
            Self::Missed { .. } => Self::MISSED,
            Self::Dropped => Self::DROPPED,
        }
    }
}

impl HeartbeatSlot {
    pub(crate) fn new(
        name: Arc<str>,
        deadline: Duration,
        options: &HeartbeatOptions,
        shared: Weak<Shared>,
    ) -> Self {
        Self {
            name,
            deadline,
            probes: options.probes.without(Probes::STARTUP),
            critical: options.critical,
            base: Instant::now(),
            base_wall: SystemTime::now(),
            last_beat: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            reported: AtomicU8::new(Beat::ALIVE),
            shared,
        }
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_beat.load(Ordering::SeqCst))
    }

    pub(crate) fn last_wall(&self) -> SystemTime {
        self.base_wall + Duration::from_nanos(self.last_beat.load(Ordering::SeqCst))
    }

    pub(crate) fn at(&self, now: Instant) -> Beat {
        if self.dropped.load(Ordering::SeqCst) {
            return Beat::Dropped;
        }
        let last = self.last();
        let due = last + self.deadline;
        if now < due {
            Beat::Alive { last, due }
        } else {
            Beat::Missed { last }
        }
    }

    pub(crate) fn mark_dropped(&self) {
        self.dropped.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Called by the runner when it publishes: remembers a missed deadline
    /// so the next `beat` wakes the runner. Returns the state to publish.
    pub(crate) fn observe(&self, now: Instant) -> Beat {
        let beat = self.at(now);
        if let Beat::Missed { .. } = beat {
            self.expired.store(true, Ordering::SeqCst);
            // A beat that raced with the store above saw `expired == false`
            // and did not wake us; read again so it is not lost, and take
            // the flag back if it did come in.
            let again = self.at(now.max(Instant::now()));
            if !matches!(again, Beat::Missed { .. }) {
                let _ =
                    self.expired
                        .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst);
            }
            return again;
        }
        beat
    }

    /// The log event for `beat` if it differs from what was last
    /// published: a missed deadline or a dropped handle is why a probe
    /// fails (for liveness, why Kubernetes restarts the container), so it
    /// must be in the logs. The runner emits it once its lock is released.
    /// (A handle dropped while draining is removed instead, and logged at
    /// `debug`: `Shared::heartbeat_dropped`, `Shared::drain`.)
    pub(crate) fn report(
        &self,
        beat: Beat,
        now: Instant,
    ) -> Option<impl FnOnce() + Send + 'static> {
        if self.reported.swap(beat.kind(), Ordering::Relaxed) == beat.kind() {
            return None;
        }
        let name = self.name.clone();
        // As u64, like the crate's other `_ms` fields (tracing records a
        // u128 as a string); durations here are at most 100 years.
        let deadline_ms = self.deadline.as_millis() as u64;
        Some(move || {
            let name = &*name;
            match beat {
                Beat::Missed { last } => tracing::warn!(
                    heartbeat = name,
                    deadline_ms,
                    since_last_beat_ms = now.saturating_duration_since(last).as_millis() as u64,
                    "heartbeat missed its deadline"
                ),
                Beat::Dropped => tracing::warn!(
                    heartbeat = name,
                    "heartbeat handle dropped without retire (its task ended or panicked)"
                ),
                Beat::Alive { .. } => {
                    tracing::info!(heartbeat = name, deadline_ms, "heartbeat recovered");
                }
            }
        })
    }

    fn beat(&self) {
        let nanos = self.base.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.beat_at(nanos);
    }

    /// A beat read from the clock at `nanos` after `base`.
    fn beat_at(&self, nanos: u64) {
        // The latest beat wins, not the last stored: a shared handle's
        // beat read from the clock before another's, but stored after it,
        // would move the last beat back, and could turn a heartbeat judged
        // alive into a missed one halfway through a publication, which
        // later beats would not undo (they wake the runner only when it
        // published the heartbeat as missed).
        self.last_beat.fetch_max(nanos, Ordering::SeqCst);
        if self.expired.swap(false, Ordering::SeqCst)
            && let Some(shared) = self.shared.upgrade()
        {
            shared.republish();
        }
    }
}

/// The handle a component beats with. See the [module docs](crate::heartbeat).
#[must_use = "a heartbeat dropped without `retire` fails its probes (liveness by default) at once"]
pub struct Heartbeat {
    slot: Arc<HeartbeatSlot>,
    retired: bool,
}

impl Heartbeat {
    pub(crate) fn new(slot: Arc<HeartbeatSlot>) -> Self {
        Self {
            slot,
            retired: false,
        }
    }

    /// Records that the component is alive. Cheap: two atomic operations
    /// unless the deadline had already been missed.
    pub fn beat(&self) {
        self.slot.beat();
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The deadline between beats: the one given, raised to 1 ms or
    /// lowered to 100 years if it was outside that range.
    pub fn deadline(&self) -> Duration {
        self.slot.deadline
    }

    /// Removes the heartbeat: the component stopped on purpose.
    pub fn retire(mut self) {
        self.retired = true;
        if let Some(shared) = self.slot.shared.upgrade() {
            shared.remove_heartbeat(&self.slot);
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if self.retired {
            return;
        }
        match self.slot.shared.upgrade() {
            Some(shared) => shared.heartbeat_dropped(&self.slot),
            None => self.slot.dropped.store(true, Ordering::SeqCst),
        }
    }
}

impl fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heartbeat")
            .field("name", &self.slot.name)
            .field("deadline", &self.slot.deadline)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Weak, time::Duration};

    use super::HeartbeatSlot;

    #[tokio::test(start_paused = true)]
    async fn a_beat_stored_late_does_not_move_the_last_beat_back() {
        let slot = HeartbeatSlot::new(
            "worker".into(),
            Duration::from_secs(1),
            &super::HeartbeatOptions::new(),
            Weak::new(),
        );
        let base = slot.base;
        slot.beat_at(5_000);
        slot.beat_at(2_000);
        assert_eq!(slot.last() - base, Duration::from_nanos(5_000));
        slot.beat_at(7_000);
        assert_eq!(slot.last() - base, Duration::from_nanos(7_000));
    }
}
