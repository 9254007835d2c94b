//! The refresher's `tracing` events: transitions (warn when a check starts
//! failing, with its error; info when it recovers) and slow runs.
//!
//! Its own test binary, so the global subscriber it installs sees every
//! event and no other test shares it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tower_health::{CheckOptions, CheckResult, HealthChecks};

/// Captures what `tracing` writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn transitions_and_slow_runs_are_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // A global subscriber, in a test binary of its own: with a
    // thread-local one, tracing's global callsite cache can drop events
    // when other tests emit the same events on other threads.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let health = HealthChecks::builder()
        .check_with(
            "db",
            move || {
                let ok = flag.load(Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if ok {
                        CheckResult::healthy()
                    } else {
                        CheckResult::unhealthy("connection refused")
                    }
                }
            },
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .slow_threshold(Duration::from_millis(200)),
        )
        .build()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(health);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("health check slow") && log.contains("duration_ms"),
        "{log}"
    );
    let failing = event(&log, "health check failing");
    assert!(
        failing.contains("WARN") && failing.contains("connection refused"),
        "{failing}"
    );
    let recovered = event(&log, "health check recovered");
    assert!(
        recovered.contains("INFO") && recovered.contains("db"),
        "{recovered}"
    );
}

/// The first line of `log` with `message`.
fn event<'a>(log: &'a str, message: &str) -> &'a str {
    log.lines()
        .find(|line| line.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} event in {log}"))
}
