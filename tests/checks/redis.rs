//! `RedisCheck` against a real Redis: the shared one at `REDIS_URL` and a
//! private `redis-server` killed and restarted on the same port.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tower_health::{Check, Status, checks::redis::RedisCheck};

use crate::support::{self, Proxy, RedisServer, unavailable, within};

async fn client() -> Option<redis::Client> {
    let url = support::redis_url();
    let client = redis::Client::open(url.as_str()).expect("REDIS_URL must be a redis URL");
    match within(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Some(Ok(_)) => Some(client),
        Some(Err(e)) => {
            unavailable("Redis (REDIS_URL)", e);
            None
        }
        None => {
            unavailable("Redis (REDIS_URL)", "no answer within 5s");
            None
        }
    }
}

#[tokio::test]
async fn ping_on_a_connection_manager_and_a_multiplexed_connection() {
    let Some(client) = client().await else { return };
    let manager = ConnectionManager::new(client.clone()).await.unwrap();
    let multiplexed = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..3 {
        let result = RedisCheck::new(manager.clone()).check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
        let result = RedisCheck::new(multiplexed.clone()).check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");
    }
}

#[tokio::test]
async fn private_redis_killed_and_restarted_on_the_same_port() {
    let port = support::free_port();
    let Some(mut server) = RedisServer::start(port).await else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_max_delay(Duration::from_millis(200))
        .set_connection_timeout(Some(Duration::from_secs(1)));
    let manager = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .unwrap();
    // A MultiplexedConnection never reconnects: after the restart it stays broken.
    let multiplexed = client.get_multiplexed_async_connection().await.unwrap();
    let (_health, app, runs) = support::app_with("redis", RedisCheck::new(manager)).await;

    let mut restarted = None;
    support::outage(
        &app,
        &runs,
        "redis",
        "redis killed",
        false,
        3,
        async || server.kill(),
        async || restarted = RedisServer::start(port).await,
    )
    .await;
    assert!(restarted.is_some(), "redis-server restarted on port {port}");

    let result = RedisCheck::new(multiplexed).check().await;
    assert_eq!(
        result.status(),
        Status::Unhealthy,
        "a MultiplexedConnection does not survive a restart: {result:?}"
    );
}

/// A private `redis-server` on a free port, and a `ConnectionManager` with
/// the default settings on it.
async fn private_manager() -> Option<(RedisServer, ConnectionManager)> {
    let server = RedisServer::start(support::free_port()).await?;
    let client = redis::Client::open(server.url()).unwrap();
    let manager = ConnectionManager::new(client).await.unwrap();
    Some((server, manager))
}

/// A `ConnectionManager` learns that its server went away only when a
/// command fails on the old connection, and then reconnects without
/// retrying that command. Once the server is back, the first run after
/// the restart must not be that failed command: it passes, on the new
/// connection. (Killed and restarted between two runs, as a quick restart
/// of an otherwise idle application looks.)
#[tokio::test]
async fn a_connection_manager_passes_the_first_run_after_its_server_restarted() {
    let Some((mut server, manager)) = private_manager().await else {
        return;
    };
    let port = server.port;
    for writable in [false, true] {
        let check = if writable {
            RedisCheck::new(manager.clone()).expect_writable()
        } else {
            RedisCheck::new(manager.clone())
        };
        let result = check.check().await;
        assert_eq!(result.status(), Status::Healthy, "{result:?}");

        server.kill();
        server = RedisServer::start(port)
            .await
            .expect("redis-server restarts on the same port");
        let result = check.check().await;
        assert_eq!(
            result.status(),
            Status::Healthy,
            "writable {writable}: {result:?}"
        );
    }
}

/// With its server down, a run's second attempt waits for the manager's
/// reconnection, which retries for longer than the check's timeout: the
/// cut run says what the first attempt got.
#[tokio::test]
async fn a_run_cut_waiting_for_the_reconnection_says_what_failed() {
    let Some((mut server, manager)) = private_manager().await else {
        return;
    };
    let (_health, app, _runs) = support::app_with("redis", RedisCheck::new(manager)).await;
    app.wait_for("/readyz", 200).await;
    server.kill();
    let redis = app
        .wait_error("redis", |e| e.contains("failed on the connection"))
        .await;
    let error = redis["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "timed out after {}ms: Redis PING failed on the connection (",
            support::TIMEOUT.as_millis()
        )),
        "{redis}"
    );
    assert!(
        error.ends_with(
            ") and its reconnection had not finished; check that the server is running and \
             reachable from this host"
        ),
        "{redis}"
    );
}

/// A server that stops answering. A response timeout is an I/O error too,
/// but no reconnection follows it: the run fails with it rather than
/// asking again (which would wait as long once more, past the check's own
/// timeout here). Without a response timeout the run is cut, and says it
/// got no answer.
#[tokio::test]
async fn a_stalled_server_fails_the_run_once_or_is_cut_saying_so() {
    let port = support::free_port();
    let Some(server) = RedisServer::start(port).await else {
        return;
    };
    let proxy = Proxy::start(([127, 0, 0, 1], server.port).into()).await;
    let client = redis::Client::open(format!("redis://{}", proxy.addr)).unwrap();
    let connect = async |response_timeout| {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(response_timeout);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap()
    };
    // Under the check's timeout, but not twice.
    let timing_out = connect(Some(support::TIMEOUT * 3 / 5)).await;
    let waiting = connect(None).await;
    let (_health, timing_out, _) = support::app_with("redis", RedisCheck::new(timing_out)).await;
    let (_health2, waiting, _) = support::app_with("redis", RedisCheck::new(waiting)).await;
    timing_out.wait_for("/readyz", 200).await;
    waiting.wait_for("/readyz", 200).await;
    proxy.stall().await;

    let redis = timing_out
        .wait_error("redis", |e| e.starts_with("Redis PING failed: "))
        .await;
    assert!(
        redis["error"].as_str().unwrap().contains("timed out"),
        "{redis}"
    );
    assert_eq!(redis["reason"], "failed", "not cut: {redis}");

    let redis = waiting
        .wait_error("redis", |e| e.starts_with("timed out after"))
        .await;
    assert_eq!(
        redis["error"],
        format!(
            "timed out after {}ms: Redis PING got no answer: the server did not answer on the \
             connection, or the connection manager's reconnection had not finished; check that \
             the server is running and reachable from this host",
            support::TIMEOUT.as_millis()
        ),
        "{redis}"
    );
}

/// A server that answers `PING` with an error is unhealthy, and the message
/// says what the error means rather than "check that it is running".
#[tokio::test]
async fn a_server_requiring_a_password_is_named_as_such() {
    let Some(server) = RedisServer::start(support::free_port()).await else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut admin)
        .await
        .unwrap();
    // A new connection has not authenticated.
    let anonymous = client.get_multiplexed_async_connection().await.unwrap();
    // Alone, and pipelined with ROLE for `expect_writable`.
    for check in [
        RedisCheck::new(anonymous.clone()),
        RedisCheck::new(anonymous).expect_writable(),
    ] {
        let result = check.check().await;
        assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
        let message = result.message().unwrap();
        assert!(
            message.contains("NOAUTH") && message.contains("requires authentication"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
    }
    // The connection that authenticated before still passes.
    let result = RedisCheck::new(admin).check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
}
