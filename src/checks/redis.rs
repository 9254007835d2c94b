//! `PING` on the application's [redis](https://docs.rs/redis) connection
//! (feature `redis`).
//!
//! [`RedisCheck`] takes any clonable async connection of the `redis` crate,
//! in practice:
//!
//! - [`ConnectionManager`](::redis::aio::ConnectionManager): reconnects by
//!   itself after the server comes back, so the check recovers with it. It
//!   notices a lost connection only when a command fails on it, and does
//!   not retry that command: a run whose command fails that way asks once
//!   more, within its timeout, so the first run after a restart sees the
//!   server that is back rather than the connection that is gone. While
//!   the server is down, a run waits for the manager's reconnection until
//!   it is cut at the check's timeout, or fails with the error the
//!   reconnection ended in (refused, timed out);
//! - [`MultiplexedConnection`](::redis::aio::MultiplexedConnection): never
//!   reconnects; once its server went away the check keeps failing until the
//!   application replaces the connection, which is exactly what the
//!   application's own commands would see.
//!
//! Both are handles to one shared connection: each run clones the handle
//! and sends `PING` over the same connection the application uses. The
//! answer must be `PONG`; an error, or any other answer, is
//! [`unhealthy`](crate::Status::Unhealthy). A server that never answers is
//! cut by the runner at the check's timeout (or by the connection's own
//! response timeout, whichever is shorter). A cut run tells requests
//! allowed details what it waited for: an answer, or the manager's
//! reconnection after a dropped connection (with that connection's
//! error).
//!
//! # Replicas
//!
//! A replica answers `PING` like its master, so by default a connection
//! that reaches one passes: right for an application that only reads. An
//! application that writes asks for more with
//! [`expect_writable`](RedisCheck::expect_writable): each run sends `ROLE`
//! beside `PING` (one round trip), and anything but a master fails. That is
//! what a failover leaves behind when a connection stays on the old master,
//! now a replica, or a DNS name still points at it. `ROLE` is in the
//! `@admin` and `@dangerous` ACL categories: an ACL user without them needs
//! `+role`, or every run fails with `NOPERM` (and a message that says so).
//! Some managed services rename or disable it; there, the check fails with
//! the server's error. A master that refuses writes for a reason of its own
//! (`maxmemory` reached under `noeviction`, `min-replicas-to-write` not
//! met) still answers `ROLE` as a master and passes: those refusals show
//! in the application's writes, not here.
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use redis::aio::ConnectionManager;
//! use tower_health::{HealthChecks, checks::redis::RedisCheck};
//!
//! let client = redis::Client::open("redis://127.0.0.1:6379")?;
//! let connection = ConnectionManager::new(client).await?;
//!
//! let health = HealthChecks::builder()
//!     .check("redis", RedisCheck::new(connection.clone()))
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "redis"))]
//! # fn main() {}
//! ```

use std::fmt;

use ::redis::aio::ConnectionLike;

use crate::{Check, CheckResult};

/// Sends `PING` on a shared redis connection and expects `PONG`. See the
/// [module documentation](self).
#[derive(Clone)]
pub struct RedisCheck<C> {
    connection: C,
    writable: bool,
}

impl<C> RedisCheck<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A check on `connection`, a clone of the application's
    /// `ConnectionManager` or `MultiplexedConnection` (clones share the
    /// connection).
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            writable: false,
        }
    }

    /// Fails unless the server is a master: each run sends `ROLE` beside
    /// `PING`, and a replica (which refuses writes with `READONLY`) or a
    /// Sentinel is unhealthy. The connection's ACL user needs `+role`. See
    /// [Replicas](self#replicas).
    #[must_use]
    pub fn expect_writable(mut self) -> Self {
        self.writable = true;
        self
    }
}

impl<C> fmt::Debug for RedisCheck<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCheck")
            .field("connection", &std::any::type_name::<C>())
            .field("expect_writable", &self.writable)
            .finish()
    }
}

