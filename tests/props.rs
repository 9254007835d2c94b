//! Property tests: arbitrary paths, queries, methods and headers through
//! the layer, in-process.
//!
//! For every input the layer must not panic; a health path answers one of
//! 200/400/404/405/503 with the `x-process-time-ms`, `cache-control` and
//! content type headers and a body that parses; every other path reaches
//! the inner service untouched; and query strings follow the documented
//! rule (src/service.rs `parse_query`): unknown parameters are ignored,
//! `detailed`/`verbose` with a value other than empty, `1`, `0` or
//! case-insensitive `true`/`false` is a 400 naming the parameter, and
//! percent-decoding is lossy, never an error.
//!
//! The expected answers come from a small model written here from that
//! documentation (its own form decoding, its own path matching), not from
//! the crate's code.

mod common;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use bytes::Bytes;
use common::{Echo, INNER_MARK, Reply, echo_body};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use tower::{Layer, ServiceExt};
use tower_health::{CheckOptions, CheckResult, HealthChecks, HealthHandle};

/// The single registered check, healthy.
const CHECK: &str = "ok";

// ------------------------------------------------------------- inputs ---

#[derive(Debug, Clone)]
struct Input {
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Input {
    fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// One piece of a path: plain characters, a valid or broken `%` escape,
/// a slash, or non-ASCII text (which `http` accepts raw as UTF-8).
fn path_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,6}",
        2 => "%[0-9A-Fa-f]{2}",
        1 => "%[g-zG-Z%]{0,2}",
        1 => Just("%".to_owned()),
        2 => Just("/".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("日本".to_owned()),
        1 => Just("\u{1F600}".to_owned()),
        1 => Just("ok".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just("/health"),
        Just("/livez"),
        Just("/healthz"),
        Just("/readyz"),
        Just("/startupz"),
        Just("/health/"),
        Just("/health/ok"),
        Just("/HEALTH"),
        Just("/"),
        Just("/api"),
    ];
    let suffix = prop::collection::vec(path_piece(), 0..4).prop_map(|pieces| pieces.concat());
    // Half the time the bare prefix (the exact health paths), else with a
    // garbage suffix.
    (prefix, prop::bool::ANY, suffix).prop_map(|(prefix, bare, suffix)| {
        if bare {
            prefix.to_owned()
        } else {
            format!("{prefix}{suffix}")
        }
    })
}

fn query_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("detailed".to_owned()),
        4 => Just("verbose".to_owned()),
        3 => Just("exclude".to_owned()),
        1 => Just("DETAILED".to_owned()),
        1 => Just("detaile%64".to_owned()),
        1 => Just("%76erbose".to_owned()),
        1 => Just("verbose+".to_owned()),
        1 => Just("_".to_owned()),
        1 => Just(String::new()),
        1 => "[a-z%+]{1,6}",
    ]
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        2 => Just("true".to_owned()),
        1 => Just("TRUE".to_owned()),
        1 => Just("tRuE".to_owned()),
        2 => Just("1".to_owned()),
        2 => Just("0".to_owned()),
        1 => Just("false".to_owned()),
        1 => Just("FaLsE".to_owned()),
        1 => Just("yes".to_owned()),
        1 => Just("maybe".to_owned()),
        1 => Just("tru%65".to_owned()),
        1 => Just("%74rue".to_owned()),
        1 => Just("%ZZ".to_owned()),
        1 => Just("%".to_owned()),
        1 => Just("%f".to_owned()),
        1 => Just("%ff".to_owned()),
        1 => Just("%C3%A9".to_owned()),
        1 => Just("+".to_owned()),
        1 => Just("true+".to_owned()),
        1 => Just("01".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just(CHECK.to_owned()),
        1 => Just("x".repeat(200)),
        2 => "[a-zA-Z0-9%+=]{0,8}",
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    let pair =
        (query_key(), prop::option::of(query_value())).prop_map(|(key, value)| match value {
            Some(value) => format!("{key}={value}"),
            None => key,
        });
    let separator = prop_oneof![8 => Just("&"), 1 => Just("&&"), 1 => Just(";")];
    let pairs = prop::collection::vec((pair, separator), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .enumerate()
            .map(|(i, (pair, sep))| if i == 0 { pair } else { format!("{sep}{pair}") })
            .collect::<String>()
    });
    prop::option::weighted(0.7, pairs)
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        8 => Just(Method::GET),
        3 => Just(Method::HEAD),
        1 => Just(Method::POST),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::OPTIONS),
        1 => Just(Method::PATCH),
        1 => Just(Method::TRACE),
        1 => Just(Method::CONNECT),
        1 => "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a token")),
        1 => "[a-z][a-z0-9!#$%&'*+.^_`|~-]{0,7}"
            .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a token")),
    ]
}

