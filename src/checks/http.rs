//! A request to an upstream HTTP service through hyper-util's
//! [legacy client](hyper_util::client::legacy::Client) (feature
//! `http-client`).
//!
//! [`HttpCheck`] sends a request (by default `GET`) to a URL and expects:
//!
//! - a status in a range (by default `200..=299`). Redirects are not
//!   followed (a health URL that redirects is usually a URL to fix): a 3xx
//!   outside the range fails, naming where it points;
//!   `expect_status(200..=399)` accepts one (Kubernetes' HTTP probes count
//!   200 to 399 as success);
//! - optionally, a substring in the body. Only the first
//!   [`max_body_bytes`](HttpCheck::max_body_bytes) bytes (64 KiB by default)
//!   are read, so a huge or endless body cannot exhaust memory or time.
//!   Without a substring to find, the status alone decides, and a slow or
//!   streaming body is not waited for (100 ms at most).
//!
//! [`HttpCheck::new`] builds a client on a [`Connector`] (plain HTTP, and
//! HTTPS with feature `https`, see [below](#https)) that opens a new
//! connection for every run, as Kubernetes' own HTTP probes do:
//! each run looks the host name up again, so it follows a DNS change (a
//! blue/green switch, a failover) even while the old address still answers,
//! and it proves that the upstream still accepts connections, which a
//! kept-alive connection would not. The `Connector` looks a host name up at
//! most once at a time (DNS down does not pile up lookups) and, when the
//! name has several addresses, tries the next one beside an attempt that
//! has not answered in 250 ms (a dead replica does not fail the check while
//! another accepts).
//!
//! A client passed to [`HttpCheck::with_client`] pools connections as it
//! was built to, so a run may reuse the previous run's connection, and an
//! upstream may close that connection as idle just as the next run sends
//! its request. So through such a client a request with an idempotent
//! method (`GET`, `HEAD`, ...) whose connection was closed or reset before
//! a complete response head arrived is sent once more, within the same
//! timeout, on another connection: a new one, unless the pool holds another
//! idle connection to the upstream. A refused or unreachable upstream is
//! never retried, and neither is a request of [`HttpCheck::new`]'s, whose
//! connection is always new: an upstream that drops it fails the run. To
//! share the application's own client and its pool, pass it to
//! [`HttpCheck::with_client`].
//!
//! # HTTPS
//!
//! With feature `https`, [`HttpCheck::new`] reaches `https://` URLs under
//! TLS (rustls), verifying the upstream's certificate against the system's
//! root certificates; an upstream whose certificate comes from a private
//! authority is reached through a connector that also trusts it
//! ([`Connector::add_root_certificates_pem`], then
//! [`HttpCheck::with_connector`]). A failed verification fails the run and
//! says why ("invalid peer certificate: UnknownIssuer", "certificate not
//! valid for name ..."). Without the feature, `HttpCheck::new` speaks plain
//! HTTP only; a client of your own with a TLS connector (hyper-rustls's or
//! hyper-tls's, around a [`Connector`] with
//! [`enforce_http(false)`](Connector::enforce_http) if you like) goes to
//! [`HttpCheck::with_client`].
//!
//! Observations: `status_code` and `body_bytes` (bytes of body read). The
//! messages name the URL without its user info and query string, which can
//! hold credentials. User info in the URL is not sent as `Authorization`
//! either (hyper does not turn it into a header): pass credentials with
//! [`HttpCheck::header`].
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "http-client")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_health::{CheckOptions, HealthChecks, checks::http::HttpCheck};
//!
//! let health = HealthChecks::builder()
//!     .check_with(
//!         "payments-api",
//!         HttpCheck::new("http://127.0.0.1:8081/health".parse()?)
//!             .expect_status(200..=204)
//!             .expect_body_contains("\"status\":\"healthy\""),
//!         CheckOptions::new().interval(Duration::from_secs(10)),
//!     )
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "http-client"))]
//! # fn main() {}
//! ```

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    io::{self, ErrorKind},
    ops::RangeInclusive,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri,
    header::{LOCATION, USER_AGENT},
};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        self, Client,
        connect::{Connect, Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpStream;

use super::dns::{Lookups, connect_any};
use crate::{Check, CheckResult, check::error_chain};

/// The default limit on the body bytes a run reads.
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Without [`HttpCheck::expect_body_contains`], how long a run goes on
/// reading the body after a passing status: long enough for a short body
/// (a JSON health document, chunked or not) to arrive, so that a pooling
/// client can reuse the connection, short enough that a slow or streaming
/// body does not hold up the run.
const BODY_GRACE: Duration = Duration::from_millis(100);

/// Requests a URL and checks the status and, optionally, the body. See the
/// [module documentation](self).
#[derive(Clone)]
pub struct HttpCheck<C = Connector, B = Empty<Bytes>> {
    client: Client<C, B>,
    uri: Uri,
    /// The URI without user info or query, for messages.
    shown: String,
    method: Method,
    headers: HeaderMap,
    status: RangeInclusive<u16>,
    body_contains: Option<Vec<u8>>,
    max_body_bytes: usize,
    /// Made by [`HttpCheck::new`] or [`HttpCheck::with_connector`], whose
    /// client keeps no connection between requests.
    own_client: bool,
    /// The own client's connector speaks TLS ([`Connector::https`]).
    own_tls: bool,
}

impl HttpCheck {
    /// A check of `uri` with a client of its own. Every run connects anew
    /// through a [`Connector`] of the check's own, looking the host name up
    /// again; no connection is kept between runs.
    ///
    /// With feature `https`, `https://` URLs are reached under TLS,
    /// verifying the upstream's certificate against the system's root
    /// certificates ([`Connector::https`]). Without it the client speaks
    /// plain HTTP only, and a run of an `https://` URL fails saying so.
    pub fn new(uri: Uri) -> Self {
        Self::with_connector(default_connector(), uri)
    }

    /// [`new`](Self::new), through the given connector: for instance one
    /// that also trusts a private certificate authority
    /// ([`Connector::add_root_certificates_pem`]). Every run connects anew;
    /// no connection is kept between runs.
    pub fn with_connector(connector: Connector, uri: Uri) -> Self {
        Self {
            own_client: true,
            own_tls: connector.speaks_tls(),
            ..Self::with_client(unpooled(connector), uri)
        }
    }
}

/// [`HttpCheck::new`]'s connector: TLS too with feature `https`.
pub(crate) fn default_connector() -> Connector {
    #[cfg(feature = "https")]
    return Connector::new().https();
    #[cfg(not(feature = "https"))]
    Connector::new()
}

/// A client on `connector` that keeps no idle connection: each request
/// gets its own.
pub(crate) fn unpooled(connector: Connector) -> Client<Connector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// The connector of [`HttpCheck::new`]'s client: TCP to the URL's host
/// (port 80 for `http`, 443 for `https`), with its own host name lookups.
///
/// Unlike hyper-util's `HttpConnector` (with hyper's default resolver):
///
/// - It makes at most one lookup at a time for its check, on a thread of its
///   own. With the DNS server down a lookup can take 30 s or more, while
///   the runner cuts the check's run at its timeout: a run then waits for
///   the lookup the cut one left running instead of starting another, so
///   the check holds one thread, not one more every interval, and that
///   thread (not one of Tokio's blocking pool, which a runtime waits for
///   when dropped) does not hold up the process's exit. A lookup that has
///   finished is not reused: every new connection looks the name up again,
///   so DNS changes are followed.
/// - When the name has several addresses, the next one is tried beside the
///   last after 250 ms without an answer (RFC 8305's "Connection Attempt
///   Delay") or as soon as it fails, and the first to connect wins. Without
///   a connect timeout, `HttpConnector` tries the addresses of one family
///   one after another, so a first address that silently drops packets (a
///   dead replica) fails every run at its timeout while the next one
///   accepts.
///
/// Connections have `TCP_NODELAY` set, and no TCP keepalive: a check's
/// connection is never idle long enough for a keepalive probe to matter
/// ([`HttpCheck::new`] keeps none between runs; a pooling client drops idle
/// ones after its `pool_idle_timeout`). Without [`https`](Self::https) a
/// `Connector`, like `HttpConnector`, refuses `https://` URLs, so that a
/// request meant to be encrypted is never sent in plain text; a TLS
/// connector wrapped around it (which hands it `https://` URLs to open the
/// TCP connection under TLS) needs
/// [`enforce_http(false)`](Self::enforce_http).
///
/// A client passed to [`HttpCheck::with_client`] keeps its own connector;
/// to give it this one, build it on a `Connector`, for instance under a TLS
/// connector:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Empty;
/// use hyper::body::Bytes;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use tower_health::checks::http::{Connector, HttpCheck};
///
/// let connector = Connector::new();
/// // For HTTPS: wrap `Connector::new().enforce_http(false)` in hyper-rustls'
/// // or hyper-tls' connector.
/// let client: Client<_, Empty<Bytes>> =
///     Client::builder(TokioExecutor::new()).build(connector);
/// let check = HttpCheck::with_client(client, "http://localhost:8081/health".parse()?);
/// # drop(check);
/// # Ok(())
/// # }
/// ```
///
/// Clones share the lookups in flight, one per host and port, so one
/// connector may serve a client that reaches several hosts.
#[derive(Clone)]
pub struct Connector {
    lookups: Lookups,
    enforce_http: bool,
    #[cfg(feature = "https")]
    tls: Option<tls::Tls>,
}

impl Default for Connector {
    fn default() -> Self {
        Self {
            lookups: Lookups::default(),
            enforce_http: true,
            #[cfg(feature = "https")]
            tls: None,
        }
    }
}

impl Connector {
    /// A connector with no lookup in flight, for `http://` URLs only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `https://` URLs are refused (`true`, the default). Pass
    /// `false` only for a connector a TLS connector wraps: without
    /// [`https`](Self::https), a `Connector` speaks plain TCP. (A
    /// connector with `https` handles `https://` URLs itself, whatever
    /// this says: do not wrap it in another TLS connector.)
    #[must_use]
    pub fn enforce_http(mut self, enforce: bool) -> Self {
        self.enforce_http = enforce;
        self
    }

    /// Connects to `https://` URLs under TLS (feature `https`): rustls,
    /// with its ring provider, TLS 1.2 and 1.3, the server's certificate
    /// verified against the system's root certificates (as
    /// `rustls-native-certs` finds them: the platform's store, or the files
    /// named by `SSL_CERT_FILE` / `SSL_CERT_DIR`), loaded once per process,
    /// at the first `https://` connection. Every connection verifies the
    /// certificate: no TLS session is resumed. ALPN offers `http/1.1` only,
    /// so a client built on it speaks HTTP/1.1 (not `http2_only`).
    /// `http://` URLs are connected as before.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_health::checks::http::{Connector, HttpCheck};
    ///
    /// // What HttpCheck::new does with feature `https`.
    /// let check = HttpCheck::with_connector(
    ///     Connector::new().https(),
    ///     "https://payments.internal/health".parse()?,
    /// );
    /// # drop(check);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "https")))]
    #[cfg(feature = "https")]
    #[must_use]
    pub fn https(mut self) -> Self {
        if self.tls.is_none() {
            self.tls = Some(tls::Tls::default());
        }
        self
    }

    /// Also trusts the certificates in `pem` (one or more `CERTIFICATE`
    /// blocks) as roots, beside the system's, and connects to `https://`
    /// URLs under TLS as [`https`](Self::https) does (feature `https`): for
    /// an upstream whose certificate comes from a private certificate
    /// authority.
    ///
    /// # Errors
    ///
    /// `InvalidData` if `pem` holds no certificate, or one that cannot be
    /// read or used as a root.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_health::checks::http::{Connector, HttpCheck};
    ///
    /// let pem = std::fs::read("/etc/ssl/private-ca.pem")?;
    /// let connector = Connector::new().add_root_certificates_pem(&pem)?;
    /// let check = HttpCheck::with_connector(connector, "https://ledger.internal/health".parse()?);
    /// # drop(check);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "https")))]
    #[cfg(feature = "https")]
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> io::Result<Self> {
        let tls = self.tls.take().unwrap_or_default();
        self.tls = Some(tls.adding(pem)?);
        Ok(self)
    }

    /// Whether `https://` URLs are connected under TLS.
    fn speaks_tls(&self) -> bool {
        #[cfg(feature = "https")]
        return self.tls.is_some();
        #[cfg(not(feature = "https"))]
        false
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let lookups = self.lookups.clone();
        let enforce_http = self.enforce_http && !self.speaks_tls();
        #[cfg(feature = "https")]
        let tls = self.tls.clone();
        Box::pin(async move {
            let target = target(&uri, enforce_http)?;
            let addrs = lookups
                .lookup(&target)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("dns error: {e}")))?;
            let stream = connect_any(addrs)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("tcp connect error: {e}")))?;
            // As hyper-util does: a connection without it still works.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "health: TCP_NODELAY not set");
            }
            #[cfg(feature = "https")]
            if let Some(tls) = tls
                && uri.scheme_str() == Some("https")
            {
                let stream = tls.connect(&uri, stream).await?;
                return Ok(Stream(Inner::Tls(Box::new(TokioIo::new(stream)))));
            }
            Ok(Stream(Inner::Plain(TokioIo::new(stream))))
        })
    }
}

