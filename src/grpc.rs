//! The gRPC health checking protocol (`grpc.health.v1.Health`) from the
//! same checks (feature `tonic-health`).
//!
//! Kubernetes' `grpc` probes, `grpc-health-probe` and gRPC load balancers
//! (Envoy, cloud load balancers) ask a gRPC server for its health over
//! `grpc.health.v1.Health` rather than over HTTP paths. [`health_service`]
//! returns tonic-health's implementation of that service, kept in step with
//! the probes by a task of its own, so a gRPC health call is answered from
//! memory like an HTTP probe. Its service names:
//!
//! | service | status |
//! |---|---|
//! | `""` (the server as a whole) | readiness, as `/readyz`: what load balancers ask |
//! | [`READINESS`] (`readiness`) | the same |
//! | [`LIVENESS`] (`liveness`) | liveness, as `/livez`: what a Kubernetes liveness probe should ask |
//! | [`STARTUP`] (`startup`) | startup, as `/startupz` |
//! | each check and heartbeat, by name | `SERVING` while it passes (degraded included), `NOT_SERVING` when it fails, `UNKNOWN` before its first result |
//!
//! A probe is `SERVING` when it passes (`healthy` or `degraded`), whatever
//! status codes the HTTP layer maps them to; the in-flight limit, which is
//! per HTTP request, does not count. A check or heartbeat named like one of
//! the probes' services is left out: the probe has the name (registering
//! it logs a warning). As with the
//! HTTP probes, staleness is judged as time passes, even when the refresher
//! is held up, and every service turns `NOT_SERVING` once the checks are
//! gone (every handle and layer dropped).
//!
//! Since `""` is readiness, a Kubernetes liveness probe must name its
//! service, or it restarts the pod when a dependency fails:
//!
//! ```yaml
//! livenessProbe:
//!   grpc: { port: 50051, service: liveness }
//! readinessProbe:
//!   grpc: { port: 50051 }
//! ```
//!
//! # Example
//!
//! ```no_run
//! use tower_health::{HealthChecks, grpc};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let health = HealthChecks::builder()
//!     .check("db", || async { Ok::<_, std::io::Error>(()) })
//!     .build()?;
//! let health_service = grpc::health_service(&health).await;
//!
//! tonic::transport::Server::builder()
//!     .add_service(health_service)
//!     // .add_service(your services)
//!     .serve("127.0.0.1:50051".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use tokio::task::JoinHandle;
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::{HealthReporter, health_reporter},
};

use crate::{HealthHandle, Overview, ProbeStatus, Status, follow::Follow};

/// The service name answered with liveness.
pub const LIVENESS: &str = "liveness";
/// The service name answered with readiness, as `""` is.
pub const READINESS: &str = "readiness";
/// The service name answered with startup.
pub const STARTUP: &str = "startup";

/// tonic-health's `grpc.health.v1.Health` service, answering from `health`'s
/// checks. See the [module documentation](self).
///
/// The statuses are set before this returns; a task spawned on the current
/// Tokio runtime keeps them in step. It must be called within a runtime.
/// The service does not keep the checks running: hold the
/// [`HealthHandle`] (or a layer) for as long as the server runs, or every
/// service turns `NOT_SERVING` when the last one is dropped.
///
/// Each call spawns a task of its own, which lives as long as the checks
/// (it does not notice the server being dropped): an application that
/// builds its tonic server again, on a reload, should keep the service
/// from the first call and clone it, rather than call this again.
pub async fn health_service(health: &HealthHandle) -> HealthServer<impl Health> {
    let (reporter, server) = health_reporter();
    report_to(health, reporter).await;
    server
}

/// Keeps `reporter` in step with `health`'s probes and checks, for an
/// application that already has a tonic-health reporter (and sets its own
/// services' statuses on it too). Sets the statuses once before it
/// returns, then spawns the task that keeps them in step, and returns it.
/// The task lives as long as the checks: abort it if `reporter`'s server
/// goes away first.
pub async fn report_to(health: &HealthHandle, reporter: HealthReporter) -> JoinHandle<()> {
    let mut follower = Follower {
        follow: Follow::new(&health.owner.shared),
        reporter,
        published: HashMap::new(),
    };
    // `health` holds the checks, so they are not gone yet.
    if let Some(overview) = follower.follow.judge() {
        follower.publish(&overview).await;
    }
    tokio::spawn(follower.run())
}

/// The task that keeps a reporter in step with the checks.
struct Follower {
    follow: Follow,
    reporter: HealthReporter,
    /// What the reporter has been told, by service name.
    published: HashMap<String, ServingStatus>,
}

impl Follower {
    /// Publishes again on every change, and as the published results pass
    /// their freshness, until the checks are gone.
    async fn run(mut self) {
        while self.follow.changed().await {
            let Some(overview) = self.follow.judge() else {
                break;
            };
            self.publish(&overview).await;
        }
        // The checks are gone: nothing they judged is served any more.
        for name in std::mem::take(&mut self.published).into_keys() {
            self.reporter
                .set_service_status(&name, ServingStatus::NotServing)
                .await;
        }
    }