fn accept_value() -> impl Strategy<Value = HeaderValue> {
    let text = prop_oneof![
        3 => Just("application/health+json".to_owned()),
        1 => Just("APPLICATION/HEALTH+JSON".to_owned()),
        1 => Just("application/health+json;q=0".to_owned()),
        1 => Just("application/health+json; q=0.0, text/plain".to_owned()),
        1 => Just("text/html, application/health+json;q=0.9".to_owned()),
        1 => Just("application/health+json;q=banana".to_owned()),
        1 => Just("application/json".to_owned()),
        1 => Just("*/*".to_owned()),
        1 => Just(",,,;;;q=".to_owned()),
        3 => "[ -~]{0,40}",
        1 => ("[ -~]{1,8}", 1_000..8_000usize).prop_map(|(s, n)| s.repeat(n)),
    ];
    prop_oneof![
        6 => text.prop_map(|t| HeaderValue::from_str(&t).expect("visible ASCII")),
        // Bytes that are legal in a header value but not `str`.
        1 => prop::collection::vec(0x80u8..=0xff, 1..16)
            .prop_map(|b| HeaderValue::from_bytes(&b).expect("obs-text")),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    let accept = prop::collection::vec(accept_value(), 0..3).prop_map(|values| {
        values
            .into_iter()
            .map(|v| (header::ACCEPT, v))
            .collect::<Vec<_>>()
    });
    let other = prop::collection::vec(
        (
            prop_oneof![
                Just(header::AUTHORIZATION),
                Just(header::CONTENT_TYPE),
                Just(header::HOST),
                Just(HeaderName::from_static("x-junk")),
            ],
            prop_oneof![
                "[ -~]{0,40}",
                ("[ -~]{1,8}", 1_000..8_000usize).prop_map(|(s, n)| s.repeat(n)),
            ]
            .prop_map(|t| HeaderValue::from_str(&t).expect("visible ASCII")),
        ),
        0..3,
    );
    (accept, other).prop_map(|(mut a, o)| {
        a.extend(o);
        a
    })
}

fn input() -> impl Strategy<Value = Input> {
    (method(), path(), query(), headers()).prop_map(|(method, path, query, headers)| Input {
        method,
        path,
        query,
        headers,
    })
}

// -------------------------------------------------------------- model ---

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route<'a> {
    Probe(&'a str),
    Component(&'a str),
}

/// The default paths: exact matches, plus `/health/{name}` with a
/// non-empty name and no further `/`.
fn route(path: &str) -> Option<Route<'_>> {
    if ["/health", "/livez", "/healthz", "/readyz", "/startupz"].contains(&path) {
        return Some(Route::Probe(path));
    }
    let name = path.strip_prefix("/health/")?;
    (!name.is_empty() && !name.contains('/')).then_some(Route::Component(name))
}

/// `application/x-www-form-urlencoded` decoding, lossy: `+` is a space, a
/// `%` not followed by two hex digits stays as it is, invalid UTF-8
/// becomes U+FFFD.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Default)]
struct Query {
    verbose: bool,
    /// The first `detailed`/`verbose` parameter with a bad value.
    invalid: Option<&'static str>,
}

fn model_query(query: Option<&str>) -> Query {
    let mut parsed = Query::default();
    for piece in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        let (key, value) = (form_decode(key), form_decode(value));
        let name = match key.as_str() {
            "detailed" => "detailed",
            "verbose" => "verbose",
            _ => continue,
        };
        let flag = if value.is_empty() || value == "1" || value.eq_ignore_ascii_case("true") {
            true
        } else if value == "0" || value.eq_ignore_ascii_case("false") {
            false
        } else {
            parsed.invalid.get_or_insert(name);
            continue;
        };
        if name == "verbose" {
            parsed.verbose = flag;
        }
    }
    parsed
}

