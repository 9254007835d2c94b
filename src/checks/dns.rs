//! Host name lookups and connections for the checks that connect by name
//! (`TcpCheck`, and `HttpCheck::new`'s [`Connector`](super::http::Connector)).
//!
//! A lookup is `getaddrinfo`, as with `tokio::net::lookup_host` and hyper's
//! default resolver, but on a thread of its own and at most one per check at
//! a time (see [`super::blocking`]): with the DNS server down a lookup can
//! take its resolver's full timeout and retries (30 s and more with the
//! glibc defaults). A check that started one every interval and gave up on
//! each at its timeout would pile them up, and on Tokio's blocking pool the
//! one still running would hold up the runtime's shutdown.
//!
//! A name with several addresses (IPv6 and IPv4, several replicas) is
//! connected to as RFC 8305 describes, without its family interleaving: the
//! next address is tried beside the last one after [`ATTEMPT_DELAY`] or as
//! soon as it fails, and the first to connect wins, so one address that
//! silently drops packets does not hide another that accepts.

use std::{
    io,
    net::{SocketAddr, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use tokio::{net::TcpStream, task::JoinSet};

use super::blocking::OneAtATime;

/// A lookup's result; the error is shared by the callers that joined it.
type Resolved = Result<Vec<SocketAddr>, Arc<io::Error>>;

/// One check's lookups. Clones share the lookups in flight (one per
/// target).
#[derive(Clone)]
pub(crate) struct Lookups {
    running: OneAtATime<String, Resolved>,
    resolve: fn(&str) -> io::Result<Vec<SocketAddr>>,
}

impl Default for Lookups {
    /// Lookups by the system's resolver.
    fn default() -> Self {
        Self::with(getaddrinfo)
    }
}

impl Lookups {
    /// Lookups made by `resolve` (tests hang it).
    pub(crate) fn with(resolve: fn(&str) -> io::Result<Vec<SocketAddr>>) -> Self {
        Self {
            running: OneAtATime::default(),
            resolve,
        }
    }

    /// The addresses of `target`, `host:port`: at once for an IP address,
    /// otherwise by a lookup (or the one for the same target still running).
    pub(crate) async fn lookup(&self, target: &str) -> io::Result<Vec<SocketAddr>> {
        if let Ok(addr) = target.parse::<SocketAddr>() {
            return Ok(vec![addr]);
        }
        let resolve = self.resolve;
        let owned = target.to_owned();
        match self
            .running
            .run(target.to_owned(), move || resolve(&owned).map_err(Arc::new))
            .await
        {
            Ok(Ok(addrs)) => Ok(addrs),
            Ok(Err(e)) => Err(io::Error::new(e.kind(), e)),
            Err(failed) => Err(io::Error::other(format!("the lookup of {target} {failed}"))),
        }
    }
}

fn getaddrinfo(target: &str) -> io::Result<Vec<SocketAddr>> {
    Ok(target.to_socket_addrs()?.collect())
}

/// How long a connection attempt runs alone before the next address is
/// tried beside it: RFC 8305's recommended "Connection Attempt Delay".
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Resolves `address`, `host:port` (every time: DNS changes are followed),
/// and connects to one of its addresses.
#[cfg(feature = "tcp")]
pub(crate) async fn connect(lookups: &Lookups, address: &str) -> io::Result<TcpStream> {
    connect_any(lookups.lookup(address).await?).await
}

/// Connects to the first of `addrs` that accepts, starting each next
/// attempt when the previous ones failed or [`ATTEMPT_DELAY`] passed. The
/// attempts still running when one wins (or when the run is cut) are
/// aborted with the `JoinSet`.
pub(crate) async fn connect_any(addrs: Vec<SocketAddr>) -> io::Result<TcpStream> {
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the host name resolved to no address",
        ));
    }
    let mut waiting = addrs.into_iter();
    let mut attempts = JoinSet::new();
    loop {
        if let Some(addr) = waiting.next() {
            attempts.spawn(TcpStream::connect(addr));
        }
        let more = waiting.len() > 0;
        let delay = tokio::time::sleep(ATTEMPT_DELAY);
        tokio::pin!(delay);
        loop {
            tokio::select! {
                Some(joined) = attempts.join_next() => {
                    let error = match joined {
                        Ok(Ok(stream)) => return Ok(stream),
                        Ok(Err(e)) => e,
                        Err(e) => io::Error::other(e),
                    };
                    if more {
                        break; // start the next address now
                    }
                    if attempts.is_empty() {
                        return Err(error); // the last attempt's error
                    }
                }
                () = &mut delay, if more => break,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        io,
        net::SocketAddr,
        sync::{Condvar, Mutex, MutexGuard, PoisonError},
    };

    use tokio::net::{TcpSocket, TcpStream};

    use super::Lookups;

    /// The targets of the lookups started, and the targets let through.
    static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static RELEASED: (Mutex<Vec<String>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

    /// A resolver that hangs until [`release`] is called for the target,
    /// then answers `127.0.0.1` and the target's port.
    pub(crate) fn hanging(target: &str) -> io::Result<Vec<SocketAddr>> {
        let port = target
            .rsplit_once(':')
            .map_or(0, |(_, p)| p.parse().unwrap_or(0));
        lock(&STARTED).push(target.to_owned());
        let (released, changed) = &RELEASED;
        let mut released = lock(released);
        while !released.iter().any(|t| t == target) {
            released = changed
                .wait(released)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    /// The statics are shared by tests running in parallel: one test's
    /// panic must not fail the others.
    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn started(target: &str) -> usize {
        lock(&STARTED).iter().filter(|t| *t == target).count()
    }

    /// [`started`], once at least one lookup
    /// of `target` (real time: a paused clock would not move while a
    /// blocking call runs; the wait is bounded, nothing asserts on it).
    pub(crate) async fn started_once_begun(target: &str) -> usize {
        for _ in 0..500 {
            if started(target) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        started(target)
    }

    /// A loopback address whose connects hang: a listener that never
    /// accepts, its accept queue filled, drops further SYNs.
    #[cfg(target_os = "linux")]
    pub(crate) async fn hanging_address() -> (
        std::net::SocketAddr,
        Vec<TcpStream>,
        tokio::net::TcpListener,
    ) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        for _ in 0..64 {
            match tokio::time::timeout(
                std::time::Duration::from_millis(200),
                TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("connect to the filling listener failed: {e}"),
                Err(_) => return (addr, queued, listener), // full: connects hang
            }
        }
        panic!("the accept queue never filled");
    }

    pub(crate) fn release(target: &str) {
        let (released, changed) = &RELEASED;
        lock(released).push(target.to_owned());
        changed.notify_all();
    }

    /// Releases the target when dropped: a test that fails before its
    /// release must not leave its lookup's thread hanging.
    pub(crate) struct Releases(pub(crate) String);

    impl Drop for Releases {
        fn drop(&mut self) {
            release(&self.0);
        }
    }

    #[tokio::test]
    async fn an_address_needs_no_lookup() {
        let lookups = Lookups::with(|_| panic!("looked up"));
        let addrs = lookups.lookup("[::1]:6379").await.unwrap();
        assert_eq!(addrs, ["[::1]:6379".parse::<SocketAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn names_are_looked_up_by_the_system() {
        let addrs = Lookups::default().lookup("localhost:5432").await.unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 5432)
                && !addrs.is_empty(),
            "{addrs:?}"
        );
        let e = Lookups::default().lookup("no-port").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
}
