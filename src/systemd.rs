//! Telling systemd how the service stands (feature `systemd`, Unix): the
//! probes' counterparts for a service run by systemd rather than
//! Kubernetes.
//!
//! For a unit with `Type=notify` (and, for the watchdog, `WatchdogSec=`),
//! a [`Notifier`] sends systemd, over the socket it names in
//! `NOTIFY_SOCKET`:
//!
//! - `READY=1` once startup passes (what `/startupz` answers): systemd
//!   holds the units that depend on this one, and `systemctl start`, until
//!   then;
//! - `WATCHDOG=1` every half `WatchdogSec` while liveness passes (what
//!   `/livez` answers): once liveness fails (a heartbeat missed, the
//!   refresher gone), or the process stops being scheduled at all, the
//!   pings stop and systemd restarts the service after `WatchdogSec`, as a
//!   kubelet restarts a container whose liveness probe fails (with
//!   `Restart=on-failure` or `on-watchdog`);
//! - `STOPPING=1` when the drain begins
//!   ([`graceful_shutdown`](crate::HealthHandle::graceful_shutdown)'s
//!   signal, or [`drain`](crate::HealthHandle::drain));
//! - `STATUS=...` whenever a probe's answer changes, shown by
//!   `systemctl status`: `readiness: unhealthy (failing: db); liveness:
//!   healthy`. Names only, never error texts, and cut at 1 KiB (systemd
//!   ignores a notification over 4 KiB whole); it goes in a datagram of
//!   its own, so a long one never takes a state change with it.
//!
//! A message that cannot be sent (the socket not there yet, the manager's
//! queue full: sends never block) is sent again each second until it is.
//!
//! Start it once the server's port is bound: `READY=1` goes out as soon
//! as startup passes, and a unit ordered after this one may connect at
//! once. (Startup that must also wait for something else:
//! [`require_mark_started`](crate::HealthChecksBuilder::require_mark_started)
//! and [`mark_started`](crate::HealthHandle::mark_started).) `READY=1`
//! waits for the checks startup waits for: give the unit a
//! `TimeoutStartSec=` long enough for them, the counterpart of a startup
//! probe's `failureThreshold × periodSeconds`, or systemd kills the
//! service at boot while a dependency is still down.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_health::{HealthChecks, systemd::Notifier};
//!
//! let health = HealthChecks::builder().build()?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! // `None` when not run by systemd as a `Type=notify` service.
//! if let Some(notifier) = Notifier::from_env() {
//!     tokio::spawn(notifier.run(&health));
//! }
//! // ... serve on `listener`
//! # drop(listener);
//! # Ok(()) }
//! ```
//!
//! ```ini
//! [Service]
//! Type=notify
//! ExecStart=/usr/local/bin/api
//! TimeoutStartSec=120
//! WatchdogSec=30
//! Restart=on-failure
//! ```
//!
//! The protocol is a datagram to a Unix socket, written here with the
//! standard library: the `sd-notify` crate reads the socket's name only
//! from the environment, which the tests could not point at a socket of
//! their own (setting a variable needs `unsafe` code, which this crate
//! forbids).

use std::{
    ffi::OsString,
    future::Future,
    io,
    os::unix::{ffi::OsStrExt as _, net::UnixDatagram},
    path::Path,
    sync::Weak,
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    HealthHandle, Overview, ProbeStatus,
    follow::Follow,
    runner::Shared,
    snapshot::{Probe, Snapshot, View},
};

