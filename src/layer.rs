use std::{fmt, sync::Arc};

use http::{
    HeaderMap, HeaderName, HeaderValue, StatusCode,
    header::{
        ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, TE,
        TRAILER, TRANSFER_ENCODING, UPGRADE, X_CONTENT_TYPE_OPTIONS,
    },
};
use tower_layer::Layer;

use crate::{
    details::RevealDetails,
    runner::Owner,
    service::{HEALTH_JSON, Health, JSON, NO_STORE, NOSNIFF, TEXT},
    snapshot::{Format, Probe, ProbeStatus},
};

/// The default name of the processing-time header.
pub const PROCESS_TIME_HEADER: HeaderName = HeaderName::from_static("x-process-time-ms");

/// The names [`HealthLayer::process_time_header`] refuses.
const RESERVED_HEADERS: [HeaderName; 13] = [
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    TRAILER,
    UPGRADE,
    CONTENT_TYPE,
    CONTENT_ENCODING,
    CACHE_CONTROL,
    ALLOW,
    X_CONTENT_TYPE_OPTIONS,
];

/// Answers the health paths from the published snapshot and passes every
/// other request to the wrapped service, adding `x-process-time-ms` to every
/// response (and, once a drain has begun or while out of rotation,
/// `Connection: close` to HTTP/1 ones: see
/// [`without_connection_close`](Self::without_connection_close)).
///
/// Made by [`HealthHandle::layer`](crate::HealthHandle::layer). Cheap to
/// clone: configuration sits behind an `Arc`, and every clone reads the same
/// snapshot.
///
/// | path (default) | probe | change with |
/// |---|---|---|
/// | `/health`, `/health/{name}` | [`Probe::Health`] | [`path`](Self::path), [`disable`](Self::disable) |
/// | `/livez`, `/healthz` | [`Probe::Liveness`] | [`alias`](Self::alias) adds more |
/// | `/readyz` | [`Probe::Readiness`] | |
/// | `/startupz` | [`Probe::Startup`] | |
///
/// # Placement
///
/// Wrap the whole application, outermost, so probes are answered before any
/// routing, authentication, rate limiting or concurrency limit. In axum,
/// [`wrap_axum`](Self::wrap_axum) (feature `axum`) wraps the whole router.
/// `Router::new().route(..).layer(health.layer())` also works: axum routes
/// first and wraps every route and the fallback, so unrouted health paths
/// reach the layer through the fallback (`route_layer` and layers on nested
/// routers do not see them). In tonic:
/// `Server::builder().accept_http1(true).layer(health.layer())`: tonic
/// serves HTTP/2 only unless told otherwise, and kubelet's `httpGet` probes
/// and most load balancers' health checks speak HTTP/1.1.
///
/// # Example
///
/// ```
/// use http::StatusCode;
/// use tower_health::{HealthChecks, Probe, ProbeStatus};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_health::Error> {
/// let health = HealthChecks::builder().build()?;
/// let layer = health
///     .layer()
///     .alias("/ready", Probe::Readiness)
///     .path(Probe::Health, "/status")
///     .disable(Probe::Startup)
///     .status_code(ProbeStatus::Degraded, StatusCode::TOO_MANY_REQUESTS);
/// # drop(layer);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HealthLayer {
    // One `Arc`: servers such as axum's clone the service for every
    // request, and each `Arc` costs two atomic operations per clone.
    pub(crate) inner: Arc<LayerInner>,
}

#[derive(Clone)]
pub(crate) struct LayerInner {
    pub(crate) owner: Arc<Owner>,
    pub(crate) config: Config,
}

#[derive(Clone)]
pub(crate) struct Config {
    paths: [Option<String>; 4],
    aliases: Vec<(String, Probe)>,
    /// Bit `n` is set when an exact path (probe path or alias) is `n` bytes
    /// long; bit 63 stands for 63 bytes and more. Most requests are for
    /// other paths, and this lets them skip the string comparisons.
    exact_lengths: u64,
    /// Where components' paths start: the combined probe's path with
    /// exactly one trailing `/` (`/health/`, and `/status/` for `/status`,
    /// `/status/` or `/status//`); `None` when it is not served, or is the
    /// root (`/`, `//`, ...), whose components would take every one-segment
    /// path of the application.
    component_prefix: Option<String>,
    /// The headers of an answer, per [`Format`]: content type,
    /// `Cache-Control: no-store` and, last, the processing-time header
    /// (value filled in per answer).
    answer_headers: [HeaderMap; 3],
    /// The headers of an error answer: JSON's, and `nosniff` (last), since
    /// its message may repeat part of the request.
    error_headers: HeaderMap,
    process_time_index: Option<usize>,
    pub(crate) process_time_header: Option<HeaderName>,
    /// The status code per probe ([`Probe::index`]) and status.
    codes: [[StatusCode; 6]; 4],
    pub(crate) reveal: Option<Arc<dyn RevealDetails>>,
    /// Whether HTTP/1 responses carry `Connection: close` once a drain has
    /// begun or while out of rotation.
    pub(crate) close_while_draining: bool,
}

