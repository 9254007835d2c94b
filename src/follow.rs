//! Following what the probes and components would answer, for the
//! integrations that publish it elsewhere (the gRPC health service,
//! metrics).
//!
//! The refresher's [`Overview`] changes when it publishes, and it publishes
//! again when the snapshot's `fresh_until` passes (a result turns stale, a
//! heartbeat misses its deadline). A follower wakes on either, and also
//! when a publication brings `fresh_until` forward without changing the
//! overview (a failure below the threshold shortens `max_age`). When the
//! refresher is late or gone the follower makes the expiry's publication
//! itself, so each result turning stale shows, and a heartbeat coming back
//! afterwards is published (and seen) as a change. Once nothing is left to
//! expire, only a publication wakes it.

use std::sync::{Arc, Weak};

use tokio::{sync::watch, time::Instant};

use crate::{Overview, runner::Shared};

pub(crate) struct Follow {
    shared: Weak<Shared>,
    overview: watch::Receiver<Overview>,
    /// Told when the published `fresh_until` moves earlier.
    expiry: watch::Receiver<Option<Instant>>,
    /// When time alone next changes the last judgement.
    wake: Option<Instant>,
}

impl Follow {
    /// Holds only a weak reference: following does not keep the checks
    /// alive.
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::downgrade(shared),
            overview: shared.overview.subscribe(),
            expiry: shared.expiry.subscribe(),
            wake: None,
        }
    }

    /// What each probe and component would answer now, or `None` once the
    /// checks are gone (every handle and layer dropped).
    pub(crate) fn judge(&mut self) -> Option<Overview> {
        let shared = self.shared.upgrade()?;
        // The published overview must keep up with time even when the
        // refresher does not: subscribers see it, and a heartbeat's next
        // beat publishes a change only against it. Brought up to date, it
        // is the answer until the snapshot's `fresh_until`.
        shared.publish_if_expired();
        // Marked seen before the snapshot is read: a publication in between
        // wakes the next `changed` rather than going unseen.
        self.expiry.mark_unchanged();
        let overview = self.overview.borrow_and_update().clone();
        self.wake = shared.snapshot.load().fresh_until;
        Some(overview)
    }

    /// Waits until a judgement may have changed: the refresher published a
    /// change or an earlier expiry, or time reached the next expiry after
    /// the last judgement. `false` once the checks are gone. Cancel safe.
    pub(crate) async fn changed(&mut self) -> bool {
        let sleep = async {
            match self.wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.overview.changed() => changed.is_ok(),
            changed = self.expiry.changed() => changed.is_ok(),
            () = sleep => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use tokio::time::{Instant, timeout};

    use super::Follow;
    use crate::{
        CheckOptions, CheckResult, Status,
        test_util::{advance, aging, settle},
    };

    fn status(follow: &mut Follow, name: &str) -> Option<Status> {
        let overview = follow.judge().expect("the checks are alive");
        overview
            .components
            .iter()
            .find(|(n, _)| &**n == name)
            .unwrap_or_else(|| panic!("no component {name}"))
            .1
    }

    /// With the refresher stopped, a follower wakes exactly when each result
    /// turns stale, then sleeps until something is published or the checks
    /// are gone, instead of judging again on a timer.
    #[tokio::test(start_paused = true)]
    async fn wakes_at_each_expiry_and_then_only_for_a_change() {
        let t0 = Instant::now();
        let health = aging(&[("cache", 10), ("db", 30)]);
        settle().await;
        health.shutdown();
        settle().await;
        let mut follow = Follow::new(&health.owner.shared);
        assert_eq!(status(&mut follow, "cache"), Some(Status::Healthy));

        assert!(follow.changed().await);
        assert_eq!(t0.elapsed().as_secs(), 10);
        assert_eq!(status(&mut follow, "cache"), Some(Status::Unhealthy));
        assert_eq!(status(&mut follow, "db"), Some(Status::Healthy));

        assert!(follow.changed().await);
        assert_eq!(t0.elapsed().as_secs(), 30);
        assert_eq!(status(&mut follow, "db"), Some(Status::Unhealthy));

        // Nothing is left to expire.
        let idle = timeout(Duration::from_secs(24 * 3600), follow.changed()).await;
        assert!(idle.is_err(), "woke with nothing to judge: {idle:?}");

        drop(health);
        assert!(!follow.changed().await);
    }

    /// A run that fails below its failure threshold changes no answer, but
    /// with a failing interval shorter than the interval it brings the
    /// result's expiry forward. A follower must learn of that, or, with
    /// the refresher stopped after it, would show the result as fresh for
    /// as long again as probes fail it as stale.
    #[tokio::test(start_paused = true)]
    async fn learns_of_an_expiry_brought_forward_by_a_run_that_changed_no_answer() {
        let t0 = Instant::now();
        let up = Arc::new(AtomicBool::new(true));
        let switch = up.clone();
        let health = crate::HealthChecks::builder()
            .check_with(
                "db",
                move || {
                    let up = switch.load(Ordering::SeqCst);
                    async move {
                        if up {
                            CheckResult::healthy()
                        } else {
                            CheckResult::unhealthy("down")
                        }
                    }
                },
                CheckOptions::new()
                    .interval(Duration::from_secs(30))
                    .failing_interval(Duration::from_secs(2))
                    .timeout(Duration::from_secs(2))
                    .failure_threshold(2),
            )
            .build()
            .unwrap();
        settle().await;
        let mut follow = Follow::new(&health.owner.shared);
        // Fresh until 2 × 30 s + 2 s.
        assert_eq!(status(&mut follow, "db"), Some(Status::Healthy));
        up.store(false, Ordering::SeqCst);

        // The run at 30 s fails, below the threshold: still healthy, but
        // with the failing interval in force it is fresh only until
        // 30 s + 2 × 2 s + 2 s. The refresher stops before its next run.
        advance(Duration::from_secs(31)).await;
        health.shutdown();
        // Told at once, not at the expiry it last saw (62 s), nor by
        // another follower's publication when the result turns stale.
        let woke = timeout(Duration::ZERO, follow.changed()).await;
        assert_eq!(woke, Ok(true), "not told of the earlier expiry");
        assert_eq!(status(&mut follow, "db"), Some(Status::Healthy));
        assert!(follow.changed().await);
        assert_eq!(status(&mut follow, "db"), Some(Status::Unhealthy));
        assert_eq!(t0.elapsed().as_secs(), 36, "stale when probes say so");
    }

    /// With the refresher stopped, a heartbeat that misses its deadline
    /// and then beats again is seen to come back.
    #[tokio::test(start_paused = true)]
    async fn sees_a_heartbeat_come_back_without_the_refresher() {
        let health = crate::HealthChecks::builder().build().unwrap();
        let worker = health.heartbeat("worker", Duration::from_secs(5)).unwrap();
        settle().await;
        health.shutdown();
        settle().await;
        let mut follow = Follow::new(&health.owner.shared);
        assert_eq!(status(&mut follow, "worker"), Some(Status::Healthy));
        assert!(follow.changed().await);
        assert_eq!(status(&mut follow, "worker"), Some(Status::Unhealthy));

        worker.beat();
        let woke = timeout(Duration::from_secs(60), follow.changed()).await;
        assert_eq!(woke, Ok(true));
        assert_eq!(status(&mut follow, "worker"), Some(Status::Healthy));
    }
}