/// Sends systemd what the probes answer. See the [module
/// documentation](self).
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: OsString,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier for the service manager that started this process: the
    /// socket in `NOTIFY_SOCKET` and, when `WATCHDOG_USEC` is set (and
    /// `WATCHDOG_PID`, if set, names this process), its watchdog interval.
    /// `None` without `NOTIFY_SOCKET`: not run by systemd, or not as a
    /// `Type=notify` service.
    pub fn from_env() -> Option<Self> {
        from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }

    /// A notifier for the socket at `socket`, a path, or `@name` for a
    /// socket in Linux's abstract namespace (as `NOTIFY_SOCKET` gives
    /// either), with no watchdog.
    pub fn new(socket: impl Into<OsString>) -> Self {
        Self {
            socket: socket.into(),
            watchdog: None,
        }
    }

    /// Pings the watchdog every half `interval` (the unit's `WatchdogSec`)
    /// while liveness passes. [`from_env`](Self::from_env) sets it from the
    /// environment. Zero turns the watchdog off; an interval under
    /// [`SHORTEST_WATCHDOG`] counts as that (a ping every 10 ms at most).
    #[must_use]
    pub fn watchdog(mut self, interval: Duration) -> Self {
        self.watchdog = (!interval.is_zero()).then(|| interval.max(SHORTEST_WATCHDOG));
        self
    }

    /// The watchdog interval, if any.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Tells systemd how `health`'s probes stand, at once and then at
    /// every change, until the checks are gone (every handle and layer
    /// dropped: then the watchdog is no longer pinged). Spawn it. The
    /// future holds no handle, so it does not keep the checks running.
    ///
    /// A message that cannot be sent (no socket there, the manager's
    /// buffer full) is logged at `warn` once, then at `debug`, and sent
    /// again each second until it is; the notifier never blocks its
    /// thread.
    pub fn run(self, health: &HealthHandle) -> impl Future<Output = ()> + Send + 'static {
        let follow = Follow::new(&health.owner.shared);
        let shared = std::sync::Arc::downgrade(&health.owner.shared);
        async move { self.follow(follow, shared).await }
    }

    async fn follow(self, mut follow: Follow, shared: Weak<Shared>) {
        let mut sender = Sender::new(&self.socket);
        let mut told = Told::default();
        let mut next_ping = Instant::now();
        loop {
            let Some(overview) = follow.judge() else {
                return;
            };
            let snapshot = shared.upgrade().map(|shared| shared.snapshot.load_full());
            let draining = snapshot.as_ref().is_some_and(|snap| snap.draining);
            let now = Instant::now();
            let live = overview.liveness.is_passing();
            // The states in a datagram of their own, so that a long status
            // line never takes them with it; each counts as told once
            // sent, and is sent again after a failure.
            let ready = !told.ready && overview.startup.is_passing();
            let stopping = draining && !told.stopping;
            let ping = self.watchdog.is_some() && live && now >= next_ping;
            let mut states = String::new();
            for (due, state) in [
                (ready, "READY=1\n"),
                (stopping, "STOPPING=1\n"),
                (ping, "WATCHDOG=1\n"),
            ] {
                if due {
                    states.push_str(state);
                }
            }
            let mut failed = false;
            if !states.is_empty() {
                if sender.send(&states) {
                    told.ready |= ready;
                    told.stopping |= stopping;
                    if let (true, Some(interval)) = (ping, self.watchdog) {
                        next_ping = now + interval / 2;
                    }
                } else {
                    failed = true;
                    if let (true, Some(interval)) = (ping, self.watchdog) {
                        next_ping = now + RETRY.min(interval / 4);
                    }
                }
            }
            let status = status_line(snapshot.as_deref(), &overview);
            if told.status.as_deref() != Some(status.as_str()) {
                if sender.send(&format!("STATUS={status}\n")) {
                    told.status = Some(status);
                } else {
                    failed = true;
                }
            }
            if let Some(interval) = self.watchdog
                && live != told.live
            {
                if !live {
                    tracing::warn!(
                        watchdog_ms = interval.as_millis() as u64,
                        "health: liveness fails: systemd's watchdog is no longer pinged, and \
                         systemd restarts the service unless liveness passes again in time"
                    );
                }
                told.live = live;
            }
            let wake = async {
                let ping = (self.watchdog.is_some() && live).then_some(next_ping);
                let retry = failed.then(|| now + RETRY);
                match ping.into_iter().chain(retry).min() {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = follow.changed() => if !changed { return },
                () = wake => {}
            }
        }
    }
}

/// How soon a message that could not be sent is sent again (a ping:
/// within a quarter of the watchdog interval, if that is sooner, so that
/// it still comes before systemd's deadline).
const RETRY: Duration = Duration::from_secs(1);

/// The shortest watchdog interval [`Notifier::watchdog`] takes.
pub const SHORTEST_WATCHDOG: Duration = Duration::from_millis(20);

