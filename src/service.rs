use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version,
    header::{ACCEPT, ALLOW, CONNECTION, CONTENT_LENGTH},
};
use http_body_util::Full;
use tower_service::Service;

use crate::{
    clock::Stamp,
    future::{ResponseFuture, process_time},
    layer::{Config, HealthLayer, Route},
    registry::validate_name,
    render::{health_json, json, text},
    runner::Shared,
    snapshot::{Answer, Format, Probe, View},
};

/// The middleware service made by [`HealthLayer`].
///
/// # Readiness and the tower contract
///
/// `Health` is always ready: its `poll_ready` never returns `Pending`. A
/// probe must be answered even when the inner service is saturated (behind
/// a full `ConcurrencyLimit`, say), and `poll_ready` cannot know whether the
/// next request is a probe.
///
/// The contract still holds for the inner service. `poll_ready` asks the
/// inner service once without waiting: if it is ready, the next
/// passed-through request calls it directly, as any middleware would. If it
/// was not ready, the request takes the inner service out of `self`
/// (leaving a clone in its place, as tower's docs recommend) and its
/// [`ResponseFuture`] first drives that service's `poll_ready` to completion
/// and only then calls it. Backpressure therefore shows as a pending
/// response future rather than a pending `poll_ready`, which is how axum and
/// hyper-util drive services anyway. This is why the inner service must be
/// `Clone`. An error from the inner service's `poll_ready` is returned from
/// `Health::poll_ready` as it is.
pub struct Health<S> {
    inner: S,
    layer: HealthLayer,
    /// `inner.poll_ready` returned `Ready(Ok)` and `inner` was not called
    /// since.
    inner_ready: bool,
}

