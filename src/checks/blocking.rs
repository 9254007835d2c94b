//! Blocking calls that can hang (`statvfs` on a dead network mount,
//! `getaddrinfo` with DNS down, a synchronous client), made at most one at a
//! time per check; [`BlockingCheck`] makes one a check of its own.
//!
//! Nothing can stop such a call once it has started: when the runner cuts
//! a run at its timeout, the call goes on. Made afresh on every run, a call
//! that hangs for minutes would hold one more thread every interval. So a
//! call still running is joined instead: the next run, or a concurrent one
//! from a clone of the check, waits for it and takes its result.
//!
//! The call runs on a thread of its own, not on Tokio's blocking pool:
//! dropping a runtime waits for every task of its blocking pool, so a
//! `statvfs` stuck on a hard-mounted NFS share would keep the process from
//! exiting after `main` returns (in Kubernetes, a pod stuck in `Terminating`
//! until it is killed). A thread of its own is left behind instead, and ends
//! with the process. Starting a thread costs some tens of microseconds, once
//! per run of a check that runs every few seconds.

use std::{
    collections::{HashMap, hash_map::Entry},
    fmt,
    hash::Hash,
    panic::{self, AssertUnwindSafe},
    sync::{Arc, Mutex, PoisonError},
    thread,
};

use tokio::sync::watch;

use crate::{Check, CheckResult};

/// A check whose work blocks: a synchronous client library, a call into C,
/// a file read on a network filesystem.
///
/// An async check that blocks holds up the runtime thread it runs on, and
/// the runner cannot cut it at its timeout, which works only at an
/// `.await`: on a current-thread runtime every probe waits for it. This
/// one runs `call` on a thread of its own, so the run is cut at its
/// [`timeout`](crate::CheckOptions::timeout) like any other, and probes
/// never wait.
///
/// A call that goes on after its run was cut cannot be stopped. Rather than
/// start another thread every interval while it hangs, the next run waits
/// for that same call, and takes its result if it returns in time: at most
/// one call runs at a time, whatever the clones. The thread is not one of
/// Tokio's blocking pool (`spawn_blocking`), which a runtime waits for when
/// it shuts down: a call hung for good there keeps the process from
/// exiting (in Kubernetes, a pod left `Terminating` until it is killed). A
/// thread of its own is left behind and ends with the process. Starting it
/// costs some tens of microseconds per run.
///
/// `call` returns anything a closure check may return (a `CheckResult`, or
/// a `Result` whose error becomes the message). A panic in it is reported
/// as the check's panic. A run whose thread cannot be started (the process
/// is out of threads or memory) is unhealthy, and its message says so.
/// health+json calls it a `component`; for a synchronous database client,
/// register it with
/// [`CheckOptions::component_type("datastore")`](crate::CheckOptions::component_type).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_health::{CheckOptions, HealthChecks, checks::BlockingCheck};
///
/// // A synchronous client (here, a plain `std::net` connection attempt).
/// fn ping(addr: &str) -> std::io::Result<()> {
///     let addr = addr.parse().expect("an address");
///     std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map(drop)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_health::Error> {
/// let health = HealthChecks::builder()
///     .check_with(
///         "legacy-service",
///         BlockingCheck::new(|| ping("127.0.0.1:9")),
///         CheckOptions::new().critical(false),
///     )
///     .build()?;
/// # drop(health);
/// # Ok(())
/// # }
/// ```
pub struct BlockingCheck<F> {
    call: Arc<F>,
    calls: OneAtATime<(), CheckResult>,
}

impl<F, R> BlockingCheck<F>
where
    F: Fn() -> R + Send + Sync + 'static,
    R: Into<CheckResult> + 'static,
{
    /// A check that runs `call` on a thread of its own.
    pub fn new(call: F) -> Self {
        Self {
            call: Arc::new(call),
            calls: OneAtATime::default(),
        }
    }
}

impl<F> Clone for BlockingCheck<F> {
    /// A clone shares the call in flight: still one at a time.
    fn clone(&self) -> Self {
        Self {
            call: self.call.clone(),
            calls: self.calls.clone(),
        }
    }
}

