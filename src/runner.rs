//! The background refresher: one task that runs every check on its own
//! schedule, cuts runs at their timeout, survives panics, applies the
//! thresholds and publishes a new [`Snapshot`] after every change.
//!
//! All mutable state sits in one `std::sync::Mutex<State>`. It is never held
//! across an `.await`: the task locks it to start due runs and to record a
//! finished one, and handle methods lock it to change the set of checks.
//! Each change publishes at once, under the lock, so publishes are ordered
//! and "answers reflect the change at once" holds. The request path never
//! touches the lock: it loads the published `Arc<Snapshot>` from an
//! `ArcSwap`.
//!
//! No log event reaches the subscriber under the lock (only the span
//! current where each is raised is looked up there). Events raised there
//! wait in `State::later` and are emitted, in order, once it is released (see
//! [`Locked`] and `Shared::emit_later`), each to the subscriber and in the
//! span current where it was raised: a `tracing` subscriber is the
//! application's, and one that called back into the handle, or dropped its
//! last clone, would otherwise deadlock.

use std::{
    any::Any,
    cell::RefCell,
    future::Future,
    hash::{BuildHasher, RandomState},
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use tokio::{
    sync::{Notify, watch},
    task::{AbortHandle, JoinSet},
    time::Instant,
};
use tracing::Instrument;

use crate::{
    CheckResult, Status,
    check::DynCheck,
    heartbeat::{Heartbeat, HeartbeatOptions, HeartbeatSlot},
    registry::{
        CheckOptions, Error, HealthChecksBuilder, LONGEST, Overview, Probes, Registration,
        SHORTEST, validate_name, warn_if_shadowed,
    },
    snapshot::{
        Cached, CheckView, Component, Effective, Failure, Kind, Run, Snapshot, fmt_duration,
    },
};

pub(crate) type InFlightFilter = Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>;

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Held by the thread emitting [`State::later`]'s events.
    emitter: Mutex<()>,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    wake: Notify,
    stopped: AtomicBool,
    /// The refresher task ended without a shutdown (see [`MarkStopped`]).
    lost: AtomicBool,
    /// Tests: the next `record` panics, as a bug in the refresher would.
    #[cfg(test)]
    pub(crate) panic_in_record: AtomicBool,
    /// Readiness reports draining (shutting down, or out of rotation):
    /// HTTP/1 responses ask their clients to close the connection. Kept
    /// beside the snapshot so that the pass-through path reads one flag.
    pub(crate) closing: AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) in_flight_limit: Option<usize>,
    pub(crate) in_flight_filter: Option<InFlightFilter>,
    pub(crate) overview: watch::Sender<Overview>,
    /// The published snapshot's `fresh_until`, sent when it moves earlier:
    /// a run can bring an expiry forward without changing any answer (a
    /// failure below the threshold puts the failing interval in force),
    /// and followers, which sleep until the expiry they last saw, must
    /// learn of it.
    pub(crate) expiry: watch::Sender<Option<Instant>>,
    pub(crate) drain_delay: Duration,
    /// Notified after every run, for the metrics' status task.
    #[cfg(feature = "metrics")]
    pub(crate) ran: Arc<Notify>,
}

struct State {
    checks: Vec<Entry>,
    heartbeats: Vec<Arc<HeartbeatSlot>>,
    started: bool,
    require_mark: bool,
    marked: bool,
    draining: bool,
    out_of_rotation: bool,
    version: Option<Arc<str>>,
    born: Instant,
    next_id: u64,
    /// The published snapshot's `fresh_until`: the runner publishes again
    /// when it passes.
    fresh_until: Option<Instant>,
    /// Log events raised under the lock, in the order raised, waiting to
    /// be emitted after it ([`Shared::emit_later`]).
    later: Vec<Later>,
}

/// A log event waiting for the lock to be released, with the subscriber
/// and the span current where it was raised: whichever thread emits it,
/// it goes where it would have gone at once.
struct Later {
    emit: Box<dyn FnOnce() + Send>,
    dispatch: tracing::Dispatch,
    span: tracing::Span,
}

impl Later {
    fn new(emit: impl FnOnce() + Send + 'static) -> Self {
        Self {
            emit: Box::new(emit),
            dispatch: tracing::dispatcher::get_default(Clone::clone),
            span: tracing::Span::current(),
        }
    }

    /// Emits it where it was raised. A subscriber that panics loses this
    /// event, not the ones after it.
    fn emit(self) {
        let Self {
            emit,
            dispatch,
            span,
        } = self;
        let emitted = catch_unwind(AssertUnwindSafe(|| {
            tracing::dispatcher::with_default(&dispatch, || span.in_scope(emit));
        }));
        if let Err(payload) = emitted {
            drop_quietly(payload);
        }
    }
}

impl State {
    /// Raises a log event, emitted once the lock is released.
    fn log(&mut self, emit: impl FnOnce() + Send + 'static) {
        self.later.push(Later::new(emit));
    }
}

/// The runner's state, locked. Dropping it releases the lock, then emits
/// the log events raised meanwhile ([`State::later`]).
struct Locked<'a> {
    shared: &'a Shared,
    state: Option<MutexGuard<'a, State>>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        self.state.as_ref().expect("locked until dropped")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.state.as_mut().expect("locked until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        let raised = !state.later.is_empty();
        drop(state);
        // A subscriber that panicked here, while this thread is already
        // unwinding, would abort the process: the next unlock emits them.
        if raised && !std::thread::panicking() {
            self.shared.emit_later();
        }
    }
}

struct Entry {
    id: u64,
    name: Arc<str>,
    check: Arc<dyn DynCheck>,
    options: CheckOptions,
    /// See [`Registration::component_type`].
    component_type: &'static str,
    /// The run in flight, if any: `remove_check` aborts it.
    running: Option<Running>,
    /// `recheck` was asked while a run was in flight: the next run comes
    /// `recheck_spacing` after it ends, if that is sooner and the run
    /// leaves the check settled as passing.
    recheck: bool,
    /// The measurements this check's runs have set on the observation
    /// gauge: a run that does not report one sets it to NaN.
    #[cfg(feature = "metrics")]
    gauged: Vec<Arc<str>>,
    next_due: Instant,
    view: CheckView,
}

/// A run in flight.
struct Running {
    task: AbortHandle,
    /// When it was started: a run lost to a panic outside its guard is
    /// reported as having taken this long.
    started: Instant,
}

/// Keeps the refresher alive. Handles and layers share one; dropping the
/// last stops the task.
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

pub(crate) fn start(builder: HealthChecksBuilder) -> Result<Owner, Error> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    // Without a time driver the first run would panic in its timeout and
    // the refresher in its first sleep. Tokio has no way to ask but this
    // one, which panics (and prints its own message) when timers are off.
    if catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_err() {
        return Err(Error::NoTimer);
    }
    let now = Instant::now();
    let mut state = State {
        checks: Vec::with_capacity(builder.checks.len()),
        heartbeats: Vec::new(),
        started: false,
        require_mark: builder.require_mark_started,
        marked: false,
        draining: false,
        out_of_rotation: false,
        version: builder.version.map(Arc::from),
        born: now,
        next_id: 0,
        fresh_until: None,
        later: Vec::new(),
    };
    for registration in builder.checks {
        if let Some(refused) = state.refusal(&registration.name) {
            state.later.into_iter().for_each(Later::emit);
            return Err(refused);
        }
        state.insert(registration, now);
    }
    let shadowed: Vec<_> = state
        .checks
        .iter()
        .filter_map(|entry| warn_if_shadowed(&entry.name))
        .collect();
    for warning in shadowed {
        state.log(warning);
    }
    let placeholder = Snapshot {
        components: Vec::new(),
        started: false,
        waiting_for_mark: false,
        draining: false,
        out_of_rotation: false,
        stopped: false,
        version: None,
        born: now,
        in_flight_limit: None,
        fresh_until: None,
        cached: Cached::default(),
    };
    let (overview, _) = watch::channel(placeholder.overview(now));
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        emitter: Mutex::new(()),
        snapshot: ArcSwap::from_pointee(placeholder),
        wake: Notify::new(),
        stopped: AtomicBool::new(false),
        lost: AtomicBool::new(false),
        #[cfg(test)]
        panic_in_record: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        in_flight_limit: builder.max_in_flight,
        in_flight_filter: builder.in_flight_filter,
        overview,
        expiry: watch::Sender::new(None),
        drain_delay: builder.drain_delay,
        #[cfg(feature = "metrics")]
        ran: Arc::new(Notify::new()),
    });
    {
        let mut state = shared.lock();
        shared.publish(&mut state);
    }
    // The guard goes into the task before its first poll: a runtime
    // dropped before it ever ran the task (a current-thread runtime whose
    // `block_on` returned right after `build()`) drops it unpolled, and
    // that must count as lost too.
    runtime.spawn(run(MarkStopped(shared.clone())));
    #[cfg(feature = "metrics")]
    {
        let _entered = runtime.enter();
        crate::metrics::follow(&shared);
    }
    Ok(Owner { shared })
}

impl State {
    fn name_taken(&self, name: &str) -> bool {
        self.checks.iter().any(|e| &*e.name == name)
            || self.heartbeats.iter().any(|h| &*h.name == name)
    }

    /// Why a registration of `name` is refused, if it is: a bad name, a
    /// name taken.
    fn refusal(&self, name: &str) -> Option<Error> {
        if let Err(e) = validate_name(name) {
            return Some(e);
        }
        self.name_taken(name)
            .then(|| Error::DuplicateName(name.to_owned()))
    }

    /// Adds a registration [`refusal`](Self::refusal) accepted.
    fn insert(&mut self, registration: Registration, now: Instant) {
        self.next_id += 1;
        let max_age = registration.options.max_age_after(true);
        // The default always covers the wait for the next run; a max_age
        // set by hand may not.
        let refresh = registration.options.longest_interval() + registration.options.timeout;
        if let Some(set) = registration.options.max_age
            && set < refresh
        {
            let name = registration.name.clone();
            self.log(move || {
                tracing::warn!(
                    check = name,
                    max_age_ms = set.as_millis() as u64,
                    interval_plus_timeout_ms = refresh.as_millis() as u64,
                    "health check max_age is shorter than its interval (the longer one, with a \
                     failing_interval, at its longest with jitter) + timeout: its result will \
                     turn stale between runs"
                );
            });
        }
        self.checks.push(Entry {
            id: self.next_id,
            name: Arc::from(registration.name),
            check: registration.check,
            options: registration.options,
            component_type: registration.component_type,
            running: None,
            recheck: false,
            #[cfg(feature = "metrics")]
            gauged: Vec::new(),
            next_due: now,
            view: CheckView {
                effective: Effective::Pending,
                last: None,
                last_failure: None,
                first_failure: None,
                successes: 0,
                failures: 0,
                max_age,
            },
        });
    }
}

