//! The health paths served on a port of their own
//! ([`HealthLayer::into_service`]).

use std::{
    convert::Infallible,
    future::{Ready, ready},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header::CONTENT_LENGTH};
use http_body_util::Full;
use tower_service::Service;

use crate::{Health, HealthLayer, render::json};

/// The service behind [`HealthLayer::into_service`]: answers every request
/// that is not for a health path `404 Not Found`, whatever its method, with
/// the layer's JSON error headers and a body that lists the paths the layer
/// answers (none for `HEAD`):
///
/// ```text
/// {"status":"error","error":"not a health path; the health paths are /health, /health/{name}, /livez, /healthz, /readyz, /startupz"}
/// ```
///
/// The body and headers are made once, by `into_service`; each answer
/// clones them. The layer around it adds the processing-time header.
#[derive(Debug, Clone)]
pub struct NotFound {
    body: Bytes,
    /// The layer's JSON answer headers, without the processing-time one.
    headers: HeaderMap,
    /// The same, with the body's `Content-Length`, for `HEAD`.
    head_headers: HeaderMap,
}

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (body, headers) = if request.method() == Method::HEAD {
            (Bytes::new(), &self.head_headers)
        } else {
            (self.body.clone(), &self.headers)
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = StatusCode::NOT_FOUND;
        *response.headers_mut() = headers.clone();
        ready(Ok(response))
    }
}

impl HealthLayer {
    /// A service that answers the health paths and nothing else (every
    /// other request gets [`NotFound`]'s 404), for serving the probes on a
    /// port of their own: a management port that is not exposed through
    /// the ingress or the public load balancer.
    ///
    /// It answers exactly as the layer does in front of the application,
    /// with this layer's paths, status codes, header and
    /// [`reveal_details_if`](Self::reveal_details_if). It is cheap to clone
    /// (one per connection).
    ///
    /// Weigh what the probes then prove: a probe on the application's own
    /// port also shows that its listener accepts and its runtime answers;
    /// one on another port does not see a stuck accept loop or a full
    /// connection limit there. [`max_in_flight`] counts the requests that
    /// pass through a layer (here only the 404s, for the moment each
    /// takes), so to keep readiness load-aware, put a layer in front of the
    /// application too (it then answers the health paths on that port as
    /// well).
    ///
    /// With axum, `Router::new().fallback_service(layer.into_service())`
    /// makes it a router for `axum::serve`.
    ///
    /// [`max_in_flight`]: crate::HealthChecksBuilder::max_in_flight
    ///
    /// # Example
    ///
    /// ```
    /// use http::{Request, StatusCode};
    /// use http_body_util::Empty;
    /// use tower::ServiceExt;
    /// use tower_health::HealthChecks;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let health = HealthChecks::builder().build()?;
    /// let admin = health.layer().into_service();
    ///
    /// // Serve `admin` on its own listener (hyper-util's
    /// // `TowerToHyperService`, or axum as above), the application on
    /// // another. Here it is called directly:
    /// let get = |path| Request::get(path).body(Empty::<bytes::Bytes>::new());
    /// let ready = admin.clone().oneshot(get("/readyz")?).await?;
    /// assert_eq!(ready.status(), StatusCode::OK);
    /// let other = admin.oneshot(get("/")?).await?;
    /// assert_eq!(other.status(), StatusCode::NOT_FOUND);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn into_service(self) -> Health<NotFound> {
        let message = match self.inner.config.served_paths() {
            paths if paths.is_empty() => {
                "not a health path; every health path is disabled".to_owned()
            }
            paths => format!("not a health path; the health paths are {paths}"),
        };
        let body = json::error(&message);
        let config = &self.inner.config;
        let mut headers = config.error_headers().clone();
        if let Some(name) = &config.process_time_header {
            headers.remove(name);
        }
        let mut head_headers = headers.clone();
        head_headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let not_found = NotFound {
            body,
            headers,
            head_headers,
        };
        Health::new(not_found, self)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Method, Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    use crate::{CheckResult, HealthChecks, HealthLayer, Probe};

