//! HTTP benchmarks of `HealthLayer` over loopback, driven by `wrk`.
//!
//! ```text
//! bash benches/run.sh          # the documented way: builds, runs everything
//! cargo bench --bench http     # this part alone
//! ```
//!
//! One binary, four roles:
//!
//! - no arguments (or cargo's `--bench`): the orchestrator. It starts the
//!   servers below (this same executable, pinned to one core with
//!   `taskset`), drives them with `wrk` pinned to another core, reads the
//!   servers' CPU time and RSS from `/proc`, and writes a Markdown report.
//! - `serve MODE`: one server on `127.0.0.1:0` (the port is printed).
//! - `proxy HOST:PORT`: a TCP proxy to PostgreSQL that turns into a black
//!   hole (accepts, never answers) when told so on stdin.
//! - `load ADDR PATH N`: N sequential requests on one connection (used by
//!   `benches/instructions.sh` to count a server's instructions per request).
//!
//! Servers and the proxy are controlled over stdin (`stats`, `blackhole`)
//! and exit when stdin closes, so they cannot outlive the orchestrator.
//!
//! | mode | server |
//! |---|---|
//! | `hello` (A) | hyper hello-world (holding an idle pool of 2, like B's) |
//! | `health` (B) | the same behind `HealthLayer`, a PostgreSQL check every 5 s |
//! | `pg` (C) | hand-written `/readyz`: `SELECT 1` per request on a pool of 8 connections, 2 s timeout |
//! | `axum` (D0) | an axum app, `GET /api/items/{id}` answers JSON; it holds an idle pool of 2, like D1's |
//! | `axum-health` (D1) | the same app behind `HealthLayer` (`wrap_axum`), a PostgreSQL check every 5 s |
//! | `axum-router-layer` (D2) | the same with `Router::layer(health.layer())` |
//! | `axum-health-no-header` (D3) | D1 with `without_process_time_header()`: what the header costs |
//! | `axum-no-pool` | D0 without the pool (for `benches/instructions.sh`) |
//!
//! Settings (environment): `BENCH_ROUNDS` (16; an even number, so that every
//! round is balanced by a reversed one), `BENCH_SECS` per round (2),
//! `BENCH_CONNECTIONS` (32), `BENCH_STORM_SECS` (30), `BENCH_C_STORM_SECS`
//! (10), `BENCH_PROBES` for the memory test (1000000), `BENCH_OUTAGE_SECS`
//! per outage window of B and of its control A (2), `BENCH_OUTAGE_PAIRS`
//! (4, per connection count), `BENCH_C_OUTAGE_SECS` (8), `BENCH_SERVER_CPU`
//! (0), `BENCH_CLIENT_CPU` (1), `DATABASE_URL`
//! (`postgres://postgres@127.0.0.1:5432/test`), `BENCH_REPORT` (report
//! path, default `target/bench-report/http.md`), `BENCH_ONLY` (a comma
//! list of `rounds`, `storm`, `memory`, `outage`: run only those parts),
//! `BENCH_CHECK_SECS` (the servers' check interval, 5).
//!
//! Nothing here asserts a timing: the figures are reported, never gated.

use std::{
    convert::Infallible,
    error::Error,
    fmt::Write as _,
    io::{self, BufRead, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

mod stats;

use axum::{Json, Router, extract::Path as UrlPath, routing::get, serve::ListenerExt};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpListener,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};
use tower::{Layer as _, Service, service_fn};
use tower_health::{Check as _, CheckOptions, HealthChecks, HealthHandle, checks::sqlx::SqlxCheck};

use stats::{median, met};

type BoxError = Box<dyn Error + Send + Sync>;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The interval of the PostgreSQL check behind the layer.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The hand-written handler's timeout, equal to the layer's default check
/// timeout.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(2);
/// Pool size of the hand-written handler (C).
const POOL_SIZE: u32 = 8;

/// Queries this server process has sent to PostgreSQL (checks and
/// handlers alike), reported on `stats`.
static QUERIES: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(args.get(1).map(String::as_str).unwrap_or("")),
        Some("proxy") => proxy(args.get(1).map(String::as_str).unwrap_or("")),
        Some("load") => load(&args[1..]),
        _ => orchestrate(),
    };
    if let Err(error) = result {
        eprintln!("benches/http: {error}");
        std::process::exit(1);
    }
}

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Hello,
    Health,
    Pg,
    Axum,
    AxumHealth,
    AxumRouterLayer,
    AxumHealthNoHeader,
    /// D0 without the idle pool: only for `benches/instructions.sh`.
    AxumNoPool,
}

impl Mode {
    const ALL: [Mode; 8] = [
        Mode::Hello,
        Mode::Health,
        Mode::Pg,
        Mode::Axum,
        Mode::AxumHealth,
        Mode::AxumRouterLayer,
        Mode::AxumHealthNoHeader,
        Mode::AxumNoPool,
    ];

    /// The servers of the interleaved rounds, in this order: all but the
    /// last, `AxumNoPool`.
    const ROUNDS: &[Mode] = Self::ALL.split_at(Self::ALL.len() - 1).0;

    fn arg(self) -> &'static str {
        match self {
            Mode::Hello => "hello",
            Mode::Health => "health",
            Mode::Pg => "pg",
            Mode::Axum => "axum",
            Mode::AxumHealth => "axum-health",
            Mode::AxumRouterLayer => "axum-router-layer",
            Mode::AxumHealthNoHeader => "axum-health-no-header",
            Mode::AxumNoPool => "axum-no-pool",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Hello => "A  hyper hello-world",
            Mode::Health => "B  HealthLayer /readyz (cached)",
            Mode::Pg => "C  SELECT 1 per request (pool of 8)",
            Mode::Axum => "D0 axum route, no layer",
            Mode::AxumHealth => "D1 axum route, `health.layer().wrap_axum(router)`",
            Mode::AxumRouterLayer => "D2 axum route, `router.layer(health.layer())`",
            Mode::AxumHealthNoHeader => "D3 axum route, `wrap_axum`, no timing header",
            Mode::AxumNoPool => "D0 without its idle pool",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Mode::Hello => "A",
            Mode::Health => "B",
            Mode::Pg => "C",
            Mode::Axum => "D0",
            Mode::AxumHealth => "D1",
            Mode::AxumRouterLayer => "D2",
            Mode::AxumHealthNoHeader => "D3",
            Mode::AxumNoPool => "D0'",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Mode::Hello | Mode::Health | Mode::Pg => "/readyz",
            Mode::Axum
            | Mode::AxumHealth
            | Mode::AxumRouterLayer
            | Mode::AxumHealthNoHeader
            | Mode::AxumNoPool => "/api/items/42",
        }
    }

    /// Whether its responses carry `x-process-time-ms` (the layer is in
    /// front with the header on).
    fn has_timing_header(self) -> bool {
        matches!(
            self,
            Mode::Health | Mode::AxumHealth | Mode::AxumRouterLayer
        )
    }

    fn parse(arg: &str) -> Result<Self, BoxError> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.arg() == arg)
            .ok_or_else(|| format!("unknown server mode {arg:?}").into())
    }
}