impl Shared {
    fn lock(&self) -> Locked<'_> {
        Locked {
            shared: self,
            state: Some(self.lock_raw()),
        }
    }

    /// The lock, without emitting log events when released.
    fn lock_raw(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-changed
        // in a way that matters more than stopping health reporting would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Emits the log events raised under the lock ([`State::later`]), on
    /// one thread at a time and in the order they were raised, without
    /// the lock: a subscriber is the application's code. A thread that
    /// finds another emitting (or this one, further up its stack: a
    /// subscriber that called into the handle) leaves its events to it.
    /// Emitting without that order, a heartbeat's "missed" raised on one
    /// thread could be written after the "recovered" a beat on another
    /// raised next, leaving the log saying it is missed.
    fn emit_later(&self) {
        loop {
            let emitter = match self.emitter.try_lock() {
                Ok(emitter) => emitter,
                // Each event's panic is caught, so only a bug here could
                // poison it; the order still holds.
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            loop {
                let later = std::mem::take(&mut self.lock_raw().later);
                if later.is_empty() {
                    break;
                }
                later.into_iter().for_each(Later::emit);
            }
            drop(emitter);
            // Raised after the last look, by a thread that found this one
            // still emitting: emitted here, unless another thread has
            // taken over.
            if self.lock_raw().later.is_empty() {
                return;
            }
        }
    }

    pub(crate) fn stop(&self) {
        // Set under the lock, under which registrations look at it: one
        // racing a shutdown is either refused or in before it, like one
        // registered earlier, never accepted into a checker that stopped.
        let state = self.lock();
        self.stopped.store(true, Ordering::SeqCst);
        drop(state);
        self.wake.notify_one();
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Why a registration of `name` is refused, if it is: the checker
    /// stopped (looked at under the lock, as `stop` sets it), or
    /// [`State::refusal`].
    fn refusal(&self, state: &State, name: &str) -> Option<Error> {
        if self.is_stopped() {
            return Some(Error::ShutDown);
        }
        state.refusal(name)
    }

    /// Logs a warning for a registration refused because the refresher
    /// vanished (called without the lock: the subscriber is the
    /// application's code).
    fn explain(&self, refused: &Error, what: &str, name: &str) {
        if matches!(refused, Error::ShutDown) && self.lost.load(Ordering::SeqCst) {
            tracing::warn!(
                name,
                "health: {what} not added: the refresher task is gone (it panicked, or the Tokio \
                 runtime HealthChecksBuilder::build was called in was dropped), so it would never \
                 run"
            );
        }
    }

    /// Marks the checker stopped because the refresher is gone without a
    /// shutdown, and publishes that: liveness fails from now on, and so do
    /// readiness and `/health` unless draining, since no check will run
    /// again. `false` if it had stopped already.
    fn lose(self: &Arc<Self>) -> bool {
        // Under the lock, as `stop` (see there), and `lost` with it: a
        // registration refused for it says why.
        let state = self.lock();
        if self.stopped.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.lost.store(true, Ordering::SeqCst);
        drop(state);
        let publish = |shared: &Self| {
            // Nothing here should panic, but a bug must not take the
            // process down with it.
            let _ = catch_unwind(AssertUnwindSafe(|| shared.republish()));
        };
        if std::thread::panicking() {
            // The runtime is dropped by a thread that is unwinding (the
            // refresher's own panics are caught before this): a panic here
            // would abort, so publish from a thread of its own.
            let shared = self.clone();
            let _ = std::thread::Builder::new()
                .name("tower-health-lost".to_owned())
                .spawn(move || publish(&shared));
        } else {
            publish(self);
        }
        true
    }

    /// Publishes again if the published answers expired and the refresher
    /// has not done it (it is held up, or gone).
    #[cfg(any(
        feature = "tonic-health",
        feature = "metrics",
        all(feature = "systemd", unix)
    ))]
    pub(crate) fn publish_if_expired(&self) {
        self.publish_expired(&mut self.lock(), Instant::now());
    }

    /// Publishes again if the published answers expired by `now` (a result
    /// turned stale, a heartbeat deadline passed).
    fn publish_expired(&self, state: &mut State, now: Instant) {
        if state.fresh_until.is_some_and(|until| until <= now) {
            self.publish(state);
        }
    }

    /// Publishes again without any other change (a heartbeat came back or
    /// was dropped).
    pub(crate) fn republish(&self) {
        let mut state = self.lock();
        self.publish(&mut state);
        drop(state);
        // The runner recomputes its next wake-up from the new deadlines.
        self.wake.notify_one();
    }

    pub(crate) fn add_check(&self, registration: Registration) -> Result<(), Error> {
        let mut state = self.lock();
        if let Some(refused) = self.refusal(&state, &registration.name) {
            // The rejected check is dropped after the lock is released: its
            // drop may run user code (e.g. drop a `Heartbeat`).
            drop(state);
            self.explain(&refused, "check", &registration.name);
            drop(registration);
            return Err(refused);
        }
        let name = registration.name.clone();
        let for_startup = registration.options.probes.contains(Probes::STARTUP);
        if let Some(warning) = warn_if_shadowed(&name) {
            state.log(warning);
        }
        state.insert(registration, Instant::now());
        if for_startup && state.started {
            state.log(move || {
                tracing::warn!(
                    check = name,
                    "health: startup already passed, and it never fails again: this check does \
                     not hold /startupz back (register it with the builder, or use \
                     require_mark_started)"
                );
            });
        }
        self.publish(&mut state);
        drop(state);
        self.wake.notify_one();
        Ok(())
    }

    /// Brings the next run of `name` forward to `recheck_spacing` after
    /// the end of its last run, or now if that has passed, while the check
    /// is settled as passing (otherwise `failing_interval` paces its runs
    /// and the damping counts them). A run in flight may have started
    /// before what made the caller ask, so the next one comes that long
    /// after it ends, if that run leaves the check settled. `false` for a
    /// name that is not a check's, or once stopped.
    pub(crate) fn recheck(&self, name: &str) -> bool {
        if self.is_stopped() {
            return false;
        }
        let mut state = self.lock();
        let Some(entry) = state.checks.iter_mut().find(|e| &*e.name == name) else {
            drop(state);
            tracing::debug!(name, "health: recheck of a name that is not a check's");
            return false;
        };
        if entry.running.is_some() {
            // Not for a failing check: its schedule stands, whatever this
            // run finds.
            if entry.view.last.is_none() || entry.view.settled() {
                entry.recheck = true;
            }
            return true;
        }
        if !entry.view.settled() {
            return true;
        }
        // A settled check has a last run.
        let Some(last) = &entry.view.last else {
            return true;
        };
        let earliest = (last.at + entry.options.recheck_spacing).max(Instant::now());
        if earliest < entry.next_due {
            entry.next_due = earliest;
            drop(state);
            // The runner recomputes its next wake-up.
            self.wake.notify_one();
        }
        true
    }

    pub(crate) fn remove_check(&self, name: &str) -> bool {
        let mut state = self.lock();
        let Some(index) = state.checks.iter().position(|e| &*e.name == name) else {
            return false;
        };
        #[cfg_attr(not(feature = "metrics"), allow(unused_mut))]
        let mut removed = state.checks.remove(index);
        self.publish(&mut state);
        drop(state);
        // A removed check's run in flight would otherwise go on until its
        // timeout (possibly "never"), holding whatever it holds.
        if let Some(run) = &removed.running {
            run.task.abort();
        }
        #[cfg(feature = "metrics")]
        let gauged = std::mem::take(&mut removed.gauged);
        // Dropped outside the lock: the check's drop may run user code.
        drop(removed);
        // The recorder is the application's code: called without the lock,
        // and a panic in it does not undo the removal.
        #[cfg(feature = "metrics")]
        {
            let marked = catch_unwind(AssertUnwindSafe(|| {
                crate::metrics::removed(&Arc::from(name), &gauged);
                // A check added again under the name since the unlock may
                // have had its run recorded before the line above: its own
                // last run again (it stays unknown until it has one). If a
                // newer run of it was recorded while this one was stamped,
                // that one again.
                let mut stamped: Option<Arc<Run>> = None;
                for _ in 0..3 {
                    let again = self
                        .lock()
                        .checks
                        .iter()
                        .find(|e| &*e.name == name)
                        .and_then(|e| {
                            Some((e.name.clone(), e.view.last.clone()?, e.gauged.clone()))
                        });
                    let Some((name, run, gauged)) = again else {
                        break;
                    };
                    if stamped.as_ref().is_some_and(|done| Arc::ptr_eq(done, &run)) {
                        break;
                    }
                    crate::metrics::stamp(&name, &run, &gauged);
                    stamped = Some(run);
                }
            }));
            if let Err(payload) = marked {
                tracing::error!(check = name, "health: the metrics recorder panicked");
                drop_quietly(payload);
            }
        }
        true
    }

    pub(crate) fn mark_started(&self) {
        let mut state = self.lock();
        if !state.marked {
            state.marked = true;
            self.publish(&mut state);
        }
    }

    /// Starts the drain. Heartbeats whose handle was dropped already are
    /// removed, as one dropped from now on is: a component that stops with
    /// the process may have stopped just before the drain began (its task
    /// woken by the same signal), and the process is stopping anyway.
    pub(crate) fn drain(&self) {
        let mut state = self.lock();
        if state.draining {
            return;
        }
        state.draining = true;
        let mut removed = Vec::new();
        state.heartbeats.retain(|h| {
            let dropped = h.is_dropped();
            if dropped {
                removed.push(h.name.clone());
            }
            !dropped
        });
        for name in removed {
            state.log(move || {
                tracing::debug!(
                    heartbeat = &*name,
                    "heartbeat whose handle was dropped without retire removed as the drain began"
                );
            });
        }
        self.publish(&mut state);
    }

    /// Takes the instance out of rotation (`true`) or returns it.
    pub(crate) fn set_out_of_rotation(&self, out: bool) {
        let mut state = self.lock();
        if state.out_of_rotation == out {
            return;
        }
        state.out_of_rotation = out;
        if out {
            state.log(|| {
                tracing::info!("health: taken out of rotation: readiness reports draining")
            });
        } else {
            state.log(|| tracing::info!("health: returned to rotation"));
        }
        self.publish(&mut state);
    }

    pub(crate) fn heartbeat(
        this: &Arc<Self>,
        name: String,
        deadline: Duration,
        options: &HeartbeatOptions,
    ) -> Result<Heartbeat, Error> {
        let mut state = this.lock();
        // A heartbeat whose handle was dropped (its task died) can be
        // replaced by a restarted component.
        if !this.is_stopped() {
            state
                .heartbeats
                .retain(|h| !(*h.name == *name && h.is_dropped()));
        }
        if let Some(refused) = this.refusal(&state, &name) {
            drop(state);
            this.explain(&refused, "heartbeat", &name);
            return Err(refused);
        }
        let slot = Arc::new(HeartbeatSlot::new(
            Arc::from(name),
            deadline.clamp(SHORTEST, LONGEST),
            options,
            Arc::downgrade(this),
        ));
        state.heartbeats.push(slot.clone());
        if let Some(warning) = warn_if_shadowed(&slot.name) {
            state.log(warning);
        }
        this.publish(&mut state);
        drop(state);
        this.wake.notify_one();
        Ok(Heartbeat::new(slot))
    }

    /// A heartbeat's handle was dropped without `retire`: liveness fails,
    /// unless the instance is draining, where that is a component stopping
    /// with the process and the heartbeat is removed as if retired (a
    /// failing liveness probe would have the container killed mid-drain).
    pub(crate) fn heartbeat_dropped(&self, slot: &Arc<HeartbeatSlot>) {
        let mut state = self.lock();
        // Decided under the lock, so that no publication while draining
        // shows it as dropped first.
        if state.draining {
            state.heartbeats.retain(|h| !Arc::ptr_eq(h, slot));
            let name = slot.name.clone();
            state.log(move || {
                tracing::debug!(
                    heartbeat = &*name,
                    "heartbeat handle dropped without retire while draining: removed"
                );
            });
        } else {
            slot.mark_dropped();
        }
        self.publish(&mut state);
        drop(state);
        // The runner recomputes its next wake-up from the new deadlines.
        self.wake.notify_one();
    }

    pub(crate) fn remove_heartbeat(&self, slot: &Arc<HeartbeatSlot>) {
        let mut state = self.lock();
        state.heartbeats.retain(|h| !Arc::ptr_eq(h, slot));
        self.publish(&mut state);
    }

    /// Builds, renders and stores a new snapshot from `state`.
    fn publish(&self, state: &mut State) {
        let now = Instant::now();
        let mut components = Vec::with_capacity(state.checks.len() + state.heartbeats.len());
        for entry in &state.checks {
            components.push(Component {
                name: entry.name.clone(),
                probes: entry.options.probes,
                critical: entry.options.critical,
                component_type: entry.component_type,
                kind: Kind::Check(entry.view.clone()),
            });
        }
        let mut reports = Vec::new();
        for slot in &state.heartbeats {
            reports.extend(slot.report(slot.observe(now), now));
            components.push(Component {
                name: slot.name.clone(),
                probes: slot.probes,
                critical: slot.critical,
                component_type: "system",
                kind: Kind::Heartbeat(slot.clone()),
            });
        }
        for report in reports {
            state.log(report);
        }
        let mut snapshot = Snapshot {
            components,
            started: state.started,
            waiting_for_mark: state.require_mark && !state.marked,
            draining: state.draining,
            out_of_rotation: state.out_of_rotation,
            stopped: self.lost.load(Ordering::SeqCst),
            version: state.version.clone(),
            born: state.born,
            in_flight_limit: self.in_flight_limit,
            fresh_until: None,
            cached: Cached::default(),
        };
        // What is stale already is rendered as stale now, so the cached
        // answers stay exact until the next expiry.
        snapshot.fresh_until = snapshot.expires_after(now);
        state.fresh_until = snapshot.fresh_until;
        // Startup latches: once nothing is waiting, it never fails again.
        if !snapshot.started && snapshot.startup_done(now) {
            state.started = true;
            snapshot.started = true;
            state.log(|| tracing::info!("health: startup complete"));
        }
        snapshot.render_cache(now);
        self.closing.store(
            snapshot.draining || snapshot.out_of_rotation,
            Ordering::Relaxed,
        );
        let overview = snapshot.overview(now);
        // A drain begun out of rotation changes no probe's answer (readiness
        // answered `draining` already), but followers that tell the two
        // apart (systemd's STOPPING) must hear of it.
        let drain_began = snapshot.draining && !self.snapshot.load().draining;
        self.snapshot.store(Arc::new(snapshot));
        self.overview.send_if_modified(|current| {
            let changed = *current != overview || drain_began;
            if changed {
                *current = overview;
            }
            changed
        });
        // A later expiry needs no word: a follower woken at the earlier one
        // finds nothing expired and sleeps until the new one.
        let fresh_until = state.fresh_until;
        self.expiry.send_if_modified(|current| {
            let earlier = match (*current, fresh_until) {
                (Some(was), Some(now)) => now < was,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            *current = fresh_until;
            earlier
        });
    }

    /// Publishes again if the published answers expired (a result turned
    /// stale, a heartbeat deadline passed), starts every due run, and
    /// returns when the task should next wake up.
    fn start_due(self: &Arc<Self>, tasks: &mut JoinSet<Finished>) -> Option<Instant> {
        let mut state = self.lock();
        let now = Instant::now();
        self.publish_expired(&mut state, now);
        let mut next: Option<Instant> = state.fresh_until;
        for entry in &mut state.checks {
            if entry.running.is_some() {
                continue;
            }
            if entry.next_due <= now {
                // A span of its own per run, with no parent: what the check
                // logs (a client's statement log, an instrumented client's
                // spans) is tied to the check, and a tracer sees each run
                // as a short trace of its own, never as part of an endless
                // one (the refresher's task, where a runtime traces tasks).
                // Made in the task, not here: the subscriber is the
                // application's code, not to be called under the lock.
                let (id, check, timeout) = (entry.id, entry.check.clone(), entry.options.timeout);
                let name = entry.name.clone();
                let task = tasks.spawn(async move {
                    let span = tracing::info_span!(parent: None, "health_check", check = &*name);
                    run_once(id, check, timeout).instrument(span).await
                });
                entry.running = Some(Running { task, started: now });
            } else {
                next = Some(next.map_or(entry.next_due, |n| n.min(entry.next_due)));
            }
        }
        next
    }

    /// A run whose task ended in a join error: recorded as lost for the
    /// check it belongs to, if that check is still registered.
    fn lost(&self, task: tokio::task::Id) {
        let lost = self.lock().checks.iter().find_map(|e| {
            let run = e.running.as_ref()?;
            (run.task.id() == task).then_some((e.id, run.started))
        });
        if let Some((id, started)) = lost {
            self.record(Finished::lost(id, started));
        }
    }

    fn record(&self, finished: Finished) {
        let mut state = self.lock();
        #[cfg(test)]
        assert!(
            !self.panic_in_record.swap(false, Ordering::SeqCst),
            "a bug in the refresher"
        );
        let now = Instant::now();
        let Some(entry) = state.checks.iter_mut().find(|e| e.id == finished.id) else {
            return; // removed while it ran
        };
        entry.running = None;
        let run = Arc::new(finished.run);
        let before = entry.view.effective;
        let view = &mut entry.view;
        // Flap damping holds a known state against a few contrary runs. A
        // passing result older than `max_age` is no longer known (probes
        // have been failing it as stale), so the new result is taken as it
        // is, like a first one.
        let stale = view.stale_at().is_some_and(|at| now >= at);
        let known = match before {
            Effective::Passing(_) if stale => Effective::Pending,
            known => known,
        };
        let passed = run.status.is_passing();
        if passed {
            view.successes = view.successes.saturating_add(1);
            view.failures = 0;
            view.first_failure = None;
        } else {
            view.failures = view.failures.saturating_add(1);
            view.successes = 0;
            view.last_failure = Some(run.clone());
            view.first_failure.get_or_insert_with(|| run.clone());
        }
        let failed_long_enough = view.failures >= entry.options.failure_threshold
            && view.first_failure.as_ref().is_some_and(|first| {
                run.at.saturating_duration_since(first.at) >= entry.options.failure_grace
            });
        view.effective = match (known, passed) {
            // The first result is taken as it is.
            (Effective::Pending, true) => Effective::Passing(run.status),
            (Effective::Pending, false) => Effective::Failing,
            (Effective::Passing(_), true) => Effective::Passing(run.status),
            (Effective::Passing(_), false) if failed_long_enough => Effective::Failing,
            (Effective::Passing(status), false) => Effective::Passing(status),
            (Effective::Failing, true) if view.successes >= entry.options.success_threshold => {
                Effective::Passing(run.status)
            }
            (Effective::Failing, _) => Effective::Failing,
        };
        view.last = Some(run.clone());
        let settled = view.settled();
        view.max_age = entry.options.max_age_after(settled);
        entry.next_due = now + entry.options.wait_after(settled, spread);
        if std::mem::take(&mut entry.recheck) && settled {
            entry.next_due = entry.next_due.min(now + entry.options.recheck_spacing);
        }
        let log = log_run(entry, before, &run);
        #[cfg(feature = "metrics")]
        let (name, gauged) = {
            crate::metrics::track(&mut entry.gauged, &run);
            (entry.name.clone(), entry.gauged.clone())
        };
        if let Some(log) = log {
            state.log(log);
        }
        self.publish(&mut state);
        // The recorder is the application's code: called without the lock,
        // and a panic in it must not end the refresher.
        #[cfg(feature = "metrics")]
        {
            drop(state);
            let recorded = catch_unwind(AssertUnwindSafe(|| {
                crate::metrics::ran(&name, &run, &gauged);
                // A `remove_check` between the unlock above and `ran` marked
                // the check's last run unknown before `ran` stamped it, and
                // an alert on its age would fire for a check that no longer
                // runs: unknown again. Judged by id, so a check added again
                // under the name shows unknown until its own first run.
                let registered = self.lock().checks.iter().any(|e| e.id == finished.id);
                if !registered {
                    crate::metrics::removed(&name, &gauged);
                }
            }));
            if let Err(payload) = recorded {
                tracing::error!(check = &*name, "health: the metrics recorder panicked");
                drop_quietly(payload);
            }
            self.ran.notify_one();
        }
    }
}

