//! The immutable state the runner publishes and the request path reads.
//!
//! A [`Snapshot`] holds every component's last judged state plus answers
//! pre-rendered at publish time. Those answers stay valid until
//! `fresh_until`: the first future instant at which a result would turn
//! stale or a heartbeat would miss its deadline. The runner wakes at that
//! instant and publishes again, so probes serve cached bytes. If it does not
//! (the task died, the runtime is starved), probes judge the snapshot again
//! at the current instant, with the same code, and report what went stale.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use tokio::time::Instant;

use crate::{
    Status,
    check::Observation,
    heartbeat::{Beat, HeartbeatSlot},
    registry::{Overview, Probes},
    render,
};

/// One of the endpoints the layer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Probe {
    /// `/health`: every check.
    Health,
    /// `/livez`: the process itself (liveness checks and heartbeats).
    Liveness,
    /// `/readyz`: whether to send traffic.
    Readiness,
    /// `/startupz`: whether initialisation finished (latches).
    Startup,
}

impl Probe {
    pub(crate) const ALL: [Probe; 4] = [
        Probe::Health,
        Probe::Liveness,
        Probe::Readiness,
        Probe::Startup,
    ];

    /// The probe's name: `health`, `livez`, `readyz` or `startupz`, its
    /// default path without the `/`. (The Kubernetes text form's last line
    /// names the path asked, so `/ready` answers `ready check passed`.)
    pub const fn name(self) -> &'static str {
        match self {
            Probe::Health => "health",
            Probe::Liveness => "livez",
            Probe::Readiness => "readyz",
            Probe::Startup => "startupz",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    const fn flag(self) -> Option<Probes> {
        match self {
            Probe::Health => None,
            Probe::Liveness => Some(Probes::LIVENESS),
            Probe::Readiness => Some(Probes::READINESS),
            Probe::Startup => Some(Probes::STARTUP),
        }
    }
}

/// What a probe answers. Each maps to an HTTP status code, configurable with
/// [`HealthLayer::status_code`](crate::HealthLayer::status_code) (where
/// liveness and startup keep 200 for a passing status, and liveness,
/// readiness and startup keep 503 for a failing one given a code kubelet
/// counts as a success).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeStatus {
    /// Everything judged passes. Default 200.
    Healthy,
    /// Passing, but a non-critical check fails or a check reports degraded.
    /// Default 200.
    Degraded,
    /// A critical check fails. Default 503.
    Unhealthy,
    /// Not started yet (readiness, startup, `/health`). Default 503.
    Starting,
    /// Draining for shutdown, or taken out of rotation (readiness,
    /// `/health`). Default 503.
    Draining,
    /// At the in-flight limit (readiness only). Default 503. A code set
    /// for it that kubelet counts as a success (2xx, 3xx) is ignored, and
    /// readiness keeps 503; any other, such as 429, is used.
    Busy,
}

impl ProbeStatus {
    /// The value of `status` in JSON bodies.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProbeStatus::Healthy => "healthy",
            ProbeStatus::Degraded => "degraded",
            ProbeStatus::Unhealthy => "unhealthy",
            ProbeStatus::Starting => "starting",
            ProbeStatus::Draining => "draining",
            ProbeStatus::Busy => "busy",
        }
    }

    /// Whether the probe passes (healthy or degraded).
    pub const fn is_passing(self) -> bool {
        matches!(self, ProbeStatus::Healthy | ProbeStatus::Degraded)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub(crate) const fn health_json(self) -> &'static str {
        match self {
            ProbeStatus::Healthy => "pass",
            ProbeStatus::Degraded => "warn",
            _ => "fail",
        }
    }
}

/// Why a component counts as failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The check returned unhealthy.
    Reported,
    TimedOut(Duration),
    Panicked,
}

/// One finished run of a check.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) status: Status,
    pub(crate) failure: Option<Failure>,
    pub(crate) message: Option<Cow<'static, str>>,
    pub(crate) observations: Vec<Observation>,
    pub(crate) duration: Duration,
    pub(crate) at: Instant,
    pub(crate) at_wall: SystemTime,
}

/// A check's damped state, as the runner decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effective {
    Pending,
    Passing(Status),
    Failing,
}

