//! `application/health+json`, after the IETF draft
//! draft-inadarei-api-health-check: `status` is `pass`, `warn` or `fail`,
//! and `checks` is keyed `component:measurement`.

use std::{borrow::Cow, collections::BTreeMap};

use bytes::Bytes;
use serde::Serialize;

use super::{millis, timestamp};
use crate::{
    Status,
    snapshot::{Answer, Component, Judged, Kind, Probe, ProbeStatus, View},
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    release_id: Option<&'a str>,
    checks: BTreeMap<String, Vec<Entry<'a>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    component_type: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_value: Option<Cow<'a, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_unit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Cow<'a, str>>,
}

pub(crate) fn probe(view: &View<'_>, probe: Probe) -> Answer {
    let verdict = view.verdict(probe);
    let body = Body {
        status: verdict.status.health_json(),
        output: verdict.reason(view.snap),
        release_id: view.snap.version.as_deref(),
        checks: checks(
            view,
            view.members(probe).filter(|c| !view.excluded(c)),
            // A check with no result yet does not fail liveness.
            if probe == Probe::Liveness {
                "warn"
            } else {
                "fail"
            },
        ),
    };
    Answer {
        status: verdict.status,
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    }
}

/// `/health/{name}` with `Accept: application/health+json`.
pub(crate) fn component(view: &View<'_>, c: &Component) -> Answer {
    let status = match view.judge(c) {
        Judged::Pass(Status::Healthy) => ProbeStatus::Healthy,
        Judged::Pass(_) => ProbeStatus::Degraded,
        Judged::Pending | Judged::Fail(_) => ProbeStatus::Unhealthy,
    };
    let body = Body {
        status: status.health_json(),
        output: None,
        release_id: view.snap.version.as_deref(),
        checks: checks(view, std::iter::once(c), "fail"),
    };
    Answer {
        status,
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    }
}

/// The `checks` member; `pending` is the status of a check with no result
/// yet. A key's array has one entry per value measured under that name: a
/// check's own observation named `responseTime` sits beside the runner's,
/// after it, rather than replacing it.
fn checks<'a>(
    view: &View<'a>,
    components: impl Iterator<Item = &'a Component>,
    pending: &'static str,
) -> BTreeMap<String, Vec<Entry<'a>>> {
    let mut checks = BTreeMap::new();
    for c in components {
        let (status, output) = match view.judge(c) {
            Judged::Pending => (pending, Some(Cow::Borrowed("awaiting first result"))),
            Judged::Pass(Status::Healthy) => ("pass", None),
            Judged::Pass(status) => (
                "warn",
                Some(Cow::Borrowed(
                    view.degraded_message(c, status).unwrap_or("degraded"),
                )),
            ),
            Judged::Fail(reason) => {
                let text = match reason.message().filter(|_| view.reveal) {
                    Some(message) => Cow::Borrowed(message),
                    None => reason.public(),
                };
                ("fail", Some(text))
            }
        };
        let entry = |value, unit, time| Entry {
            component_type: c.component_type,
            status,
            observed_value: value,
            observed_unit: unit,
            time,
            output: output.clone(),
        };
        match &c.kind {
            Kind::Check(check) => {
                let run = check.last.as_deref();
                let time = run.map(|r| timestamp(r.at_wall));
                let latency = run.map(|r| Cow::Owned(serde_json::Value::from(millis(r.duration))));
                checks.insert(
                    format!("{}:responseTime", c.name),
                    vec![entry(latency, run.map(|_| "ms"), time.clone())],
                );
                // A check's own observations are for those allowed details
                // only, like the error texts; the runner's time is public.
                let observations = run.filter(|_| view.reveal);
                for o in observations.map_or(&[][..], |r| &r.observations[..]) {
                    checks
                        .entry(format!("{}:{}", c.name, o.measurement()))
                        .or_default()
                        .push(entry(
                            Some(Cow::Borrowed(o.value())),
                            o.unit(),
                            time.clone(),
                        ));
                }
            }
            // No `time`: beats do not republish the snapshot at once, so a
            // cached answer could show an old beat. `/health/{name}` has it.
            Kind::Heartbeat(_) => {
                checks.insert(
                    format!("{}:heartbeat", c.name),
                    vec![entry(None, None, None)],
                );
            }
        }
    }
    checks
}