/// A number in `[0, 1)`, another at every call: where in its jitter a
/// check's next run falls. Drawn from std's randomly keyed hasher, whose
/// keys differ at every `RandomState::new()`; enough to spread runs, not
/// meant for anything secret.
fn spread() -> f64 {
    let bits = RandomState::new().hash_one(());
    // The top 53 bits, as a fraction: every value exact in an f64.
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}

/// The log events for a run `record` has just applied to `entry`, to emit
/// once the lock is released; `None` if the run logs nothing (a passing
/// run that changed nothing).
fn log_run(
    entry: &Entry,
    before: Effective,
    run: &Arc<Run>,
) -> Option<impl FnOnce() + Send + 'static> {
    let name = entry.name.clone();
    let run = run.clone();
    let after = entry.view.effective;
    let failures = entry.view.failures;
    let threshold = entry.options.failure_threshold;
    let grace_ms = entry.options.failure_grace.as_millis() as u64;
    // A run cut at its timeout is logged as timed out below (as failing, or
    // as a timeout below the failure threshold), not as slow.
    let slow = run.duration > entry.options.effective_slow_threshold()
        && !matches!(run.failure, Some(Failure::TimedOut(_)));
    // How long the current streak of failed runs has lasted (0 at its
    // first run, and after a passing run).
    let failing_ms = entry.view.first_failure.as_ref().map_or(0, |first| {
        run.at.saturating_duration_since(first.at).as_millis() as u64
    });
    let transition = match (before, after) {
        (Effective::Passing(a), Effective::Passing(b)) => a != b,
        (Effective::Pending, Effective::Passing(_)) | (_, Effective::Failing) => true,
        (Effective::Failing, Effective::Passing(_)) => true,
        (_, Effective::Pending) => false,
    };
    let below_threshold = run.status == Status::Unhealthy && after != Effective::Failing;
    if !(slow || transition || below_threshold) {
        return None;
    }
    Some(move || {
        let name = &*name;
        if slow {
            let duration_ms = run.duration.as_secs_f64() * 1000.0;
            tracing::warn!(check = name, duration_ms, "health check slow");
        }
        let message = run.message.as_deref().unwrap_or("");
        match (before, after) {
            (Effective::Failing, Effective::Failing) => {
                tracing::debug!(check = name, error = message, "health check still failing");
            }
            (_, Effective::Failing) => {
                tracing::warn!(check = name, error = message, failure = ?run.failure, failing_ms, "health check failing");
            }
            (Effective::Failing, Effective::Passing(status)) => {
                tracing::info!(check = name, %status, "health check recovered");
            }
            (Effective::Passing(a), Effective::Passing(b)) if a != b => {
                // Not `message`: the event's own text has that name, and a
                // subscriber writes it unquoted, newlines and all.
                tracing::info!(check = name, from = %a, to = %b, reason = message, "health check status changed");
            }
            (Effective::Pending, Effective::Passing(status)) => {
                tracing::debug!(check = name, %status, "health check first result");
            }
            _ => {}
        }
        if run.status == Status::Unhealthy && after != Effective::Failing {
            // A timeout is worth a warning even below the threshold: it is
            // the "slow" warning this run did not log.
            if let Some(Failure::TimedOut(timeout)) = run.failure {
                tracing::warn!(
                    check = name,
                    timeout_ms = timeout.as_millis() as u64,
                    error = message,
                    failures,
                    threshold,
                    grace_ms,
                    failing_ms,
                    "health check timed out, below its failure threshold"
                );
            } else {
                tracing::debug!(
                    check = name,
                    error = message,
                    failures,
                    threshold,
                    grace_ms,
                    failing_ms,
                    "health check failed below its failure threshold"
                );
            }
        }
    })
}

struct Finished {
    id: u64,
    run: Run,
}

impl Finished {
    /// A run whose task failed outside the check's own panic guard: it
    /// took from `started` until now.
    fn lost(id: u64, started: Instant) -> Self {
        let at = Instant::now();
        Self {
            id,
            run: Run {
                status: Status::Unhealthy,
                failure: Some(Failure::Panicked),
                // Outside the guard: in the check's future's drop, or in
                // the tracing subscriber as the run's span was made or
                // entered.
                message: Some(
                    "the run's task panicked outside the check (while dropping the check's \
                     future, or in the tracing subscriber)"
                        .into(),
                ),
                observations: Vec::new(),
                duration: at.saturating_duration_since(started),
                at,
                at_wall: SystemTime::now(),
            },
        }
    }
}

/// What a run reports if the runner cuts it at its timeout.
type IfCut = Box<dyn FnOnce() -> CheckResult + Send>;

/// The report a run holds, tagged with the [`CutGuard`] that set it.
#[derive(Default)]
struct CutSlot {
    set: u64,
    report: Option<(u64, IfCut)>,
}

tokio::task_local! {
    /// Set by a built-in check through [`if_cut`] while a run waits.
    static IF_CUT: RefCell<CutSlot>;
}

/// Tells the runner what this run reports if it is cut at its timeout
/// while the returned guard lives, replacing what an earlier call said:
/// `report` is called at the cut, so it can read a pool's state at that
/// moment. Its message follows "timed out after ...: " and its
/// observations are shown as the run's. Dropping the guard withdraws the
/// report (unless a later call replaced it), so a check that a user's
/// check awaits among other work does not speak for what comes after it.
/// Outside a run (a check called directly) it does nothing.
#[cfg_attr(
    not(any(
        feature = "postgres",
        feature = "mysql",
        feature = "sqlite",
        feature = "deadpool-postgres",
        feature = "redis"
    )),
    allow(dead_code)
)]
pub(crate) fn if_cut(report: impl FnOnce() -> CheckResult + Send + 'static) -> CutGuard {
    let id = IF_CUT
        .try_with(|slot| {
            let mut slot = slot.borrow_mut();
            slot.set += 1;
            let id = slot.set;
            slot.report = Some((id, Box::new(report)));
            id
        })
        .unwrap_or(0);
    CutGuard(id)
}

/// Withdraws the report [`if_cut`] set, when dropped.
#[must_use = "the report is withdrawn when the guard is dropped"]
pub(crate) struct CutGuard(u64);

impl Drop for CutGuard {
    fn drop(&mut self) {
        // After a cut the runner has taken the slot: nothing to withdraw.
        let _ = IF_CUT.try_with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.report.as_ref().is_some_and(|(id, _)| *id == self.0) {
                slot.report = None;
            }
        });
    }
}

/// One run: cut at `timeout`, panics caught.
async fn run_once(id: u64, check: Arc<dyn DynCheck>, timeout: Duration) -> Finished {
    let started = Instant::now();
    // `run()` itself executes user code (a closure check calls the closure
    // there), so it is called inside the guarded future, not before it.
    let mut guarded = CatchUnwind(Box::pin(
        IF_CUT.scope(RefCell::default(), async move { check.run().await }),
    ));
    let outcome = tokio::time::timeout(timeout, &mut guarded).await;
    let at = Instant::now();
    let (status, failure, message, observations) = match outcome {
        Ok(Ok(result)) => {
            let (status, message, observations) = result.into_parts();
            let failure = (!status.is_passing()).then_some(Failure::Reported);
            (status, failure, message, observations)
        }
        Ok(Err(payload)) => (
            Status::Unhealthy,
            Some(Failure::Panicked),
            Some(panic_message(payload).into()),
            Vec::new(),
        ),
        Err(_elapsed) => {
            // Taken before the check's future is dropped (with `guarded`,
            // below), so it reports the state it was cut in. It reads a
            // pool's counters: foreign code, guarded.
            let cut_report = guarded
                .0
                .as_mut()
                .take_value()
                .and_then(|slot| slot.into_inner().report);
            let report =
                cut_report.and_then(|(_, report)| match catch_unwind(AssertUnwindSafe(report)) {
                    Ok(report) => Some(report),
                    Err(payload) => {
                        drop_quietly(payload);
                        tracing::debug!("health: a timed-out check's report panicked");
                        None
                    }
                });
            let (message, observations) = match report.map(CheckResult::into_parts) {
                Some((_, Some(message), observations)) => (
                    Some(format!("timed out after {}: {message}", fmt_duration(timeout)).into()),
                    observations,
                ),
                Some((_, None, observations)) => (None, observations),
                None => (None, Vec::new()),
            };
            (
                Status::Unhealthy,
                Some(Failure::TimedOut(timeout)),
                message,
                observations,
            )
        }
    };
    drop(guarded);
    Finished {
        id,
        run: Run {
            status,
            failure,
            message,
            observations,
            duration: at.saturating_duration_since(started),
            at,
            at_wall: SystemTime::now(),
        },
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "panicked".to_owned(),
        },
    }
}

/// Drops `value` (a panic's payload, or a value holding one), whose drop
/// is foreign code that may panic too.
pub(crate) fn drop_quietly<T>(value: T) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
}

/// Polls a boxed future, turning a panic into `Err(payload)`.
struct CatchUnwind<F>(F);

impl<F> Future for CatchUnwind<Pin<Box<F>>>
where
    F: Future + ?Sized,
{
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Marks the checker stopped when the refresher task ends, however it ends.
/// Stopped by a handle, it has been marked already; dropped by its runtime
/// shutting down (a runtime other than the server's, say one `build()` was
/// called in and then dropped), it has not: checks no longer run, so the
/// probes must say so and adding a check must fail rather than wait
/// forever. (A panic in the refresher is caught in [`run`].)
///
/// A runtime shutting down at the end of `main` drops the refresher before
/// the tasks still holding a layer, which is no fault: logged at `debug`
/// only. `add_check` and `heartbeat` warn if they are refused because of it.
struct MarkStopped(Arc<Shared>);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        if self.0.lose() && !std::thread::panicking() {
            tracing::debug!("health: the refresher task was dropped with its runtime");
        }
    }
}

/// The refresher task: [`refresh`], with a panic out of it (a bug, or a
/// `tracing` subscriber that panics) caught, logged and published as the
/// checks having stopped.
async fn run(mark: MarkStopped) {
    let shared = &mark.0;
    if let Err(payload) = CatchUnwind(Box::pin(refresh(shared))).await {
        drop_quietly(payload);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            tracing::error!("health: the refresher task panicked: checks no longer run");
        }));
        shared.lose();
    }
}

