//! A health-check command for containers (feature `http-client`): your
//! binary asks its own running server's health endpoint and exits 0 or 1.
//!
//! Docker's `HEALTHCHECK`, Compose's `healthcheck`, ECS task definitions and
//! Nomad's script checks judge a container by a command run inside it, and
//! the usual `curl -f http://localhost/readyz` needs a curl that a
//! distroless or `scratch` image does not have. With this, the
//! application's own binary is the command:
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     if std::env::args().nth(1).as_deref() == Some("healthcheck") {
//!         return tower_health::command::healthcheck("http://127.0.0.1:3000/readyz");
//!     }
//!     // ... build the runtime and serve as usual ...
//!     ExitCode::SUCCESS
//! }
//! ```
//!
//! ```dockerfile
//! HEALTHCHECK --interval=10s --timeout=3s CMD ["/app", "healthcheck"]
//! ```
//!
//! The command sends one `GET` on a new connection (through
//! [`Connector`], so with feature `https` an `https://` URL is verified
//! as [`HttpCheck`](crate::checks::http::HttpCheck) does), and succeeds on
//! a status from 200 to 399, as Kubernetes' HTTP probes and `curl -f` do.
//! It prints one line, which Docker keeps in the container's health log
//! (`docker inspect`): the status and the start of the body on success,
//! on standard output (`200 {"status":"healthy"}`); the status and body, or
//! why there was no answer, on standard error (`503 {"status":"unhealthy",
//! "reason":"failing: db"}`, `no answer from GET http://127.0.0.1:3000/readyz
//! within 5s`). Exit status 1 for any failure, never Docker's reserved 2.

use std::{process::ExitCode, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Uri, header::USER_AGENT};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::{check::error_chain, checks::http::Connector};

/// How long [`healthcheck`] waits for the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most body bytes the printed line shows.
const SHOWN_BODY_BYTES: usize = 512;

/// Asks `url` once and returns the exit status for a container health
/// check: success for a status from 200 to 399, failure otherwise or with
/// no answer within [`DEFAULT_TIMEOUT`]. Prints one line saying what it
/// got (see the [module documentation](self)).
///
/// It runs on a Tokio runtime of its own, on a thread of its own if it is
/// called from within a runtime, so it can be called first thing in
/// `main`, before the server's runtime is built, or from within it.
pub fn healthcheck(url: &str) -> ExitCode {
    healthcheck_within(url, DEFAULT_TIMEOUT)
}

/// [`healthcheck`], waiting `timeout` for the answer (connecting, the
/// response head and the part of the body shown). Give it less than the
/// orchestrator's own timeout (Docker's `--timeout`, 30 s by default), so
/// that the command prints why it failed before it is killed.
pub fn healthcheck_within(url: &str, timeout: Duration) -> ExitCode {
    let asked = if tokio::runtime::Handle::try_current().is_ok() {
        // A runtime cannot be started from within one.
        std::thread::scope(|scope| {
            scope
                .spawn(|| ask_blocking(url, timeout))
                .join()
                .unwrap_or_else(|_| Asked::failed("the health check command panicked".to_owned()))
        })
    } else {
        ask_blocking(url, timeout)
    };
    if asked.healthy {
        println!("{}", asked.line);
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", asked.line);
        ExitCode::FAILURE
    }
}

/// What the command found.
#[derive(Debug, PartialEq)]
struct Asked {
    healthy: bool,
    line: String,
}

impl Asked {
    fn failed(line: String) -> Self {
        Self {
            healthy: false,
            line,
        }
    }
}

fn ask_blocking(url: &str, timeout: Duration) -> Asked {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(ask(url, timeout)),
        Err(e) => Asked::failed(format!(
            "cannot start a Tokio runtime for the health check: {e}"
        )),
    }
}