#[derive(Debug, Clone)]
pub(crate) struct CheckView {
    pub(crate) effective: Effective,
    pub(crate) last: Option<Arc<Run>>,
    pub(crate) last_failure: Option<Arc<Run>>,
    /// The first failed run of the current streak of failures (`None`
    /// after a passing run): `failure_grace` counts from its end, and
    /// `?detailed=true` shows it as `failing_since`.
    pub(crate) first_failure: Option<Arc<Run>>,
    pub(crate) successes: u32,
    pub(crate) failures: u32,
    pub(crate) max_age: Duration,
}

impl CheckView {
    /// Passing, with a passing last run: neither failing nor counting a
    /// failure streak.
    pub(crate) fn settled(&self) -> bool {
        matches!(self.effective, Effective::Passing(_))
            && self
                .last
                .as_ref()
                .is_some_and(|run| run.status.is_passing())
    }

    /// When the last result turns stale (`None` before the first result).
    /// Durations are clamped at registration (`max_age` to at most 300
    /// years), so the sum cannot overflow.
    pub(crate) fn stale_at(&self) -> Option<Instant> {
        self.last.as_ref().map(|run| run.at + self.max_age)
    }
}

pub(crate) enum Kind {
    Check(CheckView),
    Heartbeat(Arc<HeartbeatSlot>),
}

pub(crate) struct Component {
    pub(crate) name: Arc<str>,
    pub(crate) probes: Probes,
    pub(crate) critical: bool,
    /// health+json's `componentType`.
    pub(crate) component_type: &'static str,
    pub(crate) kind: Kind,
}

/// A component judged at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Judged<'a> {
    Pending,
    Pass(Status),
    Fail(Reason<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reason<'a> {
    Reported(Option<&'a str>),
    /// Cut at this timeout; the message says what the run was waiting for,
    /// when the check said (see `runner::if_cut`).
    TimedOut(Duration, Option<&'a str>),
    Panicked(Option<&'a str>),
    /// No result within this `max_age`.
    Stale(Duration),
    MissedBeat(Duration),
    HandleDropped,
}

impl<'a> Reason<'a> {
    /// Text safe for anyone: never the check's own message.
    pub(crate) fn public(&self) -> Cow<'static, str> {
        match self {
            Reason::Reported(_) => Cow::Borrowed("failed"),
            Reason::TimedOut(d, _) => Cow::Owned(format!("timed out after {}", fmt_duration(*d))),
            Reason::Panicked(_) => Cow::Borrowed("panicked"),
            Reason::Stale(max_age) => Cow::Owned(format!(
                "stale: no result within max_age of {}",
                fmt_duration(*max_age)
            )),
            Reason::MissedBeat(d) => {
                Cow::Owned(format!("missed heartbeat deadline of {}", fmt_duration(*d)))
            }
            Reason::HandleDropped => Cow::Borrowed("heartbeat handle dropped"),
        }
    }

    /// The check's own message, for requests allowed to see details.
    pub(crate) fn message(&self) -> Option<&'a str> {
        match self {
            Reason::Reported(m) | Reason::Panicked(m) | Reason::TimedOut(_, m) => *m,
            _ => None,
        }
    }

    /// Whether the public text hides a message (Kubernetes says "reason
    /// withheld" there).
    pub(crate) fn is_withheld(&self) -> bool {
        matches!(self, Reason::Reported(_) | Reason::Panicked(_))
    }
}

/// `2s`, `1.5s`, `250ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}

/// Bytes pre-rendered at publish time.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: ProbeStatus,
    pub(crate) body: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    HealthJson,
    Text,
}

#[derive(Debug, Default)]
pub(crate) struct Cached {
    /// `[probe][format]`, plus readiness while busy at index 4.
    answers: Vec<[Answer; 3]>,
}

impl Cached {
    pub(crate) fn get(&self, probe: Probe, busy: bool, format: Format) -> &Answer {
        let row = if busy && probe == Probe::Readiness {
            4
        } else {
            probe.index()
        };
        &self.answers[row][format as usize]
    }
}

