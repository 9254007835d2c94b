//! Free space on the filesystem that holds a path (feature `disk`, Unix
//! only).
//!
//! [`DiskSpaceCheck`] calls `statvfs(3)` (through `nix`'s safe wrapper) on
//! a thread of its own, so a hung network filesystem blocks that thread,
//! never the runtime, and the runner still cuts the run at its timeout. A
//! call that outlives its run is not abandoned: the next run (or a clone of
//! the check running at the same time) waits for it instead of starting
//! another, so a filesystem that hangs for hours holds one thread, not one
//! more every interval. The thread is not one of Tokio's blocking pool,
//! whose tasks a runtime waits for when it is dropped: a hung call does not
//! keep the process from exiting. Free space is
//! the space available to unprivileged users (`f_bavail`), which is what
//! the application can write.
//!
//! Two thresholds, each in bytes, in percent of the filesystem's size, or
//! both (either one crossing counts). Setting a threshold in either unit
//! replaces that level's default: `.unhealthy_below_bytes(512 MiB)` alone
//! means below 512 MiB, whatever the percentage. An unhealthy threshold
//! left unset beside a degraded one that was set stays below it: 5 % where
//! that is below the degraded threshold, half the degraded threshold where
//! it is not. So `.degraded_below_bytes(10 GiB)` alone on a 1 TiB disk is
//! unhealthy below 5 GiB, not below 5 % (51 GiB, before the degraded level
//! is reached), and `.degraded_below_percent(8.0)` alone below 5 %.
//!
//! | free space | status |
//! |---|---|
//! | at or above the degraded thresholds | healthy |
//! | below a degraded threshold (default: 10 %) | degraded |
//! | below an unhealthy threshold (default: 5 %, see above) | unhealthy |
//!
//! Observations: `free_bytes` and `total_bytes` (unit `bytes`) and
//! `free_percent` (unit `%`, two decimals).
//!
//! # Example
//!
//! ```
//! # #[cfg(all(feature = "disk", unix))]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_health::{CheckOptions, HealthChecks, checks::disk::DiskSpaceCheck};
//!
//! let health = HealthChecks::builder()
//!     .check_with(
//!         "data-disk",
//!         DiskSpaceCheck::new("/")
//!             .degraded_below_percent(15.0)
//!             .unhealthy_below_bytes(512 * 1024 * 1024), // 512 MiB
//!         CheckOptions::new().interval(Duration::from_secs(30)),
//!     )
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "disk", unix)))]
//! # fn main() {}
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::blocking::OneAtATime;
use crate::{Check, CheckResult};

/// A free-space threshold: bytes, percent of the filesystem's size, or
/// both (either one crossing counts).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Threshold {
    bytes: Option<u64>,
    percent: Option<f64>,
    /// Still the default: the first value set replaces it whole.
    is_default: bool,
}

impl Threshold {
    const fn default_percent(percent: f64) -> Self {
        Self {
            bytes: None,
            percent: Some(percent),
            is_default: true,
        }
    }

    /// This threshold, cleared first if it was the default.
    fn own(&mut self) -> &mut Self {
        if self.is_default {
            *self = Self::default();
        }
        self
    }

    fn crossed(&self, free: u64, percent: Option<f64>) -> bool {
        self.bytes.is_some_and(|min| free < min)
            || matches!((self.percent, percent), (Some(min), Some(p)) if p < min)
    }

    fn describe(&self) -> String {
        match (self.bytes, self.percent) {
            (Some(b), Some(p)) => format!("{} or {p}%", human_bytes(b)),
            (Some(b), None) => human_bytes(b),
            (None, Some(p)) => format!("{p}%"),
            (None, None) => "none".to_owned(),
        }
    }
}

/// Checks the free space of the filesystem holding a path. See the
/// [module documentation](self).
///
/// A clone shares the original's `statvfs` call in flight, if any.
#[derive(Clone)]
pub struct DiskSpaceCheck {
    path: Arc<Path>,
    degraded: Threshold,
    unhealthy: Threshold,
    /// The `statvfs` call in flight, if any.
    statvfs: OneAtATime<(), nix::Result<Space>>,
}

