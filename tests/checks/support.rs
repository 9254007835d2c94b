//! Shared helpers for the built-in checks' tests: real services or a skip,
//! an app served over TCP, a real HTTP client, a cuttable TCP proxy, a
//! private redis-server, and a recorder of check runs.
//!
//! Skipping: when a service is unreachable, [`unavailable`] prints why on
//! stderr and the test returns early, unless `CI` is set (to anything but
//! `false`/`0`), where it panics so the test fails.

#![allow(dead_code)]

use std::{
    fmt::Display,
    future::Future,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpSocket, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    task::{JoinHandle, JoinSet},
};
use tower_health::{Check, CheckOptions, CheckResult, HealthChecks, HealthHandle, Status};

/// The cap on every wait for a state change: it only guards against hangs.
pub const CAP: Duration = Duration::from_secs(20);
/// Interval and timeout of the checks in the outage tests.
pub const INTERVAL: Duration = Duration::from_millis(200);
pub const TIMEOUT: Duration = Duration::from_millis(500);

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A needed service is unreachable: fail under CI, otherwise say why and let
/// the caller return early.
#[track_caller]
pub fn unavailable(service: &str, why: impl Display) {
    if ci() {
        panic!("{service} is unreachable and CI is set, so this test fails: {why}");
    }
    // Straight to stderr, past the test harness's output capture, so the skip
    // shows in a normal `cargo test` run.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {service} is unreachable ({why}); start it or point the URL variable at it \
         (with CI=true this is a failure)"
    );
}

pub fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub fn database_url() -> String {
    env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
}

pub fn mysql_url() -> String {
    env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
}

pub fn redis_url() -> String {
    env_or("REDIS_URL", "redis://127.0.0.1:6379")
}

/// Runs `fut` with a time limit, for connection attempts in the helpers.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

/// The address a `host:port` resolves to first.
pub async fn resolve(host: &str, port: u16) -> SocketAddr {
    tokio::net::lookup_host((host, port))
        .await
        .unwrap_or_else(|e| panic!("cannot resolve {host}:{port}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{host}:{port} resolved to nothing"))
}

/// A check with its default-looking test options.
pub fn fast_options() -> CheckOptions {
    CheckOptions::new().interval(INTERVAL).timeout(TIMEOUT)
}

// ---------------------------------------------------------------------------
// Recording check runs

/// One run of a recorded check.
#[derive(Debug, Clone, Copy)]
pub struct RunRecord {
    pub started: Instant,
    /// When it ended; `None` while it runs.
    pub ended: Option<Instant>,
    /// Its status, or `None` if the runner cut it at its timeout.
    pub status: Option<Status>,
}

#[derive(Debug, Clone, Default)]
pub struct Runs(Arc<Mutex<Vec<RunRecord>>>);

