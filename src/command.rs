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
//! HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["/app", "healthcheck"]
//! ```
//!
//! Which probe: `/livez` where an unhealthy container is replaced or
//! restarted (ECS, Docker Swarm, an autoheal sidecar), as a Kubernetes
//! liveness probe would be, so that a dependency's outage does not restart
//! every container; `/readyz` where health only gates traffic or start
//! order (Compose's `depends_on: condition: service_healthy`).
//!
//! The command sends one `GET` on a new connection, through the client
//! [`HttpCheck::new`](crate::checks::http::HttpCheck::new) uses (so with
//! feature `https` an `https://` URL is verified as it is), and succeeds on
//! a status from 200 to 399, as Kubernetes' HTTP probes and `curl -f` do.
//! It prints one line, which Docker keeps in the container's health log
//! (`docker inspect`): the status and the start of the body on success,
//! on standard output (`200 {"status":"healthy"}`); the status and body, or
//! why there was no answer, on standard error (`503 {"status":"unhealthy",
//! "reason":"failing: db"}`, `no answer from GET http://127.0.0.1:3000/readyz
//! within 2s`). The body is cut at 512 bytes and its line breaks and other
//! control characters shown as spaces; the URL is shown without its user
//! info and query. Exit status 1 for any failure, never Docker's reserved
//! 2.

use std::{io::Write as _, process::ExitCode, time::Duration};

use http::{Method, Request, Uri, header::USER_AGENT};
use http_body_util::{BodyExt, Empty};

use crate::{check::error_chain, checks::http as upstream};

/// How long [`healthcheck`] waits for the answer: a server answering
/// its probes from a cache on the same host takes milliseconds, and this
/// stays under the orchestrators' own timeouts (Docker's default is
/// 30 s; the examples here use 3 s), so the command can say why it failed
/// before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most body bytes the printed line shows.
const SHOWN_BODY_BYTES: usize = 512;

/// Asks `url` once and returns the exit status for a container health
/// check: success for a status from 200 to 399, failure otherwise or with
/// no answer within [`DEFAULT_TIMEOUT`]. Prints one line saying what it
/// got (see the [module documentation](self)).
///
/// It runs on a Tokio runtime of its own, on a thread of its own if it is
/// called from within a runtime, so it can be called first thing in
/// `main`, before the server's runtime is built, or from within one. It
/// blocks the calling thread until it has the answer: called from a task
/// on a current-thread runtime, it holds that runtime, and a server on it
/// cannot answer meanwhile.
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
    // Written, not `println!`, which panics when the output is closed: the
    // exit status must be what the answer says.
    if asked.healthy {
        let _ = writeln!(std::io::stdout(), "{}", asked.line);
        ExitCode::SUCCESS
    } else {
        let _ = writeln!(std::io::stderr(), "{}", asked.line);
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
        // Not repeated: a URL that does not parse may still hold a
        // password, and the line goes to the container's health log.
        Err(e) => return Asked::failed(format!("the health-check URL is not a valid URL: {e}")),
    };
    // Without user info or query, which may hold credentials.
    let shown = upstream::shown(&uri);
    let client = upstream::unpooled(upstream::default_connector());
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
    let deadline = tokio::time::Instant::now() + timeout;
    let within = crate::snapshot::fmt_duration(timeout);
    let response = match tokio::time::timeout_at(deadline, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Asked::failed(format!("GET {shown} failed: {}", error_chain(&e))),
        Err(_) => return Asked::failed(format!("no answer from GET {shown} within {within}")),
    };
    // The status decides; the start of the body is enough to say why, and
    // a longer one is cut.
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut frames = response.into_body();
    let mut late = false;
    while body.len() <= SHOWN_BODY_BYTES {
        match tokio::time::timeout_at(deadline, frames.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            // A body that broke off still shows what arrived.
            Ok(Some(Err(_)) | None) => break,
            Err(_) => {
                late = true;
                break;
            }
        }
    }
    let mut line = status.to_string();
    let shown_body = one_line(&body);
    if !shown_body.is_empty() {
        line.push(' ');
        line.push_str(&shown_body);
    }
    if late {
        line.push_str(&format!(
            " (the rest of the body did not arrive within {within})"
        ));
    }
    Asked {
        healthy: (200..=399).contains(&status),
        line,
    }
}

/// The start of `body` as one line of text: at most [`SHOWN_BODY_BYTES`]
/// (cut on a character, `…` when cut), control characters (line breaks
/// of a `?verbose` body, escapes) as spaces, trailing space trimmed.
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(SHOWN_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut line: String = text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.truncate(line.trim_end().len());
    if end < text.len() {
        line.push('…');
    }
    line
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
        // The text form, on one line.
        let verbose = ask(&format!("http://{addr}/readyz?verbose"), second).await;
        assert_eq!(
            verbose,
            Asked {
                healthy: false,
                line: "503 [-]db failed: reason withheld readyz check failed".to_owned()
            }
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

        // Not repeated: it may hold a password.
        let bad = ask("http://admin:pa{ss@127.0.0.1/readyz", second).await;
        assert!(
            !bad.healthy
                && bad
                    .line
                    .starts_with("the health-check URL is not a valid URL"),
            "{bad:?}"
        );
        assert!(!bad.line.contains("pa{ss"), "{bad:?}");
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

    /// A body that stalls after the head: the status decides, and the line
    /// says the rest did not arrive.
    #[tokio::test]
    async fn a_stalled_body_is_judged_by_its_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut connection, _) = listener.accept().await.unwrap();
            // The request first, then a head and part of the body.
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                request.push(connection.read_u8().await.unwrap());
            }
            connection
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"status\":")
                .await
                .unwrap();
            std::future::pending::<()>().await;
        });
        let asked = ask(&format!("http://{addr}/readyz"), Duration::from_millis(300)).await;
        assert_eq!(
            asked,
            Asked {
                healthy: true,
                line: "200 {\"status\": (the rest of the body did not arrive within 300ms)"
                    .to_owned()
            }
        );
    }

    #[test]
    fn a_body_is_shown_on_one_line() {
        assert_eq!(
            one_line(b"[+]db ok\nreadyz check passed\n"),
            "[+]db ok readyz check passed"
        );
        assert_eq!(one_line(b"\x1b[31mred\x1b[0m"), " [31mred [0m");
        // Cut on a character, not inside one.
        let body = format!("{}é", "x".repeat(SHOWN_BODY_BYTES - 1));
        assert_eq!(
            one_line(body.as_bytes()),
            format!("{}…", "x".repeat(SHOWN_BODY_BYTES - 1))
        );
        assert_eq!(one_line(b""), "");
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