/// What a request path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Probe(Probe),
    /// `{component prefix}{name}`; the name starts at this byte offset.
    Component(usize),
}

impl Config {
    fn new() -> Self {
        let mut config = Self {
            paths: [
                Some("/health".to_owned()),
                Some("/livez".to_owned()),
                Some("/readyz".to_owned()),
                Some("/startupz".to_owned()),
            ],
            aliases: vec![("/healthz".to_owned(), Probe::Liveness)],
            exact_lengths: 0,
            component_prefix: None,
            answer_headers: Default::default(),
            error_headers: HeaderMap::new(),
            process_time_index: None,
            process_time_header: Some(PROCESS_TIME_HEADER),
            codes: [[
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
            ]; 4],
            reveal: None,
            close_while_draining: true,
        };
        config.reindex();
        config
    }

    #[inline]
    fn length_bit(path: &str) -> u64 {
        1 << path.len().min(63)
    }

    /// The prepared headers of an answer in `format`.
    pub(crate) fn answer_headers(&self, format: Format) -> &HeaderMap {
        &self.answer_headers[format as usize]
    }

    /// The prepared headers of an error answer (400, 404, 405).
    pub(crate) fn error_headers(&self) -> &HeaderMap {
        &self.error_headers
    }

    /// Where the processing-time header is in
    /// [`answer_headers`](Self::answer_headers), if the layer adds one.
    pub(crate) fn process_time_index(&self) -> Option<usize> {
        self.process_time_index
    }

    /// Recomputes the derived fields after a change.
    fn reindex(&mut self) {
        for (format, content_type) in [
            (Format::Json, JSON),
            (Format::HealthJson, HEALTH_JSON),
            (Format::Text, TEXT),
        ] {
            let mut headers = HeaderMap::with_capacity(3);
            headers.insert(CONTENT_TYPE, content_type);
            headers.insert(CACHE_CONTROL, NO_STORE);
            if let Some(name) = &self.process_time_header {
                headers.insert(name.clone(), HeaderValue::from_static("0.000"));
            }
            // Text answers repeat parts of the query (`?exclude=` names that
            // match nothing): a browser must not sniff them as HTML. (Last,
            // so the processing-time header has the same index in every
            // format.)
            if format == Format::Text {
                headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
            }
            self.answer_headers[format as usize] = headers;
        }
        self.error_headers = self.answer_headers[Format::Json as usize].clone();
        self.error_headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
        // The same in every format. (A header name that is also one of the
        // two above takes that entry's place, as `insert` would.)
        self.process_time_index = self.process_time_header.as_ref().and_then(|name| {
            self.answer_headers[Format::Json as usize]
                .keys()
                .position(|key| key == name)
        });
        self.exact_lengths = self
            .paths
            .iter()
            .flatten()
            .chain(self.aliases.iter().map(|(path, _)| path))
            .fold(0, |bits, path| bits | Self::length_bit(path));
        self.component_prefix = self.paths[Probe::Health.index()]
            .as_deref()
            .map(|path| path.trim_end_matches('/'))
            .filter(|base| !base.is_empty())
            .map(|base| format!("{base}/"));
    }

    /// Matches a request path: exact probe paths and aliases, then
    /// `{component prefix}{name}`.
    #[inline]
    pub(crate) fn route(&self, path: &str) -> Option<Route> {
        if self.exact_lengths & Self::length_bit(path) != 0
            && let Some(route) = self.exact(path)
        {
            return Some(route);
        }
        let prefix = self.component_prefix.as_deref()?;
        // Most paths are rejected here by one byte, before comparing the
        // prefix, which ends with '/'.
        if path.as_bytes().get(prefix.len() - 1) != Some(&b'/') {
            return None;
        }
        let name = path.strip_prefix(prefix)?;
        (!name.is_empty() && !name.contains('/'))
            .then_some(Route::Component(path.len() - name.len()))
    }

    fn exact(&self, path: &str) -> Option<Route> {
        for probe in Probe::ALL {
            if self.paths[probe.index()].as_deref() == Some(path) {
                return Some(Route::Probe(probe));
            }
        }
        self.aliases
            .iter()
            .find(|(alias, _)| alias == path)
            .map(|(_, probe)| Route::Probe(*probe))
    }