impl Runs {
    pub fn snapshot(&self) -> Vec<RunRecord> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (capped) for the first run that started after `after` to end.
    pub async fn first_after(&self, after: Instant) -> RunRecord {
        let deadline = Instant::now() + CAP;
        loop {
            if let Some(run) = self
                .snapshot()
                .into_iter()
                .find(|r| r.started >= after && r.ended.is_some())
            {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "no check run ended within {CAP:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Wraps a check and records each run's start, end and status; a run the
/// runner drops at its timeout is recorded with status `None`.
pub struct Recorded<C> {
    inner: C,
    runs: Runs,
}

impl<C> Recorded<C> {
    pub fn new(inner: C, runs: &Runs) -> Self {
        Self {
            inner,
            runs: runs.clone(),
        }
    }
}

struct RunGuard {
    runs: Runs,
    index: usize,
    status: Option<Status>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut runs = self.runs.0.lock().unwrap();
        runs[self.index].ended = Some(Instant::now());
        runs[self.index].status = self.status;
    }
}

impl<C: Check> Check for Recorded<C> {
    async fn check(&self) -> CheckResult {
        let index = {
            let mut runs = self.runs.0.lock().unwrap();
            runs.push(RunRecord {
                started: Instant::now(),
                ended: None,
                status: None,
            });
            runs.len() - 1
        };
        let mut guard = RunGuard {
            runs: self.runs.clone(),
            index,
            status: None,
        };
        let result = self.inner.check().await;
        guard.status = Some(result.status());
        result
    }

    fn component_type(&self) -> &'static str {
        self.inner.component_type()
    }
}

/// Waits (capped) until at least `idle` connections of an sqlx pool are
/// idle: a connection goes back to the pool in a task of its own after it
/// is dropped.
pub async fn settle<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, idle: usize) {
    let start = Instant::now();
    while pool.num_idle() < idle {
        assert!(
            start.elapsed() < CAP,
            "the pool's connections never went back to it"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One run of `check` while the test holds every connection of its pool:
/// spawns the run, shows that it does not complete while no connection is
/// free (it queues for one, as any request would), then calls `release`
/// (which frees one connection) and returns the run's result, awaited under
/// the hang guard [`CAP`].
pub async fn run_while_saturated<C: Check + Clone>(
    check: &C,
    release: impl FnOnce(),
) -> CheckResult {
    let check = check.clone();
    let run = tokio::spawn(async move { check.check().await });
    // Long enough for the run to start and queue; whatever the machine's
    // speed, it cannot complete before a connection is released.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !run.is_finished(),
        "the check must wait for a connection while the pool is saturated, not answer at once"
    );
    release();
    within(CAP, run)
        .await
        .unwrap_or_else(|| {
            panic!("the check did not complete within {CAP:?} of a connection being released")
        })
        .expect("the check's task panicked")
}

// ---------------------------------------------------------------------------
// The application under test and a real HTTP client

/// An axum app with `health.layer()`, served on 127.0.0.1; aborted on drop.
pub struct App {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The header that unlocks check messages in the test apps.
pub const REVEAL: &str = "x-test-reveal";

pub async fn serve(health: &HealthHandle) -> App {
    let app = Router::new().route("/", get(|| async { "hello" })).layer(
        health
            .layer()
            .reveal_details_if(|req: &http::request::Parts| req.headers.contains_key(REVEAL)),
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the app");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve the app");
    });
    App {
        addr,
        task,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl App {
    /// `GET path` (with the reveal header if `reveal`): status and body.
    pub async fn get_with(&self, path: &str, reveal: bool, accept: Option<&str>) -> (u16, String) {
        let mut request = http::Request::get(format!("http://{}{path}", self.addr));
        if reveal {
            request = request.header(REVEAL, "1");
        }
        if let Some(accept) = accept {
            request = request.header(http::header::ACCEPT, accept);
        }
        let request = request.body(Empty::new()).unwrap();
        let response = within(Duration::from_secs(10), self.client.request(request))
            .await
            .unwrap_or_else(|| panic!("GET {path} took over 10s"))
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}"));
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("read body");
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_with(path, false, None).await
    }

    /// Detailed JSON of `/health`, with check messages revealed.
    pub async fn details(&self) -> serde_json::Value {
        let (_, body) = self.get_with("/health?detailed=true", true, None).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad JSON {body:?}: {e}"))
    }

    /// Polls `path` until it answers `status` (capped); returns how long it took.
    pub async fn wait_for(&self, path: &str, status: u16) -> Duration {
        let start = Instant::now();
        let mut last = (0, String::new());
        for _ in 0..2_000 {
            last = self.get(path).await;
            if last.0 == status {
                return start.elapsed();
            }
            if start.elapsed() > CAP {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{path} did not answer {status} within {CAP:?}; last answer {} {}; details: {}",
            last.0,
            last.1,
            self.details().await
        );
    }

    /// Polls the detailed JSON until `pred` holds (capped).
    pub async fn wait_details(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let details = self.details().await;
            if pred(&details) {
                return details;
            }
            assert!(
                start.elapsed() < CAP,
                "waited {CAP:?} for {what}; last details: {details}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The revealed details of `component`, once its `error` satisfies
    /// `pred` (capped wait).
    pub async fn wait_error(
        &self,
        component: &str,
        pred: impl Fn(&str) -> bool,
    ) -> serde_json::Value {
        let details = self
            .wait_details(component, |details| {
                details["components"][component]["error"]
                    .as_str()
                    .is_some_and(&pred)
            })
            .await;
        details["components"][component].clone()
    }

    /// Liveness and the application's own route answer.
    pub async fn assert_alive(&self) {
        assert_eq!(
            self.get("/livez").await.0,
            200,
            "liveness must not depend on a dependency"
        );
        assert_eq!(
            self.get("/").await,
            (200, "hello".to_owned()),
            "the app's route must answer"
        );
    }
}

/// One check, named `name`, with the outage-test options, behind a recorder;
/// served by a fresh app.
pub async fn app_with(name: &str, check: impl Check) -> (HealthHandle, App, Runs) {
    let runs = Runs::default();
    let health = HealthChecks::builder()
        .check_with(name, Recorded::new(check, &runs), fast_options())
        .build()
        .expect("build health checks");
    let app = serve(&health).await;
    (health, app, runs)
}

/// Takes a dependency away with `cut` and brings it back with `restore`,
/// checking: readiness 503 while it is away (and the first check run that
/// started after the cut failed), liveness and the app's own route 200
/// throughout, readiness 200 again once it is back. With `expect_timeout`,
/// the failing run must have been cut by the runner at the check's timeout
/// and the public reason must say "timed out"; without, the failure may be a
/// timeout (sqlx retries refused connections until its acquire_timeout) or
/// a reported error.
///
/// The outage then lasts until at least `hold_runs` check runs that started
/// after the cut have ended, with `/readyz` polled all along: every answer
/// must be 503 (a run that passes, even as `degraded`, would flip it to
/// 200). The hold is counted in check runs, not in wall-clock time.
/// Whether a database answers a fresh connection within 5 s; if not, says
/// so through [`unavailable`] (a skip outside CI, a failure in CI).
pub async fn reachable<O>(what: &str, options: &O) -> bool
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    match within(Duration::from_secs(5), options.connect()).await {
        Some(Ok(connection)) => {
            let _ = sqlx::Connection::close(connection).await;
            true
        }
        Some(Err(e)) => {
            unavailable(what, e);
            false
        }
        None => {
            unavailable(what, "no answer within 5s");
            false
        }
    }
}

/// The two outages of a dependency behind a [`Proxy`]: connections
/// refused, then a black hole (accepted, never answered), in which the check
/// must end at its timeout.
pub async fn refused_then_blackholed(
    app: &App,
    runs: &Runs,
    name: &str,
    kind: &str,
    proxy: &Proxy,
) {
    outage(
        app,
        runs,
        name,
        &format!("{kind} refused"),
        false,
        3,
        async || proxy.down().await,
        async || proxy.restore().await,
    )
    .await;
    outage(
        app,
        runs,
        name,
        &format!("{kind} blackhole"),
        true,
        3,
        async || proxy.blackhole().await,
        async || proxy.restore().await,
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
pub async fn outage<Cut, Restore>(
    app: &App,
    runs: &Runs,
    name: &str,
    label: &str,
    expect_timeout: bool,
    hold_runs: usize,
    cut: Cut,
    restore: Restore,
) where
    Cut: AsyncFnOnce(),
    Restore: AsyncFnOnce(),
{
    let took = app.wait_for("/readyz", 200).await;
    eprintln!("[{label}] ready after {took:?}");
    app.assert_alive().await;

    let cut_at = Instant::now();
    cut().await;
    let took = app.wait_for("/readyz", 503).await;
    eprintln!(
        "[{label}] readiness 503 {took:?} after the cut (interval {INTERVAL:?}, timeout {TIMEOUT:?})"
    );
    let first = runs.first_after(cut_at).await;
    eprintln!(
        "[{label}] first run after the cut: {:?} after the cut, status {:?}",
        first.ended.unwrap() - cut_at,
        first.status
    );
    assert!(
        !first.status.is_some_and(Status::is_passing),
        "the first run that started after the cut should fail, got {:?}",
        first.status
    );
    if expect_timeout {
        let details = app
            .wait_details("a timed-out reason", |d| {
                d["components"][name]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("timed out"))
            })
            .await;
        eprintln!(
            "[{label}] component while cut: {}",
            details["components"][name]
        );
        assert!(
            runs.snapshot()
                .iter()
                .any(|r| r.started >= cut_at && r.ended.is_some() && r.status.is_none()),
            "a run after the cut should have been cut at its timeout"
        );
    } else {
        let details = app
            .wait_details("an unhealthy component", |d| {
                d["components"][name]["status"] == "unhealthy"
            })
            .await;
        eprintln!(
            "[{label}] component while cut: {}",
            details["components"][name]
        );
        let component = &details["components"][name];
        assert!(
            component["reason"]
                .as_str()
                .is_some_and(|r| r.contains("timed out"))
                || component["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a failure is either a timeout or carries the check's (revealed) message: {details}"
        );
    }
    app.assert_alive().await;
    assert_eq!(
        app.get("/readyz").await.0,
        503,
        "readiness stays 503 while the dependency is away"
    );
    hold_503(app, runs, label, cut_at, hold_runs).await;

    let restore_at = Instant::now();
    let passed_while_cut: Vec<_> = runs
        .snapshot()
        .into_iter()
        .filter(|r| r.started >= cut_at && r.status.is_some_and(Status::is_passing))
        .collect();
    assert!(
        passed_while_cut.is_empty(),
        "no run may pass while the dependency is away: {passed_while_cut:?}"
    );
    restore().await;
    let took = app.wait_for("/readyz", 200).await;
    eprintln!("[{label}] readiness 200 again {took:?} after the restore");
    let first = runs.first_after(restore_at).await;
    eprintln!("[{label}] first run after the restore: {:?}", first.status);
    app.assert_alive().await;
}

/// Polls `/readyz` until at least `runs_wanted` check runs that started at
/// or after `since` have ended (capped by [`CAP`] per run), asserting that
/// every answer in between is 503.
pub async fn hold_503(app: &App, runs: &Runs, label: &str, since: Instant, runs_wanted: usize) {
    let ended = || {
        runs.snapshot()
            .iter()
            .filter(|r| r.started >= since && r.ended.is_some())
            .count()
    };
    let start = Instant::now();
    let mut polls = 0_u32;
    while ended() < runs_wanted {
        let (status, body) = app.get("/readyz").await;
        polls += 1;
        assert_eq!(
            status,
            503,
            "[{label}] readiness must stay 503 while the dependency is away (answer {polls}, \
             {} runs after the cut): {body}; details: {}",
            ended(),
            app.details().await
        );
        assert!(
            start.elapsed() < CAP * runs_wanted as u32,
            "[{label}] only {} of {runs_wanted} check runs ended after the cut",
            ended()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "[{label}] readiness 503 on all {polls} polls over {} check runs after the cut ({:?})",
        ended(),
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// A TCP proxy that can be cut

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Accept and never answer.
    Blackhole,
}

struct ProxyState {
    mode: Mode,
    conns: JoinSet<()>,
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`. [`down`](Self::down)
/// drops every connection and closes the port (new connections are
/// refused); [`blackhole`](Self::blackhole) drops every connection and
/// accepts new ones without ever answering; [`stall`](Self::stall) turns
/// every connection, open or new, into a black hole: open ones stay open
/// and swallow what they receive, as when a server hangs or a network
/// drops packets silently; [`restore`](Self::restore) forwards again on
/// the same port.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    /// Set by [`stall`](Self::stall): forwarding connections stop
    /// forwarding (and never close).
    stalled: Arc<AtomicBool>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            upstream,
            state: Arc::new(Mutex::new(ProxyState {
                mode: Mode::Forward,
                conns: JoinSet::new(),
            })),
            stalled: Arc::new(AtomicBool::new(false)),
            accept: Mutex::new(None),
        };
        proxy.spawn_accept(listener);
        proxy
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let state = self.state.clone();
        let stalled = self.stalled.clone();
        let upstream = self.upstream;
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut state = state.lock().unwrap();
                while state.conns.try_join_next().is_some() {}
                match state.mode {
                    Mode::Forward => {
                        let stalled = stalled.clone();
                        state.conns.spawn(async move {
                            if let Ok(server) = TcpStream::connect(upstream).await {
                                let (client_read, client_write) = client.into_split();
                                let (server_read, server_write) = server.into_split();
                                tokio::join!(
                                    pipe(client_read, server_write, &stalled),
                                    pipe(server_read, client_write, &stalled),
                                );
                            }
                        })
                    }
                    Mode::Blackhole => state.conns.spawn(async move {
                        let _held = client;
                        std::future::pending::<()>().await;
                    }),
                };
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    async fn drop_connections(&self, mode: Mode) {
        let mut conns = {
            let mut state = self.state.lock().unwrap();
            state.mode = mode;
            self.stalled.store(false, Ordering::SeqCst);
            std::mem::take(&mut state.conns)
        };
        conns.shutdown().await;
    }

    async fn ensure_listening(&self) {
        if self.accept.lock().unwrap().is_some() {
            return;
        }
        for _ in 0..100 {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            if socket.bind(self.addr).is_ok()
                && let Ok(listener) = socket.listen(1024)
            {
                self.spawn_accept(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not listen on {} again", self.addr);
    }

    /// Drops every connection and closes the port.
    pub async fn down(&self) {
        let task = self.accept.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.drop_connections(Mode::Forward).await;
    }

    /// Drops every connection; new ones are accepted and never answered.
    pub async fn blackhole(&self) {
        self.drop_connections(Mode::Blackhole).await;
        self.ensure_listening().await;
    }

    /// Keeps every open connection open but stops forwarding on it (what
    /// it receives is swallowed, nothing is ever answered); new connections
    /// are accepted and never answered.
    pub async fn stall(&self) {
        {
            let mut state = self.state.lock().unwrap();
            state.mode = Mode::Blackhole;
            self.stalled.store(true, Ordering::SeqCst);
        }
        self.ensure_listening().await;
    }

    /// Forwards again (dropping black-holed and stalled connections).
    pub async fn restore(&self) {
        self.drop_connections(Mode::Forward).await;
        self.ensure_listening().await;
    }
}

/// Copies bytes from `from` to `to` until either side closes; once
/// `stalled` is set, swallows what arrives and never returns, keeping both
/// sockets open.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, stalled: &AtomicBool) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.load(Ordering::SeqCst) {
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
        self.state.lock().unwrap().conns.abort_all();
    }
}

// ---------------------------------------------------------------------------
// A private redis-server

/// A free port on 127.0.0.1 (bound and released; fine for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child process on 127.0.0.1; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on `port`, or returns `None` (after [`unavailable`]) when
    /// the binary is missing.
    pub async fn start(port: u16) -> Option<RedisServer> {
        Self::start_with(port, &[]).await
    }

    /// As [`start`](Self::start), with more `redis-server` arguments.
    pub async fn start_with(port: u16, args: &[&str]) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                unavailable("redis-server binary", e);
                return None;
            }
        };
        let server = RedisServer {
            port,
            child: Some(child),
        };
        server.wait_ready().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let start = Instant::now();
        while start.elapsed() < CAP {
            if let Some(Ok(mut conn)) = within(
                Duration::from_secs(2),
                client.get_multiplexed_async_connection(),
            )
            .await
            {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "redis-server on port {} did not answer within {CAP:?}",
            self.port
        );
    }

    /// Kills the process and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