    /// Tells the reporter what changed.
    async fn publish(&mut self, overview: &Overview) {
        let probes = [
            ("", overview.readiness),
            (READINESS, overview.readiness),
            (LIVENESS, overview.liveness),
            (STARTUP, overview.startup),
        ];
        let mut wanted: Vec<(&str, ServingStatus)> = probes
            .iter()
            .map(|&(name, status)| (name, serving(status)))
            .collect();
        for (name, status) in &overview.components {
            if probes.iter().all(|(probe, _)| **name != **probe) {
                let status = match status {
                    None => ServingStatus::Unknown,
                    Some(Status::Healthy | Status::Degraded) => ServingStatus::Serving,
                    Some(Status::Unhealthy) => ServingStatus::NotServing,
                };
                wanted.push((name, status));
            }
        }
        // A component no longer registered (a removed check) is no longer
        // known to the service. Its watchers are told it is not serving
        // before their streams end (tonic-health ends them as it forgets
        // the name), rather than seeing a stream end with no last word.
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|name| wanted.iter().all(|(wanted, _)| wanted != name))
            .cloned()
            .collect();
        for name in gone {
            self.published.remove(&name);
            self.reporter
                .set_service_status(&name, ServingStatus::NotServing)
                .await;
            self.reporter.clear_service_status(&name).await;
        }
        for (name, status) in wanted {
            if self.published.get(name) != Some(&status) {
                self.set(name.to_owned(), status).await;
            }
        }
    }

    async fn set(&mut self, name: String, status: ServingStatus) {
        self.reporter.set_service_status(&name, status).await;
        self.published.insert(name, status);
    }
}

fn serving(status: ProbeStatus) -> ServingStatus {
    if status.is_passing() {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use tonic_health::{
        pb::{HealthCheckRequest, health_check_response::ServingStatus as Pb},
        server::HealthService,
    };

    use super::*;
    use crate::{
        CheckOptions, CheckResult, HealthChecks, Probes,
        test_util::{advance, aging, settle, slow_switch},
    };

    /// What the real tonic-health service answers for `name`; `None` for a
    /// service it does not know.
    async fn ask(service: &HealthService, name: &str) -> Option<Pb> {
        let request = tonic::Request::new(HealthCheckRequest {
            service: name.to_owned(),
        });
        match Health::check(service, request).await {
            Ok(response) => Some(response.into_inner().status()),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
                None
            }
        }
    }

    async fn answers(service: &HealthService, names: &[&str]) -> Vec<Option<Pb>> {
        let mut answers = Vec::new();
        for name in names {
            answers.push(ask(service, name).await);
        }
        answers
    }

    const S: Option<Pb> = Some(Pb::Serving);
    const N: Option<Pb> = Some(Pb::NotServing);
    const U: Option<Pb> = Some(Pb::Unknown);

    #[tokio::test(start_paused = true)]
    async fn probes_and_checks_are_services_kept_in_step() {
        let up = Arc::new(AtomicBool::new(true));
        let health = HealthChecks::builder()
            .check_with(
                "db",
                slow_switch(&up, Duration::from_secs(1)),
                CheckOptions::new().interval(Duration::from_secs(5)),
            )
            .check_with(
                // Named like a probe's service: left out, the probe has it.
                "liveness",
                || async { CheckResult::unhealthy("not a probe") },
                CheckOptions::new()
                    .probes(Probes::READINESS)
                    .critical(false),
            )
            .build()
            .unwrap();
        let (reporter, _) = health_reporter();
        let service = HealthService::from_health_reporter(reporter.clone());
        let names = ["", READINESS, LIVENESS, STARTUP, "db", "nosuch"];

        // Set before `report_to` returns: startup waits for db's first run.
        let task = report_to(&health, reporter).await;
        assert_eq!(answers(&service, &names).await, [N, N, S, N, U, None]);

        advance(Duration::from_millis(1100)).await;
        assert_eq!(answers(&service, &names).await, [S, S, S, S, S, None]);

        // db fails: readiness with it; liveness does not judge db.
        up.store(false, Ordering::SeqCst);
        advance(Duration::from_secs(7)).await;
        assert_eq!(answers(&service, &names).await, [N, N, S, S, N, None]);

        // Removed: no longer a service.
        assert!(health.remove_check("db"));
        settle().await;
        assert_eq!(ask(&service, "db").await, None);
        assert_eq!(ask(&service, "").await, S);

        // Out of rotation: readiness only, until returned.
        health.take_out_of_rotation();
        settle().await;
        assert_eq!(answers(&service, &names[..4]).await, [N, N, S, S]);
        health.return_to_rotation();
        settle().await;
        assert_eq!(answers(&service, &names[..4]).await, [S, S, S, S]);

        // Every handle gone: nothing is served, and the task ends.
        drop(health);
        settle().await;
        assert_eq!(answers(&service, &names[..4]).await, [N, N, N, N]);
        assert!(task.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_turning_stale_shows_without_the_refresher() {
        let health = aging(&[("db", 30), ("cache", 60)]);
        settle().await;
        let (reporter, _) = health_reporter();
        let service = HealthService::from_health_reporter(reporter.clone());
        let _task = report_to(&health, reporter).await;
        let names = ["", "db", "cache"];
        assert_eq!(answers(&service, &names).await, [S, S, S]);

        // The refresher stops: nothing publishes any more, yet each result
        // turns stale on time, as an HTTP probe would judge it; the second
        // one after the published results' freshness has already passed.
        health.shutdown();
        advance(Duration::from_secs(25)).await;
        assert_eq!(answers(&service, &names).await, [S, S, S]);
        advance(Duration::from_secs(10)).await;
        assert_eq!(answers(&service, &names).await, [N, N, S]);
        advance(Duration::from_secs(30)).await;
        assert_eq!(answers(&service, &names).await, [N, N, N]);
    }
}
