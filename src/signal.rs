//! The signal to give [`HealthHandle::graceful_shutdown`]: the ones a
//! process is asked to stop with.
//!
//! Kubernetes, Docker and systemd stop a process with `SIGTERM`, not with
//! the `SIGINT` of Ctrl-C that `tokio::signal::ctrl_c()` waits for. A server
//! that waits for `ctrl_c()` alone never drains under an orchestrator: the
//! default action of `SIGTERM` ends the process at once, cutting off the
//! requests in flight, and a process running as PID 1 in its container
//! (no init) ignores it, until the kubelet's `SIGKILL` at the end of the
//! grace period.
//!
//! [`HealthHandle::graceful_shutdown`]: crate::HealthHandle::graceful_shutdown

/// Resolves when the process is asked to stop: on Unix at the first
/// `SIGTERM` or `SIGINT` (Ctrl-C), elsewhere at Ctrl-C.
///
/// Pass it to [`graceful_shutdown`](crate::HealthHandle::graceful_shutdown).
/// The handlers are installed when the future is first polled (for axum,
/// when `axum::serve` starts), and from then on these signals no longer
/// end the process by themselves: the server decides when to exit. A
/// handler that cannot be installed is logged at `warn` and its signal is
/// not waited for (it then still ends the process at once, without a
/// drain); the future never resolves because of such an error. On a
/// runtime built without its IO driver, which delivers signals, Tokio
/// panics rather than return the error: that panic is caught (the panic
/// hook still prints it, and a build with `panic = "abort"` aborts), so
/// build the runtime with `enable_all()` or `enable_io()`.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_health::HealthChecks;
///
/// let health = HealthChecks::builder().build()?;
/// let app = health.layer().wrap_axum(axum::Router::new());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app)
///     .with_graceful_shutdown(health.graceful_shutdown(tower_health::shutdown_signal()))
///     .await?;
/// # Ok(()) }
/// ```
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::SignalKind;
        let interrupt = wait_for(SignalKind::interrupt(), "Ctrl-C (SIGINT)");
        let terminate = wait_for(SignalKind::terminate(), "SIGTERM");
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::warn!(%error, "health: cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
    tracing::debug!("health: shutdown signal received");
}

/// Waits for `kind`, or forever if it cannot be listened for (logged).
#[cfg(unix)]
async fn wait_for(kind: tokio::signal::unix::SignalKind, name: &str) {
    // Tokio panics, rather than return an error, on a runtime built
    // without its IO driver, which delivers signals.
    match std::panic::catch_unwind(|| tokio::signal::unix::signal(kind)) {
        Ok(Ok(mut signal)) => {
            signal.recv().await;
            return;
        }
        Ok(Err(error)) => tracing::warn!(
            %error,
            "health: cannot listen for {name}; it ends the process at once, without a drain"
        ),
        Err(_) => tracing::warn!(
            "health: cannot listen for {name}: the Tokio runtime was built without its IO \
             driver (Builder::enable_io or enable_all), which delivers signals; {name} ends \
             the process at once, without a drain"
        ),
    }
    std::future::pending::<()>().await;
}
