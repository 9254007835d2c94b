//! Blocking calls that can hang (`statvfs` on a dead network mount,
//! `getaddrinfo` with DNS down), made at most one at a time per check.
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
                    thread::Builder::new()
                        .name("tower-health-blocking".to_owned())
                        .spawn(move || {
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
