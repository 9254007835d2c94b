//! What the database checks ask a server, with `expect_writable`, to learn
//! whether it accepts writes; and what an answer other than yes means.
//!
//! One query replaces `SELECT 1`, so a run costs one round trip either
//! way. It answers with a word rather than a flag, so that both drivers
//! decode it the same way (tokio-postgres's simple protocol sees only
//! text).

/// A query whose one text column says whether the server takes writes,
/// and how to read it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Writable {
    /// Shown in messages instead of `SELECT 1`.
    pub(super) label: &'static str,
    pub(super) query: &'static str,
    /// `None` if the answer means writable, otherwise why not.
    pub(super) judge: fn(&str) -> Option<String>,
}

/// A standby (in recovery) refuses writes; so does a primary whose
/// transactions are read-only by default (`default_transaction_read_only`
/// for the server, database, role or connection), which is also how a
/// primary is fenced during some failovers. The order matters: a standby's
/// transactions are read-only too.
#[cfg(any(feature = "postgres", feature = "deadpool-postgres"))]
pub(super) const POSTGRES: Writable = Writable {
    label: "the writability query (pg_is_in_recovery, transaction_read_only)",
    query: "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' \
            WHEN current_setting('transaction_read_only') = 'on' THEN 'read-only' \
            ELSE 'primary' END",
    judge: postgres,
};

#[cfg(any(feature = "postgres", feature = "deadpool-postgres"))]
fn postgres(answer: &str) -> Option<String> {
    match answer {
        "primary" => None,
        "standby" => Some(
            "PostgreSQL server is a standby (in recovery), which refuses writes: the pool \
             reaches a replica, not the primary. After a failover, check that the URL (or the \
             name it resolves) points at the new primary, and that the pool has replaced the \
             connections it opened to the old one"
                .to_owned(),
        ),
        "read-only" => Some(
            "PostgreSQL session is read-only (transaction_read_only is on, from \
             default_transaction_read_only): writes fail; look at that setting for the server, \
             the database, the role and the connection's options"
                .to_owned(),
        ),
        other => Some(format!(
            "PostgreSQL answered the writability query with {other:?}, not \"primary\""
        )),
    }
}

/// `read_only` is how MySQL and MariaDB replicas are kept from taking
/// writes (MySQL's `super_read_only` turns it on too); the application's
/// user, without `SUPER`, cannot write while it is on. Its value is 0 or 1
/// in MySQL, `OFF` or `ON` in MariaDB 10, and since MariaDB 12 also
/// `NO_LOCK` or `NO_LOCK_NO_ADMIN` (read-only too): compared as text, since
/// a word counts as 0 in a numeric context. `innodb_read_only` is how
/// Aurora MySQL marks a reader instance (its `read_only` stays off), and
/// what `--innodb-read-only` sets: no user can write to InnoDB tables then.
///
/// Not asked: a read-only default for transactions (`transaction_read_only`
/// in MySQL 8, `tx_read_only` in MariaDB before 11.1), because no variable
/// name is known to both, and one statement naming an unknown variable
/// fails on the server that lacks it.
///
/// The answer is converted to `utf8mb4` with a collation named outright:
/// under a binary connection collation (`utf8mb4_bin`, `binary`, or a
/// binary default that MariaDB 11.2's `character_set_collations` maps
/// `utf8mb4` to) the server marks the column binary, which sqlx does not
/// read as text.
#[cfg(feature = "mysql")]
pub(super) const MYSQL: Writable = Writable {
    label: "the writability query (@@global.read_only, @@global.innodb_read_only)",
    query: "SELECT CONVERT(CASE \
            WHEN CAST(@@global.read_only AS CHAR) NOT IN ('0', 'OFF') THEN 'read-only' \
            WHEN CAST(@@global.innodb_read_only AS CHAR) NOT IN ('0', 'OFF') \
            THEN 'innodb-read-only' \
            ELSE 'writable' END USING utf8mb4) COLLATE utf8mb4_general_ci",
    judge: mysql,
};

