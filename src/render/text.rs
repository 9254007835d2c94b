//! The Kubernetes `?verbose` text form:
//!
//! ```text
//! [+]postgres ok
//! [-]redis failed: reason withheld
//! readyz check failed
//! ```

use std::fmt::Write;

use bytes::Bytes;

use crate::{
    Status,
    registry::MAX_NAME_LEN,
    snapshot::{Answer, Judged, MARK_STARTED, Probe, ProbeStatus, View},
};

/// The most unmatched `?exclude=` names the warning lists; the rest are
/// counted (`and 3 more`).
const MAX_UNMATCHED_LISTED: usize = 16;

pub(crate) fn probe(view: &View<'_>, probe: Probe) -> Answer {
    render(view, probe, probe.name(), &[])
}

/// `name` is what the last line calls the probe: as Kubernetes does, the
/// requested path without its leading `/` (`healthz check passed`).
/// `unmatched` are `?exclude=` names that match nothing; Kubernetes warns
/// about them in the same place.
pub(crate) fn render(view: &View<'_>, probe: Probe, name: &str, unmatched: &[&str]) -> Answer {
    let verdict = view.verdict(probe);
    let mut out = String::with_capacity(256);
    let snap = view.snap;
    if probe == Probe::Startup {
        if snap.started {
            out.push_str("[+]started ok\n");
        } else {
            for c in snap.awaited(view.now) {
                if view.excluded(c) {
                    let _ = writeln!(out, "[+]{} excluded: ok", c.name);
                } else {
                    let _ = writeln!(out, "[-]{} failed: not started yet", c.name);
                }
            }
            if snap.waiting_for_mark {
                let _ = writeln!(out, "[-]{MARK_STARTED} failed: not started yet");
            }
        }
    } else {
        for c in view.members(probe) {
            if view.excluded(c) {
                let _ = writeln!(out, "[+]{} excluded: ok", c.name);
                continue;
            }
            match view.judge(c) {
                Judged::Pass(Status::Healthy) => {
                    let _ = writeln!(out, "[+]{} ok", c.name);
                }
                Judged::Pass(status) => match view.degraded_message(c, status) {
                    Some(message) => {
                        let message = message.replace(['\r', '\n'], " ");
                        let _ = writeln!(out, "[+]{} degraded: {message}", c.name);
                    }
                    None => {
                        let _ = writeln!(out, "[+]{} degraded", c.name);
                    }
                },
                Judged::Pending => {
                    let sign = if probe == Probe::Liveness { '+' } else { '-' };
                    let _ = writeln!(out, "[{sign}]{} pending: awaiting first result", c.name);
                }
                Judged::Fail(reason) => {
                    let text = match reason.message().filter(|_| view.reveal) {
                        Some(message) => message.replace(['\r', '\n'], " "),
                        None if reason.is_withheld() => "reason withheld".to_owned(),
                        None => reason.public().into_owned(),
                    };
                    let scope = if c.critical { "" } else { " (non-critical)" };
                    let _ = writeln!(out, "[-]{} failed{scope}: {text}", c.name);
                }
            }
        }
        match verdict.status {
            ProbeStatus::Starting => {
                let waiting = verdict.waiting.join(", ");
                let _ = writeln!(out, "[-]startup failed: waiting for {waiting}");
            }
            ProbeStatus::Draining if snap.draining => {
                out.push_str("[-]shutdown failed: draining\n");
            }
            ProbeStatus::Draining => out.push_str("[-]rotation failed: taken out of rotation\n"),
            ProbeStatus::Unhealthy if snap.stopped => {
                out.push_str("[-]refresher failed: checks no longer run\n");
            }
            ProbeStatus::Busy => {
                let _ = writeln!(
                    out,
                    "[-]in-flight failed: at the limit of {} requests",
                    snap.in_flight_limit.unwrap_or(0)
                );
            }
            _ => {}
        }
    }
    if !unmatched.is_empty() {
        // As Kubernetes writes it: one line, the names sorted, each quoted
        // with its escapes (Rust's, not Go's), joined by commas; so a name
        // from the query (decoded, it may hold a newline) cannot add lines
        // of its own. A name longer than any check's can match nothing
        // anywhere: it is cut; and only the first few names are listed, so
        // the answer does not grow with the query.
        let mut names = unmatched.to_vec();
        names.sort_unstable();
        names.dedup();
        out.push_str("warn: some health checks cannot be excluded: no matches for ");
        for (i, name) in names.iter().take(MAX_UNMATCHED_LISTED).enumerate() {
            let separator = if i == 0 { "" } else { "," };
            match name.char_indices().nth(MAX_NAME_LEN) {
                None => {
                    let _ = write!(out, "{separator}{name:?}");
                }
                Some((cut, _)) => {
                    let _ = write!(out, "{separator}{:?}…", &name[..cut]);
                }
            }
        }
        let more = names.len().saturating_sub(MAX_UNMATCHED_LISTED);
        if more > 0 {
            let _ = write!(out, " and {more} more");
        }
        out.push('\n');
    }
    let outcome = if verdict.status.is_passing() {
        "passed"
    } else {
        "failed"
    };
    let _ = writeln!(out, "{name} check {outcome}");
    Answer {
        status: verdict.status,
        body: Bytes::from(out),
    }
}