fn serve(mode: &str) -> Result<(), BoxError> {
    let mode = Mode::parse(mode)?;
    let url = database_url();
    control_from_stdin(None);
    // One thread does everything: the server is pinned to one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        match mode {
            Mode::Hello => {
                // The app's own pool, idle: B's check uses one like it.
                let _pool = pg_pool(&url, 2).await?;
                announce(addr);
                serve_hyper(listener, service_fn(hello)).await
            }
            Mode::Health => {
                let health = health_checks(&url).await?;
                announce(addr);
                serve_hyper(listener, health.layer().layer(service_fn(hello))).await
            }
            Mode::Pg => {
                let pool = pg_pool(&url, POOL_SIZE).await?;
                announce(addr);
                let service = service_fn(move |_request: Request<Incoming>| {
                    hand_written_readyz(pool.clone())
                });
                serve_hyper(listener, service).await
            }
            Mode::Axum | Mode::AxumNoPool => {
                // The app's own pool, idle: D1's check uses one like it.
                // `axum-no-pool` leaves it out (see instructions.sh).
                let _pool = match mode {
                    Mode::Axum => Some(pg_pool(&url, 2).await?),
                    _ => None,
                };
                announce(addr);
                axum::serve(nodelay(listener), app()).await?;
                Ok(())
            }
            Mode::AxumHealth => {
                let health = health_checks(&url).await?;
                announce(addr);
                // The README's way: the layer in front of the whole router.
                axum::serve(nodelay(listener), health.layer().wrap_axum(app())).await?;
                Ok(())
            }
            Mode::AxumRouterLayer => {
                let health = health_checks(&url).await?;
                announce(addr);
                // The other way the README shows: axum wraps each route.
                axum::serve(nodelay(listener), app().layer(health.layer())).await?;
                Ok(())
            }
            Mode::AxumHealthNoHeader => {
                let health = health_checks(&url).await?;
                announce(addr);
                // D1 without `x-process-time-ms`: the layer's cost apart from
                // the header.
                let layer = health.layer().without_process_time_header();
                axum::serve(nodelay(listener), layer.wrap_axum(app())).await?;
                Ok(())
            }
        }
    })
}

/// The listener with `TCP_NODELAY` on every accepted connection, as
/// `serve_hyper` sets it for the hyper servers.
fn nodelay(
    listener: TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

fn announce(addr: SocketAddr) {
    println!("listening {addr}");
}

/// Reads commands from stdin; exits the process when stdin closes.
fn control_from_stdin(blackhole: Option<Arc<AtomicBool>>) {
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match line.trim() {
                "stats" => println!("stats queries={}", QUERIES.load(Ordering::Relaxed)),
                "blackhole" => {
                    if let Some(flag) = &blackhole {
                        flag.store(true, Ordering::SeqCst);
                    }
                    println!("blackhole on");
                }
                _ => {}
            }
        }
        std::process::exit(0);
    });
}

async fn serve_hyper<S, B>(listener: TcpListener, service: S) -> Result<(), BoxError>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// The usual hand-written readiness handler: a query per request, cut at a
/// timeout.
async fn hand_written_readyz(pool: PgPool) -> Result<Response<Full<Bytes>>, Infallible> {
    QUERIES.fetch_add(1, Ordering::Relaxed);
    let query = sqlx::query("SELECT 1").execute(&pool);
    let ok = matches!(
        tokio::time::timeout(HANDLER_TIMEOUT, query).await,
        Ok(Ok(_))
    );
    let (status, body): (StatusCode, &'static [u8]) = if ok {
        (StatusCode::OK, br#"{"status":"healthy"}"#)
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"status":"unhealthy"}"#,
        )
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

async fn pg_pool(url: &str, size: u32) -> Result<PgPool, BoxError> {
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        // No extra round trip per acquire: the fastest ordinary setting.
        .test_before_acquire(false)
        .connect(url)
        .await?;
    Ok(pool)
}

/// `CHECK_INTERVAL`, or `BENCH_CHECK_SECS` (`benches/instructions.sh` sets
/// an hour, so no check runs inside its counting window).
fn check_interval() -> Result<Duration, BoxError> {
    Ok(Duration::from_secs(env_or(
        "BENCH_CHECK_SECS",
        CHECK_INTERVAL.as_secs(),
    )?))
}

/// `HealthLayer`'s checks for B and D1: the crate's built-in sqlx check
/// (`SELECT 1` on the pool) every 5 s, default 2 s timeout, counted.
async fn health_checks(url: &str) -> Result<HealthHandle, BoxError> {
    let check = SqlxCheck::new(pg_pool(url, 2).await?);
    let health = HealthChecks::builder()
        .check_with(
            "postgres",
            move || {
                let check = check.clone();
                async move {
                    QUERIES.fetch_add(1, Ordering::Relaxed);
                    check.check().await
                }
            },
            CheckOptions::new().interval(check_interval()?),
        )
        .build()?;
    Ok(health)
}

#[derive(serde::Serialize)]
struct Item {
    id: u64,
    name: &'static str,
    in_stock: bool,
}

fn app() -> Router {
    Router::new().route(
        "/api/items/{id}",
        get(|UrlPath(id): UrlPath<u64>| async move {
            Json(Item {
                id,
                name: "widget",
                in_stock: true,
            })
        }),
    )
}

// ---------------------------------------------------------------------------
// Black-hole proxy
// ---------------------------------------------------------------------------

fn proxy(upstream: &str) -> Result<(), BoxError> {
    let upstream: SocketAddr = upstream.parse()?;
    let blackhole = Arc::new(AtomicBool::new(false));
    control_from_stdin(Some(blackhole.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?);
        loop {
            let (client, _) = listener.accept().await?;
            let blackhole = blackhole.clone();
            tokio::spawn(async move {
                if blackhole.load(Ordering::SeqCst) {
                    // Accept, never answer; keep the socket open.
                    std::future::pending::<()>().await;
                    drop(client);
                    return;
                }
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    pipe(
                        client_read,
                        server_write,
                        &blackhole,
                        Some(Frontend::default())
                    ),
                    pipe(server_read, client_write, &blackhole, None)
                );
            });
        }
    })
}