impl<C> Check for RedisCheck<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn component_type(&self) -> &'static str {
        "datastore"
    }

    async fn check(&self) -> CheckResult {
        let mut connection = self.connection.clone();
        let what = self.what();
        // A run cut in its first attempt waited for an answer on the
        // connection or, after a lost connection, for the manager's
        // reconnection: the client does not say which.
        let first = crate::runner::if_cut(move || {
            CheckResult::unhealthy(format!(
                "Redis {what} got no answer: the server did not answer on the connection, or \
                 the connection manager's reconnection had not finished; check that the \
                 server is running and reachable from this host"
            ))
        });
        let answer = match self.ask(&mut connection).await {
            // A `ConnectionManager` (with RESP2, the default) learns that
            // its connection is gone only when a command fails on it, or
            // fails with the error its last reconnection ended in; then it
            // starts a reconnection and returns the error without retrying
            // the command. Asking once more waits for that reconnection, so
            // a server that is back is seen to be back now rather than one
            // run later. A `MultiplexedConnection`, which does not
            // reconnect, fails again at once. Not after a timeout: after a
            // response timeout no reconnection follows, and asking again
            // would only wait as long once more; a reconnection that timed
            // out is reported the same way, and its error stands.
            //
            // During an outage that wait can outlast the run: cut, it says
            // what the first attempt got.
            Err(e)
                if (e.is_connection_dropped() || e.is_unrecoverable_error()) && !e.is_timeout() =>
            {
                drop(first);
                let _second = crate::runner::if_cut(move || {
                    CheckResult::unhealthy(format!(
                        "Redis {what} failed on the connection ({e}) and its reconnection had \
                         not finished; check that the server is running and reachable from \
                         this host"
                    ))
                });
                self.ask(&mut connection).await
            }
            answer => answer,
        };
        match answer {
            Ok(answer) => judge(&answer),
            Err(e) => CheckResult::unhealthy(format!("Redis {what} failed: {e}; {}", hint(&e))),
        }
    }
}

/// What a run got back: `PING`'s answer and, with `expect_writable`,
/// `ROLE`'s.
#[derive(Debug)]
enum Answer {
    Pong(::redis::Value),
    PongAndRole(::redis::Value, ::redis::Value),
}

/// Judges a run's answer: `PING` must have answered `PONG`, and `ROLE`, if
/// asked, `master`.
fn judge(answer: &Answer) -> CheckResult {
    let (pong, role_answer) = match answer {
        Answer::Pong(pong) => (pong, None),
        Answer::PongAndRole(pong, role) => (pong, Some(role)),
    };
    let ponged = match pong {
        ::redis::Value::SimpleString(s) => s == "PONG",
        ::redis::Value::BulkString(b) => b == b"PONG",
        _ => false,
    };
    if !ponged {
        return CheckResult::unhealthy(format!(
            "Redis answered PING with {pong:?} instead of PONG; check that the address points \
             at a Redis server (not a proxy or another service)"
        ));
    }
    role_answer.map_or_else(CheckResult::healthy, role)
}

impl<C> RedisCheck<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// The commands a run sends, for messages.
    fn what(&self) -> &'static str {
        if self.writable {
            "PING and ROLE"
        } else {
            "PING"
        }
    }

    async fn ask(&self, connection: &mut C) -> ::redis::RedisResult<Answer> {
        if self.writable {
            // `PING` as well, in the same round trip: a server still
            // loading its data answers `ROLE` but not `PING`.
            ::redis::pipe()
                .cmd("PING")
                .cmd("ROLE")
                .query_async::<(::redis::Value, ::redis::Value)>(connection)
                .await
                .map(|(pong, role)| Answer::PongAndRole(pong, role))
        } else {
            ::redis::cmd("PING")
                .query_async::<::redis::Value>(connection)
                .await
                .map(Answer::Pong)
        }
    }
}

