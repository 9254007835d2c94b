//! Blocking calls that can hang (`statvfs` on a dead network mount,
//! `getaddrinfo` with DNS down), made at most one at a time per check.
//!
//! Such a call runs on Tokio's blocking pool, and nothing can stop it once
//! it has started: when the runner cuts a run at its timeout, the call goes
//! on. Made afresh on every run, a call that hangs for minutes would hold one
//! more of the pool's threads every interval (Tokio's pool has 512, and
//! `tokio::fs` and every DNS lookup queue behind them). So a call still
//! running is joined instead: the next run, or a concurrent one from a clone
//! of the check, waits for it and takes its result.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// At most one blocking call at a time for the same key; clones share the
/// call in flight.
pub(crate) struct OneAtATime<K, T> {
    latest: Arc<Mutex<Option<Call<K, T>>>>,
}

/// A call and what it was asked (`K`). Its channel holds `None` until the
/// call returns; the sender is dropped without a value if the call panicked.
type Call<K, T> = (K, watch::Receiver<Option<T>>);

impl<K, T> Clone for OneAtATime<K, T> {
    fn clone(&self) -> Self {
        Self {
            latest: self.latest.clone(),
        }
    }
}

impl<K, T> Default for OneAtATime<K, T> {
    fn default() -> Self {
        Self {
            latest: Arc::default(),
        }
    }
}

/// The blocking call panicked.
#[derive(Debug)]
pub(crate) struct Panicked;

impl<K, T> OneAtATime<K, T>
where
    K: PartialEq,
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
    ) -> Result<T, Panicked> {
        let mut running = {
            let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
            match &*latest {
                Some((asked, running))
                    if *asked == key
                        && running.borrow().is_none()
                        && running.has_changed().is_ok() =>
                {
                    running.clone()
                }
                _ => {
                    let (sender, running) = watch::channel(None);
                    tokio::task::spawn_blocking(move || {
                        sender.send_replace(Some(call()));
                    });
                    *latest = Some((key, running.clone()));
                    running
                }
            }
        };
        // `wait_for` looks at the value before it looks for a closed
        // channel, so a result sent just before the sender dropped is seen.
        let result = running
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Panicked)?;
        Ok(result.clone().expect("waited for a result"))
    }

    /// Whether a call is running (for tests).
    #[cfg(test)]
    pub(crate) fn is_running(&self) -> bool {
        self.latest
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(_, running)| running.borrow().is_none() && running.has_changed().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    };
    use std::time::Duration;

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
        let clone = calls_of.clone();
        let (first, second, ()) =
            tokio::join!(calls_of.run("a", call()), clone.run("a", call()), async {
                release.send(()).unwrap()
            },);
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
    async fn a_call_for_another_key_is_not_joined() {
        let calls_of = OneAtATime::<&str, usize>::default();
        let (started, release, call) = calls(1);
        let run = tokio::time::timeout(Duration::from_millis(20), calls_of.run("a", call())).await;
        assert!(run.is_err());
        // Bounded only so that a regression (joining call 1) fails instead
        // of hanging.
        let other = tokio::time::timeout(Duration::from_secs(10), calls_of.run("b", call()));
        assert_eq!(other.await.expect("joined the call for a").unwrap(), 2);
        release.send(()).unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panicking_call_is_reported_and_made_again() {
        let calls_of = OneAtATime::<(), usize>::default();
        assert!(calls_of.run((), || panic!("boom")).await.is_err());
        assert_eq!(calls_of.run((), || 7).await.unwrap(), 7);
    }
}