impl DiskSpaceCheck {
    /// A check on the filesystem that holds `path` (a directory or file
    /// that exists), degraded below 10 % free and unhealthy below 5 %.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Arc::from(path.into()),
            degraded: Threshold::default_percent(10.0),
            unhealthy: Threshold::default_percent(5.0),
            statvfs: OneAtATime::default(),
        }
    }

    /// Degraded when fewer than `bytes` are free. Replaces the default of
    /// 10 % (add [`degraded_below_percent`](Self::degraded_below_percent)
    /// to judge both). An unhealthy threshold left unset stays below it
    /// (see the [module documentation](self)).
    #[must_use]
    pub fn degraded_below_bytes(mut self, bytes: u64) -> Self {
        self.degraded.own().bytes = Some(bytes);
        self
    }

    /// Degraded when less than `percent` (0 to 100) of the filesystem is
    /// free. Replaces the default of 10 %. An unhealthy threshold left
    /// unset stays below it (see the [module documentation](self)).
    #[must_use]
    pub fn degraded_below_percent(mut self, percent: f64) -> Self {
        self.degraded.own().percent = Some(percent);
        self
    }

    /// Unhealthy when fewer than `bytes` are free. Replaces the default of
    /// 5 % (add [`unhealthy_below_percent`](Self::unhealthy_below_percent)
    /// to judge both).
    #[must_use]
    pub fn unhealthy_below_bytes(mut self, bytes: u64) -> Self {
        self.unhealthy.own().bytes = Some(bytes);
        self
    }

    /// Unhealthy when less than `percent` (0 to 100) of the filesystem is
    /// free. Replaces the default of 5 %.
    #[must_use]
    pub fn unhealthy_below_percent(mut self, percent: f64) -> Self {
        self.unhealthy.own().percent = Some(percent);
        self
    }

    /// Removes the thresholds given so far, defaults included; add the ones
    /// you want after this. With no threshold the check only fails when the
    /// path cannot be examined.
    #[must_use]
    pub fn without_thresholds(mut self) -> Self {
        self.degraded = Threshold::default();
        self.unhealthy = Threshold::default();
        self
    }

    /// The path whose filesystem is checked.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for DiskSpaceCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskSpaceCheck")
            .field("path", &self.path)
            .field("degraded_below", &self.degraded.describe())
            .field(
                "unhealthy_below",
                &if self.unhealthy.is_default && !self.degraded.is_default {
                    format!(
                        "{}, or half the degraded threshold if that is not below it",
                        self.unhealthy.describe()
                    )
                } else {
                    self.unhealthy.describe()
                },
            )
            .finish()
    }
}

/// Free and total bytes of one `statvfs` call.
#[derive(Clone, Copy)]
struct Space {
    free: u64,
    total: u64,
}

// `fsblkcnt_t` and `c_ulong` are `u64` on most targets but not all.
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn stat(path: &Path) -> nix::Result<Space> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    let fragment = stat.fragment_size() as u64;
    Ok(Space {
        free: (stat.blocks_available() as u64).saturating_mul(fragment),
        total: (stat.blocks() as u64).saturating_mul(fragment),
    })
}