async fn ask(url: &str, timeout: Duration) -> Asked {
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => return Asked::failed(format!("{url:?} is not a URL: {e}")),
    };
    // Without user info or query, which may hold credentials.
    let shown = crate::checks::http::shown(&uri);
    #[cfg(feature = "https")]
    let connector = Connector::new().https();
    #[cfg(not(feature = "https"))]
    let connector = Connector::new();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let request = Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(
            USER_AGENT,
            concat!("tower-health/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new());
    let request = match request {
        Ok(request) => request,
        Err(e) => return Asked::failed(format!("cannot ask {shown}: {e}")),
    };
    let answered = tokio::time::timeout(timeout, async {
        let response = client.request(request).await?;
        let status = response.status();
        // The start of the body is enough to say why; a longer one is cut.
        let mut body = Vec::new();
        let mut frames = response.into_body();
        while body.len() <= SHOWN_BODY_BYTES {
            match frames.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        body.extend_from_slice(&data);
                    }
                }
                // A body that broke off still shows what arrived.
                Some(Err(_)) | None => break,
            }
        }
        Ok::<_, hyper_util::client::legacy::Error>((status, body))
    })
    .await;
    match answered {
        Ok(Ok((status, mut body))) => {
            let cut = body.len() > SHOWN_BODY_BYTES;
            body.truncate(SHOWN_BODY_BYTES);
            let body = String::from_utf8_lossy(&body);
            let body = body.trim_end();
            let line = match (body.is_empty(), cut) {
                (true, _) => status.as_u16().to_string(),
                (false, false) => format!("{} {body}", status.as_u16()),
                (false, true) => format!("{} {body}…", status.as_u16()),
            };
            Asked {
                healthy: (200..=399).contains(&status.as_u16()),
                line,
            }
        }
        Ok(Err(e)) => Asked::failed(format!("GET {shown} failed: {}", error_chain(&e))),
        Err(_) => Asked::failed(format!(
            "no answer from GET {shown} within {}",
            crate::snapshot::fmt_duration(timeout)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{CheckResult, HealthChecks, HealthHandle};

    /// Serves `health`'s probes alone on a port of 127.0.0.1.
    async fn serve(health: &HealthHandle) -> SocketAddr {
        let app = axum::Router::new().fallback_service(health.layer().into_service());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn a_passing_probe_succeeds_and_a_failing_one_says_why() {
        let health = HealthChecks::builder()
            .check("db", || async { CheckResult::unhealthy("refused") })
            .check_with(
                "cache",
                || async { CheckResult::healthy() },
                crate::CheckOptions::new().probes(crate::Probes::LIVENESS),
            )
            .build()
            .unwrap();
        let addr = serve(&health).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = Duration::from_secs(1);

        let live = ask(&format!("http://{addr}/livez"), second).await;
        assert_eq!(
            live,
            Asked {
                healthy: true,
                line: r#"200 {"status":"healthy"}"#.to_owned()
            }
        );
        let ready = ask(&format!("http://{addr}/readyz"), second).await;
        assert_eq!(
            ready,
            Asked {
                healthy: false,
                line: r#"503 {"status":"unhealthy","reason":"failing: db"}"#.to_owned()
            }
        );
        // The text form is shown as it is.
        let verbose = ask(&format!("http://{addr}/readyz?verbose"), second).await;
        assert!(!verbose.healthy);
        assert!(
            verbose.line.starts_with("503 [-]db failed")
                && verbose.line.ends_with("readyz check failed"),
            "{verbose:?}"
        );
        let missing = ask(&format!("http://{addr}/nope"), second).await;
        assert!(
            !missing.healthy && missing.line.starts_with("404 {"),
            "{missing:?}"
        );
        drop(health);
    }

    #[tokio::test]
    async fn no_answer_is_a_failure_that_says_so() {
        let second = Duration::from_secs(1);
        let refused = ask(
            &format!(
                "http://user:secret@127.0.0.1:{}/readyz?token=t",
                closed_port()
            ),
            second,
        )
        .await;
        assert!(!refused.healthy);
        assert!(
            refused.line.starts_with("GET http://127.0.0.1:")
                && refused.line.contains("/readyz?… failed:")
                && refused.line.contains("refused"),
            "{refused:?}"
        );
        assert!(!refused.line.contains("secret"), "{refused:?}");

        // Accepts, never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let _connection = listener.accept().await;
            std::future::pending::<()>().await;
        });
        let silent = ask(&format!("http://{addr}/readyz"), Duration::from_millis(200)).await;
        assert_eq!(
            silent,
            Asked::failed(format!(
                "no answer from GET http://{addr}/readyz within 200ms"
            ))
        );

        let bad = ask("not a url at all", second).await;
        assert!(
            !bad.healthy && bad.line.starts_with("\"not a url at all\" is not a URL"),
            "{bad:?}"
        );
    }

    /// A long body is cut for the line.
    #[tokio::test]
    async fn a_long_body_is_cut() {
        let app = axum::Router::new().route(
            "/readyz",
            axum::routing::get(|| async { "x".repeat(10_000) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let asked = ask(&format!("http://{addr}/readyz"), Duration::from_secs(1)).await;
        assert!(asked.healthy);
        assert_eq!(asked.line, format!("200 {}…", "x".repeat(SHOWN_BODY_BYTES)));
    }

    /// The exit status, from outside a runtime and from within one.
    #[test]
    fn the_exit_status_follows_the_answer_inside_a_runtime_or_not() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (health, addr) = runtime.block_on(async {
            let health = HealthChecks::builder().build().unwrap();
            let addr = serve(&health).await;
            (health, addr)
        });
        let live = format!("http://{addr}/livez");
        assert_eq!(healthcheck(&live), ExitCode::SUCCESS);
        assert_eq!(
            runtime.block_on(async { healthcheck(&live) }),
            ExitCode::SUCCESS
        );
        health.drain();
        let ready = format!("http://{addr}/readyz");
        assert_eq!(healthcheck(&ready), ExitCode::FAILURE);
        let refused = format!("http://127.0.0.1:{}/livez", closed_port());
        assert_eq!(healthcheck(&refused), ExitCode::FAILURE);
    }
}
