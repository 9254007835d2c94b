//! The clock that times responses for the processing-time header.
//!
//! Every response is timed, so the clock is read twice per request. Reading
//! the CPU's counter (the TSC on x86_64, through `quanta`) costs about
//! 10 ns on the benchmark machine, against 23 ns for
//! `std::time::Instant::now`. A response may be timed on two cores (`call`
//! on one, the inner future finishing on another), so the counter is used
//! only where the cores' counters are known to agree; elsewhere the OS's
//! monotonic clock is read.

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

enum Source {
    /// The CPU's counter, calibrated against the OS clock.
    Counter(quanta::Clock),
    /// The OS's monotonic clock, as nanoseconds since this origin.
    Os(Instant),
}

static SOURCE: LazyLock<Source> = LazyLock::new(|| {
    if counter_agrees_across_cores() {
        Source::Counter(quanta::Clock::new())
    } else {
        Source::Os(Instant::now())
    }
});

/// Whether the CPU's counter reads the same on every core.
///
/// Linux checks the TSCs at boot (and watches them after) and keeps `tsc`
/// as its clocksource only while they agree. On aarch64 the generic timer's
/// counter is the same for every core by the architecture's definition.
fn counter_agrees_across_cores() -> bool {
    if cfg!(target_arch = "aarch64") {
        return true;
    }
    cfg!(all(target_os = "linux", target_arch = "x86_64"))
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|source| source.trim() == "tsc")
}

/// Chooses the source and, for the counter, calibrates it (about half a
/// millisecond, at most 200 ms), so that no request pays for it.
pub(crate) fn calibrate() {
    LazyLock::force(&SOURCE);
}

/// A reading of the clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(u64);

impl Stamp {
    #[inline]
    pub(crate) fn now() -> Self {
        match &*SOURCE {
            Source::Counter(clock) => Self(clock.raw()),
            Source::Os(origin) => Self(nanos_since(origin)),
        }
    }

    /// The time since this reading (zero if the clock seems to have gone
    /// back).
    #[inline]
    pub(crate) fn elapsed(self) -> Duration {
        match &*SOURCE {
            Source::Counter(clock) => clock.delta(self.0, clock.raw()),
            Source::Os(origin) => Duration::from_nanos(nanos_since(origin).saturating_sub(self.0)),
        }
    }
}

fn nanos_since(origin: &Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_follows_real_time() {
        calibrate();
        // Each reading of the stamp is bracketed by two of the OS clock, so
        // the thread being descheduled between readings widens the bounds
        // instead of failing the test.
        let before = Instant::now();
        let start = Stamp::now();
        let after = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let end_before = Instant::now();
        let measured = start.elapsed();
        let end_after = Instant::now();
        let shortest = end_before - after;
        let longest = end_after - before;
        // Calibration error: 1 % of the interval, plus 1 ms.
        let slack = longest / 100 + Duration::from_millis(1);
        assert!(shortest >= Duration::from_millis(20), "{shortest:?}");
        assert!(
            measured + slack >= shortest && measured <= longest + slack,
            "{measured:?} outside {shortest:?} to {longest:?} (± {slack:?})"
        );
    }
}
