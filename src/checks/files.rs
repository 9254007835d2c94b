//! How many file descriptors the process has open, against its limit
//! (Linux, no feature needed).
//!
//! Every socket and file a process holds is a file descriptor, and the
//! kernel refuses more than the soft `RLIMIT_NOFILE` (`ulimit -n`,
//! systemd's `LimitNOFILE=`, a container runtime's default): past it,
//! `accept` fails with `EMFILE` and the server stops taking connections
//! while every check of a dependency may still pass. A leak (connections
//! or files never closed) climbs towards it slowly. [`OpenFilesCheck`]
//! counts the entries of `/proc/self/fd` and reads the limit from
//! `/proc/self/limits`:
//!
//! | open, of the limit | status |
//! |---|---|
//! | up to the degraded threshold (default 80 %) | healthy |
//! | above it | degraded |
//! | above the unhealthy threshold (none by default) | unhealthy |
//!
//! Degraded, not unhealthy, by default: a process out of descriptors is
//! cured by a restart, not by less traffic, and readiness failing on it
//! would only move the load to the other replicas. The degraded status
//! shows in `?detailed=true`, the logs and the metrics (alert on it); set
//! [`unhealthy_above`](OpenFilesCheck::unhealthy_above), and the check's
//! probes ([`CheckOptions::probes`](crate::CheckOptions::probes)), to act on
//! it. Without a limit (`unlimited`) the check only counts.
//!
//! The count runs on Tokio's blocking pool (a process may hold tens of
//! thousands of descriptors; `/proc` never waits on a device).
//!
//! Observations: `open`, `limit` and `used_percent` (unit `%`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_health::Error> {
//! use tower_health::{HealthChecks, checks::files::OpenFilesCheck};
//!
//! let health = HealthChecks::builder()
//!     .check("open-files", OpenFilesCheck::new().degraded_above(70.0))
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! ```

use std::io;

use crate::{Check, CheckResult};

/// Counts the process's open file descriptors against its limit. See the
/// [module documentation](self).
#[derive(Debug, Clone)]
pub struct OpenFilesCheck {
    degraded: f64,
    unhealthy: Option<f64>,
}

impl Default for OpenFilesCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl OpenFilesCheck {
    /// Degraded above 80 % of the limit, never unhealthy.
    pub const fn new() -> Self {
        Self {
            degraded: 80.0,
            unhealthy: None,
        }
    }

    /// Degraded above `percent` of the limit (default 80; a value that is
    /// not a number counts as 100).
    #[must_use]
    pub fn degraded_above(mut self, percent: f64) -> Self {
        self.degraded = percent_or_all(percent);
        self
    }

    /// Unhealthy above `percent` of the limit (none by default).
    #[must_use]
    pub fn unhealthy_above(mut self, percent: f64) -> Self {
        self.unhealthy = Some(percent_or_all(percent));
        self
    }

    fn judge(&self, open: u64, limit: Option<u64>) -> CheckResult {
        let Some(limit) = limit.filter(|&limit| limit > 0) else {
            return CheckResult::healthy().with_observation("open", open, None);
        };
        let used = open as f64 * 100.0 / limit as f64;
        let over = |threshold: f64| {
            format!(
                "{open} of {limit} file descriptors open ({used:.1} %), above {threshold} %: \
                 connections or files not closed (a leak), or a limit too low for the load \
                 (ulimit -n, systemd's LimitNOFILE=); at the limit the server can accept no \
                 connection"
            )
        };
        let result = match self.unhealthy {
            Some(threshold) if used > threshold => CheckResult::unhealthy(over(threshold)),
            _ if used > self.degraded => CheckResult::degraded(over(self.degraded)),
            _ => CheckResult::healthy(),
        };
        result
            .with_observation("open", open, None)
            .with_observation("limit", limit, None)
            .with_observation("used_percent", (used * 10.0).round() / 10.0, Some("%"))
    }
}

fn percent_or_all(percent: f64) -> f64 {
    if percent.is_nan() { 100.0 } else { percent }
}

impl Check for OpenFilesCheck {
    fn component_type(&self) -> &'static str {
        "system"
    }

    async fn check(&self) -> CheckResult {
        let counted =
            tokio::task::spawn_blocking(|| Ok::<_, io::Error>((count()?, limit()?))).await;
        match counted {
            Ok(Ok((open, limit))) => self.judge(open, limit),
            Ok(Err(e)) => CheckResult::unhealthy(format!(
                "cannot count the open file descriptors in /proc/self: {e}"
            )),
            Err(e) => {
                CheckResult::unhealthy(format!("counting the open file descriptors failed: {e}"))
            }
        }
    }
}

/// The process's open descriptors, without the one the count itself
/// opens to read the directory.
fn count() -> io::Result<u64> {
    let entries = std::fs::read_dir("/proc/self/fd")?.count() as u64;
    Ok(entries.saturating_sub(1))
}

/// The soft limit on open descriptors; `None` for `unlimited`.
fn limit() -> io::Result<Option<u64>> {
    parse_limit(&std::fs::read_to_string("/proc/self/limits")?)
}

/// The soft limit in `/proc/self/limits`' "Max open files" line.
fn parse_limit(limits: &str) -> io::Result<Option<u64>> {
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| io::Error::other("no \"Max open files\" line in /proc/self/limits"))?;
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse()
        .map(Some)
        .map_err(|_| io::Error::other(format!("the limit on open files {soft:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;
    use crate::test_util::observed;

    #[tokio::test]
    async fn counts_this_process_s_descriptors_against_its_limit() {
        let result = OpenFilesCheck::new().check().await;
        let open = observed(&result, "open").as_u64().unwrap();
        let limit = observed(&result, "limit").as_u64().unwrap();
        assert!(open > 0 && limit > 0, "{result:?}");

        // Fifty more open files are counted.
        let held: Vec<std::fs::File> = (0..50)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let more = OpenFilesCheck::new().check().await;
        let now_open = observed(&more, "open").as_u64().unwrap();
        assert!(now_open >= open + 50, "{open} then {now_open}");
        drop(held);

        // Any use is above 0 %.
        let low = OpenFilesCheck::new().degraded_above(0.0).check().await;
        assert_eq!(low.status(), Status::Degraded, "{low:?}");
        assert!(
            low.message()
                .unwrap()
                .contains(&format!("of {limit} file descriptors open")),
            "{low:?}"
        );
        let failing = OpenFilesCheck::new().unhealthy_above(0.0).check().await;
        assert_eq!(failing.status(), Status::Unhealthy, "{failing:?}");
    }

    #[test]
    fn thresholds() {
        let check = OpenFilesCheck::new();
        assert_eq!(check.judge(800, Some(1000)).status(), Status::Healthy);
        let degraded = check.judge(801, Some(1000));
        assert_eq!(degraded.status(), Status::Degraded);
        assert_eq!(observed(&degraded, "used_percent"), 80.1);
        let strict = OpenFilesCheck::new().unhealthy_above(90.0);
        assert_eq!(strict.judge(900, Some(1000)).status(), Status::Degraded);
        assert_eq!(strict.judge(901, Some(1000)).status(), Status::Unhealthy);
        // No limit: counted only.
        let unlimited = check.judge(1_000_000, None);
        assert_eq!(unlimited.status(), Status::Healthy);
        assert_eq!(observed(&unlimited, "open"), 1_000_000);
        assert!(
            unlimited
                .observations()
                .iter()
                .all(|o| o.measurement() == "open")
        );
    }

    #[test]
    fn the_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_limit(limits).unwrap(), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_limit(unlimited).unwrap(), None);
        assert!(parse_limit("Max processes 1 1 processes\n").is_err());
        assert!(parse_limit("Max open files lots lots files\n").is_err());
    }
}
