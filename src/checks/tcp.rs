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
//! refused or unroutable connection is [`unhealthy`](crate::Status::Unhealthy);
//! a connect that hangs is cut by the runner at the check's timeout.
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

use std::fmt;

use crate::{Check, CheckResult};

/// Opens and closes a TCP connection to an address. See the
/// [module documentation](self).
#[derive(Clone)]
pub struct TcpCheck {
    address: String,
}

impl TcpCheck {
    /// A check that connects to `address`: `host:port`, for example
    /// `"db.internal:5432"`, `"127.0.0.1:25"` or `"[::1]:6379"`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
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
        match tokio::net::TcpStream::connect(self.address.as_str()).await {
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
