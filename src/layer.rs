use std::{fmt, sync::Arc};

use http::{HeaderName, StatusCode};
use tower_layer::Layer;

use crate::{
    details::RevealDetails,
    runner::Owner,
    service::Health,
    snapshot::{Probe, ProbeStatus},
};

/// The default name of the processing-time header.
pub const PROCESS_TIME_HEADER: HeaderName = HeaderName::from_static("x-process-time-ms");

/// Answers the health paths from the published snapshot and passes every
/// other request to the wrapped service, adding `x-process-time-ms` to every
/// response.
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
/// routers do not see them). In tonic: `Server::builder().layer(health.layer())`.
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
    pub(crate) owner: Arc<Owner>,
    pub(crate) config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    paths: [Option<String>; 4],
    aliases: Vec<(String, Probe)>,
    pub(crate) process_time_header: Option<HeaderName>,
    codes: [StatusCode; 6],
    pub(crate) reveal: Option<Arc<dyn RevealDetails>>,
}

/// What a request path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Probe(Probe),
    /// `{health path}/{name}`; the name starts at this byte offset.
    Component(usize),
}

impl Config {
    fn new() -> Self {
        Self {
            paths: [
                Some("/health".to_owned()),
                Some("/livez".to_owned()),
                Some("/readyz".to_owned()),
                Some("/startupz".to_owned()),
            ],
            aliases: vec![("/healthz".to_owned(), Probe::Liveness)],
            process_time_header: Some(PROCESS_TIME_HEADER),
            codes: [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
            ],
            reveal: None,
        }
    }

    /// Matches a request path: exact probe paths and aliases, then
    /// `{health path}/{name}`.
    pub(crate) fn route(&self, path: &str) -> Option<Route> {
        for probe in Probe::ALL {
            if self.paths[probe.index()].as_deref() == Some(path) {
                return Some(Route::Probe(probe));
            }
        }
        for (alias, probe) in &self.aliases {
            if alias == path {
                return Some(Route::Probe(*probe));
            }
        }
        let health = self.paths[Probe::Health.index()].as_deref()?;
        let name = path.strip_prefix(health)?.strip_prefix('/')?;
        (!name.is_empty() && !name.contains('/'))
            .then_some(Route::Component(path.len() - name.len()))
    }

    pub(crate) fn code(&self, status: ProbeStatus) -> StatusCode {
        self.codes[status.index()]
    }
}

fn normalize(path: impl Into<String>) -> String {
    let path = path.into();
    if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    }
}

impl HealthLayer {
    pub(crate) fn new(owner: Arc<Owner>) -> Self {
        Self {
            owner,
            config: Arc::new(Config::new()),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Serves `probe` at `path` instead of its default. A path without a
    /// leading `/` gets one.
    #[must_use]
    pub fn path(mut self, probe: Probe, path: impl Into<String>) -> Self {
        self.config().paths[probe.index()] = Some(normalize(path));
        self
    }

    /// Stops answering `probe`'s main path (aliases stay); requests to it
    /// pass through to the inner service.
    #[must_use]
    pub fn disable(mut self, probe: Probe) -> Self {
        self.config().paths[probe.index()] = None;
        self
    }

    /// Also answers `probe` at `path`, e.g. `/ready` or `/started` (the
    /// default configuration has `/healthz` for liveness).
    #[must_use]
    pub fn alias(mut self, path: impl Into<String>, probe: Probe) -> Self {
        self.config().aliases.push((normalize(path), probe));
        self
    }

    /// Removes every alias, including the default `/healthz`.
    #[must_use]
    pub fn clear_aliases(mut self) -> Self {
        self.config().aliases.clear();
        self
    }

    /// Names the processing-time header (default `x-process-time-ms`).
    #[must_use]
    pub fn process_time_header(mut self, name: HeaderName) -> Self {
        self.config().process_time_header = Some(name);
        self
    }

    /// Adds no processing-time header.
    #[must_use]
    pub fn without_process_time_header(mut self) -> Self {
        self.config().process_time_header = None;
        self
    }

    /// The HTTP status code for a probe status. Defaults: healthy and
    /// degraded 200, everything else 503.
    #[must_use]
    pub fn status_code(mut self, status: ProbeStatus, code: StatusCode) -> Self {
        self.config().codes[status.index()] = code;
        self
    }

    /// Shows the checks' own error texts to the requests `predicate`
    /// accepts (see [`details`](crate::details)). Nobody sees them by
    /// default.
    #[must_use]
    pub fn reveal_details_if(mut self, predicate: impl RevealDetails) -> Self {
        self.config().reveal = Some(Arc::new(predicate));
        self
    }
}

impl fmt::Debug for HealthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthLayer")
            .field("paths", &self.config.paths)
            .field("aliases", &self.config.aliases)
            .field("process_time_header", &self.config.process_time_header)
            .field("reveal_details", &self.config.reveal.is_some())
            .finish()
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Health::new(inner, self.clone())
    }
}
