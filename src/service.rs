use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode,
    header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE},
};
use http_body_util::Full;
use tower_service::Service;

use crate::{
    future::ResponseFuture,
    layer::{HealthLayer, Route},
    render::{health_json, json, text},
    runner::Shared,
    snapshot::{Answer, Format, Probe, View},
};

/// The middleware service made by [`HealthLayer`].
///
/// # Readiness and the tower contract
///
/// `Health` is always ready: its `poll_ready` returns `Ready(Ok(()))`
/// without asking the inner service. A probe must be answered even when the
/// inner service is saturated (behind a full `ConcurrencyLimit`, say), and
/// `poll_ready` cannot know whether the next request is a probe.
///
/// The contract still holds for the inner service: a passed-through request
/// takes the inner service out of `self` (leaving a clone in its place, as
/// tower's docs recommend) and its [`ResponseFuture`] first drives that
/// service's `poll_ready` to completion and only then calls it. Backpressure
/// therefore shows as a pending response future rather than a pending
/// `poll_ready`, which is how axum and hyper-util drive services anyway.
/// This is why the inner service must be `Clone`.
#[derive(Clone)]
pub struct Health<S> {
    inner: S,
    layer: HealthLayer,
}

impl<S> Health<S> {
    pub(crate) fn new(inner: S, layer: HealthLayer) -> Self {
        Self { inner, layer }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
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
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let start = std::time::Instant::now();
        let config = &self.layer.config;
        let header = config.process_time_header.clone();
        if let Some(route) = config.route(request.uri().path()) {
            let response = answer(&self.layer, route, request);
            return ResponseFuture::answered(response, start, header);
        }
        let (guard, request) = InFlightGuard::enter(&self.layer.owner.shared, request);
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::forward(inner, request, start, header, guard)
    }
}

/// Counts one passed-through request as in flight until dropped.
pub(crate) struct InFlightGuard {
    shared: Arc<Shared>,
}

impl InFlightGuard {
    fn enter<B>(shared: &Arc<Shared>, request: Request<B>) -> (Option<Self>, Request<B>) {
        if shared.in_flight_limit.is_none() {
            return (None, request);
        }
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
/// parameter with a value that is not a boolean is a 400.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Query<'a> {
    pub(crate) detailed: bool,
    pub(crate) verbose: bool,
    pub(crate) exclude: Vec<Cow<'a, str>>,
}

pub(crate) fn parse_query(query: Option<&str>) -> Result<Query<'_>, String> {
    let mut parsed = Query::default();
    let Some(query) = query else {
        return Ok(parsed);
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "detailed" => parsed.detailed = parse_bool("detailed", &value)?,
            "verbose" => parsed.verbose = parse_bool("verbose", &value)?,
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

/// Whether the client asked for `application/health+json` (and did not
/// give it `q=0`).
fn wants_health_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/health+json")
                && !parts.any(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=")
                        .is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0))
                })
        })
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const HEALTH_JSON: HeaderValue = HeaderValue::from_static("application/health+json");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const GET_HEAD: HeaderValue = HeaderValue::from_static("GET, HEAD");

fn respond(code: StatusCode, content_type: HeaderValue, body: Bytes, head: bool) -> Response<Full<Bytes>> {
    let length = body.len();
    let mut response = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *response.status_mut() = code;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, NO_STORE);
    if head {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

fn error(code: StatusCode, message: &str, head: bool) -> Response<Full<Bytes>> {
    respond(code, JSON, json::error(message), head)
}

/// Answers a health path from the published snapshot. Never runs a check,
/// never waits.
fn answer<B>(layer: &HealthLayer, route: Route, request: Request<B>) -> Response<Full<Bytes>> {
    let (parts, _body) = request.into_parts();
    let head = parts.method == Method::HEAD;
    if parts.method != Method::GET && !head {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on a health path: use GET or HEAD",
            false,
        );
        response.headers_mut().insert(ALLOW, GET_HEAD);
        return response;
    }
    let query = match parse_query(parts.uri.query()) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message, head),
    };
    let config = &layer.config;
    let shared = &layer.owner.shared;
    let snapshot = shared.snapshot.load();
    let format = if query.verbose {
        Format::Text
    } else if wants_health_json(&parts.headers) {
        Format::HealthJson
    } else {
        Format::Json
    };
    let content_type = match format {
        Format::Json => JSON,
        Format::HealthJson => HEALTH_JSON,
        Format::Text => TEXT,
    };
    let reveal = config.reveal.as_ref().is_some_and(|r| r.reveal(&parts));
    let now = tokio::time::Instant::now();
    let busy = matches!(route, Route::Probe(Probe::Readiness))
        && shared
            .in_flight_limit
            .is_some_and(|limit| shared.in_flight.load(Ordering::Acquire) >= limit);
    let fresh = snapshot.fresh_until.is_none_or(|until| now < until);

    if let Route::Probe(probe) = route {
        let cached = fresh
            && !query.detailed
            && query.exclude.is_empty()
            && !(reveal && format != Format::Json);
        if cached {
            let Answer { status, body } = snapshot.cached.get(probe, busy, format);
            return respond(config.code(*status), content_type, body.clone(), head);
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
                    .filter(|name| snapshot.component(name).is_none())
                    .map(|name| &**name)
                    .collect();
                text::render(&view, probe, &unmatched)
            }
        },
        Route::Component(offset) => {
            let name = &parts.uri.path()[offset..];
            let Some(component) = snapshot.component(name) else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("no check or heartbeat named {name:?}"),
                    head,
                );
            };
            match format {
                Format::HealthJson => health_json::component(&view, component),
                Format::Json | Format::Text => json::component(&view, component),
            }
        }
    };
    let content_type = match (route, format) {
        (Route::Component(_), Format::Text) => JSON,
        _ => content_type,
    };
    respond(config.code(answer.status), content_type, answer.body, head)
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
        assert_eq!(parse_query(Some("exclude=%ZZ%ff")).unwrap().exclude.len(), 1);
    }

    #[test]
    fn accept_negotiation() {
        let mut headers = HeaderMap::new();
        assert!(!wants_health_json(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("text/html, application/health+json;q=0.9"));
        assert!(wants_health_json(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("application/health+json; q=0"));
        assert!(!wants_health_json(&headers));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!wants_health_json(&headers));
    }
}
