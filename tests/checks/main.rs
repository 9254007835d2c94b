//! Tests of the built-in checks (`tower_health::checks`) against real
//! services: PostgreSQL, MariaDB/MySQL and Redis at `DATABASE_URL`,
//! `MYSQL_URL` and `REDIS_URL` (defaults on 127.0.0.1); private
//! `redis-server`, PostgreSQL (a standby) and MariaDB (read-only) servers;
//! and HTTP and TCP servers started by the tests. Outages are made by
//! cutting a TCP proxy or killing the server; nothing is mocked.
//!
//! An unreachable service skips the test (with a note on stderr), or fails
//! it when `CI` is set: see `support::unavailable`.

mod support;

mod deadpool;
mod disk;
mod grpc;
mod http;
mod mysql;
mod postgres;
mod redis;
mod replicas;
mod runtime;
mod sqlite;
mod tcp;
