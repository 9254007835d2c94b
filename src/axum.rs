//! Wrapping a whole axum application, outside its router.
//!
//! `Router::layer(health.layer())` works as it is, but axum then wraps every
//! route (and the fallback) separately and routes each probe first. Wrapping
//! the whole router answers probes before any routing, which is the
//! recommended placement. `axum::serve` insists on responses with an
//! `axum::body::Body`, so [`HealthLayer::wrap_axum`] returns a service that
//! converts the body (a passed-through axum body is handed back as it is,
//! not boxed again, unless [`max_in_flight`](crate::HealthChecksBuilder::max_in_flight)
//! counts the request) and that `axum::serve` accepts directly.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_health::HealthChecks;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let health = HealthChecks::builder().build()?;
//! let router = Router::new().route("/", get(|| async { "hello" }));
//! let app = health.layer().wrap_axum(router);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // SIGTERM or Ctrl-C (feature `signal`), then drain.
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(health.graceful_shutdown(tower_health::shutdown_signal()))
//!     .await?;
//! # Ok(()) }
//! ```

use std::{
    convert::Infallible,
    fmt,
    task::{Context, Poll},
};

use axum::body::Body;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Health, HealthLayer, ResponseFuture};

impl HealthLayer {
    /// Wraps a whole axum `Router` so it can be passed to `axum::serve`.
    /// See the [module docs](crate::axum).
    ///
    /// The router is finalised with `with_state(())` once, here, as
    /// `axum::serve` does for a bare router, so no per-request work is
    /// added by the wrapping.
    pub fn wrap_axum(&self, router: axum::Router) -> AxumHealth<axum::Router> {
        AxumHealth {
            inner: self.layer(router.with_state(())),
        }
    }
}

/// [`Health`] with axum's response type. Made by
/// [`HealthLayer::wrap_axum`].
#[derive(Clone)]
pub struct AxumHealth<S> {
    inner: Health<S>,
}

impl<S: fmt::Debug> fmt::Debug for AxumHealth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AxumHealth")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for AxumHealth<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>> + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = AxumResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.inner.call_into(request)
    }
}

/// The future of [`AxumHealth`]: [`ResponseFuture`] handing over an axum
/// body.
pub type AxumResponseFuture<S, ReqBody> = ResponseFuture<S, ReqBody, Body>;

/// Lets `axum::serve(listener, app)` take an [`AxumHealth`] directly, as it
/// takes a `Router`.
impl<S, L> Service<axum::serve::IncomingStream<'_, L>> for AxumHealth<S>
where
    S: Clone,
    L: axum::serve::Listener,
{
    type Response = Self;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _stream: axum::serve::IncomingStream<'_, L>) -> Self::Future {
        std::future::ready(Ok(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{Router, routing::get};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use crate::{CheckResult, HealthChecks};

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_counts_in_flight_until_it_ends() {
        let health = HealthChecks::builder().max_in_flight(1).build().unwrap();
        let (mut sender, body) = http_body_util::channel::Channel::<bytes::Bytes>::new(1);
        let body = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
        let router = Router::new().route(
            "/stream",
            get(move || {
                let body = body.lock().unwrap().take().expect("one request");
                async move { axum::body::Body::new(body) }
            }),
        );
        let app = health.layer().wrap_axum(router);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let get = |path: &str| {
            http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let ready = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);

        let streaming = app.clone().oneshot(get("/stream")).await.unwrap();
        // The handler has answered, but its body is still being sent.
        let busy = app.clone().oneshot(get("/readyz")).await.unwrap();
        assert_eq!(busy.status(), 503);

        sender
            .send_data(bytes::Bytes::from_static(b"chunk"))
            .await
            .unwrap();
        drop(sender);
        let body = streaming.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"chunk");
        let ready = app.oneshot(get("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn whole_router_wrapped_answers_probes_before_routing() {
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::healthy() })
            .build()
            .unwrap();
        let router = Router::new().route("/", get(|| async { "home" }));
        let app = health.layer().wrap_axum(router);
        tokio::time::sleep(Duration::from_millis(1)).await;

        let ready = app
            .clone()
            .oneshot(
                http::Request::get("/readyz")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        let body = ready.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"status":"healthy"}"#);

        let home = app
            .oneshot(
                http::Request::get("/")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(home.headers().contains_key("x-process-time-ms"));
        let body = home.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"home");
    }
}
