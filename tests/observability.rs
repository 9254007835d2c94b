//! The refresher's `tracing` events: transitions (warn when a check starts
//! failing, with its error; info when it recovers), slow runs, and
//! heartbeats missing their deadline, recovering or being dropped.
//!
//! Its own test binary, so the global subscriber it installs sees every
//! event and no other test shares it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tower_health::{CheckOptions, CheckResult, HealthChecks, checks::BlockingCheck};

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

    let runs = AtomicUsize::new(0);
    let (called, blocking_ran) = std::sync::mpsc::channel::<()>();
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
        // Cut at its timeout every run: reported as timed out, not as slow.
        .check_with(
            "hung",
            std::future::pending::<CheckResult>,
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(500)),
        )
        // Passes once, then hangs, below a failure threshold it never
        // reaches here: each timeout is still a warning.
        .check_with(
            "hung-damped",
            move || {
                let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if !first {
                        std::future::pending::<()>().await;
                    }
                    CheckResult::healthy()
                }
            },
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(500))
                .failure_threshold(10),
        )
        // Logs from a thread of its own, inside the run's span.
        .check_with(
            "sync",
            BlockingCheck::new(move || {
                tracing::info!("blocking call ran");
                // Ignored once the test has seen one call.
                let _ = called.send(());
                CheckResult::healthy()
            }),
            CheckOptions::new().interval(Duration::from_secs(3600)),
        )
        .build()
        .unwrap();
    let worker = health.heartbeat("worker", Duration::from_secs(1)).unwrap();
    let doomed = health
        .heartbeat("doomed", Duration::from_secs(3600))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    healthy.store(true, Ordering::SeqCst);
    // `worker` has not beaten for 2.4 s of its 1 s deadline: beating now
    // recovers it.
    worker.beat();
    drop(doomed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(health);
    // (Bounded, so that a regression fails instead of hanging.)
    blocking_ran
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocking check ran");

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // Every run is a span naming its check, on the blocking thread too.
    let blocking = event(&log, "blocking call ran", "sync");
    assert!(
        blocking.contains(r#"health_check{check="sync"}"#),
        "{blocking}"
    );
    let slow = event(&log, "health check slow", "db");
    assert!(slow.contains("duration_ms"), "{slow}");
    assert!(
        !log.lines()
            .any(|line| line.contains("health check slow") && line.contains("hung")),
        "a timed-out run is not also logged as slow: {log}"
    );
    let timed_out = event(&log, "health check failing", "hung");
    assert!(
        timed_out.contains("WARN") && timed_out.contains("TimedOut"),
        "{timed_out}"
    );
    let damped = event(
        &log,
        "health check timed out, below its failure threshold",
        "hung-damped",
    );
    assert!(
        damped.contains("WARN") && damped.contains("timeout_ms=500"),
        "{damped}"
    );
    assert!(
        !log.lines()
            .any(|line| line.contains("hung-damped")
                && !line.contains("below its failure threshold")),
        "{log}"
    );
    let failing = event(&log, "health check failing", "db");
    assert!(
        failing.contains("WARN") && failing.contains("connection refused"),
        "{failing}"
    );
    let recovered = event(&log, "health check recovered", "db");
    assert!(recovered.contains("INFO"), "{recovered}");

    let missed = event(&log, "heartbeat missed its deadline", "worker");
    assert!(
        missed.contains("WARN") && missed.contains("deadline_ms=1000"),
        "{missed}"
    );
    // Missed, recovered, missed again (no beat in the last 2 s): each
    // change once, though the runner published at every check run between.
    assert_eq!(
        log.matches("heartbeat missed its deadline").count(),
        2,
        "logged once per miss, not per publish: {log}"
    );
    let back = event(&log, "heartbeat recovered", "worker");
    assert!(back.contains("INFO"), "{back}");
    let dropped = event(&log, "heartbeat handle dropped", "doomed");
    assert!(dropped.contains("WARN"), "{dropped}");
    assert!(
        log.find("heartbeat missed").unwrap() < log.find("heartbeat recovered").unwrap(),
        "{log}"
    );
}

/// The first line of `log` with `message` that names `subject`.
fn event<'a>(log: &'a str, message: &str, subject: &str) -> &'a str {
    log.lines()
        .find(|line| line.contains(message) && line.contains(subject))
        .unwrap_or_else(|| panic!("no {message:?} event for {subject:?} in {log}"))
}