/// The longest status line sent: systemd ignores a notification longer
/// than its 4 KiB buffer, whole.
const MAX_STATUS: usize = 1024;

/// What systemd has been told.
#[derive(Debug)]
struct Told {
    ready: bool,
    stopping: bool,
    status: Option<String>,
    live: bool,
}

impl Default for Told {
    fn default() -> Self {
        Self {
            ready: false,
            stopping: false,
            status: None,
            live: true,
        }
    }
}

/// `readiness: unhealthy (failing: db); liveness: healthy`, and startup
/// while it has not passed.
fn status_line(snapshot: Option<&Snapshot>, overview: &Overview) -> String {
    let reasons = snapshot.map(|snap| {
        let view = View {
            snap,
            now: Instant::now(),
            reveal: false,
            busy: false,
            exclude: &[],
        };
        let reason = |probe| view.verdict(probe).reason(snap);
        [
            reason(Probe::Startup),
            reason(Probe::Readiness),
            reason(Probe::Liveness),
        ]
    });
    let [startup, readiness, liveness] = reasons.unwrap_or_default();
    let part = |name: &str, status: ProbeStatus, reason: Option<String>| match reason {
        Some(reason) => format!("{name}: {} ({reason})", status.as_str()),
        None => format!("{name}: {}", status.as_str()),
    };
    let mut line = String::new();
    if !overview.startup.is_passing() {
        line = part("startup", overview.startup, startup) + "; ";
    }
    let mut line = line
        + &part("readiness", overview.readiness, readiness)
        + "; "
        + &part("liveness", overview.liveness, liveness);
    if line.len() > MAX_STATUS {
        let mut end = MAX_STATUS - '…'.len_utf8();
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

/// [`Notifier::from_env`] on the values given.
fn from_vars(
    socket: Option<OsString>,
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Option<Notifier> {
    let socket = socket.filter(|socket| !socket.is_empty())?;
    let ours = watchdog_pid.is_none_or(|watched| watched.trim().parse() == Ok(pid));
    let watchdog = watchdog_usec
        .and_then(|usec| usec.trim().parse::<u64>().ok())
        .filter(|_| ours)
        .map_or(Duration::ZERO, Duration::from_micros);
    Some(Notifier::new(socket).watchdog(watchdog))
}

/// A datagram socket to the manager's; never blocks.
struct Sender<'a> {
    to: &'a OsString,
    socket: Option<UnixDatagram>,
    failed: bool,
}

impl<'a> Sender<'a> {
    fn new(to: &'a OsString) -> Self {
        Self {
            to,
            socket: None,
            failed: false,
        }
    }

    /// Whether `message` was sent.
    fn send(&mut self, message: &str) -> bool {
        let Err(error) = self.try_send(message) else {
            // A later failure is news again.
            self.failed = false;
            return true;
        };
        if self.failed {
            tracing::debug!(%error, socket = ?self.to, "health: systemd notification not sent");
        } else {
            self.failed = true;
            tracing::warn!(
                %error,
                socket = ?self.to,
                "health: systemd notification not sent; it is sent again each second (failures \
                 until one is sent are logged at debug)"
            );
        }
        false
    }

    fn try_send(&mut self, message: &str) -> io::Result<()> {
        let socket = match &self.socket {
            Some(socket) => socket,
            None => {
                let socket = UnixDatagram::unbound()?;
                socket.set_nonblocking(true)?;
                self.socket.insert(socket)
            }
        };
        let name = self.to.as_bytes();
        #[cfg(target_os = "linux")]
        if let Some(abstract_name) = name.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt as _;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            socket.send_to_addr(message.as_bytes(), &address)?;
            return Ok(());
        }
        socket.send_to(
            message.as_bytes(),
            Path::new(std::ffi::OsStr::from_bytes(name)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::PathBuf,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::{CheckResult, HealthChecks, test_util::advance};

    /// A socket of the test's own in the manager's place.
    struct Manager {
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl Manager {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "tower-health-notify-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_nonblocking(true).unwrap();
            Self { socket, path }
        }

        /// The messages received since the last call.
        fn received(&self) -> Vec<String> {
            let mut buf = [0; 4096];
            let mut messages = Vec::new();
            while let Ok(n) = self.socket.recv(&mut buf) {
                messages.push(String::from_utf8(buf[..n].to_vec()).unwrap());
            }
            messages
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Ready once startup passes, the watchdog pinged every half interval
    /// while liveness passes and not while it fails, stopping at the
    /// drain, the status at every change; the task ends with the checks.
    #[tokio::test(start_paused = true)]
    async fn ready_watchdog_while_live_stopping_and_status() {
        let manager = Manager::new();
        let health = HealthChecks::builder()
            .check("db", || async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                CheckResult::healthy()
            })
            .build()
            .unwrap();
        let worker = health.heartbeat("worker", Duration::from_secs(28)).unwrap();
        let task = tokio::spawn(
            Notifier::new(manager.path.clone())
                .watchdog(Duration::from_secs(10))
                .run(&health),
        );
        advance(Duration::from_millis(10)).await;
        assert_eq!(
            manager.received(),
            [
                "WATCHDOG=1\n",
                "STATUS=startup: starting (waiting for: db); readiness: starting (waiting for: \
                 db); liveness: healthy\n"
            ]
        );
        advance(Duration::from_secs(1)).await;
        assert_eq!(
            manager.received(),
            [
                "READY=1\n",
                "STATUS=readiness: healthy; liveness: healthy\n"
            ]
        );

        // Pinged every 5 s (at 0, 5, ... 25 s) until the heartbeat misses
        // its deadline at 28 s; then not at all. (`second`: the whole
        // second just passed, a few ms ago.)
        let mut pinged = Vec::new();
        for second in 2..=60 {
            advance(Duration::from_secs(1)).await;
            for message in manager.received() {
                if message.contains("WATCHDOG=1") {
                    pinged.push(second);
                }
                if message.contains("liveness: unhealthy") {
                    assert_eq!(
                        message,
                        "STATUS=readiness: healthy; liveness: unhealthy (failing: worker)\n"
                    );
                    pinged.push(1000 + second);
                }
            }
        }
        assert_eq!(pinged, [5, 10, 15, 20, 25, 1028]);

        // Alive again: pinged at once.
        worker.beat();
        advance(Duration::from_millis(10)).await;
        assert_eq!(
            manager.received(),
            [
                "WATCHDOG=1\n",
                "STATUS=readiness: healthy; liveness: healthy\n"
            ]
        );

        health.drain();
        advance(Duration::from_millis(10)).await;
        assert_eq!(
            manager.received(),
            [
                "STOPPING=1\n",
                "STATUS=readiness: draining (shutting down); liveness: healthy\n"
            ]
        );

        worker.retire();
        drop(health);
        advance(Duration::from_millis(10)).await;
        assert!(task.is_finished(), "the notifier ends with the checks");
    }

    /// A drain after the instance was taken out of rotation (readiness
    /// answered `draining` already, so the probes' answers do not change)
    /// is told all the same.
    #[tokio::test(start_paused = true)]
    async fn stopping_is_told_after_out_of_rotation() {
        let manager = Manager::new();
        let health = HealthChecks::builder().build().unwrap();
        let task = tokio::spawn(Notifier::new(manager.path.clone()).run(&health));
        advance(Duration::from_millis(10)).await;
        assert_eq!(manager.received().len(), 2, "READY and the status");
        health.take_out_of_rotation();
        advance(Duration::from_millis(10)).await;
        assert_eq!(
            manager.received(),
            ["STATUS=readiness: draining (taken out of rotation); liveness: healthy\n"]
        );
        health.drain();
        advance(Duration::from_millis(10)).await;
        assert_eq!(
            manager.received(),
            [
                "STOPPING=1\n",
                "STATUS=readiness: draining (shutting down); liveness: healthy\n"
            ]
        );
        task.abort();
    }

    /// A socket in Linux's abstract namespace, named `@name`.
    #[cfg(target_os = "linux")]
    #[tokio::test(start_paused = true)]
    async fn an_abstract_socket_is_reached() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("tower-health-notify-abstract-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let manager = UnixDatagram::bind_addr(&address).unwrap();
        manager.set_nonblocking(true).unwrap();
        let health = HealthChecks::builder().build().unwrap();
        let task = tokio::spawn(Notifier::new(format!("@{name}")).run(&health));
        advance(Duration::from_millis(10)).await;
        let mut buf = [0; 512];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "READY=1\n");
        task.abort();
    }

    /// With no socket there, the failure is logged once at `warn`, and
    /// the notifier goes on.
    #[tokio::test(start_paused = true)]
    async fn a_missing_socket_is_a_warning_once() {
        let (guard, logged) = crate::test_util::capture(tracing::Level::WARN);
        let health = HealthChecks::builder().build().unwrap();
        let missing = std::env::temp_dir().join("tower-health-no-such-socket");
        let task = tokio::spawn(
            Notifier::new(missing)
                .watchdog(Duration::from_secs(2))
                .run(&health),
        );
        advance(Duration::from_secs(10)).await;
        drop(guard);
        assert!(!task.is_finished());
        let text = logged.text();
        assert_eq!(
            text.matches("systemd notification not sent").count(),
            1,
            "{text}"
        );
        task.abort();
    }

    /// A message that could not be sent (no socket yet) is sent again a
    /// second later, until it is.
    #[tokio::test(start_paused = true)]
    async fn a_message_not_sent_is_sent_again() {
        let path =
            std::env::temp_dir().join(format!("tower-health-notify-late-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let health = HealthChecks::builder().build().unwrap();
        let task = tokio::spawn(Notifier::new(path.clone()).run(&health));
        advance(Duration::from_millis(10)).await;
        // The manager's socket appears.
        let manager = UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        advance(Duration::from_secs(1)).await;
        let mut buf = [0; 512];
        let mut received = Vec::new();
        while let Ok(n) = manager.recv(&mut buf) {
            received.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        assert_eq!(
            received,
            [
                "READY=1\n",
                "STATUS=readiness: healthy; liveness: healthy\n"
            ]
        );
        task.abort();
        let _ = std::fs::remove_file(&path);
    }

    /// A status line naming many checks is cut: systemd drops a longer
    /// notification whole.
    #[tokio::test(start_paused = true)]
    async fn a_long_status_is_cut() {
        let manager = Manager::new();
        let mut builder = HealthChecks::builder();
        for i in 0..100 {
            builder = builder.check(format!("a-dependency-with-a-long-name-{i:03}"), || async {
                CheckResult::unhealthy("down")
            });
        }
        let health = builder.build().unwrap();
        let task = tokio::spawn(Notifier::new(manager.path.clone()).run(&health));
        advance(Duration::from_millis(10)).await;
        let received = manager.received();
        let status = received.last().unwrap();
        assert!(
            status.starts_with("STATUS=readiness: unhealthy (failing: a-dependency"),
            "{status}"
        );
        assert_eq!(
            status.len(),
            "STATUS=".len() + MAX_STATUS + "\n".len(),
            "{status}"
        );
        assert!(status.ends_with("…\n"), "{status}");
        task.abort();
    }

    #[test]
    fn the_environment_systemd_gives() {
        let socket = || Some(OsString::from("/run/systemd/notify"));
        let pid = 4242;
        let watchdog =
            |usec, watched| from_vars(socket(), usec, watched, pid).map(|n| n.watchdog_interval());
        assert!(from_vars(None, Some("1000000"), None, pid).is_none());
        assert!(from_vars(Some(OsString::new()), None, None, pid).is_none());
        assert_eq!(watchdog(None, None), Some(None));
        assert_eq!(
            watchdog(Some("30000000"), None),
            Some(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            watchdog(Some("30000000"), Some("4242")),
            Some(Some(Duration::from_secs(30)))
        );
        // Meant for another process, zero or not a number: no watchdog.
        assert_eq!(watchdog(Some("30000000"), Some("1")), Some(None));
        assert_eq!(watchdog(Some("0"), None), Some(None));
        // Too short to ping for: the shortest taken.
        assert_eq!(watchdog(Some("1"), None), Some(Some(SHORTEST_WATCHDOG)));
        assert_eq!(watchdog(Some("soon"), None), Some(None));
    }
}