    /// What `layer.into_service()` answers to `method path`: its status,
    /// headers and body, after checking the headers every answer has.
    async fn answer(
        layer: &HealthLayer,
        method: Method,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = layer.clone().into_service().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        assert_eq!(parts.headers["content-type"], "application/json", "{path}");
        assert_eq!(parts.headers["cache-control"], "no-store", "{path}");
        assert!(parts.headers.contains_key("x-process-time-ms"), "{path}");
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    /// [`answer`]'s status and JSON body, for a `GET` or the like.
    async fn ask(
        layer: &HealthLayer,
        method: Method,
        path: &str,
    ) -> (StatusCode, serde_json::Value) {
        let (status, _, body) = answer(layer, method, path).await;
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn answers_the_health_paths_and_404s_the_rest() {
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::healthy() })
            .build()
            .unwrap();
        crate::test_util::settle().await;
        let layer = health.layer();
        for path in ["/health", "/livez", "/healthz", "/readyz", "/startupz"] {
            let (status, json) = ask(&layer, Method::GET, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(json["status"], "healthy", "{path}");
        }
        assert_eq!(ask(&layer, Method::GET, "/health/db").await.1["name"], "db");
        assert_eq!(
            ask(&layer, Method::POST, "/readyz").await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "a health path is still the layer's"
        );

        let listed = "not a health path; the health paths are /health, /health/{name}, \
                      /livez, /healthz, /readyz, /startupz";
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/api/items?id=1"),
            (Method::POST, "/readyz/x"),
            (Method::DELETE, "/metrics"),
        ] {
            let (status, json) = ask(&layer, method.clone(), path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(json["status"], "error", "{method} {path}");
            assert_eq!(json["error"], listed, "{method} {path}");
        }
        // HEAD, as the layer answers it: no body, the GET's length.
        let (status, headers, body) = answer(&layer, Method::HEAD, "/HEALTH").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.is_empty(), "{body:?}");
        let get = answer(&layer, Method::GET, "/HEALTH").await.2;
        assert_eq!(headers["content-length"], get.len().to_string().as_str());
        assert_eq!(headers["x-content-type-options"], "nosniff");

        // Taken out of the layer, it neither times itself nor holds the
        // checks.
        let alone = layer.clone().into_service().into_inner();
        let response = alone
            .oneshot(Request::get("/x").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(!response.headers().contains_key("x-process-time-ms"));
        assert_eq!(response.headers()["content-type"], "application/json");
    }

    #[tokio::test(start_paused = true)]
    async fn the_404_lists_the_layers_own_paths() {
        let health = HealthChecks::builder().build().unwrap();
        let layer = health
            .layer()
            .path(Probe::Health, "/status")
            .disable(Probe::Startup)
            .clear_aliases()
            .alias("/ready", Probe::Readiness)
            .alias("/alive", Probe::Liveness);
        let (status, json) = ask(&layer, Method::GET, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            json["error"],
            "not a health path; the health paths are /status, /status/{name}, /livez, \
             /alive, /readyz, /ready"
        );
        assert_eq!(ask(&layer, Method::GET, "/ready").await.0, StatusCode::OK);

        // A path taken by an alias leaves the probe that had it: `/health`
        // answers readiness, and `/health/{name}` is gone with it.
        let moved = health.layer().alias("/health", Probe::Readiness);
        let listed = "not a health path; the health paths are /livez, /healthz, /readyz, \
                      /health, /startupz";
        for path in ["/x", "/health/db"] {
            let (status, json) = ask(&moved, Method::GET, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(json["error"], listed, "{path}");
        }

        let none = Probe::ALL
            .into_iter()
            .fold(health.layer().clear_aliases(), HealthLayer::disable);
        let (status, json) = ask(&none, Method::GET, "/health").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            json["error"],
            "not a health path; every health path is disabled"
        );
    }
}