    /// Takes `path` away from any alias and from the main path of any
    /// probe other than `to`, which is about to get it.
    fn release(&mut self, path: &str, to: Probe) {
        for probe in Probe::ALL {
            let slot = &mut self.paths[probe.index()];
            if probe != to && slot.as_deref() == Some(path) {
                *slot = None;
            }
        }
        self.aliases.retain(|(alias, _)| alias != path);
    }

    /// The paths answered, probe by probe (its path, then its aliases),
    /// comma-separated; empty when none is.
    pub(crate) fn served_paths(&self) -> String {
        let mut paths = Vec::new();
        for probe in Probe::ALL {
            if let Some(path) = &self.paths[probe.index()] {
                paths.push(path.clone());
                if let Some(prefix) = self
                    .component_prefix
                    .as_ref()
                    .filter(|_| probe == Probe::Health)
                {
                    paths.push(format!("{prefix}{{name}}"));
                }
            }
            let aliases = self.aliases.iter().filter(|(_, to)| *to == probe);
            paths.extend(aliases.map(|(alias, _)| alias.clone()));
        }
        paths.join(", ")
    }

    /// The status code of `probe`'s answer with `status` (a component's
    /// answer is coded as [`Probe::Health`]'s).
    #[inline]
    pub(crate) fn code(&self, probe: Probe, status: ProbeStatus) -> StatusCode {
        self.codes[probe.index()][status.index()]
    }

    /// Sets `status`'s code on every probe, where kubelet would read it as
    /// the answer says. Liveness and startup answer a passing status with
    /// 200 when `code` is one kubelet counts as a failure: the pod would be
    /// restarted, or never finish starting, on an answer that says it
    /// passes. Liveness, readiness and startup answer a failing status with
    /// 503 when `code` is one kubelet counts as a success: a failing pod
    /// would never be restarted, taken out of rotation or drained.
    fn set_code(&mut self, status: ProbeStatus, code: StatusCode) {
        for probe in Probe::ALL {
            let kept = match probe {
                Probe::Liveness | Probe::Startup
                    if status.is_passing() && !passes_kubelet(code) =>
                {
                    StatusCode::OK
                }
                Probe::Liveness | Probe::Readiness | Probe::Startup
                    if !status.is_passing() && passes_kubelet(code) =>
                {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => code,
            };
            self.codes[probe.index()][status.index()] = kept;
        }
    }
}

/// Whether kubelet's HTTP probe counts `code` as a success (200 to 399).
fn passes_kubelet(code: StatusCode) -> bool {
    (200..400).contains(&code.as_u16())
}

/// `path` with a leading `/`, or, for a path no request's path can equal,
/// why not.
fn normalize(path: &str) -> Result<String, &'static str> {
    if path.is_empty() {
        return Err("it is empty");
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    // What `http` parses a request's path from: a path it cuts short (at
    // `?` or `#`) or refuses (spaces, control characters) is never one.
    match path.parse::<http::uri::PathAndQuery>() {
        Ok(parsed) if parsed.query().is_none() && parsed.as_str() == path => Ok(path),
        _ => Err("a request's path never holds '?', '#', spaces or control characters"),
    }
}

/// [`normalize`]d, or `None` after a warning that `path` is ignored.
fn accepted(path: String) -> Option<String> {
    match normalize(path.as_str()) {
        Ok(path) => Some(path),
        Err(why) => {
            tracing::warn!(
                path = path.escape_debug().to_string(),
                "tower-health: a health path no request can have ({why}); ignored"
            );
            None
        }
    }
}

impl HealthLayer {
    pub(crate) fn new(owner: Arc<Owner>) -> Self {
        crate::clock::calibrate();
        Self {
            inner: Arc::new(LayerInner {
                owner,
                config: Config::new(),
            }),
        }
    }

    /// Applies a configuration change, then re-indexes the paths.
    fn configure(mut self, change: impl FnOnce(&mut Config)) -> Self {
        let config = &mut Arc::make_mut(&mut self.inner).config;
        change(config);
        config.reindex();
        self
    }

