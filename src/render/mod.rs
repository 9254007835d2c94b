//! Turning a judged snapshot into response bodies.
//!
//! Three formats, one per module: plain JSON ([`json`]), the IETF
//! `application/health+json` draft ([`health_json`]) and the Kubernetes
//! `?verbose` text ([`text`]). The same functions render the cached answers
//! at publish time and the on-demand ones (detailed, excluded, stale).

pub(crate) mod health_json;
pub(crate) mod json;
pub(crate) mod text;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::snapshot::{Answer, Probe, View};

/// The cached answers for one probe, indexed by [`Format`](crate::snapshot::Format).
pub(crate) fn all_formats(view: &View<'_>, probe: Probe) -> [Answer; 3] {
    [
        json::probe(view, probe, false),
        health_json::probe(view, probe),
        text::probe(view, probe),
    ]
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T05:40:00.123Z`.
///
/// A wall clock set outside the years 1970 to 9999, which RFC 3339 and the
/// formatter cover, shows as the nearest end of that range
/// (`1970-01-01T00:00:00.000Z`, `9999-12-31T23:59:59.999Z`): a misset clock
/// must not panic a request, or the refresher, which renders timestamps
/// when it publishes.
pub(crate) fn timestamp(t: SystemTime) -> String {
    // The last millisecond of 9999-12-31, UTC.
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch.min(LAST)).to_string()
}

/// Milliseconds with microsecond precision, for `duration_ms`.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::timestamp;

    #[test]
    fn a_wall_clock_outside_rfc_3339s_years_is_shown_at_their_ends() {
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_millis(1_795_239_600_123)),
            "2026-11-21T05:40:00.123Z"
        );
        assert_eq!(
            timestamp(UNIX_EPOCH - Duration::from_secs(100)),
            "1970-01-01T00:00:00.000Z"
        );
        let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(timestamp(year_10000), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            timestamp(year_10000 - Duration::from_millis(1)),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