impl Check for DiskSpaceCheck {
    fn component_type(&self) -> &'static str {
        "system"
    }

    async fn check(&self) -> CheckResult {
        let path = self.path.clone();
        let space = match self.statvfs.run((), move || stat(&path)).await {
            Ok(Ok(space)) => space,
            Ok(Err(errno)) => {
                return CheckResult::unhealthy(format!(
                    "cannot read the free space of the filesystem holding {}: statvfs failed: \
                     {errno}; check that the path exists and is readable by this process",
                    self.path.display()
                ));
            }
            Err(failed) => {
                return CheckResult::unhealthy(format!(
                    "the blocking call reading the free space of {} {failed}",
                    self.path.display()
                ));
            }
        };
        let status = self.level(space);
        // Judged unrounded (`level`); shown with two decimals, rounded down
        // so that 4.996 % below a 5 % threshold shows as 4.99 %, not 5 %.
        let percent = space.percent_free().map(|p| (p * 100.0).floor() / 100.0);
        let mut result = match status {
            None => CheckResult::healthy(),
            Some((level, threshold)) => {
                let message = format!(
                    "{} free ({}) on the filesystem holding {}, below the {level} threshold \
                     of {}; free space there (delete old files, rotate logs) or grow the volume",
                    human_bytes(space.free),
                    percent.map_or_else(|| "size unknown".to_owned(), |p| format!("{p}%")),
                    self.path.display(),
                    threshold.describe(),
                );
                if level == "unhealthy" {
                    CheckResult::unhealthy(message)
                } else {
                    CheckResult::degraded(message)
                }
            }
        };
        result = result
            .with_observation("free_bytes", space.free, Some("bytes"))
            .with_observation("total_bytes", space.total, Some("bytes"));
        if let Some(percent) = percent {
            result = result.with_observation("free_percent", percent, Some("%"));
        }
        result
    }
}

impl Space {
    /// Free space in percent of the filesystem's size; none for pseudo
    /// filesystems, which report a size of 0.
    fn percent_free(self) -> Option<f64> {
        (self.total > 0).then(|| self.free as f64 / self.total as f64 * 100.0)
    }
}

impl DiskSpaceCheck {
    /// The threshold `space` crosses, if any: unhealthy first.
    fn level(&self, space: Space) -> Option<(&'static str, Threshold)> {
        let percent = space.percent_free();
        let unhealthy = self.unhealthy_in_force(space.total);
        if unhealthy.crossed(space.free, percent) {
            Some(("unhealthy", unhealthy))
        } else if self.degraded.crossed(space.free, percent) {
            Some(("degraded", self.degraded))
        } else {
            None
        }
    }

    /// The unhealthy threshold on a filesystem of `total` bytes. Left at
    /// its default (5 %) beside a degraded threshold that was set, it must
    /// stay below that one: where 5 % is not below it (a degraded level of
    /// 10 GiB on a 1 TiB disk, where 5 % is 51 GiB), it is half the
    /// degraded threshold instead.
    fn unhealthy_in_force(&self, total: u64) -> Threshold {
        if !self.unhealthy.is_default || self.degraded.is_default {
            return self.unhealthy;
        }
        // Either unit crossing counts, so a threshold is its larger one.
        let in_bytes = |t: &Threshold| {
            let percent = t.percent.map_or(0.0, |p| p / 100.0 * total as f64);
            percent.max(t.bytes.unwrap_or(0) as f64)
        };
        let degraded = in_bytes(&self.degraded);
        // A degraded threshold of zero is no level to stay below.
        if degraded <= 0.0 || in_bytes(&self.unhealthy) < degraded {
            return self.unhealthy;
        }
        Threshold {
            bytes: self.degraded.bytes.map(|bytes| bytes / 2),
            percent: self.degraded.percent.map(|percent| percent / 2.0),
            is_default: true,
        }
    }
}