    /// Serves `probe` at `path` instead of its default. A path without a
    /// leading `/` gets one.
    ///
    /// A path answers one probe: if another probe or an alias had `path`,
    /// it loses it (the latest `path` or [`alias`](Self::alias) call
    /// wins). So `.path(Probe::Liveness, "/health")` really moves liveness
    /// there, and the combined probe (with `/health/{name}`) is no longer
    /// served.
    ///
    /// The combined probe's path also takes every path one segment below
    /// it, for its components: with `.path(Probe::Health, "/status")`,
    /// `GET /status/db` answers the check `db`, and a request for
    /// `/status/anything-else` is answered by the layer (404, or 405 for a
    /// method other than `GET` or `HEAD`) and never reaches the inner
    /// service. Give it a path that none of the application's own routes
    /// start with. With a trailing slash (`"/status/"`) the components are
    /// still one segment below it (`/status/db`); the root (`"/"`) serves
    /// no components, as they would take every one-segment path of the
    /// application. A probe's path or alias one segment below it wins over
    /// a component of that name: with `.alias("/health/ready",
    /// Probe::Readiness)`, `GET /health/ready` answers readiness, and a
    /// check named `ready` is not reachable by its own path.
    ///
    /// A path no request's path can equal (empty, or holding `?`, `#`, a
    /// space or a control character, such as a value read with its
    /// trailing newline) is ignored, with a warning logged, and the probe
    /// keeps the path it had.
    #[must_use]
    pub fn path(self, probe: Probe, path: impl Into<String>) -> Self {
        let Some(path) = accepted(path.into()) else {
            return self;
        };
        self.configure(|config| {
            config.release(&path, probe);
            config.paths[probe.index()] = Some(path);
        })
    }

    /// Stops answering `probe`'s main path (aliases stay); requests to it
    /// pass through to the inner service.
    #[must_use]
    pub fn disable(self, probe: Probe) -> Self {
        self.configure(|config| config.paths[probe.index()] = None)
    }

    /// Also answers `probe` at `path`, e.g. `/ready` or `/started` (the
    /// default configuration has `/healthz` for liveness). As with
    /// [`path`](Self::path), another probe or alias that had `path` loses
    /// it; taking the combined probe's path this way also ends
    /// `/health/{name}`. An alias equal to `probe`'s own path changes
    /// nothing, and one no request's path can equal is ignored, as with
    /// [`path`](Self::path).
    #[must_use]
    pub fn alias(self, path: impl Into<String>, probe: Probe) -> Self {
        let Some(path) = accepted(path.into()) else {
            return self;
        };
        self.configure(|config| {
            config.release(&path, probe);
            if config.paths[probe.index()].as_deref() != Some(path.as_str()) {
                config.aliases.push((path, probe));
            }
        })
    }

    /// Removes every alias, including the default `/healthz`.
    #[must_use]
    pub fn clear_aliases(self) -> Self {
        self.configure(|config| config.aliases.clear())
    }

    /// Names the processing-time header (default `x-process-time-ms`).
    ///
    /// Its value is the time from the request reaching the layer to the
    /// inner service returning the response's head, in milliseconds with
    /// three decimals (`0.042`): a streamed body's time after that (a file
    /// download, a gRPC stream) is not in it, since the header is sent
    /// before the body.
    ///
    /// The header is inserted into every response, replacing one of the
    /// same name, so use a name of your own. A name that HTTP's framing or
    /// connection handling reads (`content-length`, `transfer-encoding`,
    /// `connection`, `keep-alive`, `proxy-connection`, `te`, `trailer`,
    /// `upgrade`) or that the health answers need (`content-type`,
    /// `content-encoding`, `cache-control`, `allow`,
    /// `x-content-type-options`) would break responses:
    /// it is ignored, with a warning logged, and the header stays as it was.
    #[must_use]
    pub fn process_time_header(self, name: HeaderName) -> Self {
        if RESERVED_HEADERS.contains(&name) {
            tracing::warn!(
                header = %name,
                "tower-health: the processing-time header cannot replace a header responses \
                 need; ignored"
            );
            return self;
        }
        self.configure(|config| config.process_time_header = Some(name))
    }

    /// Adds no processing-time header.
    ///
    /// The header tells every client how long the inner service took, to
    /// the microsecond, without the network's jitter. Where that time
    /// depends on a secret (a login that hashes a password only for a user
    /// that exists), a public listener is better off without it.
    #[must_use]
    pub fn without_process_time_header(self) -> Self {
        self.configure(|config| config.process_time_header = None)
    }