// ----------------------------------------------------------- property ---

/// How many cases landed in each kind of answer, so the property cannot
/// pass by never generating some of them.
#[derive(Debug, Default)]
struct Coverage {
    passed_through: AtomicUsize,
    probe_ok: AtomicUsize,
    component_ok: AtomicUsize,
    not_found: AtomicUsize,
    bad_request: AtomicUsize,
    not_allowed: AtomicUsize,
    head: AtomicUsize,
    text: AtomicUsize,
    health_json: AtomicUsize,
}

fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Subject {
    coverage: Coverage,
    runtime: tokio::runtime::Runtime,
    echo: Echo,
    service: tower_health::Health<Echo>,
    _health: HealthHandle,
}

fn subject() -> Subject {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let echo = Echo::default();
    let (health, service) = runtime.block_on(async {
        let health = HealthChecks::builder()
            .version("1.0.0")
            .check_with(
                CHECK,
                || async { CheckResult::healthy() },
                CheckOptions::new().interval(Duration::from_secs(3600)),
            )
            .build()
            .expect("valid checks");
        let mut sub = health.subscribe();
        common::guard(
            "first result",
            sub.wait_for(|o| o.startup == tower_health::ProbeStatus::Healthy),
        )
        .await
        .expect("refresher alive");
        let service = health.layer().layer(echo.clone());
        (health, service)
    });
    Subject {
        coverage: Coverage::default(),
        runtime,
        echo,
        service,
        _health: health,
    }
}