/// A connection a [`Connector`] made: TCP, under TLS for an `https://` URL
/// of a connector with [`https`](Connector::https). hyper reads and writes
/// it; nothing else is public.
pub struct Stream(Inner);

enum Inner {
    Plain(TokioIo<TcpStream>),
    #[cfg(feature = "https")]
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Stream {
    /// The TCP connection's peer.
    #[cfg(test)]
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.0 {
            Inner::Plain(stream) => stream.inner().peer_addr(),
            #[cfg(feature = "https")]
            Inner::Tls(stream) => stream.inner().get_ref().0.peer_addr(),
        }
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Inner::Plain(_) => "tcp",
            #[cfg(feature = "https")]
            Inner::Tls(_) => "tls",
        };
        f.debug_tuple("Stream").field(&kind).finish()
    }
}

/// `$body`, with `$stream` the stream in `$inner` (an `Inner`, by
/// reference), whichever it is.
macro_rules! each {
    ($inner:expr, $stream:ident => $body:expr) => {
        match $inner {
            Inner::Plain($stream) => $body,
            #[cfg(feature = "https")]
            Inner::Tls($stream) => $body,
        }
    };
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        each!(&mut self.get_mut().0, stream => Pin::new(stream).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(&mut self.get_mut().0, stream => Pin::new(stream).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(&mut self.get_mut().0, stream => Pin::new(stream).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(&mut self.get_mut().0, stream => Pin::new(stream).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        each!(&self.0, stream => stream.is_write_vectored())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(&mut self.get_mut().0, stream => Pin::new(stream).poll_write_vectored(cx, bufs))
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match &self.0 {
            Inner::Plain(stream) => stream.connected(),
            // The TCP connection's addresses; ALPN offers only `http/1.1`,
            // so there is no HTTP/2 to report.
            #[cfg(feature = "https")]
            Inner::Tls(stream) => stream.inner().get_ref().0.connected(),
        }
    }
}

/// TLS for [`Connector::https`].
#[cfg(feature = "https")]
mod tls {
    use std::{
        io::{self, ErrorKind},
        sync::{Arc, OnceLock},
    };

    use http::Uri;
    use tokio::{
        net::TcpStream,
        sync::{OnceCell, watch},
    };
    use tokio_rustls::{
        TlsConnector,
        client::TlsStream,
        rustls::{
            ClientConfig, RootCertStore,
            client::Resumption,
            pki_types::{CertificateDer, ServerName, pem::PemObject},
        },
    };

    /// The roots a connector trusts besides the system's, and the client
    /// configuration made of both on its first `https://` connection
    /// (shared by clones): a connector that only ever reaches `http://`
    /// URLs never loads the system's roots.
    #[derive(Clone)]
    pub(super) struct Tls {
        added: Arc<RootCertStore>,
        config: Arc<OnceCell<Arc<ClientConfig>>>,
    }

    impl Default for Tls {
        fn default() -> Self {
            Self {
                added: Arc::new(RootCertStore::empty()),
                config: Arc::default(),
            }
        }
    }

    impl Tls {
        /// These roots and those in `pem`, which must all be usable.
        pub(super) fn adding(self, pem: &[u8]) -> io::Result<Self> {
            let invalid = |what: String| io::Error::new(ErrorKind::InvalidData, what);
            let mut added = Arc::unwrap_or_clone(self.added);
            let before = added.len();
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate
                    .map_err(|e| invalid(format!("a PEM certificate could not be read: {e}")))?;
                added.add(certificate).map_err(|e| {
                    invalid(format!("a PEM certificate cannot be used as a root: {e}"))
                })?;
            }
            if added.len() == before {
                return Err(invalid("no CERTIFICATE block in the PEM".to_owned()));
            }
            Ok(Self {
                added: Arc::new(added),
                config: Arc::default(),
            })
        }

        /// The client configuration: the system's roots and the added ones.
        /// Sessions are not resumed: a resumed handshake does not verify
        /// the certificate again, and every run must (one that expired or
        /// was replaced fails the next run).
        pub(super) async fn config(&self) -> Arc<ClientConfig> {
            self.config
                .get_or_init(|| async {
                    let roots = self.roots().await;
                    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
                    let mut config = ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .expect("the ring provider supports TLS 1.2 and 1.3")
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                    config.alpn_protocols = vec![b"http/1.1".to_vec()];
                    config.resumption = Resumption::disabled();
                    Arc::new(config)
                })
                .await
                .clone()
        }

        /// The system's roots and the added ones.
        async fn roots(&self) -> RootCertStore {
            let mut roots = RootCertStore::clone(&*system_roots().await);
            roots.roots.extend(self.added.roots.iter().cloned());
            roots
        }

        /// The TLS handshake on `stream`, for `uri`'s host.
        pub(super) async fn connect(
            &self,
            uri: &Uri,
            stream: TcpStream,
        ) -> io::Result<TlsStream<TcpStream>> {
            let name = server_name(uri)?;
            TlsConnector::from(self.config().await)
                .connect(name, stream)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("tls handshake error: {e}")))
        }
    }

    /// The name the certificate must have: the URL's host, a DNS name or
    /// an IP address (an IPv6 one without the brackets a URL puts around
    /// it).
    pub(super) fn server_name(uri: &Uri) -> io::Result<ServerName<'static>> {
        let host = uri.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!("{host:?} cannot be checked against a certificate: {e}"),
            )
        })
    }

    /// The system's root certificates, loaded once per process, on a
    /// thread of its own (it reads and parses files: a directory of them,
    /// with `SSL_CERT_DIR`, maybe on a slow mount), so the runtime's
    /// workers, which serve the probes, do not wait for it, and a run cut
    /// at its timeout meanwhile does not start the load again.
    async fn system_roots() -> Arc<RootCertStore> {
        static SYSTEM: Background<RootCertStore> = Background::new();
        SYSTEM
            .get("tower-health-roots", load_system_roots)
            .await
            .unwrap_or_else(|| {
                tracing::warn!("health: loading the system root certificates failed");
                Arc::new(RootCertStore::empty())
            })
    }

    /// A value computed once, on a thread of its own, for whoever waits:
    /// a waiter dropped meanwhile (a run cut at its timeout) leaves the
    /// computation going, and the next waits for the same one instead of
    /// starting another.
    pub(super) struct Background<T> {
        value: OnceLock<watch::Receiver<Option<Arc<T>>>>,
    }

    impl<T: Send + Sync + 'static> Background<T> {
        pub(super) const fn new() -> Self {
            Self {
                value: OnceLock::new(),
            }
        }

        /// The value, computed by `compute` on a thread named `name` at
        /// the first call. `None` if that panicked, or the thread could
        /// not be started.
        pub(super) async fn get(
            &self,
            name: &str,
            compute: impl FnOnce() -> T + Send + 'static,
        ) -> Option<Arc<T>> {
            let mut value = self
                .value
                .get_or_init(|| {
                    let (send, value) = watch::channel(None);
                    let _ = std::thread::Builder::new()
                        .name(name.to_owned())
                        .spawn(move || {
                            let _ = send.send(Some(Arc::new(compute())));
                        });
                    value
                })
                .clone();
            let computed = value.wait_for(Option::is_some).await.ok()?;
            computed.clone()
        }
    }

    /// The system's root certificates; what could not be loaded is logged.
    fn load_system_roots() -> RootCertStore {
        {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "health: a system root certificate could not be loaded");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(
                    ignored,
                    "health: system root certificates that rustls cannot use"
                );
            }
            if added == 0 {
                tracing::warn!(
                    "health: no system root certificates found: https:// checks can only \
                     verify upstreams whose roots were added with \
                     Connector::add_root_certificates_pem (install the ca-certificates \
                     package, or set SSL_CERT_FILE)"
                );
            }
            roots
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A waiter cut while the value is computed leaves the computation
        /// going: the next waits for the same one, and no other starts.
        #[tokio::test]
        async fn a_background_value_is_computed_once_whoever_waits_or_gives_up() {
            static COMPUTED: std::sync::atomic::AtomicUsize =
                std::sync::atomic::AtomicUsize::new(0);
            let background = Background::new();
            let (release, released) = std::sync::mpsc::channel::<()>();
            let released = Arc::new(std::sync::Mutex::new(released));
            let compute = move || {
                COMPUTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = released
                    .lock()
                    .unwrap()
                    .recv_timeout(std::time::Duration::from_secs(10));
                42
            };
            // Cut before the computation ends, twice.
            for _ in 0..2 {
                let cut = tokio::time::timeout(
                    std::time::Duration::from_millis(20),
                    background.get("test-background", compute.clone()),
                )
                .await;
                assert!(cut.is_err(), "not computed yet");
            }
            release.send(()).unwrap();
            let value = background.get("test-background", compute.clone()).await;
            assert_eq!(value.as_deref(), Some(&42));
            assert_eq!(
                background.get("test-background", compute).await.as_deref(),
                Some(&42)
            );
            assert_eq!(COMPUTED.load(std::sync::atomic::Ordering::SeqCst), 1);
        }

        /// A computation that panics gives `None`, to every waiter.
        #[tokio::test]
        async fn a_background_value_whose_computation_panicked_is_none() {
            let background = Background::<u8>::new();
            assert!(
                background
                    .get("test-panics", || panic!("no value"))
                    .await
                    .is_none()
            );
            assert!(background.get("test-panics", || 1).await.is_none());
        }

        #[tokio::test]
        async fn added_roots_are_trusted_beside_the_system_s() {
            let system = system_roots().await.len();
            assert_eq!(Tls::default().roots().await.len(), system);
            let ca = rcgen::CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .self_signed(&rcgen::KeyPair::generate().unwrap())
                .unwrap();
            let tls = Tls::default().adding(ca.pem().as_bytes()).unwrap();
            assert_eq!(tls.roots().await.len(), system + 1);
        }

        #[test]
        fn the_server_name_is_the_url_s_host() {
            let name = |uri: &str| server_name(&uri.parse().unwrap()).unwrap();
            assert!(
                matches!(name("https://db.test:8443/x"), ServerName::DnsName(d) if d.as_ref() == "db.test")
            );
            assert!(matches!(
                name("https://127.0.0.1/"),
                ServerName::IpAddress(_)
            ));
            assert!(matches!(
                name("https://[::1]:8443/"),
                ServerName::IpAddress(_)
            ));
        }
    }
}

