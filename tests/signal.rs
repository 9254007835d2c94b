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