impl<S> Health<S> {
    pub(crate) fn new(inner: S, layer: HealthLayer) -> Self {
        Self {
            inner,
            layer,
            inner_ready: false,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    ///
    /// Its readiness is asked again before the next passed-through request
    /// calls it: what is done through this reference (a call, a
    /// replacement) may use up the readiness `poll_ready` saw.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner_ready = false;
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Health<S> {
    fn clone(&self) -> Self {
        // A clone of a ready service is not ready itself.
        Self::new(self.inner.clone(), self.layer.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for Health<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Health<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<crate::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, crate::ResponseBody<ResBody>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Ask the inner service once, so a ready one can be called directly,
        // but never wait for it: the next request may be a probe.
        if !self.inner_ready
            && let Poll::Ready(result) = self.inner.poll_ready(cx)
        {
            result?;
            self.inner_ready = true;
        }
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.call_into(request)
    }
}

impl<S> Health<S> {
    /// `Service::call`, with the response body converted to `B` by the
    /// returned future (see `AxumHealth`).
    #[inline]
    pub(crate) fn call_into<ReqBody, B>(
        &mut self,
        request: Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody, B>
    where
        S: Service<Request<ReqBody>> + Clone,
    {
        let config = &self.layer.inner.config;
        let start = config.process_time_header.is_some().then(Stamp::now);
        let shared = &self.layer.inner.owner.shared;
        let close = shared.closing.load(Ordering::Relaxed)
            && config.close_while_draining
            && request.version() < Version::HTTP_2
            && request.method() != Method::CONNECT;
        if let Some(route) = config.route(request.uri().path()) {
            // `answer` adds the processing-time header itself. (Passed
            // straight in: bound to a local first, the response was copied
            // once more, 29 instructions per probe under callgrind.)
            return ResponseFuture::answered(answer(&self.layer, route, request, start), close);
        }
        // Only a passed-through response needs the name to insert it.
        let header = config.process_time_header.clone();
        let (guard, request) = if shared.in_flight_limit.is_none() {
            (None, request)
        } else {
            InFlightGuard::enter(shared, request)
        };
        if std::mem::take(&mut self.inner_ready) {
            let future = self.inner.call(request);
            return ResponseFuture::called(future, start, header, guard, close);
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(inner, request, start, header, guard, close)
    }
}

/// Asks the client to close the connection after `response`, unless the
/// response switches protocols or says what to do with the connection
/// itself.
#[inline]
pub(crate) fn close_connection<B>(response: &mut Response<B>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS
        && !response.headers().contains_key(CONNECTION)
    {
        response.headers_mut().insert(CONNECTION, CLOSE);
    }
}

/// Counts one passed-through request as in flight until dropped.
pub(crate) struct InFlightGuard {
    shared: Arc<Shared>,
}

impl InFlightGuard {
    /// Counts `request` if the filter (if any) selects it. Only called when
    /// a limit is configured.
    fn enter<B>(shared: &Arc<Shared>, request: Request<B>) -> (Option<Self>, Request<B>) {
        let request = match &shared.in_flight_filter {
            None => request,
            Some(filter) => {
                let (parts, body) = request.into_parts();
                let counted = filter(&parts);
                let request = Request::from_parts(parts, body);
                if !counted {
                    return (None, request);
                }
                request
            }
        };
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        (
            Some(Self {
                shared: shared.clone(),
            }),
            request,
        )
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The query parameters the health paths understand.
///
/// Unknown parameters are ignored (monitors add cache busters). A known
/// parameter with a value that is not a boolean is a 400, and so are more
/// than [`MAX_EXCLUDED`] `exclude` parameters.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Query<'a> {
    pub(crate) detailed: bool,
    pub(crate) verbose: bool,
    pub(crate) exclude: Vec<Cow<'a, str>>,
}

#[inline]
pub(crate) fn parse_query(query: Option<&str>) -> Result<Query<'_>, String> {
    match query {
        None => Ok(Query::default()),
        Some(query) => parse_pairs(query),
    }
}

/// What the text form's last line calls `probe` asked at `path`: the path,
/// as Kubernetes names it (`/healthz` answers liveness as `healthz`), or
/// the probe's own name at the root.
fn text_name(path: &str, probe: Probe) -> &str {
    match path.trim_start_matches('/') {
        "" => probe.name(),
        path => path,
    }
}

/// The most `exclude` parameters a request may give: far more than any
/// probe leaves out, and few enough that judging a probe without them
/// (each check's name against each) stays cheap whoever asks.
pub(crate) const MAX_EXCLUDED: usize = 64;

fn parse_pairs(query: &str) -> Result<Query<'_>, String> {
    let mut parsed = Query::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "detailed" => parsed.detailed = parse_bool("detailed", &value)?,
            "verbose" => parsed.verbose = parse_bool("verbose", &value)?,
            "exclude" if parsed.exclude.len() == MAX_EXCLUDED => {
                return Err(format!(
                    "too many exclude parameters: at most {MAX_EXCLUDED}"
                ));
            }
            "exclude" => parsed.exclude.push(value),
            _ => {}
        }
    }
    Ok(parsed)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    if value.is_empty() || value.eq_ignore_ascii_case("true") || value == "1" {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Ok(false)
    } else {
        let shown: String = value.chars().take(32).collect();
        Err(format!(
            "invalid value {shown:?} for query parameter {key:?}: use true or false"
        ))
    }
}

/// Whether the client prefers `application/health+json` to plain JSON.
///
/// Only a range that names it exactly asks for it (`*/*` and
/// `application/*` are answered with plain JSON), and only with a weight
/// above zero and at least the weight `application/json` gets from the most
/// specific range that matches it (`application/json`, `application/*`,
/// `*/*`). So `application/json, application/health+json;q=0.1` is plain
/// JSON and `application/health+json, */*;q=0.8` is not. Weights are `q`
/// parameters (the name in any case); one that is not a number counts as 1.
fn wants_health_json(headers: &HeaderMap) -> bool {
    // A probe's handful of headers is scanned for `Accept` faster than the
    // name is hashed for a lookup.
    if headers.keys_len() <= 8 && !headers.keys().any(|name| name == ACCEPT) {
        return false;
    }
    let mut health_json: Option<f32> = None;
    // `application/json`'s weight, with the specificity of the range that
    // gave it (2 exact, 1 `application/*`, 0 `*/*`).
    let mut json: Option<(u8, f32)> = None;
    let ranges = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for range in ranges {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let weight = parts
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, q)| q.trim().parse::<f32>().ok().filter(|q| !q.is_nan()))
            .map_or(1.0, |q| q.clamp(0.0, 1.0));
        let specificity = if media.eq_ignore_ascii_case("application/health+json") {
            health_json = Some(health_json.map_or(weight, |q| q.max(weight)));
            continue;
        } else if media.eq_ignore_ascii_case("application/json") {
            2
        } else if media.eq_ignore_ascii_case("application/*") {
            1
        } else if media == "*/*" {
            0
        } else {
            continue;
        };
        json = match json {
            Some((s, q)) if s > specificity || (s == specificity && q >= weight) => Some((s, q)),
            _ => Some((specificity, weight)),
        };
    }
    health_json.is_some_and(|q| q > 0.0 && q >= json.map_or(0.0, |(_, q)| q))
}

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub(crate) const HEALTH_JSON: HeaderValue = HeaderValue::from_static("application/health+json");
pub(crate) const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
pub(crate) const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
pub(crate) const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");

const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// Builds an answer, with its processing-time header if `start` is set.
///
/// `prepared` is one of the layer's prepared header sets (content type,
/// `Cache-Control` and the processing-time header if the layer adds one):
/// cloning that small map costs less than hashing three names into a new
/// one.
fn respond(
    config: &Config,
    code: StatusCode,
    prepared: &HeaderMap,
    body: Bytes,
    head: bool,
    start: Option<Stamp>,
) -> Response<Full<Bytes>> {
    let length = body.len();
    let mut response = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    let empty = std::mem::replace(headers, prepared.clone());
    // `Response::new` made an empty map with no capacity, which owns no
    // allocation (`HeaderMap::new` never allocates): forgetting it leaks
    // nothing and skips its drop glue.
    if empty.capacity() == 0 {
        std::mem::forget(empty);
    }
    if head {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    // The processing-time header is already there: set its value in place
    // rather than hash its name again.
    if let (Some(start), Some(index)) = (start, config.process_time_index())
        && let Some(value) = headers.values_mut().nth(index)
    {
        *value = process_time(start.elapsed());
    }
    response
}

fn error(
    config: &Config,
    code: StatusCode,
    message: &str,
    head: bool,
    start: Option<Stamp>,
) -> Response<Full<Bytes>> {
    respond(
        config,
        code,
        config.error_headers(),
        json::error(message),
        head,
        start,
    )
}

/// Answers a health path from the published snapshot. Never runs a check,
/// never waits.
fn answer<B>(
    layer: &HealthLayer,
    route: Route,
    request: Request<B>,
    start: Option<Stamp>,
) -> Response<Full<Bytes>> {
    let config = &layer.inner.config;
    let (parts, _body) = request.into_parts();
    let head = parts.method == Method::HEAD;
    if parts.method != Method::GET && !head {
        let mut response = error(
            config,
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on a health path: use GET or HEAD",
            false,
            start,
        );
        response.headers_mut().insert(ALLOW, GET_HEAD);
        return response;
    }
    let query = match parse_query(parts.uri.query()) {
        Ok(query) => query,
        Err(message) => return error(config, StatusCode::BAD_REQUEST, &message, head, start),
    };
    let shared = &layer.inner.owner.shared;
    let snapshot = shared.snapshot.load();
    // A single component has no text form: `?verbose` applies to probes.
    let format = if query.verbose && matches!(route, Route::Probe(_)) {
        Format::Text
    } else if wants_health_json(&parts.headers) {
        Format::HealthJson
    } else {
        Format::Json
    };
    // The predicate is the application's code: run it only where its
    // answer changes the response.
    let reveal_matters =
        query.detailed || format != Format::Json || matches!(route, Route::Component(_));
    let reveal = reveal_matters && config.reveal.as_ref().is_some_and(|r| r.reveal(&parts));
    let now = tokio::time::Instant::now();
    let busy = matches!(route, Route::Probe(Probe::Readiness))
        && shared
            .in_flight_limit
            .is_some_and(|limit| shared.in_flight.load(Ordering::Acquire) >= limit);
    let fresh = snapshot.fresh_until.is_none_or(|until| now < until);

    if let Route::Probe(probe) = route {
        // Only plain JSON has a detailed form.
        let cached = fresh
            && !(query.detailed && format == Format::Json)
            && query.exclude.is_empty()
            && !reveal
            && (format != Format::Text || text_name(parts.uri.path(), probe) == probe.name());
        if cached {
            let Answer { status, body } = snapshot.cached.get(probe, busy, format);
            return respond(
                config,
                config.code(probe, *status),
                config.answer_headers(format),
                body.clone(),
                head,
                start,
            );
        }
    }

    let view = View {
        snap: &snapshot,
        now,
        reveal,
        busy,
        exclude: &query.exclude,
    };
    let answer = match route {
        Route::Probe(probe) => match format {
            Format::Json => json::probe(&view, probe, query.detailed),
            Format::HealthJson => health_json::probe(&view, probe),
            Format::Text => {
                let unmatched: Vec<&str> = query
                    .exclude
                    .iter()
                    .filter(|name| !view.covers(probe, name))
                    .map(|name| &**name)
                    .collect();
                text::render(&view, probe, text_name(parts.uri.path(), probe), &unmatched)
            }
        },
        Route::Component(offset) => {
            // Names are unreserved characters only, which a client may still
            // percent-encode (`/health/d%62` is `/health/db`).
            let name = percent_encoding::percent_decode_str(&parts.uri.path()[offset..])
                .decode_utf8_lossy();
            let Some(component) = snapshot.component(&name) else {
                // Echo only what could be a name: not the client's bytes.
                let message = if validate_name(&name).is_ok() {
                    format!("no check or heartbeat named {name:?}")
                } else {
                    "no check or heartbeat by that name: names are 1 to 64 ASCII letters, \
                     digits, '-', '_' or '.'"
                        .to_owned()
                };
                return error(config, StatusCode::NOT_FOUND, &message, head, start);
            };
            match format {
                Format::HealthJson => health_json::component(&view, component),
                Format::Json | Format::Text => json::component(&view, component),
            }
        }
    };
    respond(
        config,
        config.code(
            match route {
                Route::Probe(probe) => probe,
                Route::Component(_) => Probe::Health,
            },
            answer.status,
        ),
        config.answer_headers(format),
        answer.body,
        head,
        start,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(parse_query(None).unwrap(), Query::default());
        let q = parse_query(Some("detailed=true&exclude=a&exclude=b%20c&_=123")).unwrap();
        assert!(q.detailed && !q.verbose);
        assert_eq!(q.exclude, ["a", "b c"]);
        assert!(parse_query(Some("verbose")).unwrap().verbose);
        assert!(!parse_query(Some("verbose=0")).unwrap().verbose);
        let err = parse_query(Some("detailed=maybe")).unwrap_err();
        assert!(err.contains("detailed") && err.contains("maybe"), "{err}");
        // Malformed percent-encoding is decoded lossily, never an error.
        assert_eq!(
            parse_query(Some("exclude=%ZZ%ff")).unwrap().exclude.len(),
            1
        );
        // Up to 64 exclude parameters; one more is an error that says so.
        let excluding = |n: usize| {
            (0..n)
                .map(|i| format!("exclude=c{i}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        let most = excluding(MAX_EXCLUDED);
        assert_eq!(parse_query(Some(&most)).unwrap().exclude.len(), 64);
        let err = parse_query(Some(&excluding(MAX_EXCLUDED + 1))).unwrap_err();
        assert_eq!(err, "too many exclude parameters: at most 64");
    }

    #[test]
    fn accept_negotiation() {
        let mut headers = HeaderMap::new();
        assert!(!wants_health_json(&headers));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("text/html, application/health+json;q=0.9"),
        );
        assert!(wants_health_json(&headers));
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/health+json; q=0"),
        );
        assert!(!wants_health_json(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_health_json(&headers));
        for (accept, wanted) in [
            ("application/health+json", true),
            ("application/health+json;Q=0", false),
            ("application/health+json; q = 0.0", false),
            ("application/json, application/health+json;q=0.1", false),
            ("application/health+json;q=0.5, application/*", false),
            ("application/health+json;q=0.5, */*", false),
            ("application/health+json, */*;q=0.8", true),
            (
                "application/*;q=0.2, application/health+json;q=0.5, */*",
                true,
            ),
            ("application/json;q=0.9, */*, application/health+json", true),
            ("application/health+json, application/json", true),
            ("APPLICATION/HEALTH+JSON;q=1.0", true),
            ("application/health+json;q=oops", true),
            // Rust reads "nan" as a number; it is not a weight.
            ("application/health+json;q=nan", true),
            (
                "application/json;q=NaN, application/health+json;q=0.5",
                false,
            ),
            ("*/*", false),
            ("application/*", false),
        ] {
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
            assert_eq!(wants_health_json(&headers), wanted, "Accept: {accept}");
        }
        // Several `Accept` headers are one list.
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/health+json;q=0.4"),
        );
        headers.append(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_health_json(&headers));
    }

    #[test]
    fn accept_found_among_many_headers() {
        // Up to eight names are scanned, more are looked up: both must find
        // `Accept` wherever it is.
        for others in [0, 3, 7, 8, 20] {
            let mut headers = HeaderMap::new();
            for i in 0..others {
                let name = http::HeaderName::try_from(format!("x-other-{i}")).unwrap();
                headers.insert(name, HeaderValue::from_static("1"));
            }
            assert!(!wants_health_json(&headers), "{others} other headers");
            headers.insert(ACCEPT, HeaderValue::from_static("application/health+json"));
            assert!(wants_health_json(&headers), "{others} other headers");
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            assert!(!wants_health_json(&headers), "{others} other headers");
        }
    }
}

#[cfg(test)]
mod http_tests {
    use std::{
        convert::Infallible,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use bytes::Bytes;
    use http::{
        Method, Request, Response, StatusCode,
        header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE},
    };
    use http_body_util::{BodyExt, Full};
    use tokio::sync::Semaphore;
    use tower::{Service, ServiceExt};

    use crate::{
        BearerToken, CheckOptions, CheckResult, HealthChecks, HealthHandle, Probe, Probes,
        test_util::{app, app_with, get, health_json, send, settle},
    };

    const SECRET: &str = "postgres://admin:hunter2@10.0.0.5/prod";

    async fn failing_app() -> (HealthHandle, crate::Health<crate::test_util::Inner>) {
        let health = HealthChecks::builder()
            .version("9.9.9")
            .check("db", || async { CheckResult::unhealthy(SECRET) })
            .check_with(
                "cache",
                || async {
                    CheckResult::degraded("evictions high").with_observation("hit_ratio", 0.5, None)
                },
                CheckOptions::new().probes(Probes::READINESS | Probes::LIVENESS),
            )
            .build()
            .unwrap();
        let app = app(&health);
        settle().await;
        (health, app)
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_code_for_a_passing_status_spares_liveness_and_startup() {
        let health = HealthChecks::builder()
            .check_with(
                "cache",
                || async { CheckResult::degraded("evictions high") },
                CheckOptions::new().probes(Probes::STARTUP | Probes::LIVENESS | Probes::READINESS),
            )
            .build()
            .unwrap();
        let mut app = crate::test_util::app_with(
            health
                .layer()
                .status_code(crate::ProbeStatus::Degraded, StatusCode::TOO_MANY_REQUESTS)
                .status_code(
                    crate::ProbeStatus::Unhealthy,
                    StatusCode::INTERNAL_SERVER_ERROR,
                ),
        );
        settle().await;
        for path in ["/readyz", "/health", "/health/cache"] {
            let reply = get(&mut app, path).await;
            assert_eq!(reply.status, 429, "{path}: {}", reply.body);
            assert_eq!(reply.json()["status"], "degraded", "{path}");
        }
        // Kubernetes would restart the pod on a 429 from liveness although
        // the answer says the probe passes.
        for path in ["/livez", "/healthz"] {
            let reply = get(&mut app, path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
            assert_eq!(reply.json()["status"], "degraded", "{path}");
            let verbose = get(&mut app, &format!("{path}?verbose")).await;
            assert_eq!(verbose.status, 200, "{path}?verbose");
        }
        let health_json = send(&mut app, crate::test_util::health_json("/livez")).await;
        assert_eq!(health_json.status, 200);
        assert_eq!(health_json.json()["status"], "warn");
        // Startup latches healthy; mapped to a failure code, it would never
        // let the pod finish starting.
        let mut odd = crate::test_util::app_with(
            health
                .layer()
                .status_code(crate::ProbeStatus::Healthy, StatusCode::IM_A_TEAPOT),
        );
        assert_eq!(get(&mut odd, "/startupz").await.status, 200);
        // A failing status's code applies to every probe.
        let dead = HealthChecks::builder()
            .check_with(
                "loop",
                || async { CheckResult::unhealthy("stuck") },
                CheckOptions::new().probes(Probes::LIVENESS),
            )
            .build()
            .unwrap();
        let mut dead_app = crate::test_util::app_with(dead.layer().status_code(
            crate::ProbeStatus::Unhealthy,
            StatusCode::INTERNAL_SERVER_ERROR,
        ));
        settle().await;
        assert_eq!(get(&mut dead_app, "/livez").await.status, 500);
    }

    /// The other way round: a failing status mapped to a code kubelet
    /// counts as a success takes it on `/health` and `/health/{name}` only.
    #[tokio::test(start_paused = true)]
    async fn a_success_code_for_a_failing_status_spares_the_probes() {
        let health = HealthChecks::builder()
            .require_mark_started()
            .check_with(
                "loop",
                || async { CheckResult::unhealthy("stuck") },
                CheckOptions::new().probes(Probes::LIVENESS | Probes::READINESS),
            )
            .build()
            .unwrap();
        let layer = health
            .layer()
            .status_code(crate::ProbeStatus::Unhealthy, StatusCode::OK)
            .status_code(crate::ProbeStatus::Starting, StatusCode::ACCEPTED)
            .status_code(crate::ProbeStatus::Draining, StatusCode::OK);
        let mut app = crate::test_util::app_with(layer);
        settle().await;
        // Starting: `/health` takes the code, the probes do not.
        assert_eq!(get(&mut app, "/health").await.status, 202);
        for path in ["/readyz", "/startupz"] {
            let reply = get(&mut app, path).await;
            assert_eq!(reply.status, 503, "{path}: {}", reply.body);
            assert_eq!(reply.json()["status"], "starting", "{path}");
        }
        health.mark_started();
        for path in ["/health", "/health/loop"] {
            let reply = get(&mut app, path).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
            assert_eq!(reply.json()["status"], "unhealthy", "{path}");
        }
        for path in ["/livez", "/healthz", "/readyz", "/readyz?verbose"] {
            assert_eq!(get(&mut app, path).await.status, 503, "{path}");
        }
        assert_eq!(get(&mut app, "/startupz").await.status, 200);
        health.drain();
        assert_eq!(get(&mut app, "/readyz").await.json()["status"], "draining");
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
    }

    #[tokio::test(start_paused = true)]
    async fn json_answers_and_headers() {
        let (_health, mut app) = failing_app().await;
        let reply = get(&mut app, "/health").await;
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.body,
            r#"{"status":"unhealthy","reason":"failing: db"}"#
        );
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.headers["cache-control"], "no-store");
        let ms: f64 = reply.headers["x-process-time-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms >= 0.0);

        let live = get(&mut app, "/livez").await;
        assert_eq!(live.status, 200);
        assert_eq!(
            live.body,
            r#"{"status":"degraded","reason":"degraded: cache"}"#
        );

        let passed = get(&mut app, "/somewhere/else").await;
        assert_eq!(passed.body, "inner");
        assert!(passed.headers.contains_key("x-process-time-ms"));
    }

    #[tokio::test(start_paused = true)]
    async fn detailed_json_lists_components_uptime_and_version() {
        let (health, mut app) = failing_app().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let body = get(&mut app, "/health?detailed=true").await.json();
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["version"], "9.9.9");
        assert!(body["uptime_seconds"].as_u64().unwrap() >= 3);
        let db = &body["components"]["db"];
        assert_eq!(db["status"], "unhealthy");
        assert_eq!(db["reason"], "failed");
        assert_eq!(db["critical"], true);
        assert!(
            db["duration_ms"].is_number()
                && db["checked_at"].is_string()
                && db["age_ms"].is_number()
        );
        assert_eq!(db["consecutive_failures"], 1);
        let cache = &body["components"]["cache"];
        assert_eq!(cache["status"], "degraded");
        assert!(cache.get("observed").is_none(), "{cache}");
        // Observations are for requests allowed details.
        let mut private = crate::test_util::revealing(&health);
        let body = get(&mut private, "/health?detailed=true").await.json();
        let cache = &body["components"]["cache"];
        assert_eq!(cache["observed"]["hit_ratio"]["value"], 0.5, "{cache}");
    }

    #[tokio::test(start_paused = true)]
    async fn error_texts_are_withheld_unless_revealed() {
        let (health, mut public) = failing_app().await;
        for uri in [
            "/health",
            "/health?detailed=true",
            "/health?verbose",
            "/readyz?verbose",
            "/health/db",
            "/health/cache",
        ] {
            for accept in ["*/*", "application/health+json"] {
                let request = Request::get(uri)
                    .header("accept", accept)
                    .body(Full::default())
                    .unwrap();
                let reply = send(&mut public, request).await;
                assert!(
                    !reply.body.contains("hunter2"),
                    "{uri} leaked: {}",
                    reply.body
                );
                assert!(
                    !reply.body.contains("evictions"),
                    "{uri} leaked: {}",
                    reply.body
                );
                assert!(
                    !reply.body.contains("hit_ratio"),
                    "{uri} leaked an observation: {}",
                    reply.body
                );
            }
        }
        let verbose = get(&mut public, "/readyz?verbose").await.body;
        assert!(
            verbose.contains("[-]db failed: reason withheld"),
            "{verbose}"
        );

        let mut private = app_with(health.layer().reveal_details_if(BearerToken::new("t0ken")));
        let authorized = |uri: &str| {
            Request::get(uri)
                .header("authorization", "Bearer t0ken")
                .body(Full::default())
                .unwrap()
        };
        let detail = send(&mut private, authorized("/health/db")).await.json();
        assert_eq!(detail["error"], SECRET);
        let verbose = send(&mut private, authorized("/readyz?verbose")).await.body;
        assert!(
            verbose.contains(&format!("[-]db failed: {SECRET}")),
            "{verbose}"
        );
        // A degraded check's message too, in every format.
        assert!(
            verbose.contains("[+]cache degraded: evictions high\n"),
            "{verbose}"
        );
        let cache = send(&mut private, authorized("/health/cache")).await.json();
        assert_eq!(cache["error"], "evictions high", "{cache}");
        let mut request = authorized("/readyz");
        request
            .headers_mut()
            .insert("accept", "application/health+json".parse().unwrap());
        let body = send(&mut private, request).await.json();
        let entry = &body["checks"]["cache:responseTime"][0];
        assert_eq!(entry["status"], "warn", "{body}");
        assert_eq!(entry["output"], "evictions high", "{body}");
        let wrong = Request::get("/health/db")
            .header("authorization", "Bearer nope")
            .body(Full::default())
            .unwrap();
        assert!(!send(&mut private, wrong).await.body.contains("hunter2"));
        // The same app, asked without the token or with a wrong one, in
        // every format, cached or rendered per request: nothing revealed.
        for uri in [
            "/readyz?verbose",
            "/healthz?verbose",
            "/readyz?verbose&exclude=db",
            "/readyz",
            "/health/cache",
        ] {
            for token in [None, Some("Bearer nope")] {
                for accept in ["*/*", "application/health+json"] {
                    let mut request = Request::get(uri).header("accept", accept);
                    if let Some(token) = token {
                        request = request.header("authorization", token);
                    }
                    let reply = send(&mut private, request.body(Full::default()).unwrap()).await;
                    assert!(
                        !reply.body.contains("hunter2")
                            && !reply.body.contains("evictions")
                            && !reply.body.contains("hit_ratio"),
                        "{uri} {token:?} {accept} leaked: {}",
                        reply.body
                    );
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn health_json_format() {
        let (health, mut app) = failing_app().await;
        let reply = send(&mut app, health_json("/readyz")).await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers["content-type"], "application/health+json");
        let body = reply.json();
        assert_eq!(body["status"], "fail");
        assert_eq!(body["releaseId"], "9.9.9");
        assert_eq!(body["output"], "failing: db");
        let db = &body["checks"]["db:responseTime"][0];
        assert_eq!(db["status"], "fail");
        assert_eq!(db["observedUnit"], "ms");
        assert!(db["observedValue"].is_number() && db["time"].is_string());
        assert!(body["checks"].get("cache:hit_ratio").is_none(), "{body}");
        // A check's observations are for requests allowed details.
        let mut private = crate::test_util::revealing(&health);
        let body = send(&mut private, health_json("/readyz")).await.json();
        assert_eq!(body["checks"]["cache:hit_ratio"][0]["observedValue"], 0.5);
        assert_eq!(body["checks"]["cache:hit_ratio"][0]["status"], "warn");
    }

    /// `componentType`: the check's own, unless the registration names
    /// one; heartbeats are the process's own (`system`).
    #[tokio::test(start_paused = true)]
    async fn health_json_names_each_component_s_type() {
        struct Store;
        impl crate::Check for Store {
            async fn check(&self) -> CheckResult {
                CheckResult::healthy()
            }
            fn component_type(&self) -> &'static str {
                "datastore"
            }
        }
        let health = HealthChecks::builder()
            .check("plain", || async { CheckResult::healthy() })
            .check("store", Store)
            .check_with(
                "queue",
                || async { CheckResult::healthy() },
                CheckOptions::new().component_type("queue"),
            )
            .check_with(
                "renamed",
                Store,
                CheckOptions::new().component_type("cache"),
            )
            .build()
            .unwrap();
        let _worker = health.heartbeat("worker", Duration::from_secs(10)).unwrap();
        let mut app = app(&health);
        settle().await;
        let body = send(&mut app, health_json("/health")).await.json();
        for (name, kind) in [
            ("plain", "component"),
            ("store", "datastore"),
            ("queue", "queue"),
            ("renamed", "cache"),
        ] {
            let key = format!("{name}:responseTime");
            assert_eq!(body["checks"][&key][0]["componentType"], kind, "{body}");
        }
        let worker = body["checks"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(key, _)| key.starts_with("worker"))
            .unwrap_or_else(|| panic!("no worker in {body}"));
        assert_eq!(worker.1[0]["componentType"], "system", "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn startup_shows_the_checks_it_waits_for() {
        // A readiness-only check: startup still waits for its first result.
        let health = HealthChecks::builder()
            .check("db", || async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                CheckResult::healthy()
            })
            .build()
            .unwrap();
        let mut app = app(&health);
        settle().await;
        let body = send(&mut app, health_json("/startupz")).await.json();
        assert_eq!(body["output"], "waiting for: db");
        assert_eq!(
            body["checks"]["db:responseTime"][0]["status"], "fail",
            "{body}"
        );
        let detailed = get(&mut app, "/startupz?detailed=true").await.json();
        assert_eq!(
            detailed["components"]["db"]["status"], "unknown",
            "{detailed}"
        );
        // Started, startup shows only its own checks (none here).
        crate::test_util::advance(Duration::from_secs(2)).await;
        let detailed = get(&mut app, "/startupz?detailed=true").await.json();
        assert_eq!(detailed["status"], "healthy");
        assert!(
            detailed["components"]
                .as_object()
                .is_none_or(|c| c.is_empty()),
            "{detailed}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_json_keeps_the_runner_s_response_time_beside_a_check_s_own() {
        let health = HealthChecks::builder()
            .check("db", || async {
                CheckResult::healthy()
                    .with_observation("responseTime", 42, Some("us"))
                    .with_observation("rows", 1, None)
                    .with_observation("rows", 2, None)
            })
            .build()
            .unwrap();
        let mut app = crate::test_util::revealing(&health);
        settle().await;
        let body = send(&mut app, health_json("/readyz")).await.json();
        let times = body["checks"]["db:responseTime"].as_array().unwrap();
        assert_eq!(times.len(), 2, "{body}");
        assert_eq!(times[0]["observedUnit"], "ms", "the runner's, first");
        assert_eq!(times[1]["observedValue"], 42);
        assert_eq!(times[1]["observedUnit"], "us");
        let rows: Vec<_> = body["checks"]["db:rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["observedValue"].clone())
            .collect();
        assert_eq!(rows, [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_check_does_not_fail_liveness_in_health_json() {
        // Added after startup: before it, liveness judges heartbeats only.
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app(&health);
        settle().await;
        health
            .add_check(
                "slow",
                || async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    CheckResult::healthy()
                },
                CheckOptions::new().probes(Probes::LIVENESS | Probes::READINESS),
            )
            .unwrap();
        settle().await;
        let live = send(&mut app, health_json("/livez")).await;
        assert_eq!(live.status, 200);
        let body = live.json();
        assert_eq!(body["status"], "pass");
        let slow = &body["checks"]["slow:responseTime"][0];
        assert_eq!(slow["status"], "warn", "{body}");
        assert_eq!(slow["output"], "awaiting first result");
        let ready = send(&mut app, health_json("/readyz")).await.json();
        assert_eq!(ready["status"], "fail");
        assert_eq!(ready["checks"]["slow:responseTime"][0]["status"], "fail");
    }

    #[tokio::test(start_paused = true)]
    async fn verbose_and_exclude() {
        let (_health, mut app) = failing_app().await;
        let reply = get(&mut app, "/readyz?verbose").await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
        let ms: f64 = reply.headers["x-process-time-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ms >= 0.0);
        assert_eq!(
            reply.body,
            "[-]db failed: reason withheld\n[+]cache degraded\nreadyz check failed\n"
        );
        let excluded = get(&mut app, "/readyz?verbose&exclude=db&exclude=nope").await;
        assert_eq!(excluded.status, 200);
        assert_eq!(
            excluded.body,
            "[+]db excluded: ok\n[+]cache degraded\n\
             warn: some health checks cannot be excluded: no matches for \"nope\"\n\
             readyz check passed\n"
        );
        assert_eq!(get(&mut app, "/readyz?exclude=db").await.status, 200);

        // Unmatched names share one line, sorted and quoted: a decoded
        // newline in one cannot forge a line of the answer.
        let forged = get(
            &mut app,
            "/readyz?verbose&exclude=zz&exclude=x%22%0A%5B%2B%5Ddb%20ok%0Areadyz%20check%20passed&exclude=zz",
        )
        .await;
        assert_eq!(forged.status, 503);
        assert_eq!(
            forged.body,
            "[-]db failed: reason withheld\n[+]cache degraded\n\
             warn: some health checks cannot be excluded: no matches for \
             \"x\\\"\\n[+]db ok\\nreadyz check passed\",\"zz\"\n\
             readyz check failed\n"
        );

        // Exactly 16 unmatched names: all listed, nothing counted.
        let query: String = (0..16).map(|i| format!("&exclude=n{i:03}")).collect();
        let sixteen = get(&mut app, &format!("/readyz?verbose{query}")).await;
        assert!(
            sixteen.body.contains("\"n015\"\n") && !sixteen.body.contains("more"),
            "{}",
            sixteen.body
        );

        // Many names (as many as a request may give): the first 16
        // (sorted) are listed, the rest counted.
        let query: String = (0..64).map(|i| format!("&exclude=n{i:03}")).collect();
        let many = get(&mut app, &format!("/readyz?verbose{query}")).await;
        let listed: Vec<String> = (0..16).map(|i| format!("\"n{i:03}\"")).collect();
        assert!(
            many.body.contains(&format!(
                "no matches for {} and 48 more\n",
                listed.join(",")
            )),
            "{}",
            many.body
        );

        // A name longer than any check's is cut: the answer does not grow
        // with the query.
        let long = get(
            &mut app,
            &format!("/readyz?verbose&exclude={}", "a".repeat(4000)),
        )
        .await;
        assert!(long.body.len() < 300, "{}", long.body);
        assert!(
            long.body
                .contains(&format!("no matches for \"{}\"…\n", "a".repeat(64))),
            "{}",
            long.body
        );

        // `db` is not a liveness check: excluding it there matches nothing,
        // as Kubernetes says of a name that is not one of the endpoint's.
        let live = get(&mut app, "/livez?verbose&exclude=db&exclude=cache").await;
        assert_eq!(
            live.body,
            "[+]cache excluded: ok\n\
             warn: some health checks cannot be excluded: no matches for \"db\"\n\
             livez check passed\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn verbose_text_names_the_probe_by_its_path() {
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::healthy() })
            .build()
            .unwrap();
        let mut app = app_with(health.layer().alias("/ready", Probe::Readiness));
        settle().await;
        // Twice each: the first answer of a path must not be the one the
        // next path gets from the cache.
        for _ in 0..2 {
            for (path, last) in [
                ("/livez?verbose", "livez check passed\n"),
                ("/healthz?verbose", "healthz check passed\n"),
                ("/readyz?verbose", "readyz check passed\n"),
                ("/ready?verbose", "ready check passed\n"),
            ] {
                let reply = get(&mut app, path).await;
                assert_eq!(reply.status, 200, "{path}");
                assert!(reply.body.ends_with(last), "{path}: {:?}", reply.body);
            }
        }
        // At the root, the path has no name: the probe's own.
        let mut root = app_with(health.layer().path(Probe::Health, "/"));
        for query in ["verbose", "verbose&exclude=nothing"] {
            let reply = get(&mut root, &format!("/?{query}")).await;
            assert!(
                reply.body.ends_with("\nhealth check passed\n"),
                "{query}: {:?}",
                reply.body
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exclude_applies_to_what_startup_waits_for() {
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::healthy() })
            .check_with(
                "migrations",
                || async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    CheckResult::healthy()
                },
                CheckOptions::new().probes(Probes::STARTUP),
            )
            .build()
            .unwrap();
        let mut app = app(&health);
        settle().await;
        let waiting = get(&mut app, "/startupz?verbose").await;
        assert_eq!(waiting.status, 503);
        assert_eq!(
            waiting.body,
            "[-]migrations failed: not started yet\nstartupz check failed\n"
        );
        let excluded = get(&mut app, "/startupz?verbose&exclude=migrations").await;
        assert_eq!(excluded.status, 200);
        assert_eq!(
            excluded.body,
            "[+]migrations excluded: ok\nstartupz check passed\n"
        );
        assert_eq!(
            get(&mut app, "/startupz?exclude=migrations").await.status,
            200
        );
        // Readiness waits for startup, so excluding what startup waits for
        // lets it judge its own checks; /health too.
        assert_eq!(get(&mut app, "/readyz").await.status, 503);
        let ready = get(&mut app, "/readyz?verbose&exclude=migrations").await;
        assert_eq!(ready.status, 200, "{}", ready.body);
        assert_eq!(ready.body, "[+]db ok\nreadyz check passed\n");
        assert_eq!(
            get(&mut app, "/health?exclude=migrations").await.status,
            200
        );
        // Liveness does not wait for startup: nothing to exclude there.
        let live = get(&mut app, "/livez?verbose&exclude=migrations").await;
        assert!(
            live.body.contains("no matches for \"migrations\""),
            "{}",
            live.body
        );
        // The application's own mark is not a check: it cannot be excluded.
        let marked = HealthChecks::builder()
            .require_mark_started()
            .build()
            .unwrap();
        let mut marked_app = crate::test_util::app(&marked);
        settle().await;
        let ready = get(&mut marked_app, "/readyz?verbose&exclude=mark_started").await;
        assert_eq!(ready.status, 503);
        assert!(
            ready.body.contains("no matches for \"mark_started\""),
            "{}",
            ready.body
        );
        let startup = get(&mut marked_app, "/startupz?verbose&exclude=mark_started").await;
        assert_eq!(startup.status, 503);
        assert_eq!(
            startup.body,
            "[-]mark_started failed: not started yet\n\
             warn: some health checks cannot be excluded: no matches for \"mark_started\"\n\
             startupz check failed\n"
        );
        // Once started, startup has nothing left to exclude.
        crate::test_util::advance(Duration::from_secs(2)).await;
        assert_eq!(
            get(&mut app, "/startupz?verbose").await.body,
            "[+]started ok\nstartupz check passed\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn methods_and_bad_queries() {
        let (_health, mut app) = failing_app().await;
        let head = send(
            &mut app,
            Request::head("/health").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(head.status, 503);
        assert_eq!(head.body, "");
        assert_eq!(
            head.headers["content-length"],
            r#"{"status":"unhealthy","reason":"failing: db"}"#
                .len()
                .to_string()
        );

        let post = send(
            &mut app,
            Request::post("/readyz").body(Full::default()).unwrap(),
        )
        .await;
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers["allow"], "GET, HEAD");
        assert_eq!(post.json()["status"], "error");

        let bad = get(&mut app, "/health?verbose=loud").await;
        assert_eq!(bad.status, 400);
        assert!(bad.json()["error"].as_str().unwrap().contains("verbose"));
        assert_eq!(get(&mut app, "/health?cachebuster=1").await.status, 503);
        let many = format!("/readyz?verbose{}", "&exclude=x".repeat(65));
        let bad = get(&mut app, &many).await;
        assert_eq!(bad.status, 400);
        assert_eq!(
            bad.json()["error"],
            "too many exclude parameters: at most 64"
        );

        let missing = get(&mut app, "/health/nope").await;
        assert_eq!(missing.status, 404);
        assert_eq!(
            missing.json()["error"],
            "no check or heartbeat named \"nope\""
        );
        // A percent-encoded name is the name; one that decodes to
        // something else (a slash, bytes that are not UTF-8) names nothing.
        let encoded = get(&mut app, "/health/d%62").await;
        assert_eq!(encoded.status, 503);
        assert_eq!(encoded.json()["name"], "db");
        let slash = get(&mut app, "/health/db%2Fx").await;
        assert_eq!(slash.status, 404);
        assert_eq!(
            slash.json()["error"],
            "no check or heartbeat by that name: names are 1 to 64 ASCII letters, \
             digits, '-', '_' or '.'"
        );
        assert_eq!(get(&mut app, "/health/d%FF").await.status, 404);
        // Deeper paths and lookalikes are not health paths.
        assert_eq!(get(&mut app, "/health/db/x").await.body, "inner");
        assert_eq!(get(&mut app, "/healthcheck").await.body, "inner");
        assert_eq!(get(&mut app, "/readyz/").await.body, "inner");
    }

    #[tokio::test(start_paused = true)]
    async fn paths_aliases_and_header_are_configurable() {
        let health = HealthChecks::builder().build().unwrap();
        let layer = health
            .layer()
            .path(Probe::Health, "status")
            .alias("/ready", Probe::Readiness)
            .alias("/started", Probe::Startup)
            .disable(Probe::Liveness)
            .clear_aliases()
            .alias("/live", Probe::Liveness)
            .process_time_header(http::HeaderName::from_static("x-took"));
        let mut app = app_with(layer);
        settle().await;
        assert_eq!(get(&mut app, "/status").await.status, 200);
        assert_eq!(get(&mut app, "/health").await.body, "inner");
        assert_eq!(get(&mut app, "/livez").await.body, "inner");
        assert_eq!(get(&mut app, "/healthz").await.body, "inner");
        assert_eq!(get(&mut app, "/live").await.status, 200);
        assert_eq!(get(&mut app, "/ready").await.body, "inner", "cleared");
        let reply = get(&mut app, "/readyz").await;
        assert!(reply.headers.contains_key("x-took"));
        assert!(!reply.headers.contains_key("x-process-time-ms"));

        // A name responses need is refused: the header stays as it was.
        for reserved in [
            CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
            CACHE_CONTROL,
        ] {
            let mut app = app_with(health.layer().process_time_header(reserved.clone()));
            for path in ["/readyz", "/anything"] {
                let reply = get(&mut app, path).await;
                assert!(
                    reply.headers.contains_key("x-process-time-ms"),
                    "{reserved}"
                );
                let value = reply.headers.get(&reserved).map(|v| v.to_str().unwrap());
                assert!(
                    value.is_none_or(|v| !v.contains('.')),
                    "{reserved}: {value:?}"
                );
            }
        }

        let mut quiet = app_with(health.layer().without_process_time_header());
        let reply = get(&mut quiet, "/anything").await;
        assert!(!reply.headers.contains_key("x-process-time-ms"));
        let reply = get(&mut quiet, "/readyz").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers.len(), 2, "{:?}", reply.headers);

        // Paths of every length, including past the 63-byte length index.
        let long = format!("/{}", "l".repeat(80));
        let longer = format!("{long}x");
        let mut app = app_with(
            health
                .layer()
                .alias(long.as_str(), Probe::Readiness)
                .path(Probe::Startup, "/s"),
        );
        assert_eq!(get(&mut app, &long).await.status, 200);
        assert_eq!(get(&mut app, &longer).await.body, "inner");
        assert_eq!(get(&mut app, &long[..64]).await.body, "inner");
        assert_eq!(get(&mut app, "/s").await.status, 200);
        assert_eq!(get(&mut app, "/startupz").await.body, "inner");

        // A path no request can have is refused, with a warning: the probe
        // keeps its path.
        let mut layer = health.layer();
        for never in ["", "/ready?full=1", "/ready#top", "/ready\n", "/my ready"] {
            let (refused, logged) = crate::test_util::warnings(|| {
                layer
                    .path(Probe::Readiness, never)
                    .alias(never, Probe::Startup)
            });
            layer = refused;
            assert_eq!(
                logged.matches("a health path no request can have").count(),
                2,
                "{never:?}: {logged}"
            );
        }
        let mut app = app_with(layer);
        assert_eq!(get(&mut app, "/readyz").await.json()["status"], "healthy");
        assert_eq!(get(&mut app, "/startupz").await.json()["status"], "healthy");
        assert_eq!(get(&mut app, "/").await.body, "inner", "not taken by \"\"");
        assert_eq!(get(&mut app, "/ready").await.body, "inner");
    }

    #[tokio::test(start_paused = true)]
    async fn components_are_one_segment_below_the_combined_path() {
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::healthy() })
            .build()
            .unwrap();
        // A trailing slash on the combined path does not move its
        // components to `/status//db`.
        let mut app = app_with(health.layer().path(Probe::Health, "/status/"));
        settle().await;
        assert_eq!(get(&mut app, "/status/").await.status, 200);
        assert_eq!(get(&mut app, "/status").await.body, "inner");
        assert_eq!(get(&mut app, "/status/db").await.json()["name"], "db");
        assert_eq!(get(&mut app, "/status/nosuch").await.status, 404);
        assert_eq!(get(&mut app, "/status//db").await.body, "inner");
        let mut app = app_with(health.layer().path(Probe::Health, "/status//"));
        assert_eq!(get(&mut app, "/status//").await.status, 200);
        assert_eq!(get(&mut app, "/status/db").await.json()["name"], "db");
        assert_eq!(get(&mut app, "/status//db").await.body, "inner");
        // The root answers the combined probe, but takes none of the
        // application's one-segment paths as components.
        for root in ["/", "//"] {
            let mut app = app_with(health.layer().path(Probe::Health, root));
            assert_eq!(get(&mut app, root).await.json()["status"], "healthy");
            assert_eq!(get(&mut app, "/db").await.body, "inner", "{root}");
            assert_eq!(get(&mut app, "//db").await.body, "inner", "{root}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_path_answers_the_probe_named_last() {
        // A failing readiness-only check: liveness passes, the rest fail.
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::unhealthy("down") })
            .build()
            .unwrap();
        let layer = health
            .layer()
            .path(Probe::Liveness, "/health")
            .alias("/ready", Probe::Readiness)
            .alias("/ready", Probe::Liveness)
            .alias("/readyz", Probe::Startup);
        let mut app = app_with(layer);
        settle().await;
        let reply = get(&mut app, "/health").await;
        assert_eq!(reply.status, 200, "liveness, not the combined probe");
        assert_eq!(reply.json()["status"], "healthy");
        assert_eq!(get(&mut app, "/health/db").await.body, "inner");
        assert_eq!(get(&mut app, "/livez").await.body, "inner");
        assert_eq!(get(&mut app, "/healthz").await.status, 200);
        assert_eq!(get(&mut app, "/ready").await.status, 200);
        // Startup does not judge a readiness-only check; readiness would.
        assert_eq!(get(&mut app, "/readyz").await.status, 200);
        assert_eq!(get(&mut app, "/startupz").await.status, 200);

        // And back: the path is the combined probe's again.
        let mut app = app_with(
            health
                .layer()
                .path(Probe::Liveness, "/health")
                .path(Probe::Health, "/health"),
        );
        assert_eq!(get(&mut app, "/health").await.status, 503);
        assert_eq!(get(&mut app, "/livez").await.body, "inner");
        assert_eq!(get(&mut app, "/health/db").await.status, 503);

        // An alias equal to the probe's own path keeps that path (and
        // `/health/{name}` with it); `disable` still turns it off.
        let layer = health.layer().alias("/health", Probe::Health);
        let mut app = app_with(layer.clone());
        assert_eq!(get(&mut app, "/health").await.status, 503);
        assert_eq!(get(&mut app, "/health/db").await.status, 503);
        let mut app = app_with(layer.disable(Probe::Health));
        assert_eq!(get(&mut app, "/health").await.body, "inner");
    }

    #[tokio::test(start_paused = true)]
    async fn every_answer_carries_its_headers_once() {
        let health = HealthChecks::builder().build().unwrap();
        let mut app = app_with(health.layer());
        settle().await;
        let cases = [
            (Method::GET, "/readyz", 200, "application/json"),
            (Method::HEAD, "/readyz", 200, "application/json"),
            (
                Method::GET,
                "/readyz?verbose",
                200,
                "text/plain; charset=utf-8",
            ),
            (
                Method::GET,
                "/readyz?detailed=maybe",
                400,
                "application/json",
            ),
            (Method::POST, "/readyz", 405, "application/json"),
            (Method::GET, "/health/nope", 404, "application/json"),
        ];
        for (method, path, status, content_type) in cases {
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .body(Full::<Bytes>::default())
                .unwrap();
            let response = app.call(request).await.unwrap();
            let headers = response.headers();
            assert_eq!(response.status(), status, "{method} {path}");
            assert_eq!(headers[CONTENT_TYPE], content_type, "{method} {path}");
            assert_eq!(headers[CACHE_CONTROL], "no-store", "{method} {path}");
            // Text, and errors, which may repeat the request, are not to be
            // sniffed as anything else.
            let nosniff = headers.get_all("x-content-type-options");
            if content_type.starts_with("text/") || status >= 400 {
                assert_eq!(
                    nosniff.iter().collect::<Vec<_>>(),
                    ["nosniff"],
                    "{method} {path}"
                );
            } else {
                assert_eq!(nosniff.iter().count(), 0, "{method} {path}");
            }
            let times: Vec<_> = headers.get_all("x-process-time-ms").iter().collect();
            assert_eq!(times.len(), 1, "{method} {path}: {headers:?}");
            let time = times[0].to_str().unwrap();
            let (whole, frac) = time.split_once('.').unwrap();
            assert!(
                !whole.is_empty()
                    && frac.len() == 3
                    && time.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
                "{time}"
            );
            if method == Method::HEAD {
                let length: usize = headers[CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
                assert!(length > 0);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_limit_reports_busy_and_counts_exactly() {
        // A filter without a limit counts nothing: said at build.
        let (_, logged) = crate::test_util::warnings(|| {
            HealthChecks::builder()
                .count_in_flight_if(|_| true)
                .build()
                .unwrap()
        });
        assert!(
            logged.contains("count_in_flight_if has no effect without max_in_flight"),
            "{logged}"
        );
        let (health, logged) = crate::test_util::warnings(|| {
            HealthChecks::builder()
                .max_in_flight(1)
                .count_in_flight_if(|req| req.uri.path() == "/stream")
                .build()
                .unwrap()
        });
        assert!(!logged.contains("count_in_flight_if"), "{logged}");
        let gate = Arc::new(Semaphore::new(0));
        let held = gate.clone();
        let inner = tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let held = held.clone();
            async move {
                let _permit = held.acquire().await.unwrap();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"streamed"))))
            }
        });
        let mut app = tower_layer::Layer::layer(&health.layer(), inner.clone());
        settle().await;
        let readyz = || {
            Request::get("/readyz")
                .body(Full::<Bytes>::default())
                .unwrap()
        };
        let status = |app: &mut _| {
            let app: &mut crate::Health<_> = app;
            let fut = app.call(readyz());
            async move { fut.await.unwrap().status() }
        };
        assert_eq!(status(&mut app).await, 200);

        // A request the predicate does not select does not count.
        let other = app.call(Request::get("/other").body(Full::default()).unwrap());
        assert_eq!(status(&mut app).await, 200);
        drop(other);

        // A selected request in flight: busy, and a dropped future releases it.
        let pending = app.call(Request::get("/stream").body(Full::default()).unwrap());
        let pending = tokio::spawn(pending);
        settle().await;
        let busy = app.call(readyz()).await.unwrap();
        assert_eq!(busy.status(), 503);
        let body = busy.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"status":"busy","reason":"at the limit of 1 requests in flight"}"#
        );
        // Busy's code can be set, except to one kubelet counts as a success.
        for (code, answered) in [(StatusCode::TOO_MANY_REQUESTS, 429), (StatusCode::OK, 503)] {
            let layer = health.layer().status_code(crate::ProbeStatus::Busy, code);
            let mut other = tower_layer::Layer::layer(&layer, inner.clone());
            let reply = other.call(readyz()).await.unwrap();
            assert_eq!(reply.status(), answered, "{code}");
        }
        pending.abort();
        settle().await;
        assert_eq!(status(&mut app).await, 200, "cancelled request released");

        // Completed response: counted until its body is consumed or dropped.
        gate.add_permits(1);
        let response = app
            .call(Request::get("/stream").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(status(&mut app).await, 503, "body not yet finished");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"streamed");
        assert_eq!(status(&mut app).await, 200, "finished body released");
    }

    #[tokio::test(start_paused = true)]
    async fn probes_answer_from_cache_without_running_checks() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = runs.clone();
        let flag = Arc::new(AtomicBool::new(true));
        let health = HealthChecks::builder()
            .check_with(
                "db",
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let ok = flag.load(Ordering::SeqCst);
                    async move {
                        if ok {
                            CheckResult::healthy()
                        } else {
                            CheckResult::unhealthy("x")
                        }
                    }
                },
                CheckOptions::new().interval(Duration::from_secs(60)),
            )
            .build()
            .unwrap();
        let mut app = app(&health);
        settle().await;
        for _ in 0..200 {
            for uri in [
                "/readyz",
                "/livez",
                "/health?detailed=true",
                "/health/db",
                "/startupz?verbose",
            ] {
                let reply = get(&mut app, uri).await;
                assert!(reply.status.is_success(), "{uri}");
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // `ready()` on the layer never waits for anything.
        assert!(app.ready().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_clone_of_a_ready_service_is_not_ready() {
        let health = HealthChecks::builder().build().unwrap();
        let inner = tower::limit::ConcurrencyLimit::new(crate::test_util::inner(), 1);
        let mut first = tower_layer::Layer::layer(&health.layer(), inner);
        // `first` now holds the only permit.
        first.ready().await.unwrap();
        let mut second = first.clone();
        let request = || {
            Request::get("/work")
                .body(Full::<Bytes>::default())
                .unwrap()
        };
        // The clone must wait for a permit, not call its inner service
        // without one (tower's ConcurrencyLimit would panic).
        let mut waiting = tokio::spawn(second.call(request()));
        settle().await;
        assert!(!waiting.is_finished());
        // Probes are still answered by the clone meanwhile.
        let probe = second
            .call(Request::get("/livez").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(probe.status(), 200);
        let direct = first.call(request()).await.unwrap();
        assert_eq!(
            direct.into_body().collect().await.unwrap().to_bytes(),
            "inner"
        );
        let waited = tokio::time::timeout(Duration::from_secs(5), &mut waiting)
            .await
            .expect("the clone got the permit back")
            .unwrap()
            .unwrap();
        assert_eq!(
            waited.into_body().collect().await.unwrap().to_bytes(),
            "inner"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_is_asked_again_after_get_mut() {
        let health = HealthChecks::builder().build().unwrap();
        let inner = tower::limit::ConcurrencyLimit::new(crate::test_util::inner(), 1);
        let mut app = tower_layer::Layer::layer(&health.layer(), inner);
        let request = || {
            Request::get("/work")
                .body(Full::<Bytes>::default())
                .unwrap()
        };
        // `app` holds the only permit; a direct call through `get_mut` uses
        // it up.
        app.ready().await.unwrap();
        let direct = app.get_mut().call(request());
        app.ready().await.unwrap();
        // Called without a permit, tower's ConcurrencyLimit would panic:
        // this request waits for the direct call's permit instead.
        let mut waiting = tokio::spawn(app.call(request()));
        settle().await;
        assert!(!waiting.is_finished());
        let direct = direct.await.unwrap();
        assert_eq!(
            direct.into_body().collect().await.unwrap().to_bytes(),
            "inner"
        );
        let waited = tokio::time::timeout(Duration::from_secs(5), &mut waiting)
            .await
            .expect("the permit came back")
            .unwrap()
            .unwrap();
        assert_eq!(
            waited.into_body().collect().await.unwrap().to_bytes(),
            "inner"
        );
    }

    /// While readiness reports draining, HTTP/1 responses (passed through
    /// and health answers alike) ask the client to close the connection;
    /// HTTP/2, `CONNECT`, upgrades and a response's own `Connection` are
    /// left alone, and so is everything when the layer keeps connections.
    #[tokio::test(start_paused = true)]
    async fn draining_asks_http1_clients_to_close_their_connections() {
        use http::{HeaderValue, Version, header::CONNECTION};

        let health = HealthChecks::builder().build().unwrap();
        let inner = crate::test_util::Inner::new(tower::service_fn(
            |request: Request<Full<Bytes>>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(b"inner")));
                let own = match request.uri().path() {
                    "/upgrade" => {
                        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        None
                    }
                    "/own" => Some("keep-alive"),
                    _ => None,
                };
                if let Some(own) = own {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static(own));
                }
                Ok::<_, Infallible>(response)
            },
        ));
        let mut app = tower::Layer::layer(&health.layer(), inner.clone());
        let mut keeping = tower::Layer::layer(&health.layer().without_connection_close(), inner);
        settle().await;
        let request = |method: Method, path: &str, version: Version| {
            Request::builder()
                .method(method)
                .uri(path)
                .version(version)
                .body(Full::default())
                .unwrap()
        };
        let connection = |reply: &crate::test_util::Reply| {
            reply
                .headers
                .get(CONNECTION)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let ordinary = [
            (Method::GET, "/api", Version::HTTP_11),
            (Method::GET, "/readyz", Version::HTTP_11),
            (Method::POST, "/api", Version::HTTP_10),
            (Method::HEAD, "/health", Version::HTTP_10),
        ];

        for (method, path, version) in ordinary.clone() {
            let reply = send(&mut app, request(method, path, version)).await;
            assert_eq!(connection(&reply), None, "{path} before draining");
        }

        for out in [true, false] {
            if out {
                health.take_out_of_rotation();
            } else {
                health.return_to_rotation();
                health.drain();
            }
            for (method, path, version) in ordinary.clone() {
                let reply = send(&mut app, request(method, path, version)).await;
                assert_eq!(
                    connection(&reply).as_deref(),
                    Some("close"),
                    "{path} {version:?} (out of rotation: {out})"
                );
                let kept = send(&mut keeping, request(Method::GET, path, version)).await;
                assert_eq!(connection(&kept), None, "{path}, keeping connections");
            }
            let reply = send(&mut app, request(Method::GET, "/readyz", Version::HTTP_11)).await;
            assert_eq!(reply.status, 503);
            let left_alone = [
                (Method::GET, "/api", Version::HTTP_2, None),
                (Method::GET, "/readyz", Version::HTTP_2, None),
                (Method::CONNECT, "/api", Version::HTTP_11, None),
                (Method::GET, "/upgrade", Version::HTTP_11, None),
                (Method::GET, "/own", Version::HTTP_11, Some("keep-alive")),
            ];
            for (method, path, version, expected) in left_alone {
                let reply = send(&mut app, request(method.clone(), path, version)).await;
                assert_eq!(
                    connection(&reply).as_deref(),
                    expected,
                    "{method} {path} {version:?}"
                );
            }
        }

        // Back in rotation and not draining is covered above (before);
        // returning to rotation while draining keeps closing.
        health.return_to_rotation();
        let reply = send(&mut app, request(Method::GET, "/api", Version::HTTP_11)).await;
        assert_eq!(connection(&reply).as_deref(), Some("close"));
    }
}
