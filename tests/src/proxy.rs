//! A fault-injecting TCP proxy for the end-to-end tests.
//!
//! The style guide asks for faults injected for real: the client and the server talk to each
//! other through real sockets, and this proxy sits in between on loopback, cutting, delaying
//! and stalling connections. It only ever connects to the one upstream address it was started
//! with, which must be a loopback address.
//!
//! Guarantees:
//! - Every connection is pumped by two threads (one per direction) through a fixed 16 KiB
//!   buffer each, so memory is bounded; at most [`MAX_CONNECTIONS`] connections are served at
//!   once (further clients wait in the listen backlog).
//! - A *cut* at byte `N` forwards exactly `N` client→server bytes, then shuts down both sockets
//!   in both directions: the server sees a truncated request (or, if `N` is the request's full
//!   length, a complete request whose response cannot be delivered) and the client an error.
//!   A cut only happens once `N` bytes have been forwarded; a connection whose client sends
//!   fewer bytes ends normally.
//! - A *stall* at byte `N` forwards exactly `N` client→server bytes, then forwards nothing more
//!   in either direction for [`FaultConfig::stall`], then cuts as above.
//! - A *delay* holds a chunk for a random time up to [`FaultConfig::max_delay`] before it is
//!   forwarded, in either direction.
//! - The counters are exact: they count bytes the proxy has written to a socket. They are final
//!   once the connection has closed.
//! - Each connection's faults are drawn from the seeded RNG when it is accepted, in a fixed
//!   order whatever the probabilities, so a run is reproducible given the same seed and the same
//!   connection order. Delays are drawn per chunk from the connection's own RNG, so they repeat
//!   too when the chunks do.
//! - Dropping the proxy stops it: the listener closes (new connections are refused), every open
//!   connection is shut down, and `drop` returns only after all of its threads have ended. No
//!   thread blocks for long: every socket has a short read and write timeout and every sleep is
//!   sliced, so all of them notice the stop flag promptly.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The default bound on concurrently served connections (see [`FaultProxy::start`]).
pub const MAX_CONNECTIONS: usize = 256;

/// Size of each direction's buffer, hence the largest chunk forwarded at once.
const CHUNK: usize = 16 * 1024;
/// Read and write timeout of every socket, and the longest any thread sleeps without checking
/// whether the proxy is stopping.
const POLL: Duration = Duration::from_millis(20);
/// How long the accept loop sleeps when no connection is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(1);
/// Timeout of the connection to the upstream server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which faults to inject. Probabilities are in `[0, 1]` (values outside act as 0 or 1).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Per connection: the probability of cutting it after a random number of client→server
    /// bytes, uniform in `0..=max_cut_after`.
    pub cut_probability: f64,
    /// The largest cut (or stall) point, in client→server bytes.
    pub max_cut_after: usize,
    /// Per chunk and direction: the probability of holding the chunk before forwarding it.
    pub delay_probability: f64,
    /// The longest delay; each delay is uniform in `0..=max_delay`.
    pub max_delay: Duration,
    /// Per connection: the probability of a stall at a random point, uniform in
    /// `0..=max_cut_after`. A stall wins over a cut drawn for the same connection.
    pub stall_probability: f64,
    /// How long a stall forwards nothing before the connection is cut.
    pub stall: Duration,
    /// Seed of the RNG that draws the faults.
    pub seed: u64,
}

impl FaultConfig {
    /// No faults: a transparent proxy (still counting bytes).
    pub fn none() -> Self {
        Self {
            cut_probability: 0.0,
            max_cut_after: 0,
            delay_probability: 0.0,
            max_delay: Duration::ZERO,
            stall_probability: 0.0,
            stall: Duration::ZERO,
            seed: 0,
        }
    }