/// Runs the checks as they fall due and publishes their results, until
/// stopped.
async fn refresh(shared: &Arc<Shared>) {
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    loop {
        if shared.is_stopped() {
            break;
        }
        let next = shared.start_due(&mut tasks);
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                match joined {
                    Ok((_, finished)) => shared.record(finished),
                    // Panics inside a check are caught in `run_once`; this is
                    // a panic outside that guard, such as the check's future
                    // panicking while it is dropped at its timeout. The check
                    // must still be reported and scheduled again. (A run
                    // `remove_check` aborted has no entry left: nothing to
                    // record.)
                    Err(error) => {
                        let task = error.id();
                        // The panic's payload is the check's own value: its
                        // drop may panic too, which must not end this task.
                        drop_quietly(error);
                        shared.lost(task);
                    }
                }
            }
            // Due checks and expired answers are handled at the top of the
            // loop, whichever branch woke it.
            () = sleep => {}
            () = shared.wake.notified() => {}
        }
    }
    tracing::debug!("health: refresher stopped");
    // Dropping `tasks` aborts runs still in flight.
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use crate::{
        CheckOptions, CheckResult, HealthChecks, ProbeStatus, Probes, Status,
        snapshot::STOPPED,
        test_util::{Inner, advance, app, get, health_json, send, settle},
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A check whose result the test flips.
    fn switch(
        healthy: &Arc<AtomicBool>,
    ) -> impl Fn() -> std::future::Ready<CheckResult> + Send + Sync + 'static {
        let healthy = healthy.clone();
        move || {
            std::future::ready(if healthy.load(Ordering::SeqCst) {
                CheckResult::healthy()
            } else {
                CheckResult::unhealthy("db at 10.0.0.5 refused user admin:hunter2")
            })
        }
    }

    /// One check, `db`, that `healthy` flips, served and run once.
    async fn serve_switch(
        healthy: &Arc<AtomicBool>,
        options: CheckOptions,
    ) -> (crate::HealthHandle, crate::Health<Inner>) {
        let health = HealthChecks::builder()
            .check_with("db", switch(healthy), options)
            .build()
            .unwrap();
        let app = app(&health);
        settle().await;
        (health, app)
    }

    /// A check `db` that the returned switch flips, taking `takes` per
    /// run, registered with `options` and built: the paused clock's
    /// origin, the switch, the runs' start times and the handle.
    fn recorded_db(
        takes: Duration,
        options: CheckOptions,
    ) -> (
        tokio::time::Instant,
        Arc<AtomicBool>,
        Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
        crate::HealthHandle,
    ) {
        let origin = tokio::time::Instant::now();
        let healthy = Arc::new(AtomicBool::new(true));
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (switch, log) = (healthy.clone(), starts.clone());
        let check = move || {
            log.lock().unwrap().push(tokio::time::Instant::now());
            let healthy = switch.clone();
            async move {
                tokio::time::sleep(takes).await;
                if healthy.load(Ordering::SeqCst) {
                    CheckResult::healthy()
                } else {
                    CheckResult::unhealthy("refused")
                }
            }
        };
        let health = HealthChecks::builder()
            .check_with("db", check, options)
            .build()
            .unwrap();
        (origin, healthy, starts, health)
    }

    /// Start times, in milliseconds since `origin`.
    fn millis_since(
        origin: tokio::time::Instant,
        starts: &std::sync::Mutex<Vec<tokio::time::Instant>>,
    ) -> Vec<u128> {
        let starts = starts.lock().unwrap();
        starts.iter().map(|s| (*s - origin).as_millis()).collect()
    }

    /// `recheck` runs the check at once when its last run ended a spacing
    /// ago or more, and then no more than once a spacing however often it
    /// is asked; without asks, an interval apart as before.
    #[tokio::test(start_paused = true)]
    async fn recheck_runs_a_check_at_once_and_then_once_a_spacing_at_most() {
        let (origin, healthy, starts, health) =
            recorded_db(Duration::ZERO, CheckOptions::new().interval(secs(60)));
        let mut app = app(&health);
        settle().await;

        // Asked at t = 5 s: run at once.
        advance(secs(5)).await;
        assert!(health.recheck("db"));
        settle().await;
        assert_eq!(millis_since(origin, &starts), [0, 5001]);

        // A storm of asks: one more run, a spacing (1 s) after the last
        // one ended, not one per ask.
        for _ in 0..1000 {
            assert!(health.recheck("db"));
        }
        advance(Duration::from_millis(998)).await;
        assert_eq!(millis_since(origin, &starts).len(), 2);
        advance(Duration::from_millis(2)).await;
        assert_eq!(millis_since(origin, &starts), [0, 5001, 6001]);

        // No more asks: the interval again, from the last run.
        advance(secs(59)).await;
        assert_eq!(millis_since(origin, &starts).len(), 3);
        advance(secs(2)).await;
        assert_eq!(millis_since(origin, &starts), [0, 5001, 6001, 66001]);

        // At 67.002 s the database fails; the application notices and
        // asks (the last run ended over a spacing ago): readiness fails
        // at once, not at the next interval.
        healthy.store(false, Ordering::SeqCst);
        assert!(health.recheck("db"));
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        settle().await;
        let ready = get(&mut app, "/readyz").await;
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.json()["reason"], "failing: db");
        assert_eq!(millis_since(origin, &starts), [0, 5001, 6001, 66001, 67002]);
    }

    /// Once a run has failed, asks change nothing: the failing interval
    /// paces the runs and the damping counts them, however often the
    /// application asks.
    #[tokio::test(start_paused = true)]
    async fn recheck_does_not_hurry_a_failing_check() {
        let (origin, healthy, starts, health) = recorded_db(
            Duration::from_millis(100),
            CheckOptions::new()
                .interval(secs(60))
                .failing_interval(secs(20))
                .failure_threshold(3),
        );
        let mut app = app(&health);
        advance(secs(5)).await;
        healthy.store(false, Ordering::SeqCst);
        assert!(health.recheck("db"));
        // The run brought forward (5.0 to 5.1 s) fails: one of three.
        advance(Duration::from_millis(50)).await;
        // Asked again while it runs, and after: it is failing now.
        assert!(health.recheck("db"));
        advance(Duration::from_millis(100)).await;
        for _ in 0..1000 {
            assert!(health.recheck("db"));
        }
        advance(secs(19)).await;
        assert_eq!(millis_since(origin, &starts), [0, 5000]);
        assert_eq!(get(&mut app, "/readyz").await.status, 200, "1 of 3");
        // The failing interval's run, 20 s after the failed one ended.
        advance(secs(2)).await;
        assert_eq!(millis_since(origin, &starts), [0, 5000, 25100]);
        assert_eq!(get(&mut app, "/readyz").await.status, 200, "2 of 3");
    }

    /// An ask during a run of a failing check changes nothing, even if
    /// that run finds the dependency back.
    #[tokio::test(start_paused = true)]
    async fn recheck_during_a_failing_checks_run_changes_nothing() {
        let (origin, healthy, starts, health) = recorded_db(
            Duration::from_millis(500),
            CheckOptions::new()
                .interval(secs(60))
                .failing_interval(secs(10)),
        );
        healthy.store(false, Ordering::SeqCst);
        // Fails 0 to 0.5 s; the failing interval's run, 10.5 to 11 s,
        // passes, and is asked for a recheck while it runs.
        advance(Duration::from_millis(1_000)).await;
        healthy.store(true, Ordering::SeqCst);
        advance(Duration::from_millis(9_700)).await;
        assert_eq!(millis_since(origin, &starts), [0, 10500]);
        assert!(health.recheck("db"));
        // No run a spacing after it (12 s): the interval's, at 71 s.
        advance(Duration::from_millis(1_800)).await;
        assert_eq!(millis_since(origin, &starts), [0, 10500]);
        advance(secs(59)).await;
        assert_eq!(millis_since(origin, &starts), [0, 10500, 71000]);
    }

    /// A run in flight may have started before what made the application
    /// ask: the next run comes a spacing after it ends, once. A longer
    /// spacing holds an ask back until it has passed.
    #[tokio::test(start_paused = true)]
    async fn recheck_during_a_run_runs_again_a_spacing_after_it() {
        let (origin, _healthy, starts, health) = recorded_db(
            Duration::from_millis(500),
            CheckOptions::new()
                .interval(secs(60))
                .recheck_spacing(secs(3)),
        );
        // The first run, 0 to 0.5 s, is in flight.
        advance(Duration::from_millis(200)).await;
        assert!(health.recheck("db"));
        // Not at once, nor when it ends: 3 s after it ended.
        advance(Duration::from_millis(3_200)).await;
        assert_eq!(millis_since(origin, &starts), [0]);
        advance(Duration::from_millis(200)).await;
        assert_eq!(millis_since(origin, &starts), [0, 3500]);
        // Once: then the interval, from the end of that run (4 s).
        advance(secs(60)).await;
        assert_eq!(millis_since(origin, &starts), [0, 3500]);
        advance(Duration::from_millis(600)).await;
        assert_eq!(millis_since(origin, &starts), [0, 3500, 64000]);

        // Asked at 64.7 s, 0.2 s after that run ended: held to 3 s after
        // it, 67.5 s.
        advance(Duration::from_millis(500)).await;
        assert!(health.recheck("db"));
        advance(Duration::from_millis(2_700)).await;
        assert_eq!(millis_since(origin, &starts).len(), 3);
        advance(Duration::from_millis(200)).await;
        assert_eq!(millis_since(origin, &starts), [0, 3500, 64000, 67500]);
    }

    /// An ask never puts off a run that is due sooner.
    #[tokio::test(start_paused = true)]
    async fn recheck_never_delays_a_run() {
        let (origin, _healthy, starts, health) = recorded_db(
            Duration::from_millis(100),
            CheckOptions::new()
                .interval(Duration::from_millis(400))
                .recheck_spacing(secs(3)),
        );
        // During the first run (0 to 0.1 s), then between runs.
        advance(Duration::from_millis(50)).await;
        assert!(health.recheck("db"));
        advance(Duration::from_millis(200)).await;
        assert!(health.recheck("db"));
        advance(Duration::from_millis(800)).await;
        assert_eq!(millis_since(origin, &starts), [0, 500, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn recheck_is_false_for_a_heartbeat_an_unknown_name_and_after_shutdown() {
        let health = HealthChecks::builder()
            .check_with(
                "db",
                || async { CheckResult::healthy() },
                CheckOptions::new(),
            )
            .build()
            .unwrap();
        let _beat = health.heartbeat("worker", secs(10)).unwrap();
        settle().await;
        assert!(health.recheck("db"));
        assert!(!health.recheck("worker"));
        assert!(!health.recheck("nope"));
        health.shutdown();
        assert!(!health.recheck("db"));
    }

    #[tokio::test(start_paused = true)]
    async fn before_first_result_readiness_and_startup_fail_liveness_passes() {
        let health = HealthChecks::builder()
            .check_with(
                "slow",
                || async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    CheckResult::healthy()
                },
                CheckOptions::new(),
            )
            .build()
            .unwrap();
        let mut app = app(&health);
        settle().await;
        let ready = get(&mut app, "/readyz").await;
        assert_eq!(ready.status, 503);
        assert_eq!(ready.json()["status"], "starting");
        assert_eq!(ready.json()["reason"], "waiting for: slow");
        assert_eq!(get(&mut app, "/startupz").await.status, 503);
        assert_eq!(get(&mut app, "/health").await.status, 503);
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        let component = get(&mut app, "/health/slow").await;
        assert_eq!(component.status, 503);
        assert_eq!(component.json()["status"], "unknown");

        advance(Duration::from_millis(600)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        assert_eq!(get(&mut app, "/startupz").await.status, 200);
    }

    /// A failure streak must last `failure_grace` before the check fails,
    /// on top of the count; a passing run starts it over.
    #[tokio::test(start_paused = true)]
    async fn a_failure_grace_is_time_in_failure_besides_the_count() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (health, mut app) = serve_switch(
            &healthy,
            CheckOptions::new()
                .interval(secs(1))
                .failure_grace(Duration::from_millis(3500)),
        )
        .await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);

        // The streak starts with the run at t = 1 s; the runs at 2, 3 and
        // 4 s fail within the grace.
        healthy.store(false, Ordering::SeqCst);
        advance(Duration::from_millis(4100)).await;
        let detail = get(&mut app, "/health/db").await.json();
        assert_eq!(detail["consecutive_failures"], 4, "{detail}");
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        // A pass (t = 5 s) ends the streak; the next one starts from
        // zero with the run at 6 s.
        healthy.store(true, Ordering::SeqCst);
        advance(secs(1)).await;
        healthy.store(false, Ordering::SeqCst);
        // Runs at 7, 8 and 9 s: 1, 2 and 3 s into it.
        advance(secs(4)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200, "a new streak");
        // The run at 10 s, 4 s into it, is past the grace.
        advance(secs(1)).await;
        let ready = get(&mut app, "/readyz").await;
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.json()["reason"], "failing: db");

        drop(health);

        // The grace reached exactly: 3 s after the first failed run ended.
        let healthy = Arc::new(AtomicBool::new(true));
        let (exact, mut app) = serve_switch(
            &healthy,
            CheckOptions::new().interval(secs(1)).failure_grace(secs(3)),
        )
        .await;
        healthy.store(false, Ordering::SeqCst);
        // Runs at 1, 2 and 3 s: 0, 1 and 2 s into the streak.
        advance(Duration::from_millis(3100)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        let (guard, logged) = crate::test_util::capture(tracing::Level::WARN);
        advance(secs(1)).await;
        drop(guard);
        let ready = get(&mut app, "/readyz").await;
        assert_eq!(ready.json()["reason"], "failing: db", "at 3 s");
        // The warning says how long the streak lasted.
        let text = logged.text();
        assert!(
            text.contains("health check failing") && text.contains("failing_ms=3000"),
            "{text}"
        );
        drop(exact);

        // A first result is taken as it is, grace or not.
        let healthy = Arc::new(AtomicBool::new(false));
        let (first, mut app) = serve_switch(
            &healthy,
            CheckOptions::new()
                .interval(secs(1))
                .failure_grace(secs(60)),
        )
        .await;
        let ready = get(&mut app, "/readyz").await;
        assert_eq!(ready.status, 503);
        assert_eq!(ready.json()["reason"], "failing: db", "not pending");
        drop(first);

        // With a count of 3 as well, the later of the two decides.
        let healthy = Arc::new(AtomicBool::new(true));
        let (_health, mut app) = serve_switch(
            &healthy,
            CheckOptions::new()
                .interval(secs(1))
                .failure_threshold(3)
                .failure_grace(Duration::from_millis(500)),
        )
        .await;
        healthy.store(false, Ordering::SeqCst);
        // Runs at 1 and 2 s: past the grace, below the count.
        advance(Duration::from_millis(2100)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        advance(secs(1)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_and_success_thresholds_damp_flapping() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (_health, mut app) = serve_switch(
            &healthy,
            CheckOptions::new()
                .interval(secs(1))
                .failure_threshold(3)
                .success_threshold(2),
        )
        .await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);

        healthy.store(false, Ordering::SeqCst);
        // Runs at t=1s and t=2s fail: below the threshold of 3.
        advance(Duration::from_millis(1100)).await;
        let first = get(&mut app, "/health/db").await.json();
        assert_eq!(first["failing_since"], first["checked_at"], "{first}");
        // Wall-clock times are not paused: let the next run's differ.
        std::thread::sleep(Duration::from_millis(5));
        advance(secs(1)).await;
        let detail = get(&mut app, "/health/db").await.json();
        assert_eq!(detail["consecutive_failures"], 2);
        // The streak dates from its first failed run, not the latest.
        assert_ne!(detail["checked_at"], first["checked_at"], "{detail}");
        assert_eq!(detail["failing_since"], first["checked_at"], "{detail}");
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        // The third failure flips it.
        advance(secs(1)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);

        healthy.store(true, Ordering::SeqCst);
        advance(secs(1)).await;
        let detail = get(&mut app, "/health/db").await.json();
        assert_eq!(detail["consecutive_successes"], 1);
        assert_eq!(detail["consecutive_failures"], 0);
        assert!(detail.get("failing_since").is_none(), "{detail}");
        assert_eq!(
            get(&mut app, "/readyz").await.status,
            503,
            "one success is not enough"
        );
        advance(secs(1)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
    }

    /// `switch(healthy)`, counting its runs.
    fn counted_switch(
        healthy: &Arc<AtomicBool>,
        runs: &Arc<AtomicUsize>,
    ) -> impl Fn() -> std::future::Ready<CheckResult> + Send + Sync + 'static {
        let (check, runs) = (switch(healthy), runs.clone());
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            check()
        }
    }

    /// One check, `db`, that `healthy` flips and `runs` counts, served and
    /// run once.
    async fn serve_counted(
        healthy: &Arc<AtomicBool>,
        runs: &Arc<AtomicUsize>,
        options: CheckOptions,
    ) -> (crate::HealthHandle, crate::Health<Inner>) {
        let health = HealthChecks::builder()
            .check_with("db", counted_switch(healthy, runs), options)
            .build()
            .unwrap();
        let app = app(&health);
        settle().await;
        (health, app)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_interval_runs_from_a_failed_run_until_settled_passing() {
        let healthy = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let (_health, mut app) = serve_counted(
            &healthy,
            &runs,
            CheckOptions::new()
                .interval(secs(30))
                .failing_interval(secs(2))
                .failure_threshold(2)
                .success_threshold(2),
        )
        .await;
        let count = || runs.load(Ordering::SeqCst);
        assert_eq!(count(), 1);
        // Passing: the next run is 30 s after the first.
        advance(secs(29)).await;
        assert_eq!(count(), 1);

        healthy.store(false, Ordering::SeqCst);
        advance(secs(1)).await; // t=30: fails, below the threshold
        assert_eq!(count(), 2);
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        advance(secs(2)).await; // t=32: the failure confirmed 2 s later
        assert_eq!(count(), 3);
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        advance(secs(4)).await; // t=36: failing, every 2 s
        assert_eq!(count(), 5);

        healthy.store(true, Ordering::SeqCst);
        advance(secs(2)).await; // t=38: one success, still failing
        assert_eq!(count(), 6);
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        advance(secs(2)).await; // t=40: the second brings it back
        assert_eq!(count(), 7);
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        // Settled: back to every 30 s.
        advance(secs(29)).await;
        assert_eq!(count(), 7);
        advance(secs(1)).await;
        assert_eq!(count(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_failing_interval_backs_off_without_turning_stale() {
        let healthy = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let (_health, mut app) = serve_counted(
            &healthy,
            &runs,
            CheckOptions::new()
                .interval(secs(1))
                .failing_interval(secs(60))
                .failure_threshold(2),
        )
        .await;
        let count = || runs.load(Ordering::SeqCst);

        healthy.store(false, Ordering::SeqCst);
        advance(secs(1)).await; // t=1: fails, below the threshold
        assert_eq!(count(), 2);
        advance(secs(58)).await;
        assert_eq!(count(), 2, "backing off: the next run is at t=61");
        // The default max_age follows the interval in force after the
        // failed run (2 × 60 s + 2 s): the passing state held by the
        // threshold has not turned stale.
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        let detail = get(&mut app, "/health/db").await.json();
        assert_eq!(detail["status"], "healthy", "{detail}");
        assert_eq!(detail["consecutive_failures"], 1, "{detail}");
        advance(secs(2)).await; // t=61: the second failure
        assert_eq!(count(), 3);
        assert_eq!(get(&mut app, "/readyz").await.status, 503);

        healthy.store(true, Ordering::SeqCst);
        advance(secs(60)).await; // t=121: passes, settled
        assert_eq!(count(), 4);
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        advance(secs(3)).await;
        assert_eq!(count(), 7, "passing: every second again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_interval_is_clamped_like_the_interval() {
        let zero = CheckOptions::new().failing_interval(Duration::ZERO);
        assert_eq!(
            zero.normalized().interval_after(false),
            Duration::from_millis(1)
        );
        // `Duration::MAX` while failing: one run, no overflow, still failing.
        let healthy = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicUsize::new(0));
        let (_health, mut app) = serve_counted(
            &healthy,
            &runs,
            CheckOptions::new().failing_interval(Duration::MAX),
        )
        .await;
        advance(secs(10 * 365 * 24 * 3600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            get(&mut app, "/readyz").await.json()["reason"],
            "failing: db"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_settled_check_turns_stale_by_its_own_interval() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (_health, mut app) = serve_switch(
            &healthy,
            CheckOptions::new()
                .interval(secs(5))
                .failing_interval(secs(60)),
        )
        .await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        // The refresher is held up: a long failing interval must not make a
        // passing result last longer than 2 × 5 s + 2 s.
        tokio::time::advance(secs(12)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        let detail = get(&mut app, "/health/db").await.json();
        assert_eq!(detail["reason"], "stale: no result within max_age of 12s");
    }

    /// Jitter lengthens each time between runs, while passing and while
    /// failing, by a random part of up to its share of the interval in
    /// force, drawn anew for every run. The first run and a run `recheck`
    /// brings forward are not delayed.
    #[tokio::test(start_paused = true)]
    async fn jitter_lengthens_each_wait_by_a_random_part_drawn_per_run() {
        let (origin, healthy, starts, health) = recorded_db(
            Duration::ZERO,
            CheckOptions::new()
                .interval(secs(10))
                .failing_interval(secs(2))
                .jitter_percent(50),
        );
        let gaps = |runs: &[u128]| -> Vec<u128> { runs.windows(2).map(|w| w[1] - w[0]).collect() };
        let distinct = |gaps: &[u128]| gaps.iter().collect::<std::collections::BTreeSet<_>>().len();

        advance(secs(400)).await;
        let passing = millis_since(origin, &starts);
        assert_eq!(passing[0], 0, "the first run is not delayed");
        let between = gaps(&passing);
        // 400 s of 10 to 15 s waits (the timer fires on the millisecond).
        assert!(between.len() >= 26, "{between:?}");
        assert!(
            between.iter().all(|gap| (10_000..=15_000).contains(gap)),
            "{between:?}"
        );
        assert!(distinct(&between) > between.len() / 2, "{between:?}");

        // Asked for, the next run comes at once (the last ended over a
        // spacing ago) or a spacing after it, without jitter (and long
        // before the next jittered one, 10 s or more after the last).
        let last = *passing.last().unwrap();
        let now = (tokio::time::Instant::now() - origin).as_millis();
        assert!(health.recheck("db"));
        let due = now.max(last + 1_000);
        advance(Duration::from_millis(u64::try_from(due - now).unwrap() + 1)).await;
        let asked = millis_since(origin, &starts);
        assert_eq!(asked.len(), passing.len() + 1);
        assert_eq!(*asked.last().unwrap(), now.max(last + 1_000));

        // Failing: 2 to 3 s between runs.
        healthy.store(false, Ordering::SeqCst);
        advance(secs(15)).await;
        // A run in those 15 s failed: from it on, the failing interval.
        let failed = millis_since(origin, &starts).len() - 1;
        advance(secs(100)).await;
        let failing = millis_since(origin, &starts);
        let between = gaps(&failing[failed..]);
        assert!(between.len() >= 32, "{between:?}");
        assert!(
            between.iter().all(|gap| (2_000..=3_000).contains(gap)),
            "{between:?}"
        );
        assert!(distinct(&between) > between.len() / 2, "{between:?}");
    }

    /// The share is at most 100 %, the default `max_age` allows for the
    /// longest wait (it tolerates one late run), and the longest interval
    /// with jitter stays within the longest duration.
    #[test]
    fn jitter_is_bounded_and_the_default_max_age_allows_for_it() {
        let options = CheckOptions::new()
            .interval(secs(10))
            .timeout(secs(2))
            .jitter_percent(1_000)
            .normalized();
        assert_eq!(options.jitter_percent, 100);
        assert_eq!(options.wait_after(true, || 0.0), secs(10));
        assert_eq!(options.wait_after(true, || 0.5), secs(15));
        assert_eq!(options.max_age_after(true), secs(2 * 20 + 2));

        let options = CheckOptions::new()
            .interval(secs(10))
            .failing_interval(secs(60))
            .jitter_percent(10)
            .normalized();
        assert_eq!(options.wait_after(false, || 0.5), secs(63));
        assert_eq!(options.longest_interval(), secs(66));
        assert_eq!(options.max_age_after(true), secs(2 * 11 + 2));
        assert_eq!(options.max_age_after(false), secs(2 * 66 + 2));
        // Without jitter, nothing is drawn.
        let exact = CheckOptions::new().normalized();
        assert_eq!(exact.wait_after(true, || unreachable!()), secs(5));

        let longest = CheckOptions::new()
            .interval(Duration::MAX)
            .jitter_percent(100)
            .normalized();
        assert_eq!(longest.wait_after(true, || 0.99), super::LONGEST);
        assert_eq!(longest.max_age_after(true), super::LONGEST * 2 + secs(2));
    }

    /// `spread` stays in `[0, 1)` and differs from call to call.
    #[test]
    fn spread_is_a_fraction_that_changes() {
        let drawn: Vec<f64> = (0..1_000).map(|_| super::spread()).collect();
        assert!(drawn.iter().all(|f| (0.0..1.0).contains(f)), "{drawn:?}");
        let halves = drawn.iter().filter(|f| **f < 0.5).count();
        assert!((300..700).contains(&halves), "{halves} of 1000 below 0.5");
    }

    /// A check's own component type is the application's code: asked once,
    /// at registration, not at every publish under the runner's lock.
    #[tokio::test(start_paused = true)]
    async fn a_check_s_component_type_is_asked_once() {
        struct Queue(Arc<AtomicUsize>);
        impl crate::Check for Queue {
            async fn check(&self) -> CheckResult {
                CheckResult::healthy()
            }
            fn component_type(&self) -> &'static str {
                self.0.fetch_add(1, Ordering::SeqCst);
                "queue"
            }
        }
        let asked = Arc::new(AtomicUsize::new(0));
        let health = HealthChecks::builder()
            .check_with(
                "jobs",
                Queue(asked.clone()),
                CheckOptions::new().interval(secs(1)),
            )
            .build()
            .unwrap();
        health
            .add_check("mail", Queue(asked.clone()), CheckOptions::new())
            .unwrap();
        let mut app = app(&health);
        // Ten runs of `jobs`, each published.
        advance(secs(10)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 2, "once per registration");
        let reply =
            crate::test_util::send(&mut app, crate::test_util::health_json("/health")).await;
        let checks = &reply.json()["checks"];
        assert_eq!(
            checks["jobs:responseTime"][0]["componentType"], "queue",
            "{checks}"
        );
        assert_eq!(
            checks["mail:responseTime"][0]["componentType"], "queue",
            "{checks}"
        );
    }

    /// A heartbeat dropped while the instance drains is a component
    /// stopping with the process, not a failure worth a warning.
    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_dropped_while_draining_is_not_a_warning() {
        let (guard, logged) = crate::test_util::capture(tracing::Level::DEBUG);
        let health = HealthChecks::builder().build().unwrap();
        let early = health.heartbeat("early", secs(10)).unwrap();
        let late = health.heartbeat("late", secs(10)).unwrap();
        drop(early);
        settle().await;
        health.drain();
        drop(late);
        settle().await;
        drop(guard);
        let text = logged.text();
        assert!(
            text.contains(r#"heartbeat handle dropped without retire (its task ended or panicked) heartbeat="early""#),
            "{text}"
        );
        let late = r#"without retire while draining: removed heartbeat="late""#;
        assert!(
            text.contains(&format!(
                "DEBUG tower_health::runner: heartbeat handle dropped {late}"
            )),
            "{text}"
        );
        assert!(!text.contains(r#"WARN tower_health::heartbeat: heartbeat handle dropped without retire (its task ended or panicked) heartbeat="late""#), "{text}");
        drop(health);
    }

    /// A component stopped with the process drops its heartbeat while the
    /// instance drains: that is no failure, and must not have the
    /// container killed mid-drain. Nor is a handle dropped just before the
    /// drain began (a worker woken by the same signal that finished first):
    /// a dropped handle fails liveness until the drain, which removes it.
    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_dropped_while_or_before_draining_leaves_liveness_passing() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = crate::test_util::app(&health);
        let worker = health.heartbeat("worker", secs(10)).unwrap();
        settle().await;
        health.drain();
        drop(worker);
        settle().await;
        let live = get(&mut app, "/livez").await;
        assert_eq!(live.status, 200, "{}", live.body);
        let all = get(&mut app, "/health?detailed=true").await.json();
        assert!(all["components"].get("worker").is_none(), "{all}");
        // The name is free again, as after `retire`.
        health.heartbeat("worker", secs(10)).unwrap().retire();

        let (guard, logged) = crate::test_util::capture(tracing::Level::DEBUG);
        let first = HealthChecks::builder().build().unwrap();
        let mut first_app = crate::test_util::app(&first);
        drop(first.heartbeat("worker", secs(10)).unwrap());
        settle().await;
        let live = get(&mut first_app, "/livez").await;
        assert_eq!(live.status, 503, "{}", live.body);
        first.drain();
        settle().await;
        let live = get(&mut first_app, "/livez").await;
        assert_eq!(live.status, 200, "{}", live.body);
        let all = get(&mut first_app, "/health?detailed=true").await.json();
        assert!(all["components"].get("worker").is_none(), "{all}");
        drop(guard);
        let text = logged.text();
        assert!(
            text.contains(
                r#"DEBUG tower_health::runner: heartbeat whose handle was dropped without retire removed as the drain began heartbeat="worker""#
            ),
            "{text}"
        );
    }

    /// Startup passes once: with nothing registered at `build` it has
    /// passed already, and a startup check added later cannot hold it
    /// back, so adding one says so.
    #[tokio::test(start_paused = true)]
    async fn a_startup_check_added_after_startup_passed_is_warned_about() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = crate::test_util::app(&health);
        let startup = || CheckOptions::new().probes(Probes::STARTUP);
        let failing = || async { CheckResult::unhealthy("no") };
        let (added, warned) =
            crate::test_util::warnings(|| health.add_check("migrations", failing, startup()));
        added.unwrap();
        assert!(
            warned.contains("startup already passed") && warned.contains(r#"check="migrations""#),
            "{warned}"
        );
        settle().await;
        assert_eq!(get(&mut app, "/startupz").await.status, 200);
        // A readiness check added later is no news: no warning.
        let (added, warned) = crate::test_util::warnings(|| {
            health.add_check(
                "db",
                || async { CheckResult::healthy() },
                CheckOptions::new(),
            )
        });
        added.unwrap();
        assert!(!warned.contains("startup already passed"), "{warned}");

        // Before startup passed, a startup check added holds it back.
        let marked = HealthChecks::builder()
            .require_mark_started()
            .build()
            .unwrap();
        let mut marked_app = crate::test_util::app(&marked);
        let (added, warned) =
            crate::test_util::warnings(|| marked.add_check("migrations", failing, startup()));
        added.unwrap();
        assert!(!warned.contains("startup already passed"), "{warned}");
        marked.mark_started();
        settle().await;
        assert_eq!(get(&mut marked_app, "/startupz").await.status, 503);
    }

    /// What a check logs is inside a `health_check` span naming it. (The
    /// span is also made a root, which no test here can see: the
    /// refresher runs in no span, unless the runtime itself wraps each
    /// task in one, as tokio's own tracing does.)
    #[tokio::test(start_paused = true)]
    async fn a_run_is_a_span_naming_its_check() {
        let (guard, logged) = crate::test_util::capture(tracing::Level::INFO);
        let health = HealthChecks::builder()
            .check("db", || async {
                tracing::info!("asked the database");
                CheckResult::healthy()
            })
            .build()
            .unwrap();
        settle().await;
        drop(guard);
        let text = logged.text();
        let line = text
            .lines()
            .find(|line| line.contains("asked the database"))
            .unwrap_or_else(|| panic!("the check's event is missing: {text}"));
        assert!(line.contains(r#" health_check{check="db"}: "#), "{line}");
        drop(health);
    }

    /// A check's message is logged as a quoted field: one with a newline
    /// cannot forge a log line of its own.
    #[tokio::test(start_paused = true)]
    async fn a_degraded_message_is_logged_quoted() {
        let (guard, logged) = crate::test_util::capture(tracing::Level::INFO);
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        let health = HealthChecks::builder()
            .check_with(
                "cache",
                move || {
                    std::future::ready(if flag.load(Ordering::SeqCst) {
                        CheckResult::healthy()
                    } else {
                        CheckResult::degraded("evictions high\nERROR forged line")
                    })
                },
                CheckOptions::new().interval(secs(5)),
            )
            .build()
            .unwrap();
        settle().await;
        healthy.store(false, Ordering::SeqCst);
        advance(secs(5)).await;
        drop(guard);
        let text = logged.text();
        assert!(
            text.contains(r#"reason="evictions high\nERROR forged line""#),
            "{text}"
        );
        assert!(
            text.lines().all(|line| !line.starts_with("ERROR forged")),
            "{text}"
        );
        drop(health);
    }

    #[tokio::test(start_paused = true)]
    async fn non_critical_failure_degrades_and_codes_are_configurable() {
        let healthy = Arc::new(AtomicBool::new(false));
        let health = HealthChecks::builder()
            .check_with(
                "cache",
                switch(&healthy),
                CheckOptions::new().critical(false),
            )
            .build()
            .unwrap();
        let mut plain = app(&health);
        settle().await;
        let reply = get(&mut plain, "/health").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["status"], "degraded");
        assert_eq!(reply.json()["reason"], "degraded: cache");

        let mut strict = crate::test_util::app_with(
            health
                .layer()
                .status_code(ProbeStatus::Degraded, http::StatusCode::TOO_MANY_REQUESTS),
        );
        assert_eq!(get(&mut strict, "/readyz").await.status, 429);

        // A 1xx is no answer, and 204, 205 and 304 have no body: ignored,
        // the code set before stays.
        let mut bodiless = crate::test_util::app_with(
            health
                .layer()
                .status_code(ProbeStatus::Degraded, http::StatusCode::TOO_MANY_REQUESTS)
                .status_code(ProbeStatus::Degraded, http::StatusCode::SWITCHING_PROTOCOLS)
                .status_code(ProbeStatus::Degraded, http::StatusCode::CONTINUE)
                .status_code(ProbeStatus::Degraded, http::StatusCode::NO_CONTENT)
                .status_code(ProbeStatus::Degraded, http::StatusCode::RESET_CONTENT)
                .status_code(ProbeStatus::Degraded, http::StatusCode::NOT_MODIFIED),
        );
        assert_eq!(get(&mut bodiless, "/readyz").await.status, 429);
    }

    #[tokio::test(start_paused = true)]
    async fn dependency_failure_never_fails_liveness() {
        let healthy = Arc::new(AtomicBool::new(false));
        let health = HealthChecks::builder()
            .check("db", switch(&healthy))
            .check_with(
                "loop",
                || async { CheckResult::healthy() },
                CheckOptions::new().probes(Probes::LIVENESS),
            )
            .build()
            .unwrap();
        let mut app = app(&health);
        settle().await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        let live = get(&mut app, "/livez?verbose").await;
        assert_eq!(live.status, 200);
        assert_eq!(live.body, "[+]loop ok\nlivez check passed\n");
        assert_eq!(get(&mut app, "/healthz").await.status, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn stopped_refresher_turns_results_stale() {
        let health = HealthChecks::builder()
            .check_with(
                "db",
                || async { CheckResult::healthy() },
                CheckOptions::new().interval(secs(5)).timeout(secs(1)),
            )
            .build()
            .unwrap();
        let mut app = app(&health);
        settle().await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        // The refresher dies; the cached "healthy" must not live forever.
        health.shutdown();
        advance(secs(10)).await; // max_age = 2 × 5s + 1s = 11s
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        advance(secs(2)).await;
        let reply = get(&mut app, "/readyz").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["reason"], "failing: db");
        // A refresher stopped by its handle is no fault: liveness passes.
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        let detail = get(&mut app, "/health/db").await.json();
        assert!(
            detail["reason"].as_str().unwrap().starts_with("stale"),
            "{detail}"
        );
        // Refused, and not logged as a refresher gone missing: it was
        // shut down.
        let (guard, logged) = crate::test_util::capture(tracing::Level::WARN);
        assert_eq!(
            health.add_check(
                "late",
                || async { CheckResult::healthy() },
                CheckOptions::new()
            ),
            Err(crate::Error::ShutDown)
        );
        drop(guard);
        assert_eq!(logged.text(), "");
    }

    /// Checks that require `mark_started`, with a `migrations` check (for
    /// startup and readiness) run every `interval`, failing while `healthy`
    /// is not set.
    fn migrations(healthy: &Arc<AtomicBool>, interval: Duration) -> crate::HealthHandle {
        HealthChecks::builder()
            .require_mark_started()
            .check_with(
                "migrations",
                switch(healthy),
                CheckOptions::new()
                    .probes(Probes::STARTUP | Probes::READINESS)
                    .interval(interval),
            )
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn startup_latches_and_can_wait_for_mark_started() {
        let healthy = Arc::new(AtomicBool::new(true));
        let health = migrations(&healthy, secs(1));
        let mut app = app(&health);
        settle().await;
        let startup = get(&mut app, "/startupz").await;
        assert_eq!(startup.status, 503);
        assert_eq!(startup.json()["reason"], "waiting for: mark_started");
        assert_eq!(get(&mut app, "/readyz").await.json()["status"], "starting");

        health.mark_started();
        assert_eq!(get(&mut app, "/startupz").await.status, 200);
        healthy.store(false, Ordering::SeqCst);
        advance(secs(2)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        assert_eq!(
            get(&mut app, "/startupz").await.status,
            200,
            "startup latches"
        );
    }

    /// A startup check's passing result that has gone stale counts as not
    /// passing for startup too: startup does not latch on a result the
    /// other probes already fail.
    #[tokio::test(start_paused = true)]
    async fn startup_does_not_latch_on_a_stale_result() {
        let healthy = Arc::new(AtomicBool::new(true));
        let health = migrations(&healthy, secs(5));
        let mut app = app(&health);
        settle().await;
        assert_eq!(
            get(&mut app, "/startupz").await.json()["reason"],
            "waiting for: mark_started"
        );
        // No run after the first (the refresher stopped; a starved one
        // looks the same), past the result's `max_age` of 2 × 5 s + 2 s.
        health.shutdown();
        advance(secs(13)).await;
        let startup = get(&mut app, "/startupz").await;
        assert_eq!(startup.status, 503);
        assert_eq!(
            startup.json()["reason"],
            "waiting for: migrations, mark_started"
        );
        health.mark_started();
        let startup = get(&mut app, "/startupz").await;
        assert_eq!(startup.status, 503, "latched on a stale result");
        assert_eq!(startup.json()["reason"], "waiting for: migrations");
        let text = get(&mut app, "/startupz?verbose").await.body;
        assert_eq!(
            text,
            "[-]migrations failed: not started yet\nstartupz check failed\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_decide_liveness() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app(&health);
        let beat = health.heartbeat("worker", secs(10)).unwrap();
        settle().await;
        assert_eq!(get(&mut app, "/livez").await.status, 200);

        advance(secs(9)).await;
        beat.beat();
        advance(secs(9)).await;
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        advance(secs(2)).await;
        let live = get(&mut app, "/livez").await;
        assert_eq!(live.status, 503);
        assert_eq!(live.json()["reason"], "failing: worker");
        let verbose = get(&mut app, "/livez?verbose").await.body;
        assert!(
            verbose.contains("[-]worker failed: missed heartbeat deadline of 10s"),
            "{verbose}"
        );

        beat.beat();
        settle().await;
        assert_eq!(
            get(&mut app, "/livez").await.status,
            200,
            "a late beat revives it"
        );

        drop(beat);
        let live = get(&mut app, "/livez").await;
        assert_eq!(live.status, 503, "dropping the handle fails at once");
        let detail = get(&mut app, "/health/worker").await.json();
        assert_eq!(detail["reason"], "heartbeat handle dropped");
    }

    /// A heartbeat for readiness takes the instance out of rotation when it
    /// stalls, and leaves liveness alone; startup means nothing for it.
    #[tokio::test(start_paused = true)]
    async fn a_readiness_heartbeat_fails_readiness_not_liveness() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app(&health);
        let feed = health
            .heartbeat_with(
                "feed",
                secs(10),
                crate::HeartbeatOptions::new().probes(Probes::READINESS | Probes::STARTUP),
            )
            .unwrap();
        settle().await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        advance(secs(11)).await;
        let ready = get(&mut app, "/readyz").await;
        assert_eq!(ready.status, 503, "{}", ready.body);
        assert_eq!(ready.json()["reason"], "failing: feed");
        let live = get(&mut app, "/livez?verbose").await;
        assert_eq!(live.status, 200, "{}", live.body);
        assert!(!live.body.contains("feed"), "{}", live.body);
        // Not something startup judges, so excluding it there matches
        // nothing (Kubernetes' warning line).
        let startup = get(&mut app, "/startupz?verbose&exclude=feed").await.body;
        assert!(startup.contains(r#"no matches for "feed""#), "{startup}");
        assert_eq!(get(&mut app, "/health").await.status, 503);

        feed.beat();
        settle().await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        drop(feed);
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        assert_eq!(get(&mut app, "/livez").await.status, 200);

        // Both, when asked.
        let both = health
            .heartbeat_with(
                "loop",
                secs(10),
                crate::HeartbeatOptions::new().probes(Probes::LIVENESS | Probes::READINESS),
            )
            .unwrap();
        advance(secs(11)).await;
        for path in ["/livez", "/readyz"] {
            let reply = get(&mut app, path).await;
            assert!(reply.body.contains("loop"), "{path}: {}", reply.body);
            assert_eq!(reply.status, 503, "{path}");
        }
        both.retire();
    }

    /// A non-critical heartbeat that misses its deadline makes its probes
    /// degraded (200), as a non-critical check does.
    #[tokio::test(start_paused = true)]
    async fn a_non_critical_heartbeat_degrades_instead_of_failing() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app(&health);
        let flusher = health
            .heartbeat_with(
                "flusher",
                secs(10),
                crate::HeartbeatOptions::new().critical(false),
            )
            .unwrap();
        advance(secs(11)).await;
        for path in ["/livez", "/health"] {
            let reply = get(&mut app, path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
            assert_eq!(reply.json()["status"], "degraded", "{path}");
            assert_eq!(reply.json()["reason"], "degraded: flusher", "{path}");
        }
        let detail = get(&mut app, "/health/flusher").await.json();
        assert_eq!(detail["critical"], false, "{detail}");
        assert_eq!(detail["status"], "unhealthy", "{detail}");
        flusher.beat();
        settle().await;
        assert_eq!(get(&mut app, "/livez").await.json()["status"], "healthy");
        flusher.retire();
    }

    #[tokio::test(start_paused = true)]
    async fn retired_heartbeat_is_removed() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app(&health);
        let beat = health.heartbeat("worker", secs(1)).unwrap();
        assert!(
            health.heartbeat("worker", secs(1)).is_err(),
            "names are unique"
        );
        beat.retire();
        advance(secs(5)).await;
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        assert_eq!(get(&mut app, "/health/worker").await.status, 404);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_flips_readiness_only() {
        let health = HealthChecks::builder()
            .drain_delay(secs(3))
            .build()
            .unwrap();
        let mut app = app(&health);
        settle().await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = tokio::spawn(health.graceful_shutdown(rx));
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        tx.send(()).unwrap();
        settle().await;
        let ready = get(&mut app, "/readyz").await;
        assert_eq!(ready.status, 503);
        assert_eq!(ready.json()["status"], "draining");
        assert_eq!(get(&mut app, "/health").await.json()["status"], "draining");
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        assert_eq!(get(&mut app, "/anything").await.body, "inner");
        assert!(
            !shutdown.is_finished(),
            "still serving during the drain delay"
        );
        advance(secs(3)).await;
        assert!(shutdown.is_finished());
        assert!(health.is_draining());
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_rotation_flips_readiness_until_returned_and_drain_wins() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (health, mut app) = serve_switch(&healthy, CheckOptions::new()).await;
        let overview = health.subscribe();
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        assert!(!health.is_out_of_rotation());

        health.take_out_of_rotation();
        assert!(health.is_out_of_rotation());
        for path in ["/readyz", "/health"] {
            let reply = get(&mut app, path).await;
            assert_eq!(reply.status, 503, "{path}");
            assert_eq!(
                reply.body, r#"{"status":"draining","reason":"taken out of rotation"}"#,
                "{path}"
            );
        }
        let verbose = get(&mut app, "/readyz?verbose").await;
        assert_eq!(
            verbose.body,
            "[+]db ok\n[-]rotation failed: taken out of rotation\nreadyz check failed\n"
        );
        let reply = send(&mut app, health_json("/readyz")).await;
        assert_eq!(reply.json()["status"], "fail");
        assert_eq!(reply.json()["output"], "taken out of rotation");
        assert_eq!(overview.borrow().readiness, ProbeStatus::Draining);
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        assert_eq!(get(&mut app, "/startupz").await.status, 200);
        assert_eq!(get(&mut app, "/health/db").await.status, 200);
        assert_eq!(get(&mut app, "/anything").await.body, "inner");
        // Still out after the checks run again.
        advance(secs(6)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);

        health.return_to_rotation();
        assert!(!health.is_out_of_rotation());
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        assert_eq!(overview.borrow().readiness, ProbeStatus::Healthy);
        // Back in rotation, the checks judge again.
        healthy.store(false, Ordering::SeqCst);
        advance(secs(5)).await;
        assert_eq!(get(&mut app, "/readyz").await.json()["status"], "unhealthy");

        // A drain is shutdown: it wins, and returning does not undo it.
        health.take_out_of_rotation();
        health.drain();
        let reason = |reply: crate::test_util::Reply| reply.json()["reason"].clone();
        assert_eq!(reason(get(&mut app, "/readyz").await), "shutting down");
        health.return_to_rotation();
        assert_eq!(reason(get(&mut app, "/readyz").await), "shutting down");
        assert_eq!(
            get(&mut app, "/readyz?verbose").await.body,
            "[-]db failed: reason withheld\n[-]shutdown failed: draining\nreadyz check failed\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn checks_can_be_added_and_removed_while_running() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app(&health);
        settle().await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        let healthy = Arc::new(AtomicBool::new(false));
        health
            .add_check("db", switch(&healthy), CheckOptions::new())
            .unwrap();
        // Visible at once, before its first run.
        assert_eq!(get(&mut app, "/health/db").await.status, 503);
        settle().await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        assert_eq!(
            health.add_check("db", switch(&healthy), CheckOptions::new()),
            Err(crate::Error::DuplicateName("db".into()))
        );
        assert!(health.remove_check("db"));
        assert!(!health.remove_check("db"));
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        assert_eq!(get(&mut app, "/health/db").await.status, 404);
    }

    #[tokio::test(start_paused = true)]
    async fn removing_a_check_stops_its_run_in_flight() {
        /// Dropped with the run's future.
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let health = HealthChecks::builder().build().unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (dropped.clone(), runs.clone());
        let never = move || {
            count.fetch_add(1, Ordering::SeqCst);
            let guard = SetOnDrop(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<CheckResult>().await
            }
        };
        let options = CheckOptions::new().timeout(Duration::MAX);
        health.add_check("stuck", never, options).unwrap();
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!dropped.load(Ordering::SeqCst));
        assert!(health.remove_check("stuck"));
        settle().await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the removed check's run is still going"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_names_are_rejected() {
        for name in ["", "has space", "a/b", "x:y", ".", "..", &"n".repeat(65)] {
            let err = HealthChecks::builder()
                .check(name, || async { CheckResult::healthy() })
                .build()
                .unwrap_err();
            assert_eq!(err, crate::Error::InvalidName(name.to_owned()));
        }
        // Dots elsewhere are fine.
        for name in ["db.primary", "...", ".hidden"] {
            HealthChecks::builder()
                .check(name, || async { CheckResult::healthy() })
                .build()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    /// A name the probes also use is taken, with a warning saying where the
    /// two would not be told apart.
    #[tokio::test(start_paused = true)]
    async fn names_the_probes_use_too_are_warned_about() {
        let (health, logged) = crate::test_util::warnings(|| {
            HealthChecks::builder()
                .check("liveness", || async { CheckResult::healthy() })
                .check("db", || async { CheckResult::healthy() })
                .build()
                .unwrap()
        });
        let once = |logged: &str, what: &str| {
            assert_eq!(logged.matches(what).count(), 1, "{what}: {logged}");
        };
        once(&logged, r#""liveness" is also the gRPC health service's"#);
        assert!(!logged.contains("db"), "{logged}");
        // A registration refused is not warned about.
        let (refused, logged) = crate::test_util::warnings(|| {
            health.add_check(
                "liveness",
                || async { CheckResult::healthy() },
                CheckOptions::new(),
            )
        });
        assert!(refused.is_err());
        assert!(logged.is_empty(), "{logged}");
        let (added, logged) = crate::test_util::warnings(|| {
            health.add_check(
                "shutdown",
                || async { CheckResult::healthy() },
                CheckOptions::new(),
            )
        });
        added.unwrap();
        once(&logged, "a line of the `?verbose` text");
        let (worker, logged) =
            crate::test_util::warnings(|| health.heartbeat("startup", secs(10)).unwrap());
        once(&logged, r#""startup" is also the gRPC"#);
        worker.retire();
    }

    #[test]
    fn building_outside_a_runtime_is_an_error() {
        let err = HealthChecks::builder().build().unwrap_err();
        assert_eq!(err, crate::Error::NoRuntime);
        assert!(err.to_string().contains("Tokio runtime"));
    }

    #[test]
    fn building_in_a_runtime_without_timers_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let err = runtime
            .block_on(async { HealthChecks::builder().build() })
            .unwrap_err();
        assert_eq!(err, crate::Error::NoTimer);
        assert!(err.to_string().contains("enable_time()"));
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_see_transitions() {
        let healthy = Arc::new(AtomicBool::new(true));
        let health = HealthChecks::builder()
            .check_with(
                "db",
                switch(&healthy),
                CheckOptions::new().interval(secs(1)),
            )
            .build()
            .unwrap();
        let mut rx = health.subscribe();
        settle().await;
        assert_eq!(rx.borrow_and_update().readiness, ProbeStatus::Healthy);
        healthy.store(false, Ordering::SeqCst);
        tokio::time::timeout(secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let overview = rx.borrow_and_update().clone();
        assert_eq!(overview.readiness, ProbeStatus::Unhealthy);
        assert_eq!(overview.liveness, ProbeStatus::Healthy);
        assert_eq!(
            overview.components,
            vec![(Arc::from("db"), Some(Status::Unhealthy))]
        );
    }

    /// A check says through `if_cut` what it is waiting for; only a run cut
    /// at its timeout while the guard lives reports it (the last one said,
    /// read at the cut), and a report that panics leaves the plain timeout.
    #[tokio::test(start_paused = true)]
    async fn a_run_cut_at_its_timeout_reports_what_it_said_it_waited_for() {
        let phase = Arc::new(AtomicUsize::new(0));
        let at_cut = phase.clone();
        let health = HealthChecks::builder()
            .check_with(
                "pool",
                move || {
                    let phase = phase.clone();
                    async move {
                        let _replaced = super::if_cut(|| CheckResult::unhealthy("never shown"));
                        let at_cut = phase.clone();
                        let _waiting = super::if_cut(move || {
                            CheckResult::unhealthy("waiting for a connection").with_observation(
                                "phase",
                                at_cut.load(Ordering::SeqCst),
                                None,
                            )
                        });
                        match phase.load(Ordering::SeqCst) {
                            0 => std::future::pending().await,
                            1 => CheckResult::healthy(),
                            2 => {
                                let _panics = super::if_cut(|| panic!("the report panicked"));
                                std::future::pending().await
                            }
                            _ => {
                                // A pool check awaited inside this one
                                // returned: what it said is withdrawn.
                                drop(_waiting);
                                std::future::pending().await
                            }
                        }
                    }
                },
                CheckOptions::new().interval(secs(5)).timeout(secs(2)),
            )
            .build()
            .unwrap();
        let mut app = crate::test_util::revealing(&health);
        advance(secs(1)).await;
        // Changed after the run started: the report reads it at the cut.
        at_cut.store(7, Ordering::SeqCst);
        advance(Duration::from_millis(1500)).await;
        let pool = get(&mut app, "/health/pool").await.json();
        assert_eq!(pool["reason"], "timed out after 2s", "{pool}");
        assert_eq!(
            pool["error"], "timed out after 2s: waiting for a connection",
            "{pool}"
        );
        assert_eq!(pool["observed"]["phase"]["value"], 7, "{pool}");
        // Revealed, the text and health+json show the message; public, the
        // text keeps the timeout alone.
        let text = get(&mut app, "/health?verbose").await.body;
        assert!(
            text.contains("[-]pool failed: timed out after 2s: waiting for a connection\n"),
            "{text}"
        );
        let mut public = crate::test_util::app(&health);
        let text = get(&mut public, "/health?verbose").await.body;
        assert!(
            text.contains("[-]pool failed: timed out after 2s\n"),
            "{text}"
        );
        let json = send(&mut app, health_json("/health")).await.json();
        assert_eq!(
            json["checks"]["pool:responseTime"][0]["output"],
            "timed out after 2s: waiting for a connection",
            "{json}"
        );

        // A run that returns reports its own result.
        at_cut.store(1, Ordering::SeqCst);
        advance(secs(5)).await;
        let pool = get(&mut app, "/health/pool").await.json();
        assert_eq!(pool["status"], "healthy", "{pool}");
        assert!(pool["observed"].get("phase").is_none(), "{pool}");

        // Withdrawn, the report is not shown when the run is cut later.
        at_cut.store(3, Ordering::SeqCst);
        advance(secs(5)).await;
        advance(secs(2)).await;
        let pool = get(&mut app, "/health/pool").await.json();
        assert_eq!(pool["reason"], "timed out after 2s", "{pool}");
        assert!(pool.get("error").is_none(), "{pool}");
        assert!(pool.get("observed").is_none(), "{pool}");
        at_cut.store(1, Ordering::SeqCst);
        advance(secs(5)).await;
        assert_eq!(
            get(&mut app, "/health/pool").await.json()["status"],
            "healthy"
        );

        // A report that panics: the plain timeout, and the runner goes on.
        at_cut.store(2, Ordering::SeqCst);
        advance(secs(5)).await;
        advance(secs(2)).await;
        let pool = get(&mut app, "/health/pool").await.json();
        assert_eq!(pool["reason"], "timed out after 2s", "{pool}");
        assert!(pool.get("error").is_none(), "{pool}");
        assert!(pool.get("observed").is_none(), "{pool}");
    }

    #[tokio::test(start_paused = true)]
    async fn hung_and_panicking_checks_are_cut_and_others_go_on() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let health = HealthChecks::builder()
            .check_with(
                "hung",
                std::future::pending::<CheckResult>,
                CheckOptions::new().timeout(secs(2)),
            )
            .check_with(
                "boom",
                || async {
                    if true {
                        panic!("secret panic text");
                    }
                    CheckResult::healthy()
                },
                CheckOptions::new().critical(false),
            )
            .check_with(
                "fine",
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { CheckResult::healthy() }
                },
                CheckOptions::new().interval(secs(1)),
            )
            .build()
            .unwrap();
        let mut app = app(&health);
        advance(Duration::from_millis(1500)).await;
        // The hung check holds nothing up.
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(
            get(&mut app, "/health/fine").await.json()["status"],
            "healthy"
        );
        let boom = get(&mut app, "/health/boom").await.json();
        assert_eq!(boom["reason"], "panicked");
        assert!(!boom.to_string().contains("secret"));
        advance(secs(1)).await;
        let hung = get(&mut app, "/health/hung").await.json();
        assert_eq!(hung["reason"], "timed out after 2s");
        advance(secs(10)).await;
        assert!(runs.load(Ordering::SeqCst) >= 12, "the refresher goes on");
        assert_eq!(
            get(&mut app, "/health/fine").await.json()["status"],
            "healthy"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn beating_heartbeats_keep_the_answers_cached() {
        let health = HealthChecks::builder().build().unwrap();
        let beat = health.heartbeat("worker", secs(1)).unwrap();
        for _ in 0..50 {
            advance(Duration::from_millis(100)).await;
            beat.beat();
        }
        // At the very instant a deadline passes, probes judge live until
        // the runner has published; give it that instant.
        settle().await;
        let snapshot = health.owner.shared.snapshot.load();
        let until = snapshot
            .fresh_until
            .expect("a live heartbeat bounds the cache");
        assert!(
            until > tokio::time::Instant::now(),
            "the runner must republish as deadlines pass, or every probe renders"
        );
    }

    /// A runtime for tests that build in one runtime and serve from another.
    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// `build()` in one runtime, served from another: when the first is
    /// dropped, its refresher is gone, and new checks or heartbeats would
    /// never run.
    #[test]
    fn a_refresher_dropped_with_its_runtime_refuses_new_checks() {
        let first = current_thread();
        let health = first.block_on(async {
            let health = HealthChecks::builder().build().unwrap();
            settle().await; // the refresher has started
            health
        });
        let second = current_thread();
        second.block_on(async {
            health
                .add_check(
                    "db",
                    || async { CheckResult::healthy() },
                    CheckOptions::new(),
                )
                .expect("the refresher is alive");
        });
        drop(first);
        second.block_on(async {
            let added = health.add_check(
                "cache",
                || async { CheckResult::healthy() },
                CheckOptions::new(),
            );
            assert!(matches!(added, Err(crate::Error::ShutDown)), "{added:?}");
            let beat = health.heartbeat("worker", secs(1));
            assert!(
                matches!(beat, Err(crate::Error::ShutDown)),
                "{:?}",
                beat.err()
            );
        });
    }

    /// Checks (one, `db`) built inside `runtime`, whose refresher runs
    /// there.
    fn built_in(runtime: &tokio::runtime::Runtime) -> crate::HealthHandle {
        runtime.block_on(async {
            HealthChecks::builder()
                .check_with(
                    "db",
                    || async { CheckResult::healthy() },
                    CheckOptions::new(),
                )
                .build()
                .unwrap()
        })
    }

    /// `build()` in a runtime that is then dropped, served from another:
    /// no check will run again, so liveness fails with readiness and
    /// `/health` (only a restart helps), in every format, saying why.
    #[test]
    fn a_refresher_gone_with_its_runtime_fails_liveness() {
        let first = current_thread();
        let health = built_in(&first);
        let mut app = app(&health);
        first.block_on(async {
            // Real time here (a runtime of its own): bounded, so a
            // regression fails instead of hanging.
            let give_up = tokio::time::Instant::now() + secs(20);
            while get(&mut app, "/readyz").await.status != 200 {
                assert!(tokio::time::Instant::now() < give_up, "never ready");
                settle().await;
            }
            assert_eq!(get(&mut app, "/livez").await.status, 200);
        });
        drop(first);
        current_thread().block_on(async {
            for path in ["/livez", "/readyz", "/health"] {
                let reply = get(&mut app, path).await;
                assert_eq!(reply.status, 503, "{path}");
                assert_eq!(reply.json()["reason"], STOPPED, "{path}");
            }
            let text = get(&mut app, "/livez?verbose").await.body;
            assert_eq!(
                text,
                "[-]refresher failed: checks no longer run\nlivez check failed\n"
            );
            let reply = send(&mut app, health_json("/readyz")).await.json();
            assert_eq!(reply["status"], "fail");
            assert_eq!(reply["output"], STOPPED);
            // Startup had completed, and stays so.
            assert_eq!(get(&mut app, "/startupz").await.status, 200);
        });
    }

    /// A runtime dropped before it ever polled the refresher (a
    /// current-thread runtime runs spawned tasks only while it blocks on
    /// something) loses the checks as surely as one dropped later.
    #[test]
    fn a_refresher_dropped_before_it_ever_ran_fails_liveness() {
        let first = current_thread();
        let health = built_in(&first);
        drop(first);
        let mut app = app(&health);
        current_thread().block_on(async {
            for path in ["/livez", "/readyz", "/health"] {
                let reply = get(&mut app, path).await;
                assert_eq!(reply.status, 503, "{path}");
                assert_eq!(reply.json()["reason"], STOPPED, "{path}");
            }
            let added = health.add_check(
                "cache",
                || async { CheckResult::healthy() },
                CheckOptions::new(),
            );
            assert!(matches!(added, Err(crate::Error::ShutDown)), "{added:?}");
        });
    }

    /// A panic inside the refresher (injected as it records a run) stops
    /// the checks: that is published at once, liveness included, instead
    /// of probes going stale one by one.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_refresher_fails_liveness() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (health, mut app) = serve_switch(&healthy, CheckOptions::new().interval(secs(1))).await;
        assert_eq!(get(&mut app, "/livez").await.status, 200);

        health
            .owner
            .shared
            .panic_in_record
            .store(true, Ordering::SeqCst);
        advance(secs(1)).await;
        let reply = get(&mut app, "/livez").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["reason"], STOPPED);
        let (guard, logged) = crate::test_util::capture(tracing::Level::WARN);
        let added = health.add_check("cache", switch(&healthy), CheckOptions::new());
        assert!(matches!(added, Err(crate::Error::ShutDown)), "{added:?}");
        drop(guard);
        let text = logged.text();
        assert!(
            text.contains("check not added: the refresher task is gone"),
            "{text}"
        );
        // Out of rotation does not hide the loss.
        health.take_out_of_rotation();
        assert_eq!(get(&mut app, "/readyz").await.json()["reason"], STOPPED);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_after_a_stale_result_is_not_damped() {
        let healthy = Arc::new(AtomicBool::new(true));
        let (_health, mut app) = serve_switch(
            &healthy,
            CheckOptions::new().interval(secs(5)).failure_threshold(3),
        )
        .await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);

        // The refresher is held up for 20 s (a starved runtime), so the
        // result of t=0 turns stale (max_age 2 × 5 s + 2 s), and the
        // dependency fails meanwhile.
        healthy.store(false, Ordering::SeqCst);
        tokio::time::advance(secs(20)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        settle().await; // the refresher catches up: one run, which fails
        let detail = get(&mut app, "/health/db").await.json();
        assert_eq!(detail["consecutive_failures"], 1);
        assert_eq!(
            get(&mut app, "/readyz").await.status,
            503,
            "a stale success followed by a failure is not a passing check"
        );

        // Damping still applies between known states.
        healthy.store(true, Ordering::SeqCst);
        advance(secs(5)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        healthy.store(false, Ordering::SeqCst);
        advance(secs(5)).await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_see_missed_heartbeats_and_stale_results() {
        let health = HealthChecks::builder()
            .check_with(
                "db",
                || async { CheckResult::healthy() },
                CheckOptions::new().interval(secs(60)).max_age(secs(2)),
            )
            .build()
            .unwrap();
        let beat = health.heartbeat("worker", secs(1)).unwrap();
        let mut rx = health.subscribe();
        settle().await;
        assert_eq!(rx.borrow_and_update().readiness, ProbeStatus::Healthy);
        advance(Duration::from_millis(1100)).await;
        assert_eq!(rx.borrow_and_update().liveness, ProbeStatus::Unhealthy);
        beat.beat();
        settle().await;
        assert_eq!(rx.borrow_and_update().liveness, ProbeStatus::Healthy);
        advance(secs(1)).await;
        // The result is older than max_age now, with the refresher alive.
        assert_eq!(rx.borrow_and_update().readiness, ProbeStatus::Unhealthy);
        drop(beat);
    }

    #[tokio::test]
    async fn removing_a_check_that_owns_a_heartbeat_does_not_deadlock() {
        let health = HealthChecks::builder().build().unwrap();
        let beat = Arc::new(health.heartbeat("worker", secs(10)).unwrap());
        let owned = beat.clone();
        health
            .add_check(
                "owner",
                move || {
                    let _keep = &owned;
                    async { CheckResult::healthy() }
                },
                CheckOptions::new(),
            )
            .unwrap();
        let rejected = beat.clone();
        let duplicate = health.add_check(
            "owner",
            move || {
                let _keep = &rejected;
                async { CheckResult::healthy() }
            },
            CheckOptions::new(),
        );
        assert!(duplicate.is_err());
        // The last reference to the heartbeat now lives in the check.
        drop(beat);
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = health.clone();
        std::thread::spawn(move || {
            let removed = handle.remove_check("owner");
            tx.send(removed).ok();
        });
        let removed = rx
            .recv_timeout(secs(10))
            .expect("remove_check deadlocked dropping the check's heartbeat");
        assert!(removed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_heartbeats_name_can_be_taken_again() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app(&health);
        drop(health.heartbeat("worker", secs(1)).unwrap());
        assert_eq!(get(&mut app, "/livez").await.status, 503);
        let again = health.heartbeat("worker", secs(1)).unwrap();
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        assert!(
            health.heartbeat("worker", secs(1)).is_err(),
            "a live one is not replaced"
        );
        again.retire();
    }

    /// Never ready; when dropped, calls its function, which panics.
    struct PanicsWhenDropped(fn());

    impl std::future::Future for PanicsWhenDropped {
        type Output = CheckResult;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<CheckResult> {
            std::task::Poll::Pending
        }
    }

    impl Drop for PanicsWhenDropped {
        fn drop(&mut self) {
            (self.0)();
        }
    }

    /// A check, run every second and cut at 1 s, whose runs never end and
    /// call `panic` when cut; with the count of its runs.
    fn cut_every_run(panic: fn()) -> (crate::HealthHandle, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let health = HealthChecks::builder()
            .check_with(
                "cursed",
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    PanicsWhenDropped(panic)
                },
                CheckOptions::new().interval(secs(1)).timeout(secs(1)),
            )
            .build()
            .unwrap();
        (health, runs)
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_panicking_when_cut_is_reported_and_runs_again() {
        let (health, runs) = cut_every_run(|| panic!("dropped"));
        let mut app = app(&health);
        advance(Duration::from_millis(1500)).await;
        let detail = get(&mut app, "/health/cursed").await.json();
        assert_eq!(detail["reason"], "panicked", "{detail}");
        // It ran until its timeout cut it, not for no time at all.
        assert_eq!(detail["duration_ms"], 1000.0, "{detail}");
        advance(secs(5)).await;
        assert!(
            runs.load(Ordering::SeqCst) >= 3,
            "it must be scheduled again"
        );
    }

    /// A panic payload whose own drop panics.
    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the panic payload's drop panicked");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_payload_panicking_when_dropped_does_not_stop_the_refresher() {
        let (health, runs) = cut_every_run(|| std::panic::panic_any(Bomb));
        advance(secs(7)).await;
        assert!(
            runs.load(Ordering::SeqCst) >= 3,
            "it must be scheduled again"
        );
        health
            .add_check(
                "more",
                || async { CheckResult::healthy() },
                CheckOptions::new(),
            )
            .expect("the refresher is alive");
    }

    #[tokio::test(start_paused = true)]
    async fn duration_max_means_never() {
        // `Duration::MAX` anywhere used to overflow an `Instant` addition:
        // a panic at build, or in the refresher, which then left readiness
        // at "starting" for good.
        let never = CheckOptions::new()
            .interval(Duration::MAX)
            .timeout(Duration::MAX)
            .max_age(Duration::MAX);
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let health = HealthChecks::builder()
            .check_with(
                "db",
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    std::future::ready(CheckResult::healthy())
                },
                never.clone(),
            )
            .build()
            .unwrap();
        health
            .add_check("cache", || async { CheckResult::healthy() }, never)
            .unwrap();
        let worker = health.heartbeat("worker", Duration::MAX).unwrap();
        assert_eq!(worker.deadline(), super::LONGEST);
        let mut app = app(&health);
        settle().await;
        assert_eq!(get(&mut app, "/readyz").await.status, 200);

        // Ten years on: run once, never stale, the heartbeat not missed.
        advance(secs(10 * 365 * 24 * 3600)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        assert_eq!(get(&mut app, "/livez").await.status, 200);
        health.mark_started();
        drop(worker);
        assert_eq!(get(&mut app, "/livez").await.status, 503);
        health.drain();
        assert_eq!(get(&mut app, "/readyz").await.json()["status"], "draining");
    }

    /// Records, for every event and span raised on this thread, its
    /// message (or the span's name) and whether the runner's lock was held.
    struct LockWatch {
        shared: Arc<std::sync::OnceLock<Arc<super::Shared>>>,
        seen: Arc<std::sync::Mutex<Vec<(String, bool)>>>,
    }

    impl LockWatch {
        fn note(&self, what: String) {
            let Some(shared) = self.shared.get() else {
                return;
            };
            let held = matches!(
                shared.state.try_lock(),
                Err(std::sync::TryLockError::WouldBlock)
            );
            self.seen.lock().unwrap().push((what, held));
        }
    }

    struct Message(String);

    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    /// An event's message.
    fn message(event: &tracing::Event<'_>) -> String {
        let mut visitor = Message(String::new());
        event.record(&mut visitor);
        visitor.0
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LockWatch {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let message = message(event);
            self.note(message);
        }

        fn on_new_span(
            &self,
            attributes: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.note(format!("span {}", attributes.metadata().name()));
        }
    }

    /// The refresher's log events and its runs' spans reach the subscriber
    /// after the runner's lock is released, never under it: a subscriber
    /// is the application's code, and one that called back into the
    /// handle (or dropped its last clone) would deadlock on it.
    #[tokio::test(start_paused = true)]
    async fn log_events_and_spans_are_raised_without_the_runners_lock() {
        use tracing_subscriber::layer::SubscriberExt as _;

        let shared = Arc::new(std::sync::OnceLock::new());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let watch = LockWatch {
            shared: shared.clone(),
            seen: seen.clone(),
        };
        let _guard = crate::test_util::listen(tracing_subscriber::registry().with(watch));

        let healthy = Arc::new(AtomicBool::new(true));
        let health = HealthChecks::builder()
            .check_with(
                "db",
                switch(&healthy),
                CheckOptions::new().interval(secs(5)).failure_threshold(2),
            )
            .build()
            .unwrap();
        shared.set(health.owner.shared.clone()).ok().unwrap();
        settle().await;
        // A max_age shorter than the interval: a warning at registration.
        health
            .add_check(
                "cache",
                || async { CheckResult::healthy() },
                CheckOptions::new().interval(secs(60)).max_age(secs(1)),
            )
            .unwrap();
        healthy.store(false, Ordering::SeqCst);
        advance(secs(5)).await; // below the threshold
        advance(secs(5)).await; // failing
        advance(secs(5)).await; // still failing
        healthy.store(true, Ordering::SeqCst);
        advance(secs(5)).await; // recovered
        let worker = health.heartbeat("worker", secs(3)).unwrap();
        advance(secs(4)).await; // missed
        worker.beat(); // recovered
        settle().await;
        drop(worker); // dropped
        let leaving = health.heartbeat("leaving", secs(60)).unwrap();
        health.drain();
        drop(leaving); // removed while draining
        settle().await;

        let seen = seen.lock().unwrap().clone();
        let under_lock: Vec<&str> = seen
            .iter()
            .filter(|(_, held)| *held)
            .map(|(what, _)| what.as_str())
            .collect();
        assert!(
            under_lock.is_empty(),
            "raised under the lock: {under_lock:?}"
        );
        for expected in [
            "span health_check",
            "health check first result",
            "health: startup complete",
            "health check max_age is shorter than its interval",
            "health check failed below its failure threshold",
            "health check failing",
            "health check still failing",
            "health check recovered",
            "heartbeat missed its deadline",
            "heartbeat recovered",
            "heartbeat handle dropped without retire (its task",
            "heartbeat handle dropped without retire while draining",
        ] {
            assert!(
                seen.iter().any(|(what, _)| what.starts_with(expected)),
                "{expected:?} not among {seen:#?}"
            );
        }
    }

    /// Log events raised on two threads are emitted in the order they were
    /// raised: a heartbeat's "missed", still being written on the
    /// refresher's thread when a beat on another thread raises
    /// "recovered", is not followed by it out of order (the log would end
    /// saying the heartbeat is missed). Each goes to the subscriber of the
    /// thread that raised it, whichever thread writes it.
    #[tokio::test(start_paused = true)]
    async fn log_events_raised_on_two_threads_are_emitted_in_order() {
        use std::sync::mpsc;
        use tracing_subscriber::layer::SubscriberExt as _;

        /// Holds this thread's "missed" until `go`, telling `held` first.
        struct Ordered {
            label: &'static str,
            written: Arc<std::sync::Mutex<Vec<(&'static str, String)>>>,
            held: std::sync::Mutex<Option<mpsc::Sender<()>>>,
            go: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
        }

        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Ordered {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let message = message(event);
                if !message.starts_with("heartbeat") {
                    return;
                }
                if message.starts_with("heartbeat missed")
                    && let Some(held) = self.held.lock().unwrap().take()
                {
                    held.send(()).unwrap();
                    let go = self.go.lock().unwrap().take().unwrap();
                    // The other thread's beat, while this event is written.
                    let _ = go.recv_timeout(Duration::from_secs(10));
                }
                self.written.lock().unwrap().push((self.label, message));
            }
        }

        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (held_tx, held_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        let _guard = crate::test_util::listen(tracing_subscriber::registry().with(Ordered {
            label: "refresher",
            written: written.clone(),
            held: std::sync::Mutex::new(Some(held_tx)),
            go: std::sync::Mutex::new(Some(go_rx)),
        }));
        let health = HealthChecks::builder().build().unwrap();
        let worker = health.heartbeat("worker", secs(3)).unwrap();
        let beater = {
            let written = written.clone();
            // In the runtime's context, for its paused clock.
            let runtime = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let _runtime = runtime.enter();
                let _guard =
                    crate::test_util::listen(tracing_subscriber::registry().with(Ordered {
                        label: "worker",
                        written,
                        held: std::sync::Mutex::new(None),
                        go: std::sync::Mutex::new(None),
                    }));
                held_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the refresher writes \"missed\"");
                worker.beat();
                go_tx.send(()).unwrap();
                worker
            })
        };
        // The deadline passes: the refresher publishes it missed, and is
        // held writing that while the other thread beats.
        advance(secs(4)).await;
        let worker = beater.join().unwrap();
        settle().await;

        assert_eq!(
            *written.lock().unwrap(),
            [
                ("refresher", "heartbeat missed its deadline".to_owned()),
                ("worker", "heartbeat recovered".to_owned())
            ]
        );
        worker.retire();
    }

    /// A subscriber that calls into the handle from an event (here, adds a
    /// check whose `max_age` draws a warning) does not deadlock, and its
    /// call takes effect. The events the call raises are raised inside the
    /// subscriber, where `tracing` hands events to no subscriber (so that
    /// one cannot recurse into itself): they are dropped, as they would be
    /// if emitted at once; the events raised after it are not.
    #[tokio::test(start_paused = true)]
    async fn a_subscriber_may_call_into_the_handle() {
        use tracing_subscriber::layer::SubscriberExt as _;

        struct CallsBack {
            handle: Arc<std::sync::OnceLock<crate::HealthHandle>>,
            written: Arc<std::sync::Mutex<Vec<String>>>,
        }

        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CallsBack {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let message = message(event);
                let failing = message == "health check failing";
                self.written.lock().unwrap().push(message);
                if failing && let Some(handle) = self.handle.get() {
                    handle
                        .add_check(
                            "fallback",
                            || async { CheckResult::healthy() },
                            CheckOptions::new().interval(secs(60)).max_age(secs(1)),
                        )
                        .unwrap();
                }
            }
        }

        let handle = Arc::new(std::sync::OnceLock::new());
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let _guard = crate::test_util::listen(tracing_subscriber::registry().with(CallsBack {
            handle: handle.clone(),
            written: written.clone(),
        }));
        let healthy = Arc::new(AtomicBool::new(false));
        let (health, mut app) = serve_switch(&healthy, CheckOptions::new()).await;
        // The first run failed before the subscriber had the handle.
        handle.set(health.clone()).unwrap();
        healthy.store(true, Ordering::SeqCst);
        advance(secs(5)).await;
        healthy.store(false, Ordering::SeqCst);
        advance(secs(5)).await;

        let written = written.lock().unwrap().clone();
        let failing = written
            .iter()
            .rposition(|m| m == "health check failing")
            .expect("the check failed");
        assert!(
            !written
                .iter()
                .any(|m| m.starts_with("health check max_age")),
            "{written:#?}"
        );
        // The added check's first run, after the call, is logged.
        assert_eq!(
            written[failing + 1],
            "health check first result",
            "{written:#?}"
        );
        let status = get(&mut app, "/health/fallback").await.status;
        assert_eq!(status, 200);
    }

    /// A subscriber that panics on one event loses that event only: the
    /// ones raised with it are written, and the refresher goes on.
    #[tokio::test(start_paused = true)]
    async fn a_subscriber_panicking_on_an_event_loses_only_that_one() {
        use tracing_subscriber::layer::SubscriberExt as _;

        struct Panicky(Arc<std::sync::Mutex<Vec<String>>>);

        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Panicky {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let message = message(event);
                assert_ne!(message, "health check first result", "a subscriber's bug");
                self.0.lock().unwrap().push(message);
            }
        }

        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let _guard =
            crate::test_util::listen(tracing_subscriber::registry().with(Panicky(written.clone())));
        let healthy = Arc::new(AtomicBool::new(true));
        // The first run's result and "startup complete" are raised together.
        let (_health, mut app) = serve_switch(&healthy, CheckOptions::new()).await;
        assert_eq!(
            *written.lock().unwrap(),
            ["health: startup complete"],
            "the event after the one the subscriber panicked on"
        );
        healthy.store(false, Ordering::SeqCst);
        advance(secs(5)).await;
        assert_eq!(
            get(&mut app, "/readyz").await.status,
            503,
            "the refresher goes on"
        );
        assert!(
            written
                .lock()
                .unwrap()
                .iter()
                .any(|m| m == "health check failing"),
            "{written:?}"
        );
    }
}
