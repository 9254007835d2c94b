use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use crate::service::InFlightGuard;

pin_project! {
    /// The body of every response from [`Health`](crate::Health): either a
    /// health answer's bytes or the inner service's body, unchanged.
    ///
    /// A passed-through body keeps the in-flight count (see
    /// [`max_in_flight`](crate::HealthChecksBuilder::max_in_flight)) until it
    /// ends or is dropped.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
        guard: Option<InFlightGuard>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { #[pin] body: Full<Bytes> },
        Inner { #[pin] body: B },
    }
}

impl<B> ResponseBody<B> {
    #[inline]
    pub(crate) fn full(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Full { body },
            guard: None,
        }
    }

    #[inline]
    pub(crate) fn inner(body: B, guard: Option<InFlightGuard>) -> Self {
        Self {
            kind: Kind::Inner { body },
            guard,
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Full { .. } => "Full",
            Kind::Inner { .. } => "Inner",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = match this.kind.project() {
            KindProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            KindProj::Inner { body } => body.poll_frame(cx),
        };
        if let Poll::Ready(None) = frame {
            // The stream is over: the request no longer counts as in flight.
            this.guard.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { body } => body.is_end_stream(),
            Kind::Inner { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { body } => body.size_hint(),
            Kind::Inner { body } => body.size_hint(),
        }
    }
}

/// An `axum::body::Body` without boxing a passed-through axum body when
/// nothing needs to ride along with it.
#[cfg(feature = "axum")]
impl From<ResponseBody<axum::body::Body>> for axum::body::Body {
    #[inline]
    fn from(body: ResponseBody<axum::body::Body>) -> Self {
        match body {
            ResponseBody {
                kind: Kind::Inner { body },
                guard: None,
            } => body,
            ResponseBody {
                kind: Kind::Full { body },
                guard: None,
            } => axum::body::Body::new(body),
            counted => axum::body::Body::new(counted),
        }
    }
}
