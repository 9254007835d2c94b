//! Asks a gRPC upstream's own health service (feature `tonic-health`).
//!
//! [`GrpcCheck`] calls `grpc.health.v1.Health/Check` on a tonic channel the
//! application already has, the same protocol Kubernetes' `grpc` probes and
//! `grpc-health-probe` speak. `SERVING` passes; `NOT_SERVING`, `UNKNOWN`, a
//! service the server does not know (`NOT_FOUND`), a server without the
//! health service (`UNIMPLEMENTED`) and any error fail the run, each with a
//! message saying which. The runner's timeout bounds the call, so the
//! check sets no deadline of its own.
//!
//! The channel is the application's: tonic's `Channel` multiplexes calls
//! over its HTTP/2 connection(s), so the check adds a small call every
//! interval, not a connection, and its calls travel the way the
//! application's do. (A channel balanced over several endpoints sends each
//! call to one of them: the check then speaks for whichever it reached.)
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "tonic-health")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_health::{HealthChecks, checks::grpc::GrpcCheck};
//!
//! // The application's channel to the upstream (here one that connects
//! // when first used).
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let health = HealthChecks::builder()
//!     // The server's overall health (service "").
//!     .check("inventory", GrpcCheck::new(channel.clone()))
//!     // One service of it.
//!     .check("inventory-orders", GrpcCheck::new(channel).service("shop.Orders"))
//!     .build()?;
//! # drop(health);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tonic-health"))]
//! # fn main() {}
//! ```

use std::fmt;

use tonic::{
    Code,
    client::GrpcService,
    codegen::{Body, Bytes, StdError},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{Check, CheckResult, check::error_chain};

/// Calls `grpc.health.v1.Health/Check` on a channel. See the
/// [module documentation](self).
#[derive(Clone)]
pub struct GrpcCheck<T> {
    client: HealthClient<T>,
    service: String,
}

impl<T> GrpcCheck<T>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// A check of the server's overall health (the service named `""`) on
    /// `channel`: a `tonic::transport::Channel`, or any gRPC service tonic's
    /// clients accept (a channel wrapped in an interceptor for auth, say).
    pub fn new(channel: T) -> Self {
        Self {
            client: HealthClient::new(channel),
            service: String::new(),
        }
    }
}

impl<T> GrpcCheck<T> {
    /// Asks for one service's health instead of the server's overall
    /// health: its fully qualified name, e.g. `"shop.Orders"`, as the
    /// server registered it with its health service.
    #[must_use]
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = name.into();
        self
    }

    /// The service asked about (`""`: the server as a whole).
    pub fn service_name(&self) -> &str {
        &self.service
    }
}

impl<T> fmt::Debug for GrpcCheck<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCheck")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<T> Check for GrpcCheck<T>
where
    T: GrpcService<tonic::body::Body> + Clone + Send + Sync + 'static,
    T::Error: Into<StdError>,
    T::Future: Send,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    async fn check(&self) -> CheckResult {
        // A clone per run: tonic's clients are handles on the channel.
        let mut client = self.client.clone();
        let request = HealthCheckRequest {
            service: self.service.clone(),
        };
        // Named only when the run fails: a passing run formats nothing.
        let what = || self.describe();
        match client.check(request).await {
            Ok(response) => match ServingStatus::try_from(response.into_inner().status) {
                Ok(ServingStatus::Serving) => CheckResult::healthy(),
                Ok(status) => CheckResult::unhealthy(format!(
                    "{} answered {}: the upstream says it cannot serve",
                    what(),
                    status.as_str_name()
                )),
                Err(_) => CheckResult::unhealthy(format!(
                    "{} answered a serving status this client does not know",
                    what()
                )),
            },
            Err(status) => CheckResult::unhealthy(match status.code() {
                Code::NotFound => format!(
                    "{}: the server does not know the service (NOT_FOUND); check the \
                     name, which must be the one the server registered with its health \
                     service",
                    what()
                ),
                Code::Unimplemented => format!(
                    "{}: the server has no grpc.health.v1.Health service \
                     (UNIMPLEMENTED); check a method of its own instead",
                    what()
                ),
                code => format!(
                    "{} failed ({}): {}; check that the upstream is listening and \
                     reachable from here",
                    what(),
                    code_name(code),
                    detail(&status)
                ),
            }),
        }
    }
}

impl<T> GrpcCheck<T> {
    fn describe(&self) -> String {
        if self.service.is_empty() {
            "gRPC health check of the server".to_owned()
        } else {
            format!("gRPC health check of service {:?}", self.service)
        }
    }
}

/// The status's message and the chain of errors under it (a transport
/// error's cause), without tonic's `Display`, which prints the cause's
/// `Debug` form.
fn detail(status: &tonic::Status) -> String {
    let message = status.message();
    match std::error::Error::source(status) {
        None => message.to_owned(),
        Some(source) => {
            let chain = error_chain(source);
            if message.is_empty() || chain.contains(message) {
                chain
            } else {
                format!("{message}: {chain}")
            }
        }
    }
}

/// A status code's canonical name, as gRPC's tools print it
/// (`UNAVAILABLE`, where tonic's `Debug` says `Unavailable`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
