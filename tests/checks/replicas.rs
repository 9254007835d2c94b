//! `expect_writable` against real replicas: a private PostgreSQL standby
//! (promoted halfway), a private read-only MariaDB (made writable halfway)
//! and a private Redis replica (made a master halfway), beside the shared
//! servers, which take writes.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::{
    Executor,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tower_health::{
    Check, CheckResult, Status,
    checks::{deadpool_postgres::DeadpoolPostgresCheck, redis::RedisCheck, sqlx::SqlxCheck},
};

use crate::support::{self, CAP, RedisServer, unavailable, within};

#[track_caller]
fn assert_refused(result: &CheckResult, says: &str) {
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    let message = result.message().unwrap();
    assert!(message.contains(says), "{message}");
}

#[track_caller]
fn assert_healthy(result: &CheckResult) {
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
}

/// One run of an sqlx check, once the pool's connections are back in it
/// (they go back in a task of their own), so that a busy pool does not turn
/// the result into `degraded`.
async fn run<DB: sqlx::Database>(check: &SqlxCheck<DB>) -> CheckResult
where
    SqlxCheck<DB>: Check,
{
    support::settle(check.pool(), check.pool().size() as usize).await;
    check.check().await
}

/// A command running `program` as `user` when this process is root (the
/// database servers refuse to run as root), as this process's user
/// otherwise.
fn command_as(user: &str, program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", user, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Runs `program` with `args` (see [`command_as`]); panics with its output
/// if it fails.
fn run_as(user: &str, program: &Path, args: &[&str]) {
    let output = command_as(user, program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

/// A scratch directory for a private server, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str, port: u16) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("tower-health-{what}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// A private PostgreSQL server started as a standby (a fresh cluster with
/// `standby.signal` and no primary to follow): it accepts read-only
/// connections and stays in recovery until promoted. It listens on a Unix
/// socket only (in its data directory, named after `port`), so no TCP port
/// can be taken from under it. Stopped on drop.
struct PostgresStandby {
    port: u16,
    bin: PathBuf,
    dir: Scratch,
}

impl PostgresStandby {
    /// `None` (after [`unavailable`]) when no PostgreSQL server binaries are
    /// installed.
    fn start() -> Option<PostgresStandby> {
        // Debian's layout: /usr/lib/postgresql/<major>/bin, the newest.
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists())
            .max();
        let Some(bin) = bin else {
            unavailable(
                "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)",
                "not installed",
            );
            return None;
        };
        let port = support::free_port();
        let dir = Scratch::new("pg-standby", port);
        let data = dir.path("");
        run_as(
            "postgres",
            &bin.join("initdb"),
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        std::fs::write(dir.0.join("standby.signal"), b"").unwrap();
        let server = PostgresStandby { port, bin, dir };
        let options = format!("-p {port} -k {data} -c listen_addresses='' -c fsync=off");
        run_as(
            "postgres",
            &server.bin.join("pg_ctl"),
            &[
                "-D",
                &data,
                "-o",
                &options,
                "-l",
                &server.dir.path("log"),
                "-w",
                "start",
            ],
        );
        Some(server)
    }

    fn sqlx_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.dir.0)
            .port(self.port)
            .username("postgres")
            .database("postgres")
    }

    fn deadpool_config(&self) -> deadpool_postgres::Config {
        let mut config = deadpool_postgres::Config::new();
        config.host = Some(self.dir.path(""));
        config.port = Some(self.port);
        config.user = Some("postgres".to_owned());
        config.dbname = Some("postgres".to_owned());
        config
    }

    /// Ends recovery: the server becomes a primary, on the same
    /// connections.
    fn promote(&self) {
        run_as(
            "postgres",
            &self.bin.join("pg_ctl"),
            &["-D", &self.dir.path(""), "-w", "promote"],
        );
    }
}

impl Drop for PostgresStandby {
    fn drop(&mut self) {
        let _ = command_as("postgres", &self.bin.join("pg_ctl"))
            .args(["-D", &self.dir.path(""), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn deadpool(
    mut config: deadpool_postgres::Config,
    options: Option<&str>,
) -> deadpool_postgres::Pool {
    config.options = options.map(str::to_owned);
    config
        .create_pool(
            Some(deadpool_postgres::Runtime::Tokio1),
            deadpool_postgres::tokio_postgres::NoTls,
        )
        .expect("create the deadpool pool")
}

#[tokio::test]
async fn a_postgres_standby_fails_expect_writable_until_promoted() {
    let Some(standby) = PostgresStandby::start() else {
        return;
    };
    let sqlx_pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(standby.sqlx_options())
        .await
        .expect("connect to the standby");
    let deadpool = deadpool(standby.deadpool_config(), None);

    // A standby answers `SELECT 1`: without the option, it passes.
    assert_healthy(&run(&SqlxCheck::new(sqlx_pool.clone())).await);
    assert_healthy(&DeadpoolPostgresCheck::new(deadpool.clone()).check().await);
    let sqlx_check = SqlxCheck::new(sqlx_pool.clone()).expect_writable();
    let deadpool_check = DeadpoolPostgresCheck::new(deadpool.clone()).expect_writable();
    assert_refused(&run(&sqlx_check).await, "is a standby");
    assert_refused(&deadpool_check.check().await, "is a standby");

    // Promoted: the same pools, on the same connections, now pass.
    standby.promote();
    assert_healthy(&run(&sqlx_check).await);
    assert_healthy(&deadpool_check.check().await);
    assert_eq!(
        sqlx_pool.size(),
        1,
        "the check reused the pool's connection"
    );
    sqlx_pool.close().await;
}

#[tokio::test]
async fn a_read_only_postgres_session_fails_expect_writable() {
    let Some(options) = crate::postgres::options().await else {
        return;
    };
    // The shared server takes writes...
    let writable = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await
        .unwrap();
    assert_healthy(&run(&SqlxCheck::new(writable).expect_writable()).await);
    let shared = || {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(support::database_url());
        config
    };
    assert_healthy(
        &DeadpoolPostgresCheck::new(deadpool(shared(), None))
            .expect_writable()
            .check()
            .await,
    );

    // ...but not in a session whose transactions are read-only by default,
    // as a fenced primary's are.
    let read_only = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("default_transaction_read_only", "on")]))
        .await
        .unwrap();
    let refused = read_only.execute("CREATE TEMP TABLE t (x int)").await;
    assert!(refused.is_err(), "the session is really read-only");
    assert_refused(
        &run(&SqlxCheck::new(read_only).expect_writable()).await,
        "session is read-only",
    );
    assert_refused(
        &DeadpoolPostgresCheck::new(deadpool(
            shared(),
            Some("-c default_transaction_read_only=on"),
        ))
        .expect_writable()
        .check()
        .await,
        "session is read-only",
    );
}

// ---------------------------------------------------------------------------
// MariaDB

/// A private MariaDB server started with `--read-only`, as replicas run.
/// It listens on a Unix socket only, so no TCP port can be taken from under
/// it. Killed on drop.
struct MariaDbReadOnly {
    socket: String,
    child: Child,
    dir: Scratch,
}

impl MariaDbReadOnly {
    /// `None` (after [`unavailable`]) when MariaDB's server is not
    /// installed.
    async fn start() -> Option<MariaDbReadOnly> {
        let (install, server) = (
            Path::new("/usr/bin/mariadb-install-db"),
            Path::new("/usr/sbin/mariadbd"),
        );
        if !install.exists() || !server.exists() {
            unavailable(
                "MariaDB server binaries (mariadb-install-db, mariadbd)",
                "not installed",
            );
            return None;
        }
        // Unique in name only: nothing listens on it.
        let port = support::free_port();
        let dir = Scratch::new("mariadb-read-only", port);
        let data = dir.path("data");
        // `--no-defaults`: none of the machine's server's settings.
        let mut common = vec!["--no-defaults".to_owned(), format!("--datadir={data}")];
        if is_root() {
            common.push("--user=mysql".to_owned());
        }
        let output = Command::new(install)
            .args(&common)
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // In the data directory, which the server's user owns.
        let socket = format!("{data}/sock");
        let log = std::fs::File::create(dir.0.join("server.log")).expect("a log file");
        let child = Command::new(server)
            .args(&common)
            .args(["--skip-networking", "--read-only=1", "--skip-log-bin"])
            .arg(format!("--socket={socket}"))
            .arg(format!("--pid-file={data}/pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        let mut server = MariaDbReadOnly { socket, child, dir };
        let start = Instant::now();
        while start.elapsed() < CAP {
            if let Ok(Some(exit)) = server.child.try_wait() {
                panic!("the private mariadbd exited ({exit}): {}", server.log());
            }
            if let Some(Ok(_)) = within(
                Duration::from_secs(2),
                tokio::net::UnixStream::connect(&server.socket),
            )
            .await
            {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the private mariadbd did not listen on {} within {CAP:?}: {}",
            server.socket,
            server.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default()
    }

    fn options(&self) -> MySqlConnectOptions {
        MySqlConnectOptions::new()
            .socket(&self.socket)
            .username("root")
            .database("mysql")
    }
}

impl Drop for MariaDbReadOnly {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_read_only_mariadb_fails_expect_writable_until_made_writable() {
    // The shared server takes writes.
    let Some(options) = crate::mysql::options().await else {
        return;
    };
    let shared = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    assert_healthy(&run(&SqlxCheck::new(shared).expect_writable()).await);

    let Some(server) = MariaDbReadOnly::start().await else {
        return;
    };
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(server.options())
        .await
        .expect("connect to the private MariaDB");
    // A read-only server answers `SELECT 1`: without the option, it passes.
    assert_healthy(&run(&SqlxCheck::new(pool.clone())).await);
    let check = SqlxCheck::new(pool.clone()).expect_writable();
    assert_refused(&run(&check).await, "read_only is on");

    pool.execute("SET GLOBAL read_only = 0").await.unwrap();
    assert_healthy(&run(&check).await);
    pool.close().await;
}

/// A pool whose connections use a binary collation (`utf8mb4_bin`)
/// still gets a readable answer: MySQL marks such text columns binary,
/// which sqlx will not decode as a `String`.
#[tokio::test]
async fn expect_writable_reads_its_answer_under_a_binary_collation() {
    let Some(options) = crate::mysql::options().await else {
        return;
    };
    for (charset, collation) in [("utf8mb4", "utf8mb4_bin"), ("binary", "binary")] {
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().charset(charset).collation(collation))
            .await
            .unwrap_or_else(|e| panic!("connect with collation {collation}: {e}"));
        let result = run(&SqlxCheck::new(pool.clone()).expect_writable()).await;
        assert_eq!(result.status(), Status::Healthy, "{collation}: {result:?}");
        pool.close().await;
    }
}

// ---------------------------------------------------------------------------
// Redis

#[tokio::test]
async fn a_redis_replica_fails_expect_writable_until_made_a_master() {
    // The shared server is a master.
    let shared = redis::Client::open(support::redis_url()).unwrap();
    match within(
        Duration::from_secs(5),
        shared.get_multiplexed_async_connection(),
    )
    .await
    {
        Some(Ok(connection)) => {
            assert_healthy(&RedisCheck::new(connection).expect_writable().check().await);
        }
        other => {
            unavailable("Redis (REDIS_URL)", format!("{other:?}"));
            return;
        }
    }

    // A replica of a master that never answers (a port this test holds
    // bound and never serves, so no other server can take it): it answers
    // PING, serving its (empty) data.
    let master = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let master_port = master.local_addr().unwrap().port().to_string();
    let Some(replica) = RedisServer::start_with(
        support::free_port(),
        &["--replicaof", "127.0.0.1", &master_port],
    )
    .await
    else {
        return;
    };
    let client = redis::Client::open(replica.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    assert_healthy(&RedisCheck::new(connection.clone()).check().await);
    let check = RedisCheck::new(connection.clone()).expect_writable();
    assert_refused(
        &check.check().await,
        &format!("is a replica (of 127.0.0.1:{master_port}"),
    );

    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_healthy(&check.check().await);

    // An ACL user without `@dangerous` may PING but not ask for the role:
    // the message says what to grant.
    let () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "limited",
                "on",
                "nopass",
                "~*",
                "+@all",
                "-@dangerous",
            ][..],
        )
        .query_async(&mut connection)
        .await
        .unwrap();
    let url = format!("redis://limited:any@127.0.0.1:{}", replica.port);
    let limited = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    assert_healthy(&RedisCheck::new(limited.clone()).check().await);
    let result = RedisCheck::new(limited).expect_writable().check().await;
    assert_refused(&result, "no permissions");
    assert_refused(&result, "+role");
    drop(master);
}