    /// A hostile network: 30 % of connections are cut within their first 256 KiB sent,
    /// 5 % stall for a second and then are cut, and 20 % of chunks are delayed up to 50 ms.
    pub fn harsh(seed: u64) -> Self {
        Self {
            cut_probability: 0.3,
            max_cut_after: 256 * 1024,
            delay_probability: 0.2,
            max_delay: Duration::from_millis(50),
            stall_probability: 0.05,
            stall: Duration::from_secs(1),
            seed,
        }
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::none()
    }
}

/// A running proxy from a loopback port to one upstream loopback address.
///
/// Dropping it stops the accept loop and every connection; see the module documentation.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on `127.0.0.1:0`, serving at most [`MAX_CONNECTIONS`]
    /// connections at once. Fails with `InvalidInput` if `upstream` is not a loopback address.
    pub fn start(upstream: SocketAddr, config: FaultConfig) -> io::Result<FaultProxy> {
        Self::start_with_max_connections(upstream, config, MAX_CONNECTIONS)
    }

    /// Like [`FaultProxy::start`], serving at most `max_connections` connections at once
    /// (at least one); further clients wait in the listen backlog until a connection ends.
    pub fn start_with_max_connections(
        upstream: SocketAddr,
        config: FaultConfig,
        max_connections: usize,
    ) -> io::Result<FaultProxy> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the fault proxy only forwards to loopback, not to {upstream}"),
            ));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        // Nonblocking, so that the accept loop notices the stop flag.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            max_connections: max_connections.max(1),
            state: Mutex::new(State::new(config)),
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            counters: Counters::default(),
        });
        let accept_thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(FaultProxy { addr, shared, accept_thread: Some(accept_thread) })
    }

    /// The proxy's address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the fault configuration and reseeds the RNG with `config.seed`. Connections
    /// accepted from now on use it; open connections keep the faults they were given.
    pub fn set_config(&self, config: FaultConfig) {
        *self.shared.state.lock().unwrap_or_else(PoisonError::into_inner) = State::new(config);
    }

    /// Client→server bytes forwarded (written to the upstream socket).
    pub fn bytes_client_to_server(&self) -> u64 {
        self.shared.counters.client_to_server.load(Ordering::Relaxed)
    }

    /// Server→client bytes forwarded (written to the client socket).
    pub fn bytes_server_to_client(&self) -> u64 {
        self.shared.counters.server_to_client.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn connections(&self) -> u64 {
        self.shared.counters.connections.load(Ordering::Relaxed)
    }

    /// Connections cut, including those cut at the end of a stall.
    pub fn cuts(&self) -> u64 {
        self.shared.counters.cuts.load(Ordering::Relaxed)
    }

    /// Connections stalled (each is also counted in [`FaultProxy::cuts`] once cut).
    pub fn stalls(&self) -> u64 {
        self.shared.counters.stalls.load(Ordering::Relaxed)
    }

    /// Chunks delayed, in either direction.
    pub fn delays(&self) -> u64 {
        self.shared.counters.delays.load(Ordering::Relaxed)
    }

    /// Connections that failed to reach the upstream server (closed at once).
    pub fn upstream_failures(&self) -> u64 {
        self.shared.counters.upstream_failures.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(accept_thread) = self.accept_thread.take() {
            // The accept loop joins every connection thread before it returns. A panic in it
            // has already been reported by the panic hook; do not panic again in drop.
            let _ = accept_thread.join();
        }
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

/// State shared by the handle, the accept loop and the connection threads.
struct Shared {
    upstream: SocketAddr,
    max_connections: usize,
    state: Mutex<State>,
    stop: AtomicBool,
    active: AtomicUsize,
    counters: Counters,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The configuration and the RNG, replaced together by `set_config`.
struct State {
    config: FaultConfig,
    rng: StdRng,
}

impl State {
    fn new(config: FaultConfig) -> Self {
        Self { rng: StdRng::seed_from_u64(config.seed), config }
    }

    /// Draws the faults of the next connection. Always draws the same values in the same order,
    /// so that the sequence does not depend on the probabilities.
    fn plan(&mut self) -> Plan {
        let c = &self.config;
        let rng = &mut self.rng;
        let cut = rng.gen_range(0.0..1.0) < c.cut_probability;
        let cut_at = rng.gen_range(0..=c.max_cut_after);
        let stall = rng.gen_range(0.0..1.0) < c.stall_probability;
        let stall_at = rng.gen_range(0..=c.max_cut_after);
        let fault = if stall {
            Some(Fault { at: stall_at as u64, stall: Some(c.stall) })
        } else if cut {
            Some(Fault { at: cut_at as u64, stall: None })
        } else {
            None
        };
        let delays = Delays { probability: c.delay_probability, max: c.max_delay };
        Plan {
            fault,
            client_to_server: (delays, StdRng::seed_from_u64(rng.r#gen())),
            server_to_client: (delays, StdRng::seed_from_u64(rng.r#gen())),
        }
    }
}

#[derive(Default)]
struct Counters {
    client_to_server: AtomicU64,
    server_to_client: AtomicU64,
    connections: AtomicU64,
    cuts: AtomicU64,
    stalls: AtomicU64,
    delays: AtomicU64,
    upstream_failures: AtomicU64,
}

/// The faults of one connection, fixed when it is accepted.
struct Plan {
    fault: Option<Fault>,
    client_to_server: (Delays, StdRng),
    server_to_client: (Delays, StdRng),
}

/// A cut (or a stall then a cut) once `at` client→server bytes have been forwarded.
struct Fault {
    at: u64,
    stall: Option<Duration>,
}

#[derive(Clone, Copy)]
struct Delays {
    probability: f64,
    max: Duration,
}

impl Delays {
    /// Draws the delay of the next chunk (two draws, whatever the outcome).
    fn draw(&self, rng: &mut StdRng) -> Option<Duration> {
        let hit = rng.gen_range(0.0..1.0) < self.probability;
        let fraction: f64 = rng.gen_range(0.0..=1.0);
        hit.then(|| self.max.mul_f64(fraction))
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() {
        connections.retain(|c| !c.is_finished());
        if shared.active.load(Ordering::Relaxed) >= shared.max_connections {
            thread::sleep(ACCEPT_POLL);
            continue;
        }
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock: nobody is waiting. Anything else (say, out of file descriptors) is
            // transient for a listener: wait and try again.
            Err(_) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let plan = shared.state.lock().unwrap_or_else(PoisonError::into_inner).plan();
        shared.active.fetch_add(1, Ordering::Relaxed);
        let guard = ActiveGuard(Arc::clone(shared));
        let spawned = thread::Builder::new().name("fault-proxy-conn".into()).spawn(move || {
            let guard = guard;
            serve(&guard.0, client, plan);
        });
        match spawned {
            Ok(handle) => connections.push(handle),
            // The closure, hence the client socket and the guard, was dropped: the connection
            // is closed and no longer counted as active.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Counts a connection as active until dropped, even if its thread panics.
struct ActiveGuard(Arc<Shared>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One proxied connection.
struct Conn<'a> {
    shared: &'a Shared,
    client: TcpStream,
    upstream: TcpStream,
    /// Set when a stall begins: the server→client pump forwards nothing more.
    stalled: AtomicBool,
}

impl Conn<'_> {
    /// Shuts down both sockets in both directions; errors (already shut down) do not matter.
    fn abort(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

fn serve(shared: &Shared, client: TcpStream, plan: Plan) {
    let upstream = match connect_upstream(shared.upstream) {
        Ok(upstream) => upstream,
        Err(_) => {
            shared.counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    if configure(&client).is_err() {
        return;
    }
    let conn = Conn { shared, client, upstream, stalled: AtomicBool::new(false) };
    let Plan { fault, client_to_server, server_to_client } = plan;
    thread::scope(|scope| {
        let back = thread::Builder::new()
            .name("fault-proxy-back".into())
            .spawn_scoped(scope, || pump_server_to_client(&conn, server_to_client));
        if back.is_err() {
            conn.abort();
            return;
        }
        pump_client_to_server(&conn, client_to_server, fault.as_ref());
    });
}

fn connect_upstream(upstream: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT)?;
    configure(&stream)?;
    Ok(stream)
}

fn configure(stream: &TcpStream) -> io::Result<()> {
    // Accepted sockets do not inherit the listener's nonblocking flag on Linux; make sure.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(POLL))?;
    // Forward small chunks at once: the test's timings should be the faults', not Nagle's.
    stream.set_nodelay(true)
}

/// What ended a read.
enum Got {
    Data(usize),
    Eof,
    Failed,
    Stopped,
}

/// Reads one chunk, retrying on timeouts until data, EOF, an error or the stop flag.
fn read_chunk(conn: &Conn<'_>, mut from: &TcpStream, buf: &mut [u8]) -> Got {
    loop {
        if conn.shared.stopping() {
            return Got::Stopped;
        }
        match from.read(buf) {
            Ok(0) => return Got::Eof,
            Ok(n) => return Got::Data(n),
            Err(e) if retryable(&e) => continue,
            Err(_) => return Got::Failed,
        }
    }
}

/// Writes all of `data`, counting every byte written as it goes (so the counter stays exact
/// when a write fails half-way). Fails on an error or when the proxy stops.
fn write_counted(
    conn: &Conn<'_>,
    mut to: &TcpStream,
    mut data: &[u8],
    counter: &AtomicU64,
) -> Result<(), ()> {
    while !data.is_empty() {
        if conn.shared.stopping() {
            return Err(());
        }
        match to.write(data) {
            Ok(0) => return Err(()),
            Ok(n) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                data = &data[n..];
            }
            Err(e) if retryable(&e) => continue,
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

fn retryable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sleeps for `d` unless the proxy stops first; returns whether it slept the whole time.
fn sleep_unless_stopped(shared: &Shared, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if shared.stopping() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(POLL));
    }
}

/// Holds a chunk if the plan says so; returns false if the proxy stopped meanwhile.
fn maybe_delay(conn: &Conn<'_>, (delays, rng): &mut (Delays, StdRng)) -> bool {
    match delays.draw(rng) {
        Some(d) => {
            conn.shared.counters.delays.fetch_add(1, Ordering::Relaxed);
            sleep_unless_stopped(conn.shared, d)
        }
        None => true,
    }
}

fn pump_client_to_server(conn: &Conn<'_>, mut delays: (Delays, StdRng), fault: Option<&Fault>) {
    let counters = &conn.shared.counters;
    let mut buf = vec![0; CHUNK];
    let mut forwarded = 0u64;
    loop {
        if let Some(fault) = fault.filter(|f| f.at == forwarded) {
            if let Some(stall) = fault.stall {
                conn.stalled.store(true, Ordering::Relaxed);
                counters.stalls.fetch_add(1, Ordering::Relaxed);
                sleep_unless_stopped(conn.shared, stall);
            }
            counters.cuts.fetch_add(1, Ordering::Relaxed);
            conn.abort();
            return;
        }
        let n = match read_chunk(conn, &conn.client, &mut buf) {
            Got::Data(n) => n,
            Got::Eof => {
                // Half-close: the server may still answer.
                let _ = conn.upstream.shutdown(Shutdown::Write);
                return;
            }
            Got::Failed | Got::Stopped => {
                conn.abort();
                return;
            }
        };
        if !maybe_delay(conn, &mut delays) {
            conn.abort();
            return;
        }
        // Never forward past the fault point: the check at the top of the loop fires next.
        let limit = fault.map_or(n, |f| n.min(usize::try_from(f.at - forwarded).unwrap_or(n)));
        if write_counted(conn, &conn.upstream, &buf[..limit], &counters.client_to_server).is_err() {
            conn.abort();
            return;
        }
        forwarded += limit as u64;
    }
}

fn pump_server_to_client(conn: &Conn<'_>, mut delays: (Delays, StdRng)) {
    let counters = &conn.shared.counters;
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match read_chunk(conn, &conn.upstream, &mut buf) {
            Got::Data(n) => n,
            Got::Eof => {
                if !conn.stalled.load(Ordering::Relaxed) {
                    let _ = conn.client.shutdown(Shutdown::Write);
                }
                return;
            }
            Got::Failed | Got::Stopped => {
                conn.abort();
                return;
            }
        };
        if !maybe_delay(conn, &mut delays) {
            conn.abort();
            return;
        }
        if conn.stalled.load(Ordering::Relaxed) {
            // Forward nothing more; the other pump cuts the connection when the stall ends.
            return;
        }
        if write_counted(conn, &conn.client, &buf[..n], &counters.server_to_client).is_err() {
            conn.abort();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A loopback echo server that reports, for each connection in the order they end, how
    /// many bytes it received. Stops on drop.
    struct Echo {
        addr: SocketAddr,
        received: mpsc::Receiver<u64>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Echo {
        fn start() -> Echo {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, received) = mpsc::channel();
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((s, _)) => {
                                let tx = tx.clone();
                                thread::spawn(move || {
                                    let _ = tx.send(echo(s));
                                });
                            }
                            Err(_) => thread::sleep(Duration::from_millis(1)),
                        }
                    }
                })
            };
            Echo { addr, received, stop, thread: Some(thread) }
        }

        /// Bytes received on the next connection to end.
        fn next_received(&self) -> u64 {
            self.received.recv_timeout(Duration::from_secs(10)).unwrap()
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.take().unwrap().join().unwrap();
        }
    }

    /// Echoes until EOF or an error; returns the bytes received.
    fn echo(mut s: TcpStream) -> u64 {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0; 4096];
        let mut received = 0;
        let mut writable = true;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    received += n as u64;
                    // Keep reading after a failed write, to count everything that arrives.
                    writable = writable && s.write_all(&buf[..n]).is_ok();
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        received
    }

    fn client(proxy: &FaultProxy) -> TcpStream {
        let s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Reads until EOF or an error. Returns the bytes read and whether it ended by an error
    /// (a timeout fails the test: the connection should have ended).
    fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return (out, false),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    assert!(!retryable(&e), "the connection should have ended: {e}");
                    return (out, true);
                }
            }
        }
    }

    fn payload(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.r#gen()).collect()
    }

    /// Sends `data` (ignoring a failed write: the connection may be cut), half-closes, and
    /// reads everything that comes back.
    fn exchange(proxy: &FaultProxy, data: &[u8]) -> (Vec<u8>, bool) {
        let mut s = client(proxy);
        let wrote = s.write_all(data).is_ok() && s.shutdown(Shutdown::Write).is_ok();
        let (back, failed) = read_to_end(&mut s);
        (back, failed || !wrote)
    }

    #[test]
    fn passes_bytes_through_unchanged_and_counts_them_exactly() {
        let echo = Echo::start();
        let proxy = FaultProxy::start(echo.addr, FaultConfig::none()).unwrap();
        assert_eq!(proxy.url(), format!("http://127.0.0.1:{}", proxy.addr().port()));
        let mut total = 0;
        for (i, len) in [0, 1, 1000, 100_000, 3 * CHUNK + 7].into_iter().enumerate() {
            let data = payload(len, i as u64);
            let (back, failed) = exchange(&proxy, &data);
            assert!(!failed);
            assert!(back == data, "echo of {len} bytes differs");
            assert_eq!(echo.next_received(), len as u64);
            total += len as u64;
            // The client saw EOF, so both pumps have finished counting.
            assert_eq!(proxy.bytes_client_to_server(), total);
            assert_eq!(proxy.bytes_server_to_client(), total);
        }
        assert_eq!(proxy.connections(), 5);
        assert_eq!((proxy.cuts(), proxy.stalls(), proxy.delays()), (0, 0, 0));
    }

    #[test]
    fn a_cut_forwards_exactly_n_bytes_and_the_client_sees_it() {
        let echo = Echo::start();
        let config = FaultConfig {
            cut_probability: 1.0,
            max_cut_after: 50_000,
            seed: 7,
            ..FaultConfig::none()
        };
        let proxy = FaultProxy::start(echo.addr, config).unwrap();
        let mut upstream_total = 0;
        let mut points = Vec::new();
        for i in 0..10 {
            let data = payload(60_000, i);
            let (back, _) = exchange(&proxy, &data);
            let n = echo.next_received();
            assert!(n <= 50_000);
            // The client's connection ended (no timeout) before all of its echo came back.
            assert!(back.len() as u64 <= n, "the client got more than the server echoed");
            assert!(back[..] == data[..back.len()]);
            points.push(n);
            upstream_total += n;
            assert_eq!(proxy.bytes_client_to_server(), upstream_total);
        }
        assert_eq!((proxy.connections(), proxy.cuts()), (10, 10));
        assert!(proxy.bytes_server_to_client() <= upstream_total);
        // The cut points are spread out, not all at one place.
        points.sort_unstable();
        points.dedup();
        assert!(points.len() > 5, "{points:?}");
    }

    #[test]
    fn a_cut_at_byte_zero_forwards_nothing() {
        let echo = Echo::start();
        let config = FaultConfig { cut_probability: 1.0, max_cut_after: 0, ..FaultConfig::none() };
        let proxy = FaultProxy::start(echo.addr, config).unwrap();
        // Cut at byte 0: nothing reaches the server, the client sees the end at once.
        let (back, _) = exchange(&proxy, b"hello");
        assert!(back.is_empty());
        assert_eq!(echo.next_received(), 0);
        assert_eq!(proxy.cuts(), 1);
        assert_eq!(proxy.bytes_client_to_server(), 0);
    }

    #[test]
    fn cuts_are_reproducible_from_the_seed() {
        let echo = Echo::start();
        let config = FaultConfig {
            cut_probability: 0.5,
            max_cut_after: 2000,
            stall_probability: 0.2,
            stall: Duration::from_millis(1),
            seed: 42,
            ..FaultConfig::none()
        };
        let run = |config: FaultConfig| {
            let proxy = FaultProxy::start(echo.addr, config).unwrap();
            let data = payload(3000, 0);
            (0..20)
                .map(|_| {
                    exchange(&proxy, &data);
                    echo.next_received()
                })
                .collect::<Vec<_>>()
        };
        let first = run(config.clone());
        assert!(first.contains(&3000) && first.iter().any(|&n| n < 3000), "{first:?}");
        assert_eq!(run(config.clone()), first);
        assert_ne!(run(FaultConfig { seed: 43, ..config }), first);
    }

    #[test]
    fn set_config_switches_faults_off_and_reseeds() {
        let echo = Echo::start();
        let cutting = FaultConfig {
            cut_probability: 1.0,
            max_cut_after: 100,
            seed: 3,
            ..FaultConfig::none()
        };
        let proxy = FaultProxy::start(echo.addr, cutting.clone()).unwrap();
        let data = payload(1000, 1);
        exchange(&proxy, &data);
        let first_cut = echo.next_received();
        proxy.set_config(FaultConfig::none());
        let (back, failed) = exchange(&proxy, &data);
        assert!(!failed && back == data);
        assert_eq!(echo.next_received(), 1000);
        proxy.set_config(cutting);
        exchange(&proxy, &data);
        assert_eq!(echo.next_received(), first_cut);
        assert_eq!(proxy.cuts(), 2);
    }

    #[test]
    fn delays_hold_chunks_in_both_directions() {
        let echo = Echo::start();
        let config = FaultConfig {
            delay_probability: 1.0,
            max_delay: Duration::from_millis(40),
            seed: 1,
            ..FaultConfig::none()
        };
        let proxy = FaultProxy::start(echo.addr, config).unwrap();
        let mut s = client(&proxy);
        let start = Instant::now();
        // Ping-pong, so that each message is one chunk each way.
        for i in 0..10u8 {
            s.write_all(&[i; 10]).unwrap();
            let mut back = [0; 10];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, [i; 10]);
        }
        let elapsed = start.elapsed();
        assert_eq!(proxy.delays(), 20);
        // Twenty draws uniform in 0..=40 ms: far more than 100 ms in all (and deterministic).
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    }

    #[test]
    fn a_stall_forwards_nothing_for_a_while_then_cuts() {
        let echo = Echo::start();
        let stall = Duration::from_millis(300);
        let config = FaultConfig {
            stall_probability: 1.0,
            stall,
            max_cut_after: 500,
            seed: 5,
            ..FaultConfig::none()
        };
        let proxy = FaultProxy::start(echo.addr, config).unwrap();
        let mut s = client(&proxy);
        let start = Instant::now();
        s.write_all(&payload(1000, 2)).unwrap();
        // Not half-closed: the connection ends only by the cut.
        let (back, _) = read_to_end(&mut s);
        let elapsed = start.elapsed();
        assert!(elapsed >= stall, "{elapsed:?}");
        let n = echo.next_received();
        assert!(n <= 500);
        assert!(back.len() as u64 <= n);
        assert_eq!(proxy.bytes_client_to_server(), n);
        assert_eq!((proxy.stalls(), proxy.cuts()), (1, 1));
    }

    #[test]
    fn connections_beyond_the_bound_wait_for_a_slot() {
        let echo = Echo::start();
        let proxy =
            FaultProxy::start_with_max_connections(echo.addr, FaultConfig::none(), 1).unwrap();
        let mut first = client(&proxy);
        first.write_all(b"one").unwrap();
        let mut buf = [0; 3];
        first.read_exact(&mut buf).unwrap();
        let mut second = client(&proxy);
        second.write_all(b"two").unwrap();
        second.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let err = second.read(&mut buf).unwrap_err();
        assert!(retryable(&err), "{err}");
        assert_eq!(proxy.connections(), 1);
        drop(first);
        second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        second.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"two");
        assert_eq!(proxy.connections(), 2);
    }

    #[test]
    fn drop_ends_open_connections_and_refuses_new_ones() {
        let echo = Echo::start();
        let config = FaultConfig {
            stall_probability: 1.0,
            stall: Duration::from_secs(60),
            max_cut_after: 0,
            ..FaultConfig::none()
        };
        let proxy = FaultProxy::start(echo.addr, config).unwrap();
        let addr = proxy.addr();
        // Three connections stalled for a minute, then one that works but stays open.
        let mut clients: Vec<TcpStream> = (0..3).map(|_| client(&proxy)).collect();
        while proxy.connections() < 3 {
            thread::sleep(Duration::from_millis(1));
        }
        proxy.set_config(FaultConfig::none());
        clients.push(client(&proxy));
        clients[3].write_all(b"ping").unwrap();
        let mut buf = [0; 4];
        clients[3].read_exact(&mut buf).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.stalls() < 3 {
            assert!(Instant::now() < deadline, "the first three connections should stall");
            thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        drop(proxy);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        for c in &mut clients {
            read_to_end(c);
        }
        assert!(TcpStream::connect(addr).is_err(), "the listener should be closed");
    }

    #[test]
    fn refuses_a_non_loopback_upstream() {
        let err =
            FaultProxy::start("192.0.2.1:80".parse().unwrap(), FaultConfig::none()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn an_unreachable_upstream_closes_the_client() {
        // A port that was just free: nothing listens there.
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap();
        let proxy = FaultProxy::start(free, FaultConfig::none()).unwrap();
        let mut s = client(&proxy);
        let (back, _) = read_to_end(&mut s);
        assert!(back.is_empty());
        assert_eq!(proxy.upstream_failures(), 1);
    }
}