/// Judges `ROLE`'s answer: `["master", offset, replicas]`,
/// `["slave", host, port, state, offset]` or `["sentinel", masters]`.
fn role(answer: &::redis::Value) -> CheckResult {
    use ::redis::Value;
    let text = |value: Option<&Value>| match value {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        Some(Value::Int(n)) => n.to_string(),
        _ => "?".to_owned(),
    };
    let items = match answer {
        Value::Array(items) => &items[..],
        _ => &[],
    };
    match text(items.first()).as_str() {
        "master" => CheckResult::healthy(),
        "slave" | "replica" => CheckResult::unhealthy(format!(
            "Redis server is a replica (of {}:{}, link {}), which refuses writes (READONLY): \
             the connection reaches a replica, not the master. After a failover, check that \
             the URL (or the name it resolves) points at the new master, and that the \
             application's connection has been replaced",
            text(items.get(1)),
            text(items.get(2)),
            text(items.get(3)),
        )),
        "sentinel" => CheckResult::unhealthy(
            "Redis address answers as a Sentinel, not a data server: ask the Sentinel for the \
             master's address and connect to that",
        ),
        _ => CheckResult::unhealthy(format!(
            "Redis answered ROLE with {answer:?}; check that the address points at a Redis \
             server (not a proxy or another service)"
        )),
    }
}

/// What to look at after a failed `PING`. (A server that answers with an
/// error is unhealthy all the same: the application cannot use it either.)
fn hint(e: &::redis::RedisError) -> &'static str {
    // A pipeline's error (`expect_writable`'s `PING` and `ROLE`) holds its
    // commands' server errors; `code()` names one only if the client knows
    // its kind, which `NOAUTH` and `WRONGPASS` are not.
    let pipelined = e.clone().into_server_errors();
    let first = pipelined.as_deref().and_then(<[_]>::first);
    match e.code().or_else(|| first.map(|(_, error)| error.code())) {
        Some("LOADING") => {
            "the server is loading its dataset into memory (after a restart or a full \
             resync) and answers once it has"
        }
        Some("MASTERDOWN") => {
            "this replica has lost its link to the master and is set not to serve stale data \
             (replica-serve-stale-data no)"
        }
        Some("NOAUTH" | "WRONGPASS") => {
            "the server requires authentication: check the password (and ACL user) in the \
             application's Redis URL"
        }
        Some("NOPERM") => {
            "the connection's ACL user may not run the command: grant it (expect_writable \
             needs `+role` besides `+ping`)"
        }
        Some(_) => "the server refused the command: look at its state and logs",
        None if e.kind() == ::redis::ErrorKind::AuthenticationFailed => {
            "authentication failed: check the password (and ACL user) in the application's \
             Redis URL"
        }
        None => {
            "check that the server is running and reachable from this host (a \
             ConnectionManager reconnects by itself, a MultiplexedConnection must be replaced \
             by the application)"
        }
    }
}

#[cfg(test)]
mod tests {
    use ::redis::Value;

    use crate::Status;

    use super::*;

    fn master() -> Value {
        Value::Array(vec![
            Value::BulkString(b"master".to_vec()),
            Value::Int(0),
            Value::Array(Vec::new()),
        ])
    }

    /// `PONG` as either string type passes; anything else fails, with
    /// `expect_writable`'s `ROLE` too: a proxy that answers `PING` itself
    /// and passes `ROLE` on must not pass on `ROLE` alone.
    #[test]
    fn ping_must_answer_pong_whether_or_not_role_is_asked() {
        for pong in [
            Value::SimpleString("PONG".to_owned()),
            Value::BulkString(b"PONG".to_vec()),
        ] {
            assert_eq!(judge(&Answer::Pong(pong.clone())).status(), Status::Healthy);
            let both = judge(&Answer::PongAndRole(pong, master()));
            assert_eq!(both.status(), Status::Healthy);
        }
        for other in [
            Value::SimpleString("HELLO".to_owned()),
            Value::Nil,
            Value::Int(1),
        ] {
            for answer in [
                Answer::Pong(other.clone()),
                Answer::PongAndRole(other.clone(), master()),
            ] {
                let result = judge(&answer);
                assert_eq!(result.status(), Status::Unhealthy, "{answer:?}");
                let message = result.message().unwrap_or_default();
                assert!(message.contains("instead of PONG"), "{message}");
            }
        }
    }
}