impl<F> fmt::Debug for BlockingCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingCheck").finish_non_exhaustive()
    }
}

impl<F, R> Check for BlockingCheck<F>
where
    F: Fn() -> R + Send + Sync + 'static,
    R: Into<CheckResult> + 'static,
{
    async fn check(&self) -> CheckResult {
        let call = self.call.clone();
        match self.calls.run((), move || call().into()).await {
            Ok(result) => result,
            // The runner reports it as any check's panic.
            Err(Failed::Panicked(message)) => panic::resume_unwind(Box::new(message.to_string())),
            Err(failed @ Failed::NoThread(_)) => {
                CheckResult::unhealthy(format!("the blocking check {failed}"))
            }
        }
    }
}

/// At most one blocking call at a time per key; clones share the calls in
/// flight.
pub(crate) struct OneAtATime<K, T> {
    /// The calls made, by what they were asked; those that have returned
    /// are dropped on the next run.
    calls: Arc<Mutex<HashMap<K, Call<T>>>>,
}

/// A call's channel: `None` until it returns its value, or the message of
/// its panic. (Its thread always sends before it ends.)
type Call<T> = watch::Receiver<Option<Result<T, Arc<str>>>>;

impl<K, T> Clone for OneAtATime<K, T> {
    fn clone(&self) -> Self {
        Self {
            calls: self.calls.clone(),
        }
    }
}

impl<K, T> Default for OneAtATime<K, T> {
    fn default() -> Self {
        Self {
            calls: Arc::default(),
        }
    }
}

/// Why a blocking call gave no value.
#[derive(Debug)]
pub(crate) enum Failed {
    /// It panicked, with this message.
    Panicked(Arc<str>),
    /// Its thread could not be started (or, which should not happen, ended
    /// without a result), for this reason.
    NoThread(Arc<str>),
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(message) => write!(f, "panicked: {message}"),
            Self::NoThread(reason) => write!(f, "could not run on a thread: {reason}"),
        }
    }
}

impl<K, T> OneAtATime<K, T>
where
    K: Eq + Hash,
    T: Clone + Send + Sync + 'static,
{
    /// `call`'s result, or the result of the call for the same `key` that is
    /// still running. A call that has already returned is not reused (its
    /// result is old): a new one is made.
    ///
    /// Dropping the returned future (a cut run) leaves the call running for
    /// the next caller to join.
    pub(crate) async fn run(
        &self,
        key: K,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Failed> {
        let mut running = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            calls.retain(|_, call| still_running(call));
            match calls.entry(key) {
                Entry::Occupied(running) => running.get().clone(),
                Entry::Vacant(slot) => {
                    let (sender, receiver) = watch::channel(None);
                    // The run's span (`health_check`), so that what the call
                    // logs is tied to the check on this thread too.
                    let span = tracing::Span::current();
                    thread::Builder::new()
                        .name("tower-health-blocking".to_owned())
                        .spawn(move || {
                            let _entered = span.enter();
                            let outcome = panic::catch_unwind(AssertUnwindSafe(call))
                                .map_err(|payload| panic_message(&*payload));
                            sender.send_replace(Some(outcome));
                        })
                        .map_err(|e| Failed::NoThread(Arc::from(e.to_string())))?;
                    slot.insert(receiver).clone()
                }
            }
        };
        // `wait_for` looks at the value before it looks for a closed
        // channel, so a result sent just before the sender dropped is seen.
        let outcome = running
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Failed::NoThread(Arc::from("its thread ended without a result")))?
            .clone()
            .expect("waited for an outcome");
        outcome.map_err(Failed::Panicked)
    }

    /// Whether a call is running (for tests).
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.calls.lock().unwrap().values().any(still_running)
    }
}