#[cfg(feature = "mysql")]
fn mysql(answer: &str) -> Option<String> {
    match answer {
        "writable" => None,
        "read-only" => Some(
            "MySQL server is read-only (@@global.read_only is on), as replicas are: the pool \
             reaches a replica, not the source, or the server was fenced during a failover. \
             Check that the URL (or the name it resolves) points at the writable server, and \
             that the pool has replaced the connections it opened to the old one"
                .to_owned(),
        ),
        "innodb-read-only" => Some(
            "MySQL server's InnoDB is read-only (@@global.innodb_read_only is on), as on an \
             Aurora reader instance or a server started with --innodb-read-only: the pool \
             reaches a reader, not the writer. Check that the URL is the cluster's writer \
             endpoint (not the reader endpoint or an instance's own name), and that the pool \
             has replaced the connections it opened to the old writer"
                .to_owned(),
        ),
        other => Some(format!(
            "MySQL answered the writability query with {other:?}, not \"writable\""
        )),
    }
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::*;

    #[cfg(any(feature = "postgres", feature = "deadpool-postgres"))]
    #[test]
    fn postgres_answers() {
        assert_eq!((POSTGRES.judge)("primary"), None);
        for (answer, says) in [
            ("standby", "standby"),
            ("read-only", "read-only"),
            ("", "\"\""),
        ] {
            let message = (POSTGRES.judge)(answer).expect("not writable");
            assert!(message.contains(says), "{answer}: {message}");
        }
    }

    /// The query's reading of every form `read_only` takes, asked of the
    /// real server at `MYSQL_URL` with the variable replaced by each value.
    #[cfg(feature = "mysql")]
    #[tokio::test]
    async fn mysql_reads_every_form_of_read_only() {
        use sqlx::{Connection, Row};
        let url = std::env::var("MYSQL_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".to_owned());
        let mut connection = sqlx::MySqlConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("MariaDB/MySQL at {url} is needed: {e}"));
        // (read_only, innodb_read_only, answer)
        for (read_only, innodb, answer) in [
            ("0", "0", "writable"),
            ("1", "0", "read-only"),
            ("'0'", "0", "writable"),
            ("'1'", "0", "read-only"),
            ("'OFF'", "'OFF'", "writable"),
            ("'ON'", "'OFF'", "read-only"),
            ("'NO_LOCK'", "0", "read-only"),
            ("'NO_LOCK_NO_ADMIN'", "0", "read-only"),
            ("0", "1", "innodb-read-only"),
            ("'OFF'", "'ON'", "innodb-read-only"),
            ("1", "1", "read-only"),
        ] {
            let query = MYSQL
                .query
                .replace("@@global.read_only", read_only)
                .replace("@@global.innodb_read_only", innodb);
            let row = sqlx::raw_sql(&query)
                .fetch_one(&mut connection)
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(
                row.get::<String, _>(0),
                answer,
                "read_only = {read_only}, innodb_read_only = {innodb}"
            );
        }
        // And the query as it is, on this server: both variables exist.
        let row = sqlx::raw_sql(MYSQL.query)
            .fetch_one(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", MYSQL.query));
        let answer = row.get::<String, _>(0);
        assert!(
            ["writable", "read-only", "innodb-read-only"].contains(&answer.as_str()),
            "{answer}"
        );
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_answers() {
        assert_eq!((MYSQL.judge)("writable"), None);
        let message = (MYSQL.judge)("read-only").expect("not writable");
        assert!(message.contains("(@@global.read_only is on)"), "{message}");
        let message = (MYSQL.judge)("innodb-read-only").expect("not writable");
        assert!(message.contains("innodb_read_only is on"), "{message}");
        assert!(message.contains("Aurora reader"), "{message}");
        assert!((MYSQL.judge)("1").is_some());
    }
}