/// `512 B`, `3.2 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_in_bytes_and_percent() {
        let t = Threshold {
            bytes: Some(100),
            percent: Some(5.0),
            is_default: false,
        };
        assert!(t.crossed(99, Some(50.0)));
        assert!(t.crossed(1000, Some(4.99)));
        assert!(!t.crossed(100, Some(5.0)));
        assert!(!t.crossed(1000, None));
        assert!(!Threshold::default().crossed(0, Some(0.0)));
    }

    #[test]
    fn thresholds_are_judged_before_rounding() {
        let check = DiskSpaceCheck::new("/");
        let level = |free, total| check.level(Space { free, total }).map(|(level, _)| level);
        // 4.996 % free shows as 5 %, but is below the 5 % threshold.
        assert_eq!(level(49_960, 1_000_000), Some("unhealthy"));
        assert_eq!(level(50_000, 1_000_000), Some("degraded"));
        assert_eq!(level(99_999, 1_000_000), Some("degraded"));
        assert_eq!(level(100_000, 1_000_000), None);
        assert_eq!(level(0, 0), None);
    }

    /// A threshold set in either unit replaces that level's default; both
    /// units set for one level are both judged.
    #[test]
    fn a_threshold_set_replaces_its_default() {
        const GIB: u64 = 1 << 30;
        let total = 2048 * GIB;
        let level = |check: &DiskSpaceCheck, free| {
            check.level(Space { free, total }).map(|(level, _)| level)
        };
        // 4 % of 2 TiB free: under the default 5 %, far above 512 MiB.
        let bytes_only = DiskSpaceCheck::new("/")
            .degraded_below_percent(15.0)
            .unhealthy_below_bytes(GIB / 2);
        assert_eq!(level(&bytes_only, total / 25), Some("degraded"));
        assert_eq!(level(&bytes_only, GIB / 4), Some("unhealthy"));
        let both = DiskSpaceCheck::new("/")
            .unhealthy_below_bytes(GIB / 2)
            .unhealthy_below_percent(5.0);
        assert_eq!(level(&both, total / 25), Some("unhealthy"));
        assert_eq!(level(&both, GIB / 4), Some("unhealthy"));
        // The untouched degraded level keeps its default 10 %.
        assert_eq!(level(&both, total / 12), Some("degraded"));
        assert_eq!(level(&both, total / 5), None);
    }

    /// A degraded threshold set alone keeps the default unhealthy one of
    /// 5 % where that is below it, and half of it where 5 % is not.
    #[test]
    fn an_unset_unhealthy_threshold_stays_below_a_degraded_one_set_alone() {
        const GIB: u64 = 1 << 30;
        let total = 1024 * GIB;
        let level = |check: &DiskSpaceCheck, free| {
            check
                .level(Space { free, total })
                .map(|(level, threshold)| (level, threshold.describe()))
        };
        // 10 GiB on a 1 TiB disk: 5 % would be 51 GiB, above it.
        let bytes = DiskSpaceCheck::new("/").degraded_below_bytes(10 * GIB);
        assert_eq!(level(&bytes, 40 * GIB), None);
        assert_eq!(
            level(&bytes, 9 * GIB),
            Some(("degraded", "10.0 GiB".into()))
        );
        assert_eq!(
            level(&bytes, 4 * GIB),
            Some(("unhealthy", "5.0 GiB".into()))
        );
        // 8 % and 15 %: the default 5 % is below them, and stays.
        for percent in [8.0, 15.0] {
            let wide = DiskSpaceCheck::new("/").degraded_below_percent(percent);
            assert_eq!(
                level(&wide, total / 16),
                Some(("degraded", format!("{percent}%")))
            );
            assert_eq!(level(&wide, total / 25), Some(("unhealthy", "5%".into())));
        }
        // 5 % and 3 %: half of them.
        let equal = DiskSpaceCheck::new("/").degraded_below_percent(5.0);
        assert_eq!(level(&equal, total / 25), Some(("degraded", "5%".into())));
        assert_eq!(
            level(&equal, total / 50),
            Some(("unhealthy", "2.5%".into()))
        );
        let narrow = DiskSpaceCheck::new("/").degraded_below_percent(3.0);
        assert_eq!(level(&narrow, total / 50), Some(("degraded", "3%".into())));
        assert_eq!(
            level(&narrow, total / 100),
            Some(("unhealthy", "1.5%".into()))
        );
        // A degraded threshold of zero leaves the default.
        let zero = DiskSpaceCheck::new("/").degraded_below_percent(0.0);
        assert_eq!(level(&zero, total / 25), Some(("unhealthy", "5%".into())));
        // Set, the unhealthy threshold is taken as it is.
        let set = DiskSpaceCheck::new("/")
            .degraded_below_bytes(10 * GIB)
            .unhealthy_below_percent(5.0);
        assert_eq!(level(&set, 40 * GIB), Some(("unhealthy", "5%".into())));
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
