//! Helpers shared by the unit tests.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt};

use crate::{Health, HealthHandle, HealthLayer};

pub(crate) type Inner =
    tower::util::BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// An inner service answering `inner` to everything.
pub(crate) fn inner() -> Inner {
    tower::util::BoxCloneService::new(tower::service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inner"))))
    }))
}

pub(crate) fn app(handle: &HealthHandle) -> Health<Inner> {
    tower_layer::Layer::layer(&handle.layer(), inner())
}

pub(crate) fn app_with(layer: HealthLayer) -> Health<Inner> {
    tower_layer::Layer::layer(&layer, inner())
}

/// [`app`] showing every request the details (error texts, observations).
pub(crate) fn revealing(handle: &HealthHandle) -> Health<Inner> {
    app_with(
        handle
            .layer()
            .reveal_details_if(|_: &http::request::Parts| true),
    )
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub(crate) async fn send(app: &mut Health<Inner>, request: Request<Full<Bytes>>) -> Reply {
    let response = app.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

pub(crate) async fn get(app: &mut Health<Inner>, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Full::default()).unwrap()).await
}

/// `GET path` asking for `application/health+json`.
pub(crate) fn health_json(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(http::header::ACCEPT, "application/health+json")
        .body(Full::default())
        .unwrap()
}

/// Lets the paused clock move on by `d`, running the refresher meanwhile.
pub(crate) async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Lets spawned tasks run without moving the clock much.
pub(crate) async fn settle() {
    advance(Duration::from_millis(1)).await;
}

/// Healthy checks run every 5 s, each with its own `max_age` in seconds.
#[cfg(any(feature = "tonic-health", feature = "metrics"))]
pub(crate) fn aging(checks: &[(&str, u64)]) -> HealthHandle {
    checks
        .iter()
        .fold(
            crate::HealthChecks::builder(),
            |builder, &(name, max_age)| {
                builder.check_with(
                    name,
                    || async { crate::CheckResult::healthy() },
                    crate::CheckOptions::new()
                        .interval(Duration::from_secs(5))
                        .max_age(Duration::from_secs(max_age)),
                )
            },
        )
        .build()
        .unwrap()
}

/// A check that takes `takes` to answer healthy while `up` is set, and
/// unhealthy ("down") when it is not.
#[cfg(any(feature = "tonic-health", feature = "metrics"))]
pub(crate) fn slow_switch(
    up: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    takes: Duration,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::CheckResult> + Send>>
+ Send
+ Sync
+ 'static {
    let up = up.clone();
    move || {
        let up = up.load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            if up {
                crate::CheckResult::healthy()
            } else {
                crate::CheckResult::unhealthy("down")
            }
        })
    }
}

/// Runs `f` with a `tracing` subscriber of its own (on this thread) and
/// returns what it logged at `warn` and above, one event per line.
pub(crate) fn warnings<T>(f: impl FnOnce() -> T) -> (T, String) {
    let (guard, logged) = capture(tracing::Level::WARN);
    let out = f();
    drop(guard);
    (out, logged.text())
}

/// What a [`capture`] subscriber has logged.
#[derive(Clone, Default)]
pub(crate) struct Logged(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logged {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A dispatcher registered for the whole test run that is interested in
/// every callsite "sometimes" and records nothing.
///
/// `tracing` caches each callsite's interest for the whole process. While a
/// single dispatcher is registered, a callsite first reached on a thread
/// without a subscriber (another test's) is cached as "never", and a
/// capturing test on its own thread then misses the event. With this one
/// registered too, interest is the union over all of them: "sometimes",
/// judged per event on the emitting thread.
static ANCHOR: std::sync::LazyLock<tracing::Dispatch> =
    std::sync::LazyLock::new(|| tracing::Dispatch::new(Anchor));

struct Anchor;

impl tracing::Subscriber for Anchor {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Logs what this thread logs at `level` and above (everything a
/// current-thread runtime's tasks log, too), as `tracing-subscriber`'s
/// plain format would, until the guard is dropped.
pub(crate) fn capture(level: tracing::Level) -> (tracing::subscriber::DefaultGuard, Logged) {
    let logged = Logged::default();
    let writer = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    (listen(subscriber), logged)
}

/// Makes `subscriber` this thread's (and its current-thread runtime's
/// tasks') until the guard is dropped, beside [`ANCHOR`].
pub(crate) fn listen(
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
) -> tracing::subscriber::DefaultGuard {
    std::sync::LazyLock::force(&ANCHOR);
    let guard = tracing::subscriber::set_default(subscriber);
    // Callsites cached as "never" before these two were registered.
    tracing::callsite::rebuild_interest_cache();
    guard
}

/// The value `result` observed for `name`; panics if it has none.
pub(crate) fn observed(result: &crate::CheckResult, name: &str) -> serde_json::Value {
    result
        .observations()
        .iter()
        .find(|o| o.measurement() == name)
        .unwrap_or_else(|| panic!("no observation {name} in {result:?}"))
        .value()
        .clone()
}