/// `host:port` of a URL (an IPv6 address keeps its brackets); an
/// `https://` one only if `enforce_http` is off.
fn target(uri: &Uri, enforce_http: bool) -> io::Result<String> {
    let default_port = match uri.scheme_str() {
        Some("http") | None => 80,
        Some("https") if enforce_http => {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "an https:// URL on a plain-TCP connector: wrap the connector in a TLS \
                 connector, with enforce_http(false)",
            ));
        }
        Some("https") => 443,
        Some(other) => {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("unsupported URL scheme {other:?}: use http or https"),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "the URL has no host"))?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(default_port)))
}

impl<C, B> HttpCheck<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Default + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// A check of `uri` sending its requests through `client`: a clone of
    /// the application's client shares its connection pool, and a client
    /// with a TLS connector reaches `https://` URLs. Requests carry an empty
    /// body (`B::default()`).
    pub fn with_client(client: Client<C, B>, uri: Uri) -> Self {
        Self {
            client,
            shown: shown(&uri),
            uri,
            method: Method::GET,
            headers: HeaderMap::new(),
            status: 200..=299,
            body_contains: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            own_client: false,
            own_tls: false,
        }
    }

    /// The request method; `GET` by default (`HEAD` skips the body).
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Adds a request header, for example an `Authorization` the upstream
    /// requires. Header values never appear in messages.
    #[must_use]
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The statuses that pass; `200..=299` by default.
    #[must_use]
    pub fn expect_status(mut self, range: RangeInclusive<u16>) -> Self {
        self.status = range;
        self
    }

    /// Requires `needle` within the first
    /// [`max_body_bytes`](Self::max_body_bytes) bytes of the body.
    #[must_use]
    pub fn expect_body_contains(mut self, needle: impl Into<String>) -> Self {
        self.body_contains = Some(needle.into().into_bytes());
        self
    }

    /// How many body bytes a run reads at most; 64 KiB by default.
    ///
    /// Without [`expect_body_contains`](Self::expect_body_contains) the
    /// status decides the result, and the run reads the body, up to this
    /// limit, for 100 ms at most (so a pooling client can reuse a short
    /// body's connection), while a slow or streaming body's connection is
    /// closed rather than waited on. `body_bytes` is then what arrived in
    /// that time, and a body cut short by the upstream does not fail the
    /// run either.
    #[must_use]
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The URL this check requests.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    fn request(&self) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        if !request.headers().contains_key(USER_AGENT) {
            request.headers_mut().insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("tower-health/", env!("CARGO_PKG_VERSION"))),
            );
        }
        request
    }

    /// Sends the request, and once more (on another connection) if the
    /// upstream closed a connection the client may have kept before
    /// answering (see [`closed_unanswered`]).
    async fn send(&self) -> Result<Response<Incoming>, legacy::Error> {
        match self.client.request(self.request()).await {
            Err(e) if !self.own_client && self.method.is_idempotent() && closed_unanswered(&e) => {
                tracing::debug!(
                    url = %self.shown,
                    error = %error_chain(&e),
                    "health: HTTP check retrying on another connection"
                );
                self.client.request(self.request()).await
            }
            result => result,
        }
    }

    async fn run(&self) -> CheckResult {
        if self.own_client && !self.own_tls && self.uri.scheme_str() == Some("https") {
            #[cfg(feature = "https")]
            let how = "give HttpCheck::with_connector a Connector::new().https()";
            #[cfg(not(feature = "https"))]
            let how = "enable tower-health's feature `https`";
            return CheckResult::unhealthy(format!(
                "{} is https, which a plain-HTTP connector cannot reach: {how}, or build the \
                 check with HttpCheck::with_client and a client with a TLS connector",
                self.shown
            ));
        }
        let response = match self.send().await {
            Ok(response) => response,
            Err(e) => {
                let error = error_chain(&e);
                let advice = if error.contains("invalid peer certificate") {
                    "check the upstream's certificate: it must name the URL's host, be in its \
                     validity period, and come from an authority among the system's root \
                     certificates or those added with Connector::add_root_certificates_pem"
                } else if error.contains("tls handshake error") {
                    "check that the upstream speaks TLS on that port (not plain HTTP) with TLS \
                     1.2 or 1.3, and does not require a client certificate"
                } else {
                    "check that the upstream is running and reachable from this host"
                };
                return CheckResult::unhealthy(format!(
                    "{} {} failed: {error}; {advice}",
                    self.method, self.shown,
                ));
            }
        };
        let code = response.status().as_u16();
        if !self.status.contains(&code) {
            // Redirects are not followed: say where one points, since the
            // fix is usually the URL (a trailing slash, http for https).
            let advice = match response.headers().get(LOCATION) {
                Some(location) if response.status().is_redirection() => format!(
                    "a redirect, which the check does not follow, to {}: point the check at \
                     the URL it redirects to, or accept it with expect_status(200..=399)",
                    shown_location(location)
                ),
                _ => "look at the upstream's own health and logs".to_owned(),
            };
            return CheckResult::unhealthy(format!(
                "{} {} answered {}, expected {}..={}; {advice}",
                self.method,
                self.shown,
                response.status(),
                self.status.start(),
                self.status.end()
            ))
            .with_observation("status_code", code, None);
        }

        // Read at most `max_body_bytes`, stopping early once the needle is
        // found. Without a needle the status has decided: read the rest of
        // the body for a short grace only, so that a pooling client can
        // reuse a short body's connection, and close a slow or endless one
        // rather than wait for it (or mind that it broke off).
        let grace = tokio::time::Instant::now() + BODY_GRACE;
        let mut body = response.into_body();
        let mut seen: Vec<u8> = Vec::new();
        let mut read = 0usize;
        let mut found = self.body_contains.as_deref().is_some_and(<[u8]>::is_empty);
        let mut complete = false;
        // The last frame had more than the limit let in.
        let mut dropped_bytes = false;
        while read < self.max_body_bytes && !found {
            let frame = if self.body_contains.is_some() {
                body.frame().await
            } else {
                match tokio::time::timeout_at(grace, body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => break,
                }
            };
            match frame {
                None => {
                    complete = true;
                    break;
                }
                Some(Err(e)) if self.body_contains.is_none() => {
                    tracing::debug!(
                        url = %self.shown,
                        error = %error_chain(&e),
                        "health: HTTP check's body broke off after a passing status"
                    );
                    break;
                }
                Some(Err(e)) => {
                    return CheckResult::unhealthy(format!(
                        "{} {} answered {code} but its body failed after {read} bytes: {}",
                        self.method,
                        self.shown,
                        error_chain(&e)
                    ))
                    .with_observation("status_code", code, None)
                    .with_observation(
                        "body_bytes",
                        read as u64,
                        Some("bytes"),
                    );
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let take = data.len().min(self.max_body_bytes - read);
                    dropped_bytes = take < data.len();
                    read += take;
                    if let Some(needle) = &self.body_contains {
                        // `seen` holds only the tail of the body read so far
                        // that a match may start in: search it with the new
                        // bytes, then keep the new tail.
                        seen.extend_from_slice(&data[..take]);
                        found = contains(&seen, needle);
                        let keep = needle.len().saturating_sub(1);
                        seen.drain(..seen.len().saturating_sub(keep));
                    }
                }
            }
        }
        // A body of exactly the limit ends where reading stopped: its
        // length said so, or (chunked) the next frame is its end. Asked
        // only for the message of a text not found, and for a short grace.
        if !complete
            && !found
            && !dropped_bytes
            && read == self.max_body_bytes
            && self.body_contains.is_some()
        {
            complete = body.is_end_stream()
                || matches!(
                    tokio::time::timeout(BODY_GRACE, body.frame()).await,
                    Ok(None)
                );
        }
        let result = match &self.body_contains {
            Some(needle) if !found => CheckResult::unhealthy(format!(
                "{} {} answered {code}, but {} did not contain {:?}; check that the URL points \
                 at the right service and endpoint",
                self.method,
                self.shown,
                if complete {
                    format!("its {read}-byte body")
                } else {
                    format!("the first {read} bytes of its body")
                },
                String::from_utf8_lossy(needle)
            )),
            _ => CheckResult::healthy(),
        };
        result
            .with_observation("status_code", code, None)
            .with_observation("body_bytes", read as u64, Some("bytes"))
    }
}

