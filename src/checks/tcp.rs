//! Connects to `host:port` (feature `tcp`).
//!
//! For dependencies without a client library in the application (an SMTP
//! relay, a legacy service), or as a cheap reachability check. Unlike the
//! other built-in checks, [`TcpCheck`] opens a new connection on every run
//! and closes it at once: connecting is what it checks. It proves that
//! something accepts connections on that port, not that the service behind
//! it works; prefer a protocol-level check where one exists.
//!
//! The host name is resolved on every run, so DNS changes are followed. A
//! lookup still running when its run was cut (DNS down) is not repeated:
//! the next run waits for it, so a check holds at most one thread in
//! `getaddrinfo` (its own, not one of Tokio's blocking pool, which would
//! hold up the runtime's shutdown). When the name resolves to several
//! addresses (IPv6 and IPv4, several replicas), they are tried in the
//! resolver's order: the next one is started as soon as an attempt fails,
//! or after [`ATTEMPT_DELAY`] without an answer, and the first to connect
//! wins (RFC 8305's "happy eyeballs", without its family interleaving). So
//! one address that silently drops packets does not fail
//! the check while another accepts. If every attempt fails the run is
//! [`unhealthy`](crate::Status::Unhealthy) with the last error; while any
//! attempt still hangs, the runner cuts the run at the check's timeout
//! ("timed out").
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "tcp")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_health::{CheckOptions, HealthChecks, checks::tcp::TcpCheck};
//!
//! let health = HealthChecks::builder()
//!     .check_with(
//!         "smtp-relay",
//!         TcpCheck::new("127.0.0.1:25"),
//!         CheckOptions::new().timeout(Duration::from_secs(1)).critical(false),
//!     )
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tcp"))]
//! # fn main() {}
//! ```

use std::{fmt, time::Duration};

use super::dns::{Lookups, connect};
use crate::{Check, CheckResult};

/// How long a connection attempt runs alone before the next address is
/// tried beside it: RFC 8305's recommended "Connection Attempt Delay". (The
/// same for [`HttpCheck::new`](super::http::HttpCheck::new)'s connections.)
pub const ATTEMPT_DELAY: Duration = super::dns::ATTEMPT_DELAY;

/// Opens and closes a TCP connection to an address. See the
/// [module documentation](self).
///
/// A clone shares the original's lookup in flight, if any.
#[derive(Clone)]
pub struct TcpCheck {
    address: String,
    lookups: Lookups,
}

impl TcpCheck {
    /// A check that connects to `address`: `host:port`, for example
    /// `"db.internal:5432"`, `"127.0.0.1:25"` or `"[::1]:6379"`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            lookups: Lookups::default(),
        }
    }

    /// The address this check connects to.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl fmt::Debug for TcpCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpCheck")
            .field("address", &self.address)
            .finish()
    }
}

impl Check for TcpCheck {
    async fn check(&self) -> CheckResult {
        match connect(&self.lookups, &self.address).await {
            Ok(stream) => {
                drop(stream);
                CheckResult::healthy()
            }
            Err(e) => CheckResult::unhealthy(format!(
                "TCP connect to {} failed: {e}; check that the service is listening on that \
                 port, that the host name resolves from here (the address must be host:port), \
                 and that no firewall drops the connection",
                self.address
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::TcpCheck;
    use crate::{
        Check, Status,
        checks::dns::{Lookups, connect_any, tests as dns},
    };

    // Linux drops a SYN when the listener's accept queue is full, which
    // `hanging_address` relies on; other stacks may answer with a reset.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_hanging_address_does_not_hide_one_that_accepts() {
        let (hung, _queued, _listener) = dns::hanging_address().await;
        let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        // Bounded only so that a regression fails instead of hanging.
        let stream =
            tokio::time::timeout(Duration::from_secs(20), connect_any(vec![hung, good_addr]))
                .await
                .expect("tried the addresses one after another")
                .expect("connected to the second address");
        assert_eq!(stream.peer_addr().unwrap(), good_addr);
    }

    #[tokio::test]
    async fn every_address_refused_is_the_last_error() {
        let closed: Vec<_> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap() // closed when `l` drops
            })
            .collect();
        let e = connect_any(closed).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        let e = connect_any(Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains("no address"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hung_lookup_is_waited_for_not_repeated() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = format!("tcp-hang.test:{}", listener.local_addr().unwrap().port());
        let check = TcpCheck {
            address: target.clone(),
            lookups: Lookups::with(dns::hanging),
        };
        let _releases = dns::Releases(target.clone());
        // Runs cut by the runner's timeout, from the check and a clone.
        for check in [&check, &check.clone(), &check] {
            let run = tokio::time::timeout(Duration::from_millis(20), check.check()).await;
            assert!(run.is_err(), "the lookup hangs");
        }
        assert_eq!(
            dns::started_once_begun(&target).await,
            1,
            "one lookup, not three"
        );
        // A run joins the hung lookup (on its first poll) and connects with
        // its result once it is released.
        let (result, ()) = tokio::join!(check.check(), async { dns::release(&target) });
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(dns::started(&target), 1);
        // A lookup that has returned is not reused: DNS changes are followed.
        let result = check.check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(dns::started(&target), 2);
    }
}