fn check(subject: &Subject, input: &Input) -> Result<(), TestCaseError> {
    let target = input.target();
    let Ok(uri) = target.parse::<Uri>() else {
        // Not a request an HTTP server would hand to a service.
        return Ok(());
    };
    if uri.path() != input.path {
        // `http` read it differently (say, `//x` as an authority); the
        // model below judges the path as generated.
        return Ok(());
    }
    let mut request = Request::builder().method(input.method.clone()).uri(uri);
    for (name, value) in &input.headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(Bytes::new())).expect("valid parts");
    let expected_echo = echo_body(&request);
    let calls_before = subject.echo.calls();
    let reply: Reply = subject.runtime.block_on(async {
        let response = subject
            .service
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        common::read(response).await
    });
    let reached_inner = subject.echo.calls() - calls_before;
    reply.assert_process_time();

    let Some(route) = route(&input.path) else {
        // Not a health path: the inner service's answer, untouched.
        prop_assert_eq!(
            reached_inner,
            1,
            "{} did not reach the inner service",
            target
        );
        prop_assert_eq!(reply.status, StatusCode::OK);
        prop_assert_eq!(reply.header(INNER_MARK), Some("yes"));
        prop_assert_eq!(reply.text(), expected_echo.as_str());
        prop_assert!(reply.headers.get(header::CACHE_CONTROL).is_none());
        bump(&subject.coverage.passed_through);
        return Ok(());
    };
    let coverage = &subject.coverage;
    if input.method == Method::HEAD {
        bump(&coverage.head);
    }

    prop_assert_eq!(reached_inner, 0, "{} reached the inner service", target);
    prop_assert!(reply.headers.get(INNER_MARK).is_none());
    prop_assert!(
        [200, 400, 404, 405, 503].contains(&reply.status.as_u16()),
        "{} answered {}",
        target,
        reply.status
    );
    prop_assert_eq!(reply.header(header::CACHE_CONTROL), Some("no-store"));
    let content_type = reply.content_type().unwrap_or("").to_owned();
    prop_assert!(
        [
            "application/json",
            "application/health+json",
            "text/plain; charset=utf-8"
        ]
        .contains(&content_type.as_str()),
        "content type {:?}",
        content_type
    );
    let head = input.method == Method::HEAD;
    let get = input.method == Method::GET;
    let is_json = content_type != "text/plain; charset=utf-8";

    // A body that parses; HEAD has none, but says how long it would be.
    let json = if head && reply.status != StatusCode::METHOD_NOT_ALLOWED {
        prop_assert!(reply.body.is_empty(), "HEAD with a body");
        let length = reply.header(header::CONTENT_LENGTH).unwrap_or("");
        prop_assert!(
            length.parse::<u64>().is_ok_and(|n| n > 0),
            "content-length {:?}",
            length
        );
        None
    } else if is_json {
        let parsed = serde_json::from_slice::<serde_json::Value>(&reply.body);
        prop_assert!(
            parsed.is_ok(),
            "not JSON: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let json = parsed.expect("checked");
        prop_assert!(json["status"].is_string(), "no status: {}", json);
        Some(json)
    } else {
        let text = std::str::from_utf8(&reply.body);
        prop_assert!(text.is_ok(), "text body is not UTF-8");
        let text = text.expect("checked");
        prop_assert!(text.ends_with(" check passed\n"), "{:?}", text);
        None
    };

    // Methods: GET and HEAD only, whatever the query.
    if !get && !head {
        prop_assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        prop_assert_eq!(reply.header(header::ALLOW), Some("GET, HEAD"));
        prop_assert_eq!(&content_type, "application/json");
        prop_assert_eq!(&json.expect("405 has a JSON body")["status"], "error");
        bump(&coverage.not_allowed);
        return Ok(());
    }

    // Queries.
    let query = model_query(input.query.as_deref());
    if let Some(parameter) = query.invalid {
        prop_assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{} should be a 400",
            target
        );
        prop_assert_eq!(&content_type, "application/json");
        if let Some(json) = json {
            prop_assert_eq!(&json["status"], "error");
            let error = json["error"].as_str().unwrap_or("");
            prop_assert!(
                error.contains(parameter),
                "{:?} does not name {}",
                error,
                parameter
            );
        }
        bump(&coverage.bad_request);
        return Ok(());
    }

    // A valid request: the one check is healthy, so every probe passes;
    // a component exists only under its exact name.
    let expected = match route {
        Route::Probe(_) => StatusCode::OK,
        Route::Component(name) if name == CHECK => StatusCode::OK,
        Route::Component(_) => StatusCode::NOT_FOUND,
    };
    prop_assert_eq!(reply.status, expected, "{}", target);
    bump(match route {
        Route::Probe(_) => &coverage.probe_ok,
        Route::Component(_) if expected == StatusCode::OK => &coverage.component_ok,
        Route::Component(_) => &coverage.not_found,
    });
    match content_type.as_str() {
        "text/plain; charset=utf-8" => bump(&coverage.text),
        "application/health+json" => bump(&coverage.health_json),
        _ => {}
    }
    let asked_health_json = input.headers.iter().any(|(name, value)| {
        name == header::ACCEPT && value.as_bytes() == b"application/health+json"
    });
    let mentions_health_json = input.headers.iter().any(|(name, value)| {
        name == header::ACCEPT
            && String::from_utf8_lossy(value.as_bytes())
                .to_ascii_lowercase()
                .contains("health+json")
    });
    let expected_type = match (route, expected) {
        (_, StatusCode::NOT_FOUND) => Some("application/json"),
        (Route::Probe(_), _) if query.verbose => Some("text/plain; charset=utf-8"),
        // `verbose` on a component: undocumented which of Accept and
        // verbose wins; either JSON flavour.
        (Route::Component(_), _) if query.verbose && mentions_health_json => None,
        _ if asked_health_json => Some("application/health+json"),
        _ if !mentions_health_json => Some("application/json"),
        // Junk that mentions the type: either JSON flavour.
        _ => None,
    };
    if let Some(expected_type) = expected_type {
        prop_assert_eq!(
            &content_type,
            expected_type,
            "{} {:?}",
            target,
            input.headers
        );
    } else {
        prop_assert!(is_json);
    }
    if let Some(json) = json {
        let status = json["status"].as_str().unwrap_or("");
        match (expected, content_type.as_str()) {
            (StatusCode::NOT_FOUND, _) => prop_assert_eq!(status, "error"),
            (_, "application/health+json") => prop_assert_eq!(status, "pass"),
            _ => prop_assert_eq!(status, "healthy"),
        }
    }
    Ok(())
}

