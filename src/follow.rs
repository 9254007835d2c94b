//! Following what the probes and components would answer, for the
//! integrations that publish it elsewhere (the gRPC health service,
//! metrics).
//!
//! The refresher's [`Overview`] changes when it publishes. Staleness is
//! judged at request time, so an integration must also judge again as time
//! passes: when the published results pass their freshness, and then every
//! [`RECHECK`] while they stay past it (the refresher is held up or gone),
//! so that each result turning stale shows.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use crate::{Overview, runner::Shared};

/// How often the statuses are judged again while the published results are
/// past their freshness.
const RECHECK: Duration = Duration::from_secs(1);

pub(crate) struct Follow {
    shared: Weak<Shared>,
    overview: watch::Receiver<Overview>,
    /// The last judged snapshot's freshness.
    fresh_until: Option<Instant>,
}

impl Follow {
    /// Holds only a weak reference: following does not keep the checks
    /// alive.
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::downgrade(shared),
            overview: shared.overview.subscribe(),
            fresh_until: None,
        }
    }

    /// What each probe and component would answer now, or `None` once the
    /// checks are gone (every handle and layer dropped).
    pub(crate) fn judge(&mut self) -> Option<Overview> {
        let snapshot = self.shared.upgrade()?.snapshot.load_full();
        self.fresh_until = snapshot.fresh_until;
        Some(snapshot.overview(Instant::now()))
    }

    /// Waits until a judgement may have changed: the refresher published a
    /// change, or time passed the last judged results' freshness. `false`
    /// once the checks are gone. Cancel safe.
    pub(crate) async fn changed(&mut self) -> bool {
        let wake = match self.fresh_until {
            Some(at) if at <= Instant::now() => Some(Instant::now() + RECHECK),
            at => at,
        };
        let sleep = async {
            match wake {
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
