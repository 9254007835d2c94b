//! Following what the probes and components would answer, for the
//! integrations that publish it elsewhere (the gRPC health service,
//! metrics).
//!
//! The refresher's [`Overview`] changes when it publishes. Staleness is
//! judged at request time, so an integration must also judge again as time
//! passes: at the next instant a result would turn stale or a heartbeat
//! would miss its deadline, even when the refresher is held up or gone, so
//! that each result turning stale shows. Once nothing is left to expire,
//! only a publication wakes it. When the refresher is late or gone, the
//! follower publishes the expired answers itself, so that a heartbeat
//! coming back afterwards is published (and seen) as a change.

use std::sync::{Arc, Weak};

use tokio::{sync::watch, time::Instant};

use crate::{Overview, runner::Shared};

pub(crate) struct Follow {
    shared: Weak<Shared>,
    overview: watch::Receiver<Overview>,
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
            wake: None,
        }
    }

    /// What each probe and component would answer now, or `None` once the
    /// checks are gone (every handle and layer dropped).
    pub(crate) fn judge(&mut self) -> Option<Overview> {
        let shared = self.shared.upgrade()?;
        // The published overview must keep up with time even when the
        // refresher does not: subscribers see it, and a heartbeat's next
        // beat publishes a change only against it.
        shared.publish_if_expired();
        // Whatever was published so far is judged below (including what
        // this published): only later publications are a change.
        self.overview.borrow_and_update();
        let snapshot = shared.snapshot.load_full();
        let now = Instant::now();
        self.wake = snapshot.expires_after(now);
        Some(snapshot.overview(now))
    }

    /// Waits until a judgement may have changed: the refresher published a
    /// change, or time reached the next expiry after the last judgement.
    /// `false` once the checks are gone. Cancel safe.
    pub(crate) async fn changed(&mut self) -> bool {
        let sleep = async {
            match self.wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.overview.changed() => changed.is_ok(),
            () = sleep => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{Instant, timeout};

    use super::Follow;
    use crate::{
        Status,
        test_util::{aging, settle},
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