pub(crate) struct Snapshot {
    pub(crate) components: Vec<Component>,
    pub(crate) started: bool,
    pub(crate) waiting_for_mark: bool,
    pub(crate) draining: bool,
    /// [`HealthHandle::take_out_of_rotation`](crate::HealthHandle::take_out_of_rotation):
    /// readiness and `/health` report draining until returned.
    pub(crate) out_of_rotation: bool,
    /// The refresher is gone without a shutdown (panicked, or dropped with
    /// its runtime): no check will run again.
    pub(crate) stopped: bool,
    pub(crate) version: Option<Arc<str>>,
    pub(crate) born: Instant,
    pub(crate) in_flight_limit: Option<usize>,
    /// The cached answers are exact until this instant; `None` is forever.
    pub(crate) fresh_until: Option<Instant>,
    pub(crate) cached: Cached,
}

/// Per-request choices that change an answer.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) now: Instant,
    pub(crate) reveal: bool,
    pub(crate) busy: bool,
    pub(crate) exclude: &'a [Cow<'a, str>],
}

/// A probe's verdict with the names behind it.
#[derive(Debug)]
pub(crate) struct Verdict<'a> {
    pub(crate) status: ProbeStatus,
    pub(crate) failing: Vec<&'a str>,
    pub(crate) degraded: Vec<&'a str>,
    pub(crate) waiting: Vec<&'a str>,
}

impl Verdict<'_> {
    /// Why the probe answers as it does, for `snap`'s judgement.
    pub(crate) fn reason(&self, snap: &Snapshot) -> Option<String> {
        let list = |label: &str, names: &[&str]| format!("{label}: {}", names.join(", "));
        match self.status {
            ProbeStatus::Healthy => None,
            ProbeStatus::Unhealthy if snap.stopped => Some(STOPPED.to_owned()),
            ProbeStatus::Degraded => Some(list("degraded", &self.degraded)),
            ProbeStatus::Unhealthy => Some(list("failing", &self.failing)),
            ProbeStatus::Starting => Some(list("waiting for", &self.waiting)),
            ProbeStatus::Draining if snap.draining => Some("shutting down".to_owned()),
            ProbeStatus::Draining => Some(OUT_OF_ROTATION.to_owned()),
            ProbeStatus::Busy => Some(format!(
                "at the limit of {} requests in flight",
                snap.in_flight_limit.unwrap_or(0)
            )),
        }
    }
}

pub(crate) const MARK_STARTED: &str = "mark_started";

/// Why readiness and `/health` fail while the instance is out of rotation
/// (and not shutting down).
pub(crate) const OUT_OF_ROTATION: &str = "taken out of rotation";

/// Why liveness, readiness and `/health` fail once the refresher is gone.
pub(crate) const STOPPED: &str = "health checks stopped running: the refresher task is gone";

impl Snapshot {
    /// The checks startup waits for at `now`: those with no result yet and
    /// the startup checks not passing, a passing result gone stale
    /// counting as not passing, as it does for every probe.
    pub(crate) fn awaited(&self, now: Instant) -> impl Iterator<Item = &Component> {
        self.components.iter().filter(move |c| match &c.kind {
            Kind::Check(view) => match view.effective {
                Effective::Pending => true,
                Effective::Failing => c.probes.contains(Probes::STARTUP),
                Effective::Passing(_) => {
                    c.probes.contains(Probes::STARTUP)
                        && view.stale_at().is_some_and(|at| now >= at)
                }
            },
            Kind::Heartbeat(_) => false,
        })
    }

    /// Whether startup waits for nothing at `now`: no check is
    /// [`awaited`](Self::awaited) and `mark_started` is not still required.
    pub(crate) fn startup_done(&self, now: Instant) -> bool {
        !self.waiting_for_mark && self.awaited(now).next().is_none()
    }

    /// [`awaited`](Self::awaited)'s names, plus `mark_started` when it is
    /// still required, without the checks `excluded` names. (`mark_started`
    /// is not a check: it stays.)
    fn startup_waiting_but(
        &self,
        now: Instant,
        excluded: impl Fn(&Component) -> bool,
    ) -> Vec<&str> {
        let mut waiting: Vec<&str> = self
            .awaited(now)
            .filter(|c| !excluded(c))
            .map(|c| &*c.name)
            .collect();
        if self.waiting_for_mark {
            waiting.push(MARK_STARTED);
        }
        waiting
    }