/// Copies bytes until the black hole opens; then swallows them and never
/// returns, keeping both sockets open. Client-to-server bytes go through a
/// protocol reader that counts the queries PostgreSQL receives.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    blackhole: &AtomicBool,
    mut frontend: Option<Frontend>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if blackhole.load(Ordering::SeqCst) {
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if let Some(frontend) = &mut frontend {
            frontend.feed(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Reads the frontend side of the PostgreSQL wire protocol (v3) and counts
/// the statements sent for execution: simple `Query` ('Q') and extended
/// `Execute` ('E') messages. Counted in [`QUERIES`] of the proxy process.
#[derive(Debug)]
struct Frontend {
    /// Still in the untyped start-up phase (SSLRequest, StartupMessage).
    startup: bool,
    /// Bytes of the current message body left to skip.
    skip: usize,
    head: Vec<u8>,
    /// Not plain protocol (TLS, say): stop reading.
    lost: bool,
}

impl Default for Frontend {
    fn default() -> Self {
        Self {
            startup: true,
            skip: 0,
            head: Vec::with_capacity(8),
            lost: false,
        }
    }
}

impl Frontend {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let need = if self.startup { 8 } else { 5 };
            let take = (need - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() < need {
                break;
            }
            let word = |at: usize| {
                u32::from_be_bytes([
                    self.head[at],
                    self.head[at + 1],
                    self.head[at + 2],
                    self.head[at + 3],
                ]) as usize
            };
            if self.startup {
                let (len, code) = (word(0), word(4));
                // SSLRequest and GSSENCRequest come before the StartupMessage.
                if code != 80_877_103 && code != 80_877_104 {
                    self.startup = false;
                }
                self.lost = !(8..1 << 20).contains(&len);
                self.skip = len.saturating_sub(8);
            } else {
                let (kind, len) = (self.head[0], word(1));
                if kind == b'Q' || kind == b'E' {
                    QUERIES.fetch_add(1, Ordering::Relaxed);
                }
                self.lost = !(4..1 << 30).contains(&len);
                self.skip = len.saturating_sub(4);
            }
            self.head.clear();
        }
    }
}

// ---------------------------------------------------------------------------
// Orchestrator
// ---------------------------------------------------------------------------

struct Settings {
    rounds: usize,
    secs: u64,
    connections: u32,
    storm_secs: u64,
    c_storm_secs: u64,
    probes: u64,
    outage_secs: u64,
    outage_pairs: usize,
    c_outage_secs: u64,
    only: Vec<String>,
    server_cpu: usize,
    client_cpu: usize,
    url: String,
    report: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a valid value").into()),
        Err(_) => Ok(default),
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

impl Settings {
    fn from_env() -> Result<Self, BoxError> {
        let settings = Self {
            rounds: env_or("BENCH_ROUNDS", 16)?,
            secs: env_or("BENCH_SECS", 2)?,
            connections: env_or("BENCH_CONNECTIONS", 32)?,
            storm_secs: env_or("BENCH_STORM_SECS", 30)?,
            c_storm_secs: env_or("BENCH_C_STORM_SECS", 10)?,
            probes: env_or("BENCH_PROBES", 1_000_000)?,
            outage_secs: env_or("BENCH_OUTAGE_SECS", 2)?,
            outage_pairs: env_or("BENCH_OUTAGE_PAIRS", 4)?,
            c_outage_secs: env_or("BENCH_C_OUTAGE_SECS", 8)?,
            only: std::env::var("BENCH_ONLY")
                .unwrap_or_default()
                .split(',')
                .map(|part| part.trim().to_owned())
                .filter(|part| !part.is_empty())
                .collect(),
            server_cpu: env_or("BENCH_SERVER_CPU", 0)?,
            client_cpu: env_or("BENCH_CLIENT_CPU", 1)?,
            url: database_url(),
            report: std::env::var_os("BENCH_REPORT")
                .map(PathBuf::from)
                .unwrap_or_else(|| target_dir().join("bench-report").join("http.md")),
        };
        if let Some(unknown) = settings
            .only
            .iter()
            .find(|part| !["rounds", "storm", "memory", "outage"].contains(&part.as_str()))
        {
            return Err(format!(
                "BENCH_ONLY: unknown part {unknown:?} (use rounds, storm, memory, outage)"
            )
            .into());
        }
        if settings.rounds == 0 || settings.secs == 0 || settings.connections == 0 {
            return Err("BENCH_ROUNDS, BENCH_SECS and BENCH_CONNECTIONS must be at least 1".into());
        }
        if settings.rounds % 2 == 1 && settings.rounds > 1 {
            eprintln!(
                "note: BENCH_ROUNDS={} is odd: its last round has no reversed twin, so the \
                 order of the arms within a round is not balanced",
                settings.rounds
            );
        }
        Ok(settings)
    }

    /// Whether `part` of the suite runs (`BENCH_ONLY`, default all).
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| only == part)
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn orchestrate() -> Result<(), BoxError> {
    let settings = Settings::from_env()?;
    if !have("wrk") {
        println!("benches/http: skipped, `wrk` is not installed (bash benches/run.sh installs it)");
        return Ok(());
    }
    if !have("taskset") {
        println!("benches/http: skipped, `taskset` (util-linux) is not installed");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut db = match runtime.block_on(PgConnection::connect(&settings.url)) {
        Ok(db) => Db { runtime, conn: db },
        Err(error) => {
            println!("benches/http: skipped, PostgreSQL at DATABASE_URL is not reachable: {error}");
            return Ok(());
        }
    };
    let bench = Bench::new(settings)?;
    let started = Instant::now();
    let mut report = String::new();
    criterion_section(&mut report);
    bench.machine(&mut report, &mut db)?;
    if bench.settings.runs("rounds") {
        bench.rounds(&mut report)?;
    }
    if bench.settings.runs("storm") {
        bench.storm(&mut report, &mut db)?;
    }
    if bench.settings.runs("memory") {
        bench.memory(&mut report)?;
    }
    if bench.settings.runs("outage") {
        bench.outage(&mut report)?;
    }
    let _ = writeln!(
        report,
        "\nHTTP suite wall time: {:.0} s; load average at the end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    println!("{report}");
    if let Some(dir) = bench.settings.report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&bench.settings.report, &report)?;
    println!("report written to {}", bench.settings.report.display());
    Ok(())
}

struct Db {
    runtime: tokio::runtime::Runtime,
    conn: PgConnection,
}

impl Db {
    fn scalar_i64(&mut self, sql: &str) -> Result<i64, BoxError> {
        let conn = &mut self.conn;
        let value: i64 = self
            .runtime
            .block_on(sqlx::query_scalar(sql).fetch_one(conn))?;
        Ok(value)
    }

    fn scalar_string(&mut self, sql: &str) -> Result<String, BoxError> {
        let conn = &mut self.conn;
        let value: String = self
            .runtime
            .block_on(sqlx::query_scalar(sql).fetch_one(conn))?;
        Ok(value)
    }

    /// Transactions committed or rolled back in this database, as
    /// PostgreSQL's statistics report them (every `SELECT 1` outside a
    /// transaction block is one).
    fn transactions(&mut self) -> Result<i64, BoxError> {
        self.scalar_i64(
            "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
             WHERE datname = current_database()",
        )
    }
}

/// One server (or proxy) process, pinned, controlled over stdin.
struct Server {
    mode: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl Server {
    fn start(cpu: usize, args: &[&str], url: &str, name: &'static str) -> Result<Self, BoxError> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(exe)
            .args(args)
            .env("DATABASE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            mode: name,
            child,
            stdin,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = server.expect_line("listening ", Duration::from_secs(30))?;
        server.addr = line.parse()?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                }
                Err(_) => {
                    return Err(format!(
                        "{}: no {prefix:?} line within {timeout:?} (did it fail to start?)",
                        self.mode
                    )
                    .into());
                }
            }
        }
    }

    fn command(&mut self, command: &str) -> Result<(), BoxError> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        Ok(())
    }

    fn queries(&mut self) -> Result<u64, BoxError> {
        self.command("stats")?;
        let line = self.expect_line("stats queries=", Duration::from_secs(5))?;
        Ok(line.parse()?)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Until `path` answers 200 (the layer's first check has run).
    fn wait_ok(&self, path: &str) -> Result<(), BoxError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((status, _)) = http_get(self.addr, path)
                && status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{}: {path} did not answer 200 within 30 s", self.mode).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin makes the process exit; kill it if it does not.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`: status and raw headers.
/// `load ADDR PATH N`: N GET requests, one after the other on one
/// keep-alive connection, each answer read in full. For counting a server's
/// instructions per request under callgrind (`benches/instructions.sh`).
fn load(args: &[String]) -> Result<(), BoxError> {
    let [addr, path, count] = args else {
        return Err("usage: load ADDR PATH N".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let count: u64 = count.parse()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..count {
        stream.write_all(request.as_bytes())?;
        buf.clear();
        // Read the head, then as much body as `content-length` says.
        let (head_len, body_len) = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end])?;
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .ok_or("an answer without content-length")?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .ok_or("not an HTTP answer")?;
                *statuses.entry(status).or_insert(0u64) += 1;
                break (end + 4, length);
            }
        };
        while buf.len() < head_len + body_len {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    println!("load statuses {statuses:?}");
    if statuses.keys().any(|status| !(200..300).contains(status)) {
        return Err(format!("answers other than 2xx: {statuses:?}").into());
    }
    Ok(())
}

fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let head = response.split("\r\n\r\n").next().unwrap_or("").to_owned();
    Ok((status, head))
}

/// One `wrk` run's summary, from the Lua `done` hook.
#[derive(Debug, Clone, Copy, Default)]
struct Wrk {
    requests: u64,
    duration_us: u64,
    non_2xx: u64,
    socket_errors: u64,
    timeouts: u64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl Wrk {
    fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }
}

const WRK_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d non2xx=%d socket=%d timeouts=%d p50=%.1f p99=%.1f max=%.1f\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

/// Each connection waits 1 ms after every answer before it sends the next
/// request: a steady stream of probers that leaves the server idle most of
/// the time, so latency is the answer's, not the queue's.
const WRK_PACED_LUA: &str = r#"
delay = function()
  return 1
end
"#;

/// A round's measurement: the client's view and the server's CPU.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wrk: Wrk,
    cpu_us: f64,
}

impl Sample {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_us / self.wrk.requests.max(1) as f64
    }
}

struct Bench {
    settings: Settings,
    lua: PathBuf,
    lua_paced: PathBuf,
    clk_tck: f64,
}

impl Bench {
    fn new(settings: Settings) -> Result<Self, BoxError> {
        let dir = target_dir().join("bench-report");
        std::fs::create_dir_all(&dir)?;
        let lua = dir.join("wrk_report.lua");
        std::fs::write(&lua, WRK_LUA)?;
        let lua_paced = dir.join("wrk_report_paced.lua");
        std::fs::write(&lua_paced, format!("{WRK_LUA}{WRK_PACED_LUA}"))?;
        let clk_tck = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0);
        Ok(Self {
            settings,
            lua,
            lua_paced,
            clk_tck,
        })
    }

    fn start(&self, mode: Mode, url: &str) -> Result<Server, BoxError> {
        let server = Server::start(
            self.settings.server_cpu,
            &["serve", mode.arg()],
            url,
            mode.short(),
        )?;
        server.wait_ok(mode.path())?;
        Ok(server)
    }

    /// Runs wrk against `url` for `secs`, pinned to the client core, as
    /// fast as it can.
    fn wrk(&self, url: &str, secs: u64, connections: u32) -> Result<Wrk, BoxError> {
        self.run_wrk(&self.lua, url, secs, connections)
    }

    /// As [`wrk`](Self::wrk), each connection pausing 1 ms between requests.
    fn wrk_paced(&self, url: &str, secs: u64, connections: u32) -> Result<Wrk, BoxError> {
        self.run_wrk(&self.lua_paced, url, secs, connections)
    }

    fn run_wrk(
        &self,
        script: &Path,
        url: &str,
        secs: u64,
        connections: u32,
    ) -> Result<Wrk, BoxError> {
        let output = Command::new("taskset")
            .arg("-c")
            .arg(self.settings.client_cpu.to_string())
            .arg("wrk")
            .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
            .args(["--timeout", "10s", "-s"])
            .arg(script)
            .arg(url)
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("WRK "))
            .ok_or_else(|| {
                format!(
                    "wrk gave no summary for {url}: {stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
        let mut wrk = Wrk::default();
        for field in line.split_whitespace() {
            let (key, value) = field.split_once('=').ok_or("bad wrk summary")?;
            match key {
                "requests" => wrk.requests = value.parse()?,
                "duration_us" => wrk.duration_us = value.parse()?,
                "non2xx" => wrk.non_2xx = value.parse()?,
                "socket" => wrk.socket_errors = value.parse()?,
                "timeouts" => wrk.timeouts = value.parse()?,
                "p50" => wrk.p50_us = value.parse()?,
                "p99" => wrk.p99_us = value.parse()?,
                "max" => wrk.max_us = value.parse()?,
                _ => {}
            }
        }
        Ok(wrk)
    }

    /// Server CPU time (user + system, all threads) in microseconds.
    fn cpu_us(&self, pid: u32) -> Result<f64, BoxError> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').ok_or("bad /proc/PID/stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Fields 14 and 15 of stat(5); `rest` starts at field 3.
        let utime: f64 = fields.get(11).ok_or("no utime")?.parse()?;
        let stime: f64 = fields.get(12).ok_or("no stime")?.parse()?;
        Ok((utime + stime) * 1e6 / self.clk_tck)
    }

    fn measure(&self, server: &Server, secs: u64, connections: u32) -> Result<Sample, BoxError> {
        let before = self.cpu_us(server.pid())?;
        let wrk = self.wrk(&server.url(server_path(server)), secs, connections)?;
        let after = self.cpu_us(server.pid())?;
        Ok(Sample {
            wrk,
            cpu_us: after - before,
        })
    }

    fn machine(&self, report: &mut String, db: &mut Db) -> Result<(), BoxError> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
            })
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or("unknown".into(), |kb| {
                format!("{:.1} GiB", kb / 1024.0 / 1024.0)
            });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let wrk_version = Command::new("wrk")
            .arg("-v")
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default();
        let pg = db
            .scalar_string("SELECT split_part(version(), ' on ', 1)")
            .unwrap_or_default();
        let s = &self.settings;
        let _ = writeln!(report, "## HTTP suite\n");
        let _ = writeln!(
            report,
            "- machine: {cpu}, {cores} cores, {mem}, Linux {kernel}; {pg}; {wrk_version}"
        );
        let _ = writeln!(
            report,
            "- servers pinned to CPU {} (one current-thread Tokio runtime each), wrk pinned to CPU {} \
             (`wrk -t1 -c{} --timeout 10s`); PostgreSQL not pinned",
            s.server_cpu, s.client_cpu, s.connections
        );
        let _ = writeln!(
            report,
            "- {} interleaved rounds of {} s per server (A B C D0 D1 D2 D3, the D servers \
             rotated every other round and every other round's order reversed); load average at \
             the start: {}",
            s.rounds,
            s.secs,
            loadavg()
        );
        Ok(())
    }

    fn rounds(&self, report: &mut String) -> Result<(), BoxError> {
        let s = &self.settings;
        let mut servers = Vec::new();
        for &mode in Mode::ROUNDS {
            servers.push((mode, self.start(mode, &s.url)?));
        }
        // What each server answers, checked once.
        let mut sanity = String::new();
        for (mode, server) in &servers {
            let (status, head) = http_get(server.addr, mode.path())?;
            let header = head.to_ascii_lowercase().contains("x-process-time-ms:");
            if status != 200 || header != mode.has_timing_header() {
                return Err(format!(
                    "{}: GET {} answered {status}, x-process-time-ms present: {header}",
                    mode.short(),
                    mode.path()
                )
                .into());
            }
            let _ = write!(sanity, "{} `{}` {status}; ", mode.short(), mode.path());
        }
        // Warm-up: connections, pools, allocator.
        for (_, server) in &servers {
            self.measure(server, 1, s.connections)?;
        }
        let mut queries_before = Vec::new();
        for (_, server) in &mut servers {
            queries_before.push(server.queries()?);
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
        for round in 0..s.rounds {
            // A B C, then D0 D1 D2 D3 rotated by one place every other
            // round, and every other round the whole order reversed: with
            // an even number of rounds each arm runs as often before its
            // baseline as after it, so a
            // position effect within a round (the host warming or cooling
            // over its 14 s) does not favour either side of a ratio.
            let mut order: Vec<usize> = (0..servers.len()).collect();
            order[3..].rotate_left(round / 2 % (servers.len() - 3));
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                let sample = self.measure(&servers[index].1, s.secs, s.connections)?;
                eprintln!(
                    "round {} {:<3} {:>9.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  cpu {:>6.2} us/req  non-2xx {}",
                    round + 1,
                    servers[index].0.short(),
                    sample.wrk.rps(),
                    sample.wrk.p50_us,
                    sample.wrk.p99_us,
                    sample.cpu_us_per_request(),
                    sample.wrk.non_2xx
                );
                samples[index].push(sample);
            }
        }
        let mut queries = Vec::new();
        for ((_, server), before) in servers.iter_mut().zip(&queries_before) {
            queries.push(server.queries()? - before);
        }
        drop(servers);

        let _ = writeln!(report, "- sanity: {sanity}\n");
        let _ = writeln!(
            report,
            "### Throughput, latency and server CPU (medians over rounds)\n"
        );
        let _ = writeln!(
            report,
            "| server | path | req/s | p50 | p99 | server CPU per request | errors / non-2xx | PostgreSQL queries sent |"
        );
        let _ = writeln!(report, "|---|---|---:|---:|---:|---:|---:|---:|");
        let total_requests: Vec<u64> = samples
            .iter()
            .map(|v| v.iter().map(|x| x.wrk.requests).sum())
            .collect();
        for (i, &mode) in Mode::ROUNDS.iter().enumerate() {
            let v = &samples[i];
            let errors: u64 = v.iter().map(|x| x.wrk.socket_errors + x.wrk.timeouts).sum();
            let non_2xx: u64 = v.iter().map(|x| x.wrk.non_2xx).sum();
            let _ = writeln!(
                report,
                "| {} | `{}` | {:.0} | {} | {} | {:.2} µs | {errors} / {non_2xx} | {} for {} requests |",
                mode.label(),
                mode.path(),
                median(v.iter().map(|x| x.wrk.rps())),
                micros(median(v.iter().map(|x| x.wrk.p50_us))),
                micros(median(v.iter().map(|x| x.wrk.p99_us))),
                median(v.iter().map(Sample::cpu_us_per_request)),
                queries[i],
                total_requests[i],
            );
        }
        // Each round's ratio of server `x` to server `y` in measure `f`.
        let per_round = |x: usize, y: usize, f: &dyn Fn(&Sample) -> f64| -> Vec<f64> {
            samples[x]
                .iter()
                .zip(&samples[y])
                .map(|(x, y)| f(x) / f(y))
                .collect()
        };
        let ratio =
            |x: usize, y: usize, f: &dyn Fn(&Sample) -> f64| median(per_round(x, y, f).into_iter());
        let rps = |x: &Sample| x.wrk.rps();
        let cpu = |x: &Sample| x.cpu_us_per_request();
        let p99 = |x: &Sample| x.wrk.p99_us;
        let (a, b, c, d0, d1, d2, d3) = (0, 1, 2, 3, 4, 5, 6);
        let _ = writeln!(report, "\n### Ratios (median of per-round ratios)\n");
        let _ = writeln!(
            report,
            "| comparison | throughput | server CPU per request | p99 latency | goal |"
        );
        let _ = writeln!(report, "|---|---:|---:|---:|---|");
        // (comparison, x, y, goal text, least throughput ratio, most CPU ratio)
        let goals = [
            (
                "B / A (cached `/readyz` vs hello-world)",
                b,
                a,
                "throughput ≥ 0.95, CPU ≤ 1.05",
                0.95,
                1.05,
            ),
            (
                "D1 / D0 (axum route with / without layer)",
                d1,
                d0,
                "throughput ≥ 0.98, CPU ≤ 1/0.98 = 1.020",
                0.98,
                1.0 / 0.98,
            ),
            (
                "D2 / D0 (same, `Router::layer`)",
                d2,
                d0,
                "same goal",
                0.98,
                1.0 / 0.98,
            ),
            (
                "D3 / D0 (`wrap_axum`, timing header off)",
                d3,
                d0,
                "not a goal (shows the header's share)",
                0.98,
                1.0 / 0.98,
            ),
        ];
        for (comparison, x, y, goal, least_rps, most_cpu) in goals {
            let _ = writeln!(
                report,
                "| {comparison} | {:.3} | {:.3} | {:.3} | {goal}: {} |",
                ratio(x, y, &rps),
                ratio(x, y, &cpu),
                ratio(x, y, &p99),
                met(ratio(x, y, &rps) >= least_rps && ratio(x, y, &cpu) <= most_cpu)
            );
        }
        let _ = writeln!(
            report,
            "| B / C (cached `/readyz` vs `SELECT 1` per request) | {:.1} | {:.3} | {:.3} | as measured |",
            ratio(b, c, &rps),
            ratio(b, c, &cpu),
            ratio(b, c, &p99),
        );
        let list_of = |x, y, f: &dyn Fn(&Sample) -> f64| list(per_round(x, y, f).into_iter());
        let _ = writeln!(
            report,
            "\nPer-round ratios B/A throughput: {}; CPU: {}. D1/D0 throughput: {}; CPU: {}. D2/D0 throughput: {}; CPU: {}.",
            list_of(b, a, &rps),
            list_of(b, a, &cpu),
            list_of(d1, d0, &rps),
            list_of(d1, d0, &cpu),
            list_of(d2, d0, &rps),
            list_of(d2, d0, &cpu),
        );
        Ok(())
    }

    fn storm(&self, report: &mut String, db: &mut Db) -> Result<(), BoxError> {
        let s = &self.settings;
        let database = db.scalar_string("SELECT current_database()::text")?;
        let _ = writeln!(report, "\n### Probe storm: `/readyz` as fast as wrk can\n");
        let _ = writeln!(
            report,
            "| server | storm | probes answered | queries PostgreSQL received during the storm (wire count) | same, server's own count | over the server's life: wire count / `pg_stat_database` transactions in `{database}` | expected during the storm |",
        );
        let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---|");
        // Prepares the statement, so each later read is one transaction.
        db.transactions()?;
        let upstream = upstream_addr(&s.url)?;
        for (mode, secs) in [(Mode::Health, s.storm_secs), (Mode::Pg, s.c_storm_secs)] {
            if secs == 0 {
                continue;
            }
            let x0 = db.transactions()?;
            let mut counter = Server::start(
                s.client_cpu,
                &["proxy", &upstream.to_string()],
                &s.url,
                "proxy",
            )?;
            let mut server = self.start(mode, &replace_host_port(&s.url, counter.addr)?)?;
            let (q0, w0) = (server.queries()?, counter.queries()?);
            let wrk = self.wrk(&server.url("/readyz"), secs, s.connections)?;
            let (q1, w1) = (server.queries()?, counter.queries()?);
            // The server exits, its connections close, and each backend
            // flushes its statistics as it exits.
            drop(server);
            std::thread::sleep(Duration::from_secs(1));
            let w_life = counter.queries()?;
            drop(counter);
            let x1 = db.transactions()?;
            let expected = match mode {
                Mode::Health => format!(
                    "{secs} s / {} s = {:.0} (±1)",
                    CHECK_INTERVAL.as_secs(),
                    secs as f64 / CHECK_INTERVAL.as_secs_f64()
                ),
                _ => "one per probe".to_owned(),
            };
            let _ = writeln!(
                report,
                "| {} | {secs} s | {} ({:.0}/s) | **{}** | {} | {w_life} / {} | {expected} |",
                mode.label(),
                wrk.requests,
                wrk.rps(),
                w1 - w0,
                q1 - q0,
                // Less the reading query x0 itself.
                x1 - x0 - 1,
            );
        }
        let _ = writeln!(
            report,
            "\nCounted three ways. **Wire count**: the server reaches PostgreSQL through a \
             pass-through TCP proxy (this binary's `proxy` mode) that reads the frontend protocol \
             and counts `Query` and `Execute` messages, i.e. what PostgreSQL received from this \
             server (the proxy adds a hop, so C's storm rate here is not comparable with the \
             rounds). **Server's own count**: a counter next to each `SELECT 1`. \
             **`pg_stat_database`**: `xact_commit + xact_rollback` read before the server starts \
             and 1 s after it exits (backends flush their statistics when they exit); it covers \
             the server's whole life and counts every client of the database, so other users of \
             this PostgreSQL during the window show up there. pg_stat_statements is not loaded on \
             this server."
        );
        Ok(())
    }

    fn memory(&self, report: &mut String) -> Result<(), BoxError> {
        let s = &self.settings;
        if s.probes == 0 {
            return Ok(());
        }
        let server = self.start(Mode::Health, &s.url)?;
        let url = server.url("/readyz");
        let rss_start = rss_kib(server.pid())?;
        let warm = self.wrk(&url, 2, s.connections)?;
        let rss_warm = rss_kib(server.pid())?;
        let mut probes = 0u64;
        let mut runs = 0;
        // Chunks sized from the warm-up rate, at most 10 of them.
        while probes < s.probes && runs < 10 {
            let left = (s.probes - probes) as f64;
            let secs = ((left / warm.rps().max(1000.0)) * 1.05)
                .ceil()
                .clamp(1.0, 60.0) as u64;
            probes += self.wrk(&url, secs, s.connections)?.requests;
            runs += 1;
        }
        let rss_end = rss_kib(server.pid())?;
        let _ = writeln!(
            report,
            "\n### Memory: server RSS (VmRSS) around {probes} probes\n"
        );
        let _ = writeln!(
            report,
            "| after start | after 2 s warm-up ({} probes) | after {probes} more probes | growth over the {probes} probes | goal |",
            warm.requests
        );
        let _ = writeln!(report, "|---:|---:|---:|---:|---|");
        let growth = rss_end as i64 - rss_warm as i64;
        let _ = writeln!(
            report,
            "| {rss_start} KiB | {rss_warm} KiB | {rss_end} KiB | {growth:+} KiB | flat within 1 MiB: {} |",
            met(growth.abs() <= 1024)
        );
        Ok(())
    }

    fn outage(&self, report: &mut String) -> Result<(), BoxError> {
        let s = &self.settings;
        if s.outage_secs == 0 || s.outage_pairs == 0 {
            return Ok(());
        }
        let upstream = upstream_addr(&s.url)?;
        let mut proxy = Server::start(
            s.client_cpu,
            &["proxy", &upstream.to_string()],
            &s.url,
            "proxy",
        )?;
        let via_proxy = replace_host_port(&s.url, proxy.addr)?;
        let a = self.start(Mode::Hello, &via_proxy)?;
        let b = self.start(Mode::Health, &via_proxy)?;
        let c = self.start(Mode::Pg, &via_proxy)?;
        // Warm-up; both pools open through the proxy while it still forwards.
        for server in [&a, &b, &c] {
            self.wrk(&server.url("/readyz"), 1, s.connections)?;
        }
        proxy.command("blackhole")?;
        proxy.expect_line("blackhole on", Duration::from_secs(5))?;
        let outage_start = Instant::now();
        // B and A (hello-world, never touches PostgreSQL: the latency floor
        // of this machine at that moment) in alternating short windows, so
        // the control is measured beside B rather than after it; a few
        // probers, then a storm. Then C, whose every probe waits out its
        // timeout.
        let run = |paced: bool, server: &Server, secs: u64, connections: u32| {
            if paced {
                self.wrk_paced(&server.url("/readyz"), secs, connections)
            } else {
                self.wrk(&server.url("/readyz"), secs, connections)
            }
        };
        let loads = [(true, 4), (false, s.connections)];
        let mut windows = Vec::new();
        for (paced, connections) in loads {
            for pair in 0..s.outage_pairs {
                // B first in even pairs, A first in odd ones.
                let mut turns = [(Mode::Health, &b), (Mode::Hello, &a)];
                if pair % 2 == 1 {
                    turns.reverse();
                }
                for (mode, server) in turns {
                    let from = outage_start.elapsed().as_secs_f64();
                    let wrk = run(paced, server, s.outage_secs, connections)?;
                    let (status, _) = http_get(server.addr, "/readyz")?;
                    windows.push((mode, paced, from, wrk, status));
                }
            }
        }
        for (paced, connections) in loads {
            let from = outage_start.elapsed().as_secs_f64();
            let wrk = run(paced, &c, s.c_outage_secs, connections)?;
            let (status, _) = http_get(c.addr, "/readyz")?;
            windows.push((Mode::Pg, paced, from, wrk, status));
        }
        drop((a, b, c, proxy));

        let _ = writeln!(
            report,
            "\n### Dependency outage: PostgreSQL behind a black-hole proxy (accepts, never answers)\n"
        );
        let _ = writeln!(
            report,
            "The servers reach PostgreSQL through the proxy; it turns into a black hole at t = 0. \
             Two loads: **probers**, 4 connections that each wait 1 ms after every answer \
             (about 3,500 requests/s: far more than real probers, and still leaving the server \
             mostly idle, so the latency is the answer's own), and a **storm**, {} connections \
             as fast as wrk can (latency there is mostly time queued behind other requests on a \
             saturated core). B and A (hello-world, no dependency: the latency floor of this \
             machine at that moment) take turns in {} s windows, {} pairs per load (B first in \
             every other pair); then C, {} s per load. Figures are medians over a server's windows (requests and non-2xx are \
             sums, max is the worst window's); the last column lists every window's p99 in \
             order.\n",
            s.connections, s.outage_secs, s.outage_pairs, s.c_outage_secs
        );
        let _ = writeln!(
            report,
            "| server | load | windows (t in s) | requests | p50 | p99 | max | non-2xx | status after | goal | p99 per window |"
        );
        let _ = writeln!(
            report,
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|"
        );
        let mut p99 = std::collections::HashMap::new();
        for mode in [Mode::Health, Mode::Hello, Mode::Pg] {
            for paced in [true, false] {
                let rows: Vec<_> = windows
                    .iter()
                    .filter(|w| w.0 == mode && w.1 == paced)
                    .collect();
                let Some(last) = rows.last() else { continue };
                let median_p99 = median(rows.iter().map(|w| w.3.p99_us));
                p99.insert((mode, paced), median_p99);
                let goal = match mode {
                    Mode::Health => format!("p99 < 1 ms: {}", met(median_p99 < 1000.0)),
                    Mode::Hello => "control".to_owned(),
                    _ => format!("as measured ({} s timeout)", HANDLER_TIMEOUT.as_secs()),
                };
                let load = if paced {
                    "probers, 4 × 1/ms".to_owned()
                } else {
                    format!("storm, {}", s.connections)
                };
                let _ = writeln!(
                    report,
                    "| {} | {load} | {:.0}–{:.0} | {} | {} | {} | {} | {} | {} | {goal} | {} |",
                    mode.label(),
                    rows[0].2,
                    last.2 + last.3.duration_us as f64 / 1e6,
                    rows.iter().map(|w| w.3.requests).sum::<u64>(),
                    micros(median(rows.iter().map(|w| w.3.p50_us))),
                    micros(median_p99),
                    micros(rows.iter().map(|w| w.3.max_us).fold(0.0, f64::max)),
                    rows.iter().map(|w| w.3.non_2xx).sum::<u64>(),
                    last.4,
                    rows.iter()
                        .map(|w| micros(w.3.p99_us))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        }
        let ratio = |x: Mode, y: Mode, paced: bool| {
            p99.get(&(x, paced)).copied().unwrap_or(f64::NAN)
                / p99.get(&(y, paced)).copied().unwrap_or(f64::NAN)
        };
        let _ = writeln!(
            report,
            "\nMedian p99 during the outage, C / B: {:.0}× for the probers, {:.0}× in the storm; \
             B / A (control, alternating windows): {:.2} and {:.2}.",
            ratio(Mode::Pg, Mode::Health, true),
            ratio(Mode::Pg, Mode::Health, false),
            ratio(Mode::Health, Mode::Hello, true),
            ratio(Mode::Health, Mode::Hello, false),
        );
        Ok(())
    }
}

fn server_path(server: &Server) -> &'static str {
    Mode::ALL
        .into_iter()
        .find(|mode| mode.short() == server.mode)
        .map_or("/readyz", Mode::path)
}

fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn upstream_addr(url: &str) -> Result<SocketAddr, BoxError> {
    let after_scheme = url.split_once("://").ok_or("DATABASE_URL has no scheme")?.1;
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    Ok(host_port.parse()?)
}

fn replace_host_port(url: &str, addr: SocketAddr) -> Result<String, BoxError> {
    let (scheme, rest) = url.split_once("://").ok_or("DATABASE_URL has no scheme")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority
        .rsplit_once('@')
        .map(|(user, _)| format!("{user}@"));
    Ok(format!(
        "{scheme}://{}{addr}/{path}",
        user.unwrap_or_default()
    ))
}

fn list(values: impl Iterator<Item = f64>) -> String {
    values
        .map(|v| format!("{v:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The criterion figures of `benches/overhead.rs`, if it ran before.
fn criterion_section(report: &mut String) {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("criterion"));
    let estimate = |id: &str| -> Option<(f64, f64, f64)> {
        let path = home
            .join("overhead")
            .join(id)
            .join("new")
            .join("estimates.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        // Criterion's headline figure: the slope for linear sampling, else the mean.
        let e = if json["slope"].is_object() {
            &json["slope"]
        } else {
            &json["mean"]
        };
        Some((
            e["point_estimate"].as_f64()?,
            e["confidence_interval"]["lower_bound"].as_f64()?,
            e["confidence_interval"]["upper_bound"].as_f64()?,
        ))
    };
    let Some(bare) = estimate("bare") else {
        let _ = writeln!(
            report,
            "## In-process overhead\n\nNo criterion results in {} (run `cargo bench --bench overhead` first).\n",
            home.display()
        );
        return;
    };
    let _ = writeln!(
        report,
        "## In-process overhead (criterion, `benches/overhead.rs`)\n"
    );
    let _ = writeln!(
        report,
        "| arm | ns per call | 95% CI | ratio to bare | added ns | goal |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---|");
    for (id, what) in [
        ("bare", "bare `service_fn` (small JSON, content-type)"),
        (
            "bare_serialized",
            "same, serializing its JSON per call (not a goal's baseline)",
        ),
        ("pass_through", "behind HealthLayer, non-health path"),
        (
            "pass_through_no_header",
            "same, `without_process_time_header()`",
        ),
        ("readyz_hit", "`GET /readyz` answered from cache"),
        (
            "readyz_hit_no_header",
            "same, `without_process_time_header()`",
        ),
    ] {
        let Some((ns, lo, hi)) = estimate(id) else {
            continue;
        };
        let goal = match id {
            "pass_through" => format!("adds < 100 ns: {}", met(ns - bare.0 < 100.0)),
            "readyz_hit" => {
                let serialized = estimate("bare_serialized").map_or(String::new(), |(s, _, _)| {
                    format!(
                        " (≤ `bare_serialized`: {})",
                        if ns <= s { "yes" } else { "no" }
                    )
                });
                format!("≤ bare: {}{serialized}", met(ns <= bare.0))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            report,
            "| {what} (`{id}`) | {ns:.1} | {lo:.1} – {hi:.1} | {:.2} | {:+.1} | {goal} |",
            ns / bare.0,
            ns - bare.0
        );
    }
    let _ = writeln!(report);
    // The same arms timed in interleaved rounds, written by `overhead.rs`
    // when `run.sh` sets the path.
    if let Some(table) =
        std::env::var_os("OVERHEAD_INTERLEAVED").and_then(|path| std::fs::read_to_string(path).ok())
    {
        let _ = writeln!(report, "{table}");
    }
}