impl<C, B> fmt::Debug for HttpCheck<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCheck")
            .field("uri", &self.shown)
            .field("method", &self.method)
            .field("status", &self.status)
            .field(
                "body_contains",
                &self.body_contains.as_deref().map(String::from_utf8_lossy),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl<C, B> Check for HttpCheck<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Default + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn check(&self) -> impl Future<Output = CheckResult> + Send + '_ {
        self.run()
    }
}

/// `scheme://host:port/path`: no user info, no query.
pub(crate) fn shown(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let query = if uri.query().is_some() { "?…" } else { "" };
    format!("{scheme}://{host}{port}{}{query}", uri.path())
}

/// A `Location` header as [`shown`] shows a URL (no user info, no query):
/// an absolute one (`scheme://...`, or `//host/...`) through [`shown`], a
/// relative one (`/health/`, `health/`, `../status`) as it is, up to its
/// query or fragment.
fn shown_location(location: &HeaderValue) -> String {
    let Ok(text) = location.to_str() else {
        return "a Location that is not text".to_owned();
    };
    let absolute = if text.starts_with("//") {
        format!("http:{text}").parse::<Uri>().ok()
    } else if text.contains("://") {
        text.parse::<Uri>().ok()
    } else {
        None
    };
    if let Some(uri) = absolute.filter(|uri| uri.host().is_some()) {
        return shown(&uri);
    }
    if text.contains("://") || text.starts_with("//") {
        return "a Location that is not a valid URL".to_owned();
    }
    match text.find(['?', '#']) {
        Some(end) if text[end..].starts_with('?') => format!("{}?…", &text[..end]),
        Some(end) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// Whether the upstream closed the connection without answering: a kept-alive
/// connection it timed out just as the request was written to it (a server's
/// idle timeout equal to the check's interval makes that race common). Not a
/// connect error: a refused or unreachable upstream is not retried.
fn closed_unanswered(e: &legacy::Error) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = s.source();
    }
    false
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn shown_uri_drops_user_info_and_query() {
        let uri: Uri = "https://user:secret@example.test:8443/health?token=abc"
            .parse()
            .unwrap();
        let text = shown(&uri);
        assert_eq!(text, "https://example.test:8443/health?…");
        assert!(!text.contains("secret") && !text.contains("abc"));
    }

    #[test]
    fn a_redirects_location_is_shown_without_user_info_or_query() {
        let shown = |location: &'static str| shown_location(&HeaderValue::from_static(location));
        assert_eq!(
            shown("https://user:secret@example.test/health/?token=abc"),
            "https://example.test/health/?…"
        );
        assert_eq!(shown("/health/"), "/health/");
        assert_eq!(shown("/health?token=abc"), "/health?…");
        // Relative references, which `Uri` alone would misread.
        assert_eq!(shown("healthz"), "healthz");
        assert_eq!(shown("health/"), "health/");
        assert_eq!(shown("../status?x=1"), "../status?…");
        assert_eq!(shown("/ready#top"), "/ready");
        assert_eq!(
            shown("//user:secret@example.test/health"),
            "http://example.test/health"
        );
        assert_eq!(
            shown("https://exa mple"),
            "a Location that is not a valid URL"
        );
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok", b"ok"));
        assert!(!contains(b"o", b"ok"));
        assert!(contains(b"", b""));
    }

    #[test]
    fn target_is_host_and_port() {
        let target = |uri: &str| super::target(&uri.parse().unwrap(), false);
        assert_eq!(target("http://db.test/x").unwrap(), "db.test:80");
        assert_eq!(target("https://db.test/x").unwrap(), "db.test:443");
        assert_eq!(target("http://[::1]:8080/").unwrap(), "[::1]:8080");
        let e = target("ftp://db.test/").unwrap_err();
        assert!(e.to_string().contains("\"ftp\""), "{e}");
    }

    #[tokio::test]
    async fn a_connector_refuses_https_unless_a_tls_connector_wraps_it() {
        use tower_service::Service;

        let (addr, server) = ok_server().await;
        let https: Uri = format!("https://{addr}/").parse().unwrap();
        let e = Connector::new().call(https.clone()).await.unwrap_err();
        assert!(e.to_string().contains("enforce_http(false)"), "{e}");
        // Told a TLS connector wraps it, it opens the TCP connection.
        let stream = Connector::new()
            .enforce_http(false)
            .call(https)
            .await
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), addr);
        server.abort();
    }

    /// Without feature `https` (here: on a plain connector), a run of an
    /// `https://` URL says what to do instead of trying.
    #[tokio::test]
    async fn a_plain_connector_says_it_cannot_reach_https() {
        let check = HttpCheck::with_connector(
            Connector::new(),
            "https://127.0.0.1:1/health?token=x".parse().unwrap(),
        );
        let result = check.check().await;
        assert_eq!(result.status(), crate::Status::Unhealthy);
        let message = result.message().unwrap();
        assert!(
            message.contains("https://127.0.0.1:1/health?…")
                && message.contains("plain-HTTP connector cannot reach")
                && message.contains("with_client"),
            "{message}"
        );
    }

    /// A certificate authority of the test's own, and a server on a
    /// loopback port whose certificate it issued for `localhost` only,
    /// answering 200 `tls ok` over HTTP/1.1 under TLS.
    #[cfg(feature = "https")]
    async fn tls_server() -> (
        String,
        SocketAddr,
        std::sync::Arc<std::sync::Mutex<Vec<tokio_rustls::rustls::HandshakeKind>>>,
        tokio::task::JoinHandle<()>,
    ) {
        use std::{convert::Infallible, sync::Arc};

        use http_body_util::Full;
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use tokio_rustls::rustls::{
            ServerConfig,
            pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
        };

        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let kinds = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = kinds.clone();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let kind = stream.get_ref().1.handshake_kind();
                    seen.lock().unwrap().extend(kind);
                    let answer = hyper::service::service_fn(|_| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"tls ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer)
                        .await;
                });
            }
        });
        (ca.pem(), addr, kinds, server)
    }

    /// What [`tls_named`] resolves every name to: the TLS server.
    #[cfg(feature = "https")]
    static TLS_SERVER: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());

    #[cfg(feature = "https")]
    fn tls_named(_: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(TLS_SERVER.lock().unwrap().clone())
    }

    /// A run, bounded: a handshake that hangs fails the test.
    #[cfg(feature = "https")]
    async fn bounded(check: &HttpCheck) -> CheckResult {
        tokio::time::timeout(Duration::from_secs(20), check.check())
            .await
            .expect("a run within 20 s")
    }

    /// With feature `https` a check reaches an `https://` URL, verifying
    /// the certificate: against the roots it was given, for the URL's host.
    #[cfg(feature = "https")]
    #[tokio::test]
    async fn https_urls_are_reached_with_the_certificate_verified() {
        let (ca, addr, kinds, server) = tls_server().await;
        let trusting = Connector::new()
            .add_root_certificates_pem(ca.as_bytes())
            .unwrap();
        let port = addr.port();

        // By name and by address, twice each: every run makes a full
        // handshake (no resumed session, which would skip verifying the
        // certificate).
        for host in ["localhost", "127.0.0.1", "localhost", "127.0.0.1"] {
            let check = HttpCheck::with_connector(
                trusting.clone(),
                format!("https://{host}:{port}/health").parse().unwrap(),
            )
            .expect_body_contains("tls ok");
            let result = bounded(&check).await;
            assert_eq!(
                result.status(),
                crate::Status::Healthy,
                "{host}: {result:?}"
            );
        }
        let check = HttpCheck::with_connector(
            trusting.clone(),
            format!("https://localhost:{port}/health").parse().unwrap(),
        );
        assert_eq!(bounded(&check).await.status(), crate::Status::Healthy);
        use tokio_rustls::rustls::HandshakeKind::Full;
        assert_eq!(*kinds.lock().unwrap(), [Full, Full, Full, Full, Full]);

        // A name the certificate does not have (resolved to the server).
        *TLS_SERVER.lock().unwrap() = vec![addr];
        let elsewhere = Connector {
            lookups: Lookups::with(tls_named),
            ..trusting
        };
        let check = HttpCheck::with_connector(
            elsewhere,
            format!("https://elsewhere.test:{port}/health")
                .parse()
                .unwrap(),
        );
        let result = bounded(&check).await;
        assert_eq!(result.status(), crate::Status::Unhealthy);
        let message = result.message().unwrap();
        assert!(
            message.contains("invalid peer certificate")
                && (message.contains("not valid for name") || message.contains("NotValidForName")),
            "{message}"
        );
        assert!(message.contains("must name the URL's host"), "{message}");

        // `new` trusts the system's roots only, which did not issue it.
        let check = HttpCheck::new(format!("https://localhost:{port}/health").parse().unwrap());
        let result = bounded(&check).await;
        assert_eq!(result.status(), crate::Status::Unhealthy);
        let message = result.message().unwrap();
        assert!(message.contains("UnknownIssuer"), "{message}");
        assert!(message.contains("add_root_certificates_pem"), "{message}");

        // Plain HTTP to the TLS port is not a certificate problem.
        let plain = HttpCheck::new(format!("http://127.0.0.1:{port}/health").parse().unwrap());
        let result = bounded(&plain).await;
        assert_eq!(result.status(), crate::Status::Unhealthy);
        let message = result.message().unwrap();
        assert!(
            !message.contains("tls handshake") && !message.contains("certificate"),
            "{message}"
        );
        server.abort();
    }

    /// TLS to a port that speaks plain HTTP fails the handshake, and the
    /// advice says so rather than "reachable".
    #[cfg(feature = "https")]
    #[tokio::test]
    async fn tls_to_a_plain_port_says_to_check_that_it_speaks_tls() {
        let (addr, server) = ok_server().await;
        let check = HttpCheck::new(format!("https://{addr}/").parse().unwrap());
        let result = bounded(&check).await;
        assert_eq!(result.status(), crate::Status::Unhealthy);
        let message = result.message().unwrap();
        assert!(
            message.contains("tls handshake error") && message.contains("speaks TLS on that port"),
            "{message}"
        );
        server.abort();
    }

    /// Without feature `https`, `new`'s run of an `https://` URL says to
    /// enable it.
    #[cfg(not(feature = "https"))]
    #[tokio::test]
    async fn without_the_feature_new_says_to_enable_it() {
        let check = HttpCheck::new("https://127.0.0.1:1/health".parse().unwrap());
        let result = check.check().await;
        assert_eq!(result.status(), crate::Status::Unhealthy);
        let message = result.message().unwrap();
        assert!(message.contains("feature `https`"), "{message}");
    }

    /// `http://` URLs through a connector with TLS are connected as before.
    #[cfg(feature = "https")]
    #[tokio::test]
    async fn a_tls_connector_still_reaches_http_urls() {
        let (addr, server) = ok_server().await;
        let check = HttpCheck::new(format!("http://{addr}/").parse().unwrap());
        assert_eq!(check.check().await.status(), crate::Status::Healthy);
        server.abort();
    }

    /// Roots that cannot be read are an error, not a connector that
    /// trusts nothing new.
    #[cfg(feature = "https")]
    #[test]
    fn unreadable_roots_are_an_error() {
        for (pem, says) in [
            (&b"not a certificate"[..], "no CERTIFICATE block"),
            (
                &b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"[..],
                "cannot be used as a root",
            ),
        ] {
            let e = Connector::new().add_root_certificates_pem(pem).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData);
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    /// A server answering 200 to everything, on a loopback port.
    async fn ok_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let (addr, _, server) = counting_server(http::StatusCode::OK).await;
        (addr, server)
    }

    /// What [`listed`] resolves every name to.
    static LISTED: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());

    fn listed(_: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(LISTED.lock().unwrap().clone())
    }

    /// A server answering every request with `status`, counting the
    /// connections it accepts.
    async fn counting_server(
        status: http::StatusCode,
    ) -> (
        SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        use std::{
            convert::Infallible,
            sync::{Arc, atomic::AtomicUsize},
        };

        use http_body_util::Full;
        use tokio::net::TcpListener;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = hyper::service::service_fn(move |_| async move {
                    let mut response = Response::new(Full::new(Bytes::from_static(b"hi")));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer),
                );
            }
        });
        (addr, accepted, server)
    }

    /// What [`moving`] resolves every name to.
    static MOVING: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());

    fn moving(_: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(MOVING.lock().unwrap().clone())
    }

    #[tokio::test]
    async fn new_connects_anew_every_run_and_follows_a_dns_change() {
        use std::sync::atomic::Ordering;

        use crate::Status;

        let (old, old_accepted, old_server) = counting_server(http::StatusCode::OK).await;
        let (new, _, new_server) = counting_server(http::StatusCode::SERVICE_UNAVAILABLE).await;
        *MOVING.lock().unwrap() = vec![old];
        let connector = Connector {
            lookups: Lookups::with(moving),
            ..Connector::default()
        };
        let check =
            HttpCheck::with_connector(connector, "http://moved.test/health".parse().unwrap());
        for run in 1..=2 {
            assert_eq!(check.check().await.status(), Status::Healthy);
            assert_eq!(
                old_accepted.load(Ordering::SeqCst),
                run,
                "a connection per run"
            );
            // Time for a pool, if there were one, to take the connection
            // back (real time; nothing is asserted about durations): a
            // pooled connection would be reused by the next run.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The name now points elsewhere, while the old address still
        // answers 200 (a blue/green switch): the next run asks the new one.
        *MOVING.lock().unwrap() = vec![new];
        let result = check.check().await;
        assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
        assert!(result.message().unwrap().contains("503"), "{result:?}");
        assert_eq!(old_accepted.load(Ordering::SeqCst), 2);
        old_server.abort();
        new_server.abort();
    }

    // Linux drops a SYN when the listener's accept queue is full, which
    // `hanging_address` relies on.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_address_that_drops_packets_does_not_hide_one_that_accepts() {
        use crate::{Status, checks::dns::tests as dns};

        let (hung, _queued, _listener) = dns::hanging_address().await;
        let (good, server) = ok_server().await;
        *LISTED.lock().unwrap() = vec![hung, good];
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(Connector {
                lookups: Lookups::with(listed),
                ..Connector::default()
            });
        let check = HttpCheck::with_client(client, "http://replicas.test/health".parse().unwrap());
        // Bounded only so that a regression fails instead of hanging.
        let result = tokio::time::timeout(Duration::from_secs(20), check.check())
            .await
            .expect("waited on the first address");
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hung_lookup_is_waited_for_not_repeated() {
        use crate::{Status, checks::dns::tests as dns};

        let (addr, server) = ok_server().await;
        let port = addr.port();
        let connector = Connector {
            lookups: Lookups::with(dns::hanging),
            ..Connector::default()
        };
        let client: Client<_, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let uri = format!("http://http-hang.test:{port}/").parse().unwrap();
        let target = format!("http-hang.test:{port}");
        let target = target.as_str();
        let _releases = dns::Releases(target.to_owned());
        let check = HttpCheck::with_client(client, uri);
        // Runs cut by the runner's timeout, from the check and a clone.
        for check in [&check, &check.clone(), &check] {
            let run = tokio::time::timeout(Duration::from_millis(20), check.check()).await;
            assert!(run.is_err(), "the lookup hangs");
        }
        assert_eq!(
            dns::started_once_begun(target).await,
            1,
            "one lookup, not three"
        );
        // A run joins the hung lookup (on its first poll) and connects with
        // its result once it is released.
        let (result, ()) = tokio::join!(check.check(), async { dns::release(target) });
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        assert_eq!(dns::started(target), 1);
        server.abort();
    }
}