    /// Renders every cached answer. Called once per publish.
    pub(crate) fn render_cache(&mut self, now: Instant) {
        let mut view = View {
            snap: self,
            now,
            reveal: false,
            busy: false,
            exclude: &[],
        };
        let mut answers = Vec::with_capacity(5);
        for probe in Probe::ALL {
            answers.push(render::all_formats(&view, probe));
        }
        view.busy = true;
        answers.push(render::all_formats(&view, Probe::Readiness));
        self.cached = Cached { answers };
    }

    pub(crate) fn overview(&self, now: Instant) -> Overview {
        let view = View {
            snap: self,
            now,
            reveal: false,
            busy: false,
            exclude: &[],
        };
        Overview {
            health: view.verdict(Probe::Health).status,
            liveness: view.verdict(Probe::Liveness).status,
            readiness: view.verdict(Probe::Readiness).status,
            startup: view.verdict(Probe::Startup).status,
            components: self
                .components
                .iter()
                .map(|c| {
                    let status = match view.judge(c) {
                        Judged::Pending => None,
                        Judged::Pass(s) => Some(s),
                        Judged::Fail(_) => Some(Status::Unhealthy),
                    };
                    (c.name.clone(), status)
                })
                .collect(),
        }
    }

    /// The first instant after `now` at which time alone changes a
    /// judgement: a passing result turns stale or a live heartbeat misses
    /// its deadline. `None` when nothing is left to expire (every result
    /// already stale or failing, no live heartbeat).
    pub(crate) fn expires_after(&self, now: Instant) -> Option<Instant> {
        self.components
            .iter()
            .filter_map(|c| match &c.kind {
                Kind::Check(view) => match view.effective {
                    Effective::Passing(_) => view.stale_at(),
                    Effective::Pending | Effective::Failing => None,
                },
                Kind::Heartbeat(slot) => match slot.at(now) {
                    Beat::Alive { due, .. } => Some(due),
                    Beat::Missed { .. } | Beat::Dropped => None,
                },
            })
            .filter(|&at| at > now)
            .min()
    }

    pub(crate) fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| &*c.name == name)
    }
}