    /// Adds no `Connection: close` to HTTP/1 responses once a drain has
    /// begun or while out of rotation.
    ///
    /// By default, from the moment readiness starts reporting draining (a
    /// shutdown signal reached [`graceful_shutdown`], [`drain`] was
    /// called, or the instance was taken [out of rotation], for as long as
    /// it is) every HTTP/1 response through the layer, to a
    /// request received since, carries `Connection: close`, and the server
    /// closes the connection after it. (A request already in progress when
    /// the drain began is answered as it would have been; the connection's
    /// next response carries the header.)
    /// Readiness only keeps *new* connections away: kube-proxy and L4 load
    /// balancers leave established ones where they are, so clients that
    /// keep connections alive would go on sending to this instance until
    /// the server stops. Closed at the end of a response instead, each
    /// client reconnects: once the load balancer has taken this instance
    /// out (seconds after the drain starts), the new connection goes to
    /// one that is still ready; until then it may land here again, and is
    /// served. A connection that stays idle through the drain has no
    /// response to carry the header: the server closes it when it stops,
    /// and a client that sends on it just then must retry, as with any
    /// server.
    ///
    /// Left alone: HTTP/2 and later (the server's `GOAWAY` at shutdown is
    /// their way), `CONNECT` requests, `101 Switching Protocols` and
    /// responses that set `Connection` themselves. Every request is still
    /// served: only the connection's reuse ends.
    ///
    /// [`graceful_shutdown`]: crate::HealthHandle::graceful_shutdown
    /// [`drain`]: crate::HealthHandle::drain
    /// [out of rotation]: crate::HealthHandle::take_out_of_rotation
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_health::Error> {
    /// let health = tower_health::HealthChecks::builder().build()?;
    /// // Behind a sidecar proxy (Envoy, Linkerd) that drains its clients'
    /// // connections itself: the application's own connections go only to
    /// // the sidecar, and closing them would just make it reconnect.
    /// let layer = health.layer().without_connection_close();
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn without_connection_close(self) -> Self {
        self.configure(|config| config.close_while_draining = false)
    }

    /// The HTTP status code for a probe status. Defaults: healthy and
    /// degraded 200, everything else 503.
    ///
    /// A passing status (healthy, degraded) given a code that kubelet counts
    /// as a failure (outside 200–399), such as
    /// `status_code(ProbeStatus::Degraded, StatusCode::TOO_MANY_REQUESTS)`,
    /// takes it on readiness, `/health` and `/health/{name}` only: liveness
    /// and startup still answer it with 200, or Kubernetes would restart the
    /// pod (or never let it finish starting) while the answer says it
    /// passes. The other way round, a failing status given a code kubelet
    /// counts as a success, such as
    /// `status_code(ProbeStatus::Unhealthy, StatusCode::OK)` for a
    /// `/health` that always answers 200 with the verdict in its body,
    /// takes it on `/health` and `/health/{name}` only: liveness,
    /// readiness and startup still answer it with 503, or a failing pod
    /// would never be restarted, taken out of rotation or drained.
    ///
    /// A code that cannot carry the answer's body is ignored, with a warning
    /// logged, and the code stays as it was: an informational one (1xx) is
    /// not a final answer (hyper would send `101` as a protocol switch and
    /// stop serving the connection), and `204`, `205` and `304` have no
    /// body (hyper drops it, and a `HEAD` answer's `Content-Length` is
    /// forbidden with 204 and wrong with 205).
    #[must_use]
    pub fn status_code(self, status: ProbeStatus, code: StatusCode) -> Self {
        if code.is_informational()
            || matches!(
                code,
                StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            tracing::warn!(
                ?status,
                code = code.as_u16(),
                "tower-health: a status code without a body (1xx, 204, 205, 304) cannot carry a \
                 probe's answer; ignored"
            );
            return self;
        }
        if status.is_passing() && !passes_kubelet(code) {
            tracing::info!(
                ?status,
                code = code.as_u16(),
                "tower-health: a passing status's code applies to readiness and /health; \
                 liveness and startup still answer it with 200"
            );
        } else if !status.is_passing() && passes_kubelet(code) {
            tracing::info!(
                ?status,
                code = code.as_u16(),
                "tower-health: a failing status's code applies to /health and /health/{{name}} \
                 only (where that status occurs); liveness, readiness and startup still answer \
                 it with 503"
            );
        }
        self.configure(|config| config.set_code(status, code))
    }

    /// Shows the checks' own error texts and observations to the requests
    /// `predicate` accepts (see [`details`](crate::details)). Nobody sees
    /// them by default.
    #[must_use]
    pub fn reveal_details_if(self, predicate: impl RevealDetails) -> Self {
        self.configure(|config| config.reveal = Some(Arc::new(predicate)))
    }
}

impl fmt::Debug for HealthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthLayer")
            .field("paths", &self.inner.config.paths)
            .field("aliases", &self.inner.config.aliases)
            .field(
                "process_time_header",
                &self.inner.config.process_time_header,
            )
            .field("reveal_details", &self.inner.config.reveal.is_some())
            .field(
                "close_while_draining",
                &self.inner.config.close_while_draining,
            )
            .finish()
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Health::new(inner, self.clone())
    }
}
