//! Who may see the checks' own error texts and observations.
//!
//! A check's message can hold host names, credentials in connection URLs or
//! SQL, and its observations (pool sizes, free space, an upstream's status
//! code) tell more about the deployment than a probe needs. By default no
//! response ever contains either: a failing check shows its name and a
//! generic reason (`failed`, `timed out after 2s`, `stale`), and the full
//! error goes to `tracing`. A [`RevealDetails`] predicate on the layer
//! unlocks them for the requests it accepts. It never denies anything:
//! health paths answer everyone, with names, statuses, run times, the
//! uptime and the version.
//!
//! A rule that trusts a request header, as the second one below does, is
//! only as good as the proxy in front: it must remove that header from
//! every request that comes from outside.
//!
//! With feature `metrics`, numeric observations are also recorded as
//! gauges ([`metrics`](crate::metrics)), for whoever reads the metrics:
//! serve those where only operators reach them.
//!
//! # Example
//!
//! ```
//! use tower_health::{HealthChecks, details::BearerToken};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_health::Error> {
//! let health = HealthChecks::builder().build()?;
//! // Full details for `Authorization: Bearer s3cret`...
//! let layer = health.layer().reveal_details_if(BearerToken::new("s3cret"));
//! // ...or for any rule of your own, e.g. a header your proxy sets (and strips
//! // from outside requests).
//! let layer = health
//!     .layer()
//!     .reveal_details_if(|req: &http::request::Parts| req.headers.contains_key("x-internal"));
//! # drop(layer);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

/// Decides whether a request may see the checks' own error texts and
/// observations.
///
/// Implemented for closures `Fn(&http::request::Parts) -> bool` and for
/// [`BearerToken`].
pub trait RevealDetails: Send + Sync + 'static {
    /// `true` to include error texts and observations in this request's
    /// answer.
    fn reveal(&self, request: &http::request::Parts) -> bool;
}

impl<F> RevealDetails for F
where
    F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
{
    fn reveal(&self, request: &http::request::Parts) -> bool {
        self(request)
    }
}

/// Reveals details to requests carrying `Authorization: Bearer <token>`.
///
/// The scheme matches in any case and may be followed by more than one
/// space, as RFC 9110 allows; the token must match exactly.
///
/// The token is compared in constant time (with `subtle`), so response
/// timing does not leak how much of a guess was right. As with any such
/// comparison the token's length is not secret: use a long random token.
#[derive(Clone)]
pub struct BearerToken {
    token: Box<[u8]>,
}

impl BearerToken {
    /// A predicate accepting exactly this token.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into().into_bytes().into_boxed_slice(),
        }
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken").finish_non_exhaustive()
    }
}

impl RevealDetails for BearerToken {
    fn reveal(&self, request: &http::request::Parts) -> bool {
        let Some(value) = request.headers.get(AUTHORIZATION) else {
            return false;
        };
        // `Bearer`, in any case, then one or more spaces (RFC 9110's
        // `auth-scheme 1*SP token68`), then the token.
        let Some((scheme, rest)) = value.as_bytes().split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
            return false;
        }
        let Some(start) = rest.iter().position(|&b| b != b' ') else {
            return false;
        };
        if self.token.is_empty() {
            return false;
        }
        rest[start..].ct_eq(&self.token).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::builder();
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_token_accepts_only_the_exact_token() {
        let token = BearerToken::new("s3cret");
        assert!(token.reveal(&parts(Some("Bearer s3cret"))));
        assert!(token.reveal(&parts(Some("bearer s3cret"))));
        // One or more spaces after the scheme.
        assert!(token.reveal(&parts(Some("Bearer   s3cret"))));
        assert!(!token.reveal(&parts(Some("Bearers3cret"))));
        assert!(!token.reveal(&parts(Some("Bearer\ts3cret"))));
        assert!(!token.reveal(&parts(Some("Bearer   "))));
        assert!(!token.reveal(&parts(Some("Bearer s3cre"))));
        assert!(!token.reveal(&parts(Some("Bearer s3crets"))));
        assert!(!token.reveal(&parts(Some("Basic s3cret"))));
        assert!(!token.reveal(&parts(Some("Bearer"))));
        assert!(!token.reveal(&parts(None)));
        assert!(!BearerToken::new("").reveal(&parts(Some("Bearer "))));
    }

    #[test]
    fn debug_does_not_print_the_token() {
        assert!(!format!("{:?}", BearerToken::new("s3cret")).contains("s3cret"));
    }
}
