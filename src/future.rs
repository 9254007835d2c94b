use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Instant,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{body::ResponseBody, service::InFlightGuard};

pin_project! {
    /// The future of [`Health`](crate::Health): a health answer ready at
    /// once, or the inner service driven to readiness and then called.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        start: Instant,
        header: Option<HeaderName>,
        guard: Option<InFlightGuard>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Answered { response: Option<Response<Full<Bytes>>> },
        Ready { service: S, request: Option<Request<ReqBody>> },
        Called { #[pin] future: S::Future },
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn answered(
        response: Response<Full<Bytes>>,
        start: Instant,
        header: Option<HeaderName>,
    ) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
            start,
            header,
            guard: None,
        }
    }

    pub(crate) fn forward(
        service: S,
        request: Request<ReqBody>,
        start: Instant,
        header: Option<HeaderName>,
        guard: Option<InFlightGuard>,
    ) -> Self {
        Self {
            state: State::Ready {
                service,
                request: Some(request),
            },
            start,
            header,
            guard,
        }
    }
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = loop {
            match this.state.as_mut().project() {
                StateProj::Answered { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    break response.map(ResponseBody::full);
                }
                StateProj::Ready { service, request } => {
                    ready!(service.poll_ready(cx))?;
                    let request = request
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let response = ready!(future.poll(cx))?;
                    let guard = this.guard.take();
                    break response.map(|body| ResponseBody::inner(body, guard));
                }
            }
        };
        if let Some(name) = this.header.take() {
            response
                .headers_mut()
                .insert(name, process_time(this.start.elapsed()));
        }
        Poll::Ready(Ok(response))
    }
}

/// Milliseconds with three decimals, e.g. `0.042`, written without going
/// through `fmt`.
pub(crate) fn process_time(elapsed: std::time::Duration) -> HeaderValue {
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
