//! `SchedulingDelayCheck` run by the runner on the test's own
//! (current-thread) runtime, which a task blocking its thread keeps busy,
//! on the real clock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tower_health::{HealthChecks, checks::runtime::SchedulingDelayCheck};

use crate::support;

/// A task that blocks the runtime's only thread for `block` at each turn
/// until `stop` is set: the mistake the check exists to show (a blocking
/// call in async code).
fn hog(block: Duration, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(block);
            tokio::task::yield_now().await;
        }
    })
}

#[tokio::test]
async fn a_blocked_runtime_degrades_readiness_until_it_is_free_again() {
    // A timeout well under the block, against the module's advice on
    // purpose: a stalled runtime is still reported as the lateness it
    // caused, not as a timeout. (With a timeout under the threshold, many
    // small latenesses could add up to one; a single stall cannot.)
    let options = support::fast_options().timeout(Duration::from_millis(50));
    let health = HealthChecks::builder()
        .check_with("runtime", SchedulingDelayCheck::new(), options)
        .build()
        .unwrap();
    let app = support::serve(&health).await;
    app.wait_details("a first healthy run", |d| {
        d["components"]["runtime"]["status"] == "healthy"
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let task = hog(Duration::from_millis(200), stop.clone());
    let details = app
        .wait_details("the runtime check degraded", |d| {
            d["components"]["runtime"]["status"] != "healthy"
        })
        .await;
    let runtime = &details["components"]["runtime"];
    assert_eq!(runtime["status"], "degraded", "{details}");
    let error = runtime["error"].as_str().expect("a revealed message");
    assert!(
        error.contains("ms late") && error.contains("degraded threshold of 100 ms"),
        "{error}"
    );
    assert_eq!(runtime["observed"]["delay_ms"]["unit"], "ms", "{details}");
    let delay = runtime["observed"]["delay_ms"]["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no delay_ms in {details}"));
    // The block, less the 1 ms the check's timer waited anyway.
    assert!(delay >= 199.0, "{details}");
    // Degraded, not failing: readiness stays 200.
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("degraded"), "{body}");

    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    app.wait_details("the runtime check healthy again", |d| {
        d["components"]["runtime"]["status"] == "healthy"
    })
    .await;
}
