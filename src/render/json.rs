//! `application/json`: `{"status":"healthy"}` and the `?detailed=true` form.

use std::{borrow::Cow, collections::BTreeMap};

use bytes::Bytes;
use serde::Serialize;

use super::{millis, timestamp};
use crate::{
    Status,
    snapshot::{Answer, Component, Judged, Kind, Probe, ProbeStatus, View},
};

#[derive(Serialize)]
struct ProbeBody<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<BTreeMap<&'a str, ComponentBody<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
}

#[derive(Serialize)]
struct ComponentBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    kind: &'static str,
    critical: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consecutive_successes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consecutive_failures: Option<u32>,
    /// When the current streak of failed runs began (the first one's
    /// end): present exactly while the last run failed, so also while the
    /// check still counts as passing within its failure threshold or
    /// grace, and absent after a passing run even if the check still
    /// counts as failing (`success_threshold`). It dates the streak of
    /// failed runs, not the check's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline_ms: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    observed: BTreeMap<&'a str, Observed<'a>>,
}

#[derive(Serialize)]
struct Observed<'a> {
    value: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain structs cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// A probe's body; with `detailed`, every component it judges, the uptime
/// and the version.
pub(crate) fn probe(view: &View<'_>, probe: Probe, detailed: bool) -> Answer {
    let verdict = view.verdict(probe);
    let body = ProbeBody {
        status: verdict.status.as_str(),
        reason: verdict.reason(view.snap),
        components: detailed.then(|| {
            view.members(probe)
                .filter(|c| !view.excluded(c))
                .map(|c| (&*c.name, component_body(view, c, false)))
                .collect()
        }),
        uptime_seconds: detailed
            .then(|| view.now.saturating_duration_since(view.snap.born).as_secs()),
        version: if detailed {
            view.snap.version.as_deref()
        } else {
            None
        },
    };
    Answer {
        status: verdict.status,
        body: to_bytes(&body),
    }
}

/// `/health/{name}`: one component's detail.
pub(crate) fn component(view: &View<'_>, c: &Component) -> Answer {
    let status = match view.judge(c) {
        Judged::Pass(Status::Healthy) => ProbeStatus::Healthy,
        Judged::Pass(_) => ProbeStatus::Degraded,
        Judged::Pending | Judged::Fail(_) => ProbeStatus::Unhealthy,
    };
    Answer {
        status,
        body: to_bytes(&component_body(view, c, true)),
    }
}

fn component_body<'a>(view: &View<'a>, c: &'a Component, named: bool) -> ComponentBody<'a> {
    let judged = view.judge(c);
    let (status, reason, error) = match judged {
        Judged::Pending => (
            "unknown",
            Some(Cow::Borrowed("awaiting first result")),
            None,
        ),
        Judged::Pass(status) => {
            let reason = (status != Status::Healthy).then_some(Cow::Borrowed("degraded"));
            (status.as_str(), reason, view.degraded_message(c, status))
        }
        Judged::Fail(reason) => (
            "unhealthy",
            Some(reason.public()),
            reason.message().filter(|_| view.reveal),
        ),
    };
    let mut body = ComponentBody {
        name: named.then_some(&*c.name),
        status,
        reason,
        error,
        kind: "check",
        critical: c.critical,
        duration_ms: None,
        checked_at: None,
        age_ms: None,
        consecutive_successes: None,
        consecutive_failures: None,
        failing_since: None,
        deadline_ms: None,
        observed: BTreeMap::new(),
    };
    match &c.kind {
        Kind::Check(check) => {
            body.consecutive_successes = Some(check.successes);
            body.consecutive_failures = Some(check.failures);
            body.failing_since = check.first_failure.as_ref().map(|r| timestamp(r.at_wall));
            if let Some(run) = &check.last {
                body.duration_ms = Some(millis(run.duration));
                body.checked_at = Some(timestamp(run.at_wall));
                body.age_ms = Some(millis(view.now.saturating_duration_since(run.at)));
                // Pool sizes, free space, an upstream's status: for those
                // allowed details only, like the error texts.
                body.observed = run
                    .observations
                    .iter()
                    .filter(|_| view.reveal)
                    .map(|o| {
                        (
                            o.measurement(),
                            Observed {
                                value: o.value(),
                                unit: o.unit(),
                            },
                        )
                    })
                    .collect();
            }
        }
        Kind::Heartbeat(slot) => {
            body.kind = "heartbeat";
            body.deadline_ms = Some(millis(slot.deadline));
            body.checked_at = Some(timestamp(slot.last_wall()));
        }
    }
    body
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    status: &'static str,
    error: &'a str,
}

/// The body of a 400, 404 or 405: `{"status":"error","error":"..."}`.
pub(crate) fn error(message: &str) -> Bytes {
    to_bytes(&ErrorBody {
        status: "error",
        error: message,
    })
}
