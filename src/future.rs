use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::LazyLock,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{
    body::ResponseBody,
    clock::Stamp,
    service::{InFlightGuard, close_connection},
};

pin_project! {
    /// The future of [`Health`](crate::Health): a health answer ready at
    /// once, or the inner service driven to readiness and then called.
    ///
    /// `B` is the response's body type: [`ResponseBody`] for [`Health`],
    /// `axum::body::Body` for `AxumHealth` (one future for both, so wrapping
    /// for axum adds no second future around this one).
    ///
    /// [`Health`]: crate::Health
    pub struct ResponseFuture<S, ReqBody, B>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        // Set exactly when `header` is.
        start: Option<Stamp>,
        header: Option<HeaderName>,
        guard: Option<InFlightGuard>,
        // Ask the client to close the connection (see `close_connection`).
        close: bool,
        body: PhantomData<fn() -> B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Answered { response: Option<Response<Full<Bytes>>> },
        // The inner service was not ready when the request came: drive it to
        // readiness first. Boxed, so the common states keep the future small.
        Waiting { pending: Option<Box<(S, Request<ReqBody>)>> },
        Called { #[pin] future: S::Future },
    }
}

impl<S, ReqBody, B> ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>>,
{
    /// A health answer, complete with its processing-time header.
    #[inline]
    pub(crate) fn answered(response: Response<Full<Bytes>>, close: bool) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
            start: None,
            header: None,
            guard: None,
            close,
            body: PhantomData,
        }
    }

    /// The inner service was ready and has been called.
    #[inline]
    pub(crate) fn called(
        future: S::Future,
        start: Option<Stamp>,
        header: Option<HeaderName>,
        guard: Option<InFlightGuard>,
        close: bool,
    ) -> Self {
        Self {
            state: State::Called { future },
            start,
            header,
            guard,
            close,
            body: PhantomData,
        }
    }

    /// The inner service must be driven to readiness before the call.
    #[inline]
    pub(crate) fn waiting(
        service: S,
        request: Request<ReqBody>,
        start: Option<Stamp>,
        header: Option<HeaderName>,
        guard: Option<InFlightGuard>,
        close: bool,
    ) -> Self {
        Self {
            state: State::Waiting {
                pending: Some(Box::new((service, request))),
            },
            start,
            header,
            guard,
            close,
            body: PhantomData,
        }
    }
}

impl<S, ReqBody, B> std::fmt::Debug for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody, B> Future for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    B: From<ResponseBody<ResBody>>,
{
    type Output = Result<Response<B>, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = loop {
            match this.state.as_mut().project() {
                StateProj::Answered { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    break response.map(|body| B::from(ResponseBody::full(body)));
                }
                StateProj::Waiting { pending } => {
                    let (service, _) = &mut **pending
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    ready!(service.poll_ready(cx))?;
                    let (mut service, request) = *pending.take().expect("checked above");
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let response = ready!(future.poll(cx))?;
                    let guard = this.guard.take();
                    break response.map(|body| B::from(ResponseBody::inner(body, guard)));
                }
            }
        };
        if let (Some(name), Some(start)) = (this.header.take(), this.start) {
            response
                .headers_mut()
                .insert(name, process_time(start.elapsed()));
        }
        if *this.close {
            close_connection(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

/// `0.000` to `0.999`, built at compile time: most responses take under a
/// millisecond, and their header value then needs no formatting and no
/// allocation.
static SUB_MILLISECOND: [[u8; 5]; 1000] = {
    let mut table = [[0u8; 5]; 1000];
    let mut i = 0;
    while i < 1000 {
        table[i] = [
            b'0',
            b'.',
            b'0' + (i / 100) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
        ];
        i += 1;
    }
    table
};

/// [`SUB_MILLISECOND`] as header values, validated once: cloning one is a
/// copy of a static reference.
static SUB_MILLISECOND_VALUES: LazyLock<Box<[HeaderValue]>> = LazyLock::new(|| {
    SUB_MILLISECOND
        .iter()
        .map(|bytes| {
            HeaderValue::from_static(std::str::from_utf8(bytes).expect("ASCII digits and a dot"))
        })
        .collect()
});

/// Milliseconds with three decimals, e.g. `0.042`, written without going
/// through `fmt`.
pub(crate) fn process_time(elapsed: std::time::Duration) -> HeaderValue {
    if elapsed.as_secs() == 0 {
        let micros = elapsed.subsec_micros() as usize;
        if let Some(value) = SUB_MILLISECOND_VALUES.get(micros) {
            return value.clone();
        }
    }
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let (whole, frac) = (micros / 1000, micros % 1000);
    let mut buf = [0u8; 24];
    let mut i = buf.len();
    for digit in [frac % 10, frac / 10 % 10, frac / 100] {
        i -= 1;
        buf[i] = b'0' + digit as u8;
    }
    i -= 1;
    buf[i] = b'.';
    let mut n = whole;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[i..]).expect("digits and a dot are a valid header value")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::process_time;

    #[test]
    fn process_time_is_milliseconds_with_three_decimals() {
        assert_eq!(process_time(Duration::from_nanos(41_999)), "0.041");
        assert_eq!(process_time(Duration::from_micros(42)), "0.042");
        assert_eq!(process_time(Duration::ZERO), "0.000");
        assert_eq!(process_time(Duration::from_micros(12_345_678)), "12345.678");
        assert_eq!(
            process_time(Duration::MAX),
            HeaderValue::from_str(&format!("{}.{:03}", u64::MAX / 1000, u64::MAX % 1000)).unwrap()
        );
    }

    use http::HeaderValue;
}
