//! `tower_health::shutdown_signal` against real signals sent to this test
//! process (a binary of its own, so no other test shares the handlers).

#![cfg(unix)]

use std::{future::Future, pin::pin, time::Duration};

/// Only guards against a hang; nothing here asserts a speed.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// Sends `signal` (`TERM`, `INT`) to this process.
fn raise(signal: &str) {
    let sent = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {}", std::process::id()))
        .status()
        .expect("sh runs");
    assert!(sent.success(), "kill -{signal} failed");
}

/// Polls `wait` once, so its handlers are installed, and checks that it
/// is still waiting.
async fn installed(wait: &mut (impl Future<Output = ()> + Unpin)) {
    let early = tokio::time::timeout(Duration::ZERO, wait).await;
    assert!(early.is_err(), "resolved before any signal");
}

/// Each signal ends the wait, and is handled: the process lives on.
/// One test, so the two signals are sent one after the other.
#[tokio::test]
async fn sigterm_and_sigint_each_end_the_wait() {
    for signal in ["TERM", "INT"] {
        let mut wait = pin!(tower_health::shutdown_signal());
        installed(&mut wait).await;
        // Nothing else ends it: a moment later it still waits.
        let idle = tokio::time::timeout(Duration::from_millis(50), &mut wait).await;
        assert!(idle.is_err(), "resolved without a signal");
        raise(signal);
        tokio::time::timeout(HANG_GUARD, &mut wait)
            .await
            .unwrap_or_else(|_| panic!("SIG{signal} did not end the wait"));
    }
}

/// On a runtime without its IO driver, which delivers signals, the wait
/// cannot be set up: it is logged and the future waits forever, rather
/// than panic in the server's shutdown future.
#[test]
fn without_the_io_driver_the_wait_neither_panics_nor_ends() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let waited = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(3600), tower_health::shutdown_signal()).await
    });
    assert!(waited.is_err(), "resolved without a signal");
}