fn still_running<T>(call: &watch::Receiver<Option<T>>) -> bool {
    call.borrow().is_none() && call.has_changed().is_ok()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
    if let Some(message) = payload.downcast_ref::<&str>() {
        Arc::from(*message)
    } else if let Some(message) = payload.downcast_ref::<String>() {
        Arc::from(message.as_str())
    } else {
        Arc::from("(a panic payload that is not a string)")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    };
    use std::{thread, time::Duration};

    use super::OneAtATime;

    // Real time: a paused clock would not move while a blocking call runs.
    // The durations bound the waits; nothing asserts on them.
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting until {what}");
    }

    /// Calls numbered from 1; the first `hanging` of them block until a
    /// message is sent on the returned sender.
    #[allow(clippy::type_complexity)]
    fn calls(
        hanging: usize,
    ) -> (
        Arc<AtomicUsize>,
        mpsc::Sender<()>,
        impl Fn() -> Box<dyn FnOnce() -> usize + Send>,
    ) {
        let started = Arc::new(AtomicUsize::new(0));
        let (release, hung) = mpsc::channel::<()>();
        let hung = Arc::new(Mutex::new(hung));
        let counter = started.clone();
        let call = move || -> Box<dyn FnOnce() -> usize + Send> {
            let started = counter.clone();
            let hung = hung.clone();
            Box::new(move || {
                let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= hanging {
                    hung.lock().unwrap().recv().unwrap();
                }
                n
            })
        };
        (started, release, call)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hung_call_is_joined_not_repeated() {
        let calls_of = OneAtATime::<&str, usize>::default();
        let (started, release, call) = calls(2);
        let cut = Duration::from_millis(20);
        for _ in 0..3 {
            let run = tokio::time::timeout(cut, calls_of.run("a", call())).await;
            assert!(run.is_err(), "the first call still hangs");
        }
        until("the pool starts the call", || {
            started.load(Ordering::SeqCst) > 0
        })
        .await;
        assert_eq!(started.load(Ordering::SeqCst), 1, "one thread, not three");

        // A run that finds call 1 still hanging waits for it and takes its
        // result when it is released; so does a concurrent one from a clone
        // (both join the call on their first poll, before the release).
        // (Bounded only so that a regression fails instead of hanging.)
        let clone = calls_of.clone();
        let joined = async {
            tokio::join!(calls_of.run("a", call()), clone.run("a", call()), async {
                release.send(()).unwrap()
            },)
        };
        let (first, second, ()) = tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .expect("a run started a call of its own");
        assert_eq!(
            (first.unwrap(), second.unwrap()),
            (1, 1),
            "call 1's own result"
        );
        assert_eq!(started.load(Ordering::SeqCst), 1);

        // Call 2 is cut, then returns before the next run: that run makes a
        // new call rather than report call 2's old result.
        let run = tokio::time::timeout(cut, calls_of.run("a", call())).await;
        assert!(run.is_err());
        release.send(()).unwrap();
        until("call 2 returns", || !calls_of.is_running()).await;
        assert_eq!(calls_of.run("a", call()).await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn calls_for_other_keys_run_beside_it() {
        let calls_of = OneAtATime::<&str, usize>::default();
        let (started, release, call) = calls(1);
        let run = tokio::time::timeout(Duration::from_millis(20), calls_of.run("a", call())).await;
        assert!(run.is_err());
        until("the pool starts the call", || {
            started.load(Ordering::SeqCst) == 1
        })
        .await;
        // (Bounded only so that a regression fails instead of hanging.)
        let bounded = |run| tokio::time::timeout(Duration::from_secs(10), run);
        let other = bounded(calls_of.run("b", call())).await;
        assert_eq!(other.expect("joined the call for a").unwrap(), 2);
        // The call for "a" is still the one to join: "b" did not replace it.
        let (again, ()) = tokio::join!(bounded(calls_of.run("a", call())), async {
            release.send(()).unwrap()
        });
        assert_eq!(again.expect("started another call for a").unwrap(), 1);
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panicking_call_is_reported_and_made_again() {
        let calls_of = OneAtATime::<(), usize>::default();
        let failed = calls_of.run((), || panic!("boom")).await.unwrap_err();
        assert_eq!(failed.to_string(), "panicked: boom");
        assert_eq!(calls_of.run((), || 7).await.unwrap(), 7);
    }

    /// `path`'s JSON once `done` holds (real time, bounded).
    async fn answer_when(
        app: &mut crate::Health<crate::test_util::Inner>,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for _ in 0..1000 {
            last = crate::test_util::get(app, path).await.json();
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} never got there: {last}");
    }

    /// On a current-thread runtime a hung blocking call holds up neither the
    /// probes nor the runner: its runs are cut, later runs join it rather
    /// than start another, and the one that sees it return takes its result.
    #[tokio::test(flavor = "current_thread")]
    async fn a_hung_blocking_check_is_cut_and_probes_go_on() {
        use crate::{CheckOptions, HealthChecks, checks::BlockingCheck};

        let (_, release, call) = calls(1);
        let hung = Mutex::new(Some(call()));
        let started = Arc::new(AtomicUsize::new(0));
        let counter = started.clone();
        let check = BlockingCheck::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            // The first call hangs until released; later ones return at once.
            let first = hung.lock().unwrap().take();
            first.map_or(Ok(()), |first| match first() {
                1 => Ok(()),
                n => Err(format!("call {n}")),
            })
        });
        let health = HealthChecks::builder()
            .check_with(
                "legacy",
                check,
                CheckOptions::new()
                    .interval(Duration::from_millis(20))
                    .timeout(Duration::from_millis(500)),
            )
            .build()
            .unwrap();
        let mut app = crate::test_util::app(&health);
        let cut = |body: &serde_json::Value| {
            body["components"]["legacy"]["consecutive_failures"]
                .as_u64()
                .is_some_and(|n| n >= 3)
        };
        let body = answer_when(&mut app, "/health?detailed=true", cut).await;
        assert_eq!(
            body["components"]["legacy"]["reason"], "timed out after 500ms",
            "{body}"
        );
        assert_eq!(started.load(Ordering::SeqCst), 1, "joined, not repeated");

        release.send(()).unwrap();
        let healthy = |body: &serde_json::Value| body["status"] == "healthy";
        answer_when(&mut app, "/readyz", healthy).await;
        // Returned, the call is made afresh on each run.
        let again = |body: &serde_json::Value| {
            body["components"]["legacy"]["consecutive_successes"]
                .as_u64()
                .is_some_and(|n| n >= 3)
        };
        answer_when(&mut app, "/health?detailed=true", again).await;
        assert!(started.load(Ordering::SeqCst) >= 3);
        drop(health);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_blocking_check_is_reported_as_a_panic() {
        use crate::{CheckResult, HealthChecks, checks::BlockingCheck};

        let health = HealthChecks::builder()
            .check(
                "legacy",
                BlockingCheck::new(|| -> CheckResult { panic!("boom") }),
            )
            .build()
            .unwrap();
        let mut app = crate::test_util::revealing(&health);
        let failed = |body: &serde_json::Value| body["status"] == "unhealthy";
        let body = answer_when(&mut app, "/health/legacy", failed).await;
        assert_eq!(body["reason"], "panicked", "{body}");
        assert_eq!(body["error"], "boom", "{body}");
        drop(health);
    }

    /// Dropping a runtime waits for its blocking pool: a call that hangs
    /// there keeps the process from exiting after `main` returns. Ours runs
    /// on a thread of its own, left behind.
    #[test]
    fn a_hung_call_does_not_hold_up_the_runtime_s_shutdown() {
        let calls_of = OneAtATime::<(), usize>::default();
        let (started, release, call) = calls(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let run =
                tokio::time::timeout(Duration::from_millis(20), calls_of.run((), call())).await;
            assert!(run.is_err(), "the call hangs");
            until("the call starts", || started.load(Ordering::SeqCst) == 1).await;
        });
        let (dropped, done) = mpsc::channel();
        thread::spawn(move || {
            drop(runtime);
            dropped.send(()).unwrap();
        });
        // (Bounded so that a regression fails instead of hanging; the call
        // is released either way.)
        let shut_down = done.recv_timeout(Duration::from_secs(10));
        release.send(()).unwrap();
        shut_down.expect("dropping the runtime waited for the hung call");
    }
}