impl<'a> View<'a> {
    pub(crate) fn judge(&self, c: &'a Component) -> Judged<'a> {
        match &c.kind {
            Kind::Check(view) => match view.effective {
                Effective::Pending => Judged::Pending,
                Effective::Passing(status) => {
                    if view.stale_at().is_some_and(|at| self.now >= at) {
                        Judged::Fail(Reason::Stale(view.max_age))
                    } else {
                        Judged::Pass(status)
                    }
                }
                Effective::Failing => {
                    let run = view.last_failure.as_deref();
                    let message = run.and_then(|r| r.message.as_deref());
                    Judged::Fail(match run.and_then(|r| r.failure) {
                        Some(Failure::TimedOut(d)) => Reason::TimedOut(d, message),
                        Some(Failure::Panicked) => Reason::Panicked(message),
                        _ => Reason::Reported(message),
                    })
                }
            },
            Kind::Heartbeat(slot) => match slot.at(self.now) {
                Beat::Alive { .. } => Judged::Pass(Status::Healthy),
                Beat::Missed { .. } => Judged::Fail(Reason::MissedBeat(slot.deadline)),
                Beat::Dropped => Judged::Fail(Reason::HandleDropped),
            },
        }
    }

    /// The message of the run that made `c` pass as `status` (degraded),
    /// if this caller may see messages. A later failure still below the
    /// failure threshold is not what `c` is shown as.
    pub(crate) fn degraded_message(&self, c: &'a Component, status: Status) -> Option<&'a str> {
        match &c.kind {
            Kind::Check(check) if self.reveal && status != Status::Healthy => check
                .last
                .as_ref()
                .filter(|run| run.status == status)
                .and_then(|run| run.message.as_deref()),
            _ => None,
        }
    }

    /// Whether `probe` judges `c` at all (before exclusions).
    pub(crate) fn member(&self, probe: Probe, c: &Component) -> bool {
        let in_probe = match probe.flag() {
            None => true,
            Some(flag) => c.probes.contains(flag),
        };
        // Startup waits for every check's first result: until then, a
        // check startup is waiting for is shown there, whatever its probes.
        let awaited = probe == Probe::Startup
            && !self.snap.started
            && matches!(&c.kind, Kind::Check(view) if matches!(view.effective, Effective::Pending));
        // Kubernetes runs no liveness probe before startup succeeds: until
        // then only heartbeats decide liveness, never dependency checks.
        let judged_now =
            !(probe == Probe::Liveness && !self.snap.started && matches!(c.kind, Kind::Check(_)));
        (in_probe || awaited) && judged_now
    }

    pub(crate) fn excluded(&self, c: &Component) -> bool {
        self.exclude.iter().any(|name| **name == *c.name)
    }

    /// What startup still waits for, less the checks the request excludes.
    /// `mark_started` is not a check and cannot be excluded: the
    /// application has not said it is ready.
    fn startup_waiting(&self) -> Vec<&'a str> {
        self.snap
            .startup_waiting_but(self.now, |c| self.excluded(c))
    }

    /// Whether `name` is one of the things `probe` judges, so that
    /// `?exclude=name` changes something: one of its members or, before
    /// startup, something startup waits for (not for liveness, which does
    /// not wait for startup).
    pub(crate) fn covers(&self, probe: Probe, name: &str) -> bool {
        self.members(probe).any(|c| *c.name == *name)
            || (!self.snap.started
                && probe != Probe::Liveness
                && self.snap.awaited(self.now).any(|c| *c.name == *name))
    }

    /// The components `probe` shows, in registration order.
    pub(crate) fn members(&self, probe: Probe) -> impl Iterator<Item = &'a Component> + '_ {
        let snap = self.snap;
        snap.components
            .iter()
            .filter(move |c| self.member(probe, c))
    }

    pub(crate) fn verdict(&self, probe: Probe) -> Verdict<'a> {
        let snap = self.snap;
        let mut verdict = Verdict {
            status: ProbeStatus::Healthy,
            failing: Vec::new(),
            degraded: Vec::new(),
            waiting: Vec::new(),
        };
        if probe == Probe::Startup {
            if !snap.started {
                verdict.waiting = self.startup_waiting();
                if !verdict.waiting.is_empty() {
                    verdict.status = ProbeStatus::Starting;
                }
            }
            return verdict;
        }
        let takes_traffic = matches!(probe, Probe::Health | Probe::Readiness);
        if takes_traffic && snap.draining {
            verdict.status = ProbeStatus::Draining;
            return verdict;
        }
        // Nothing will run a check again, so only a restart helps: liveness
        // fails too, which is what gets the container restarted.
        if snap.stopped {
            verdict.status = ProbeStatus::Unhealthy;
            return verdict;
        }
        if takes_traffic && snap.out_of_rotation {
            verdict.status = ProbeStatus::Draining;
            return verdict;
        }
        if matches!(probe, Probe::Health | Probe::Readiness) {
            if !snap.started {
                let waiting = self.startup_waiting();
                if !waiting.is_empty() {
                    verdict.status = ProbeStatus::Starting;
                    verdict.waiting = waiting;
                    return verdict;
                }
            }
            if probe == Probe::Readiness && self.busy {
                verdict.status = ProbeStatus::Busy;
                return verdict;
            }
        }
        for c in self.members(probe).filter(|c| !self.excluded(c)) {
            let failing = match self.judge(c) {
                Judged::Pass(Status::Healthy) => continue,
                Judged::Pass(_) => {
                    verdict.degraded.push(&*c.name);
                    continue;
                }
                // A check added after startup has no result yet: it does
                // not take a live process down, but it is not ready yet.
                Judged::Pending if probe == Probe::Liveness => continue,
                Judged::Pending | Judged::Fail(_) => true,
            };
            if failing && c.critical {
                verdict.failing.push(&*c.name);
            } else {
                verdict.degraded.push(&*c.name);
            }
        }
        verdict.status = if !verdict.failing.is_empty() {
            ProbeStatus::Unhealthy
        } else if !verdict.degraded.is_empty() {
            ProbeStatus::Degraded
        } else {
            ProbeStatus::Healthy
        };
        verdict
    }
}
