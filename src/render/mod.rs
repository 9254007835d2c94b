//! Turning a judged snapshot into response bodies.
//!
//! Three formats, one per module: plain JSON ([`json`]), the IETF
//! `application/health+json` draft ([`health_json`]) and the Kubernetes
//! `?verbose` text ([`text`]). The same functions render the cached answers
//! at publish time and the on-demand ones (detailed, excluded, stale).

pub(crate) mod health_json;
pub(crate) mod json;
pub(crate) mod text;

use std::time::SystemTime;

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
pub(crate) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds with microsecond precision, for `duration_ms`.
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}