#[test]
fn arbitrary_requests_through_the_layer() {
    let subject = subject();
    let mut runner = TestRunner::new(Config {
        cases: 3_000,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&input(), |input| check(&subject, &input));
    if let Err(error) = result {
        panic!("{error}");
    }
    let c = &subject.coverage;
    for (what, counter) in [
        ("passed through", &c.passed_through),
        ("probe 200", &c.probe_ok),
        ("component 200", &c.component_ok),
        ("404", &c.not_found),
        ("400", &c.bad_request),
        ("405", &c.not_allowed),
        ("HEAD", &c.head),
        ("verbose text", &c.text),
        ("health+json", &c.health_json),
    ] {
        let n = counter.load(Ordering::Relaxed);
        assert!(n >= 20, "only {n} cases were {what}: {c:?}");
    }
    eprintln!("coverage: {c:?}");
}

/// The same query gets the same verdict (400 or not) on every health path,
/// and unknown parameters never change an answer.
#[test]
fn queries_are_judged_the_same_on_every_health_path() {
    let subject = subject();
    let mut runner = TestRunner::new(Config {
        cases: 500,
        failure_persistence: None,
        ..Config::default()
    });
    let junk = prop::collection::vec(("[a-z]{1,6}", "[a-zA-Z0-9%+]{0,6}"), 0..3);
    let result = runner.run(&(query(), junk), |(query, junk)| {
        let query = query.unwrap_or_default();
        let junk: String = junk
            .into_iter()
            .filter(|(key, _)| !["detailed", "verbose", "exclude"].contains(&key.as_str()))
            .map(|(key, value)| format!("&{key}={value}"))
            .collect();
        let statuses = |query: &str| -> Result<Vec<StatusCode>, TestCaseError> {
            let mut statuses = Vec::new();
            for path in [
                "/health",
                "/livez",
                "/healthz",
                "/readyz",
                "/startupz",
                "/health/ok",
            ] {
                let target = format!("{path}?{query}");
                let Ok(uri) = target.parse::<Uri>() else {
                    return Ok(Vec::new());
                };
                let request = Request::get(uri)
                    .body(Full::new(Bytes::new()))
                    .expect("valid");
                let reply = subject.runtime.block_on(async {
                    let response = subject
                        .service
                        .clone()
                        .oneshot(request)
                        .await
                        .expect("infallible");
                    common::read(response).await
                });
                statuses.push(reply.status);
            }
            Ok(statuses)
        };
        let plain = statuses(&query)?;
        if plain.is_empty() {
            return Ok(());
        }
        let bad = model_query(Some(&query)).invalid.is_some();
        let want = if bad {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        prop_assert!(plain.iter().all(|s| *s == want), "{:?}: {:?}", query, plain);
        let with_junk = statuses(&format!("{query}{junk}"))?;
        if !with_junk.is_empty() {
            prop_assert_eq!(
                &with_junk,
                &plain,
                "unknown parameters {:?} changed the answer",
                junk
            );
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
