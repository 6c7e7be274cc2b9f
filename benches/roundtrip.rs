//! Round-trip benchmark: what a chat user sees, set beside what the machine can do.
//!
//! Run it with `cargo bench` (under a minute on 2 cores). `CHAT_BENCH_SCALE` (a positive float,
//! default 1.0) multiplies every iteration count: `CHAT_BENCH_SCALE=0.02 cargo bench` is a
//! quick smoke run, larger values give steadier tails.
//!
//! In one process it starts the library's server (`Server::bind` + `serve` on a thread, every
//! session answered by `EchoSpeaker`) and a bare `std::net` server with `TCP_NODELAY`, both on
//! 127.0.0.1 port 0, and drives them through real client sessions. Chat and bare run in
//! alternating blocks of [`BLOCK`] messages, so that both see the same scheduling luck:
//!
//! - (a) message to ack: the RTT the client sees (`Event::Acked`), against a bare ping-pong
//!   (a frame out, a 5-byte ack back), at 16 B and 4 KiB. A reference row, `bare-in-turn`, adds
//!   the RTT of the ack inside the bare turn of (b): the chat's RTT is always taken inside a
//!   turn, where the server sends the echo in the same write as the ack;
//! - (b) a full automated turn, from the speaker handing out a message to `Event::Received` of
//!   the echo, against a bare exchange of the same frames (message; the ack and the echo in one
//!   write; the ack of the echo);
//! - (c) throughput: C concurrent sessions of 16 B turns against W workers, C in {1, W, 4W},
//!   against a thread-per-connection bare echo server: messages acknowledged per second, and the
//!   longest wait in line (connect to WELCOME; for bare, the connect). A reference column,
//!   `bare pool`, runs the bare echo on W long-lived threads fed by a crossbeam channel: the
//!   chat's architecture without the chat, to tell the cost of the chat from the cost of a pool.
//!
//! It prints p50, p90, p99, p99.9 and max in microseconds for each, with the chat/bare ratio of
//! each (and in (c) the chat/bare pool ratio), an ASCII histogram of the chat's 16 B RTT, and last a single `summary:` line of numbers:
//! rtt and turn figures at 16 B, msgs_per_s at C = W, server_rss_kib the VmRSS of this process
//! (which hosts the server) once the measurements are done. Each ratio there is computed from the
//! rounded figures printed beside it.

use std::cell::Cell;
use std::error::Error;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use client_server_chat::client;
use client_server_chat::protocol::DEFAULT_MAX_MESSAGE;
use client_server_chat::server::{Frontend, Server, ServerConfig, ServerEvent, ServerHandle};
use client_server_chat::session::{
    DEFAULT_HEARTBEAT, EchoSpeaker, Ending, Event, Session, Speaker, Speech, Stopper, Timeouts,
    Turn,
};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Messages per block; chat and bare blocks alternate.
const BLOCK: usize = 200;
/// The small message size, the one the summary reports.
const SMALL: usize = 16;
/// The large message size.
const LARGE: usize = 4096;
/// Bound on every blocking step of a client or of the bare server, so that nothing hangs.
const IO_LIMIT: Duration = Duration::from_secs(10);
/// The client sessions' limits: a server that stops answering fails the run.
const CLIENT_TIMEOUTS: Timeouts = Timeouts {
    handshake: IO_LIMIT,
    idle: Some(IO_LIMIT),
    heartbeat: Some(DEFAULT_HEARTBEAT),
};
/// Samples at least this long are counted apart: a delayed-ACK stall shows up as ~40 ms.
const SLOW: Duration = Duration::from_millis(10);

/// Bare frames have the chat's header layout (a type byte, a big-endian `u32` length), so the
/// same bytes cross the wire. A PING is answered with an ack only.
const BARE_PING: u8 = 1;
/// A TURN is answered with an ack, then its echo (a TURN frame), whose ack the peer then awaits.
const BARE_TURN: u8 = 2;
/// The bare ack: a header with an empty payload, like the chat's ACK.
const BARE_ACK: [u8; 5] = [3, 0, 0, 0, 0];

fn main() {
    if let Err(e) = run() {
        eprintln!("roundtrip bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let started = Instant::now();
    let plan = Plan::from_env()?;
    let chat = ChatServer::start(plan.workers)?;
    let bare = BareServer::start(BareThreads::PerConnection)?;
    let pooled = BareServer::start(BareThreads::Pool(plan.workers))?;
    let addrs = Addrs {
        chat: chat.addr,
        bare: bare.addr,
        pooled: pooled.addr,
    };
    plan.print();
    measure_latency(&addrs, SMALL, plan.warmup_rounds)?;
    let small = measure_latency(&addrs, SMALL, plan.small_rounds)?;
    let large = measure_latency(&addrs, LARGE, plan.large_rounds)?;
    let loads = measure_throughput(&addrs, &plan)?;
    let rss = rss_kib();
    chat.stop()?;
    bare.stop()?;
    pooled.stop()?;
    report(&small, &large, &loads, &plan);
    println!("finished in {:.1} s", started.elapsed().as_secs_f64());
    println!("{}", summary(&small, &loads, plan.workers, rss));
    Ok(())
}

/// How much to measure.
#[derive(Debug)]
struct Plan {
    scale: f64,
    /// Cores this process may use.
    cores: usize,
    /// The chat server's workers (W).
    workers: usize,
    /// Blocks of 16 B run first and thrown away.
    warmup_rounds: usize,
    /// Rounds (one chat block, one bare block each) at 16 B.
    small_rounds: usize,
    /// Rounds at 4 KiB.
    large_rounds: usize,
    /// Throughput runs per client count.
    throughput_rounds: usize,
    /// Turns each throughput client takes.
    per_client: usize,
}

impl Plan {
    fn from_env() -> BenchResult<Plan> {
        let scale = match std::env::var("CHAT_BENCH_SCALE") {
            Ok(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    format!("CHAT_BENCH_SCALE must be a positive number, not {text:?}")
                })?,
            Err(_) => 1.0,
        };
        let scaled = |n: f64| ((n * scale).round() as usize).max(1);
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Plan {
            scale,
            cores,
            workers: if cores >= 4 { 4 } else { 2 },
            warmup_rounds: scaled(3.0),
            small_rounds: scaled(75.0),
            large_rounds: scaled(25.0),
            throughput_rounds: scaled(80.0).div_ceil(ORDERS.len()) * ORDERS.len(),
            per_client: scaled(250.0).max(20),
        })
    }

    fn print(&self) {
        println!(
            "roundtrip bench: scale {}, {} cores, W = {} workers, blocks of {BLOCK} messages \
             (chat and bare alternate), {} rounds at {SMALL} B, {} at {LARGE} B, throughput {} \
             turns per client x {} runs",
            self.scale,
            self.cores,
            self.workers,
            self.small_rounds,
            self.large_rounds,
            self.per_client,
            self.throughput_rounds
        );
    }
}

/// Where the three servers listen.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    chat: SocketAddr,
    bare: SocketAddr,
    /// The bare server on a pool of W threads.
    pooled: SocketAddr,
}

// ---------------------------------------------------------------------------------------------
// The chat server and client, through the library.

/// The server's face for the benchmark: echo every message, show nothing.
struct EchoFrontend;

impl Frontend for EchoFrontend {
    fn speaker(&self, _id: u32) -> Box<dyn Speaker + Send> {
        Box::new(EchoSpeaker)
    }

    fn event(&self, _event: ServerEvent<'_>) {}
}

/// The library's server, serving on a thread of its own.
struct ChatServer {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: JoinHandle<Result<(), client_server_chat::error::Error>>,
}

impl ChatServer {
    fn start(workers: usize) -> BenchResult<ChatServer> {
        let config = ServerConfig {
            workers,
            ..ServerConfig::default()
        };
        let server = Server::bind(&["127.0.0.1:0".parse()?], config)?;
        let addr = server.local_addr();
        let handle = server.handle();
        let thread = thread::Builder::new()
            .name("chat-server".into())
            .spawn(move || server.serve(Arc::new(EchoFrontend)))?;
        Ok(ChatServer {
            addr,
            handle,
            thread,
        })
    }

    fn stop(self) -> BenchResult<()> {
        self.handle.shutdown();
        self.thread
            .join()
            .map_err(|_| "the chat server thread panicked")??;
        Ok(())
    }
}

/// Hands out `left` copies of `payload`, then ends the chat; notes when each message went.
struct ScriptedSpeaker<'a> {
    payload: &'a [u8],
    left: usize,
    handed_out: &'a Cell<Option<Instant>>,
}

impl Speaker for ScriptedSpeaker<'_> {
    fn next(&mut self, _wait: Duration) -> Speech {
        if self.left == 0 {
            return Speech::End;
        }
        self.left -= 1;
        let message = self.payload.to_vec();
        self.handed_out.set(Some(Instant::now()));
        Speech::Message(message)
    }
}

/// What one chat session measured.
#[derive(Debug)]
struct ChatRun {
    /// `Event::Acked` round-trip times.
    rtts: Vec<Duration>,
    /// From handing out a message to `Event::Received` of its echo.
    turns: Vec<Duration>,
    /// From the start of the connect to WELCOME.
    wait: Duration,
}

/// Connects, shakes hands, takes `messages` turns, ends the chat.
fn chat_session(addr: SocketAddr, payload: &[u8], messages: usize) -> BenchResult<ChatRun> {
    let connecting = Instant::now();
    let stream = client::connect(&addr.ip().to_string(), addr.port())?;
    let stopper = Stopper::new(&stream)?;
    let mut session = Session::new(stream, DEFAULT_MAX_MESSAGE, CLIENT_TIMEOUTS, stopper)?;
    session
        .client_handshake("bench", &mut |_position| {})
        .map_err(|e| format!("chat handshake failed: {e}"))?;
    let mut run = ChatRun {
        rtts: Vec::with_capacity(messages),
        turns: Vec::with_capacity(messages),
        wait: connecting.elapsed(),
    };
    let handed_out = Cell::new(None);
    let mut speaker = ScriptedSpeaker {
        payload,
        left: messages,
        handed_out: &handed_out,
    };
    let ending = session.run(Turn::Mine, &mut speaker, &mut |event| match event {
        Event::Acked { rtt } => run.rtts.push(rtt),
        Event::Received(_) => {
            if let Some(at) = handed_out.take() {
                run.turns.push(at.elapsed());
            }
        }
        _ => {}
    });
    match ending {
        Ending::EndedByMe if run.turns.len() == messages => Ok(run),
        ending => Err(format!("chat session ended early: {ending}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The bare baseline: the same frames over std::net, nothing else.

/// How the bare server gives its connections threads.
#[derive(Debug, Clone, Copy)]
enum BareThreads {
    /// A new thread for each connection: the baseline of every ratio.
    PerConnection,
    /// This many long-lived threads taking connections from a crossbeam channel, as the chat's
    /// `WorkerPool` does.
    Pool(usize),
}

/// A server that answers PING with an ack and TURN with ack and echo.
struct BareServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
}

impl BareServer {
    fn start(threads: BareThreads) -> BenchResult<BareServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let pool = match threads {
            BareThreads::PerConnection => None,
            BareThreads::Pool(size) => Some(BarePool::start(size)?),
        };
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let acceptor = thread::Builder::new()
            .name("bare-acceptor".into())
            .spawn(move || accept_bare(&listener, &flag, pool))?;
        Ok(BareServer {
            addr,
            stopping,
            acceptor,
        })
    }

    fn stop(self) -> BenchResult<()> {
        self.stopping.store(true, Ordering::SeqCst);
        // `accept` does not wake by itself: connect to it.
        drop(TcpStream::connect_timeout(&self.addr, IO_LIMIT));
        self.acceptor
            .join()
            .map_err(|_| "the bare acceptor panicked")?;
        Ok(())
    }
}

/// The long-lived threads of [`BareThreads::Pool`] and the channel that feeds them.
struct BarePool {
    jobs: Sender<TcpStream>,
    workers: Vec<JoinHandle<()>>,
}

impl BarePool {
    fn start(size: usize) -> io::Result<BarePool> {
        let (jobs, queue) = crossbeam_channel::unbounded::<TcpStream>();
        let workers = (0..size)
            .map(|_| {
                let queue = queue.clone();
                thread::Builder::new()
                    .name("bare-worker".into())
                    .spawn(move || queue.iter().for_each(serve_quietly))
            })
            .collect::<io::Result<_>>()?;
        Ok(BarePool { jobs, workers })
    }
}

fn accept_bare(listener: &TcpListener, stopping: &AtomicBool, pool: Option<BarePool>) {
    let (jobs, mut threads) = match pool {
        Some(BarePool { jobs, workers }) => (Some(jobs), workers),
        None => (None, Vec::new()),
    };
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else { break };
        if let Some(jobs) = &jobs {
            if jobs.send(stream).is_err() {
                break;
            }
            continue;
        }
        let spawned = thread::Builder::new()
            .name("bare-peer".into())
            .spawn(move || serve_quietly(stream));
        if let Ok(thread) = spawned {
            threads.push(thread);
        }
        threads.retain(|thread| !thread.is_finished());
    }
    // Pool workers end once the channel is closed and drained.
    drop(jobs);
    for thread in threads {
        let _ = thread.join();
    }
}

/// Serves one bare connection. A client that leaves mid-exchange ends it; that is no failure
/// here.
fn serve_quietly(stream: TcpStream) {
    drop(serve_bare(stream));
}

/// One bare connection: answer frames until the client closes.
fn serve_bare(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_LIMIT))?;
    stream.set_write_timeout(Some(IO_LIMIT))?;
    let mut reader = BufReader::new(&stream);
    let mut out = Vec::with_capacity(LARGE + BARE_ACK.len());
    let mut payload = Vec::new();
    while let Some(kind) = read_frame(&mut reader, &mut payload)? {
        if kind != BARE_TURN {
            (&stream).write_all(&BARE_ACK)?;
            continue;
        }
        // The ack and the reply in one write, as the chat's echo sends them.
        out.clear();
        out.extend_from_slice(&BARE_ACK);
        push_frame(&mut out, BARE_TURN, &payload)?;
        (&stream).write_all(&out)?;
        read_ack(&mut reader)?;
    }
    Ok(())
}

/// Reads one frame into `payload` and returns its type; `None` when the peer closed between
/// frames.
fn read_frame(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Option<u8>> {
    let mut header = [0u8; 5];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > DEFAULT_MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bare frame over the limit",
        ));
    }
    payload.resize(len, 0);
    reader.read_exact(payload)?;
    Ok(Some(header[0]))
}

fn read_ack(reader: &mut impl Read) -> io::Result<()> {
    let mut ack = [0u8; 5];
    reader.read_exact(&mut ack)?;
    if ack == BARE_ACK {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected an ack",
        ))
    }
}

/// Writes a whole frame with one write, as the chat does.
fn write_frame(
    writer: &mut impl Write,
    out: &mut Vec<u8>,
    kind: u8,
    payload: &[u8],
) -> io::Result<()> {
    out.clear();
    push_frame(out, kind, payload)?;
    writer.write_all(out)
}

fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload too long"))?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A bare client connection.
struct BareClient {
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    echo: Vec<u8>,
}

impl BareClient {
    fn connect(addr: SocketAddr) -> io::Result<BareClient> {
        let stream = TcpStream::connect_timeout(&addr, IO_LIMIT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_LIMIT))?;
        stream.set_write_timeout(Some(IO_LIMIT))?;
        Ok(BareClient {
            reader: BufReader::new(stream),
            out: Vec::with_capacity(LARGE + BARE_ACK.len()),
            echo: Vec::new(),
        })
    }

    fn send(&mut self, kind: u8, payload: &[u8]) -> io::Result<()> {
        write_frame(&mut self.reader.get_ref(), &mut self.out, kind, payload)
    }

    /// (a): a frame and its ack; the RTT runs from the end of the write to the ack.
    fn ping(&mut self, payload: &[u8]) -> io::Result<Duration> {
        self.send(BARE_PING, payload)?;
        let sent = Instant::now();
        read_ack(&mut self.reader)?;
        Ok(sent.elapsed())
    }

    /// (b): a frame, its ack, the echo, the echo's ack; returns the RTT of the ack (as in
    /// [`BareClient::ping`]) and the whole turn.
    fn turn(&mut self, payload: &[u8]) -> io::Result<(Duration, Duration)> {
        let start = Instant::now();
        self.send(BARE_TURN, payload)?;
        let sent = Instant::now();
        read_ack(&mut self.reader)?;
        let rtt = sent.elapsed();
        if read_frame(&mut self.reader, &mut self.echo)?.is_none() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        (&mut self.reader.get_ref()).write_all(&BARE_ACK)?;
        Ok((rtt, start.elapsed()))
    }
}

/// Connects and takes `turns` turns; returns them and the connect time.
fn bare_session(addr: SocketAddr, payload: &[u8], turns: usize) -> BenchResult<(u64, Duration)> {
    let connecting = Instant::now();
    let mut client = BareClient::connect(addr)?;
    let wait = connecting.elapsed();
    for _ in 0..turns {
        client.turn(payload)?;
    }
    Ok((turns as u64, wait))
}

// ---------------------------------------------------------------------------------------------
// (a) and (b): latency, chat and bare in alternating blocks.

/// The samples of one message size.
#[derive(Debug, Default)]
struct Latency {
    size: usize,
    chat_rtt: Vec<Duration>,
    chat_turn: Vec<Duration>,
    bare_rtt: Vec<Duration>,
    /// The RTT of the ack inside a bare turn: the chat's RTT is always taken inside a turn.
    bare_turn_rtt: Vec<Duration>,
    bare_turn: Vec<Duration>,
}

fn measure_latency(addrs: &Addrs, size: usize, rounds: usize) -> BenchResult<Latency> {
    let payload = pattern(size);
    let mut samples = Latency {
        size,
        ..Latency::default()
    };
    for round in 0..rounds {
        // Take turns at going first, so that neither always follows the other.
        if round % 2 == 0 {
            chat_block(addrs.chat, &payload, &mut samples)?;
            bare_block(addrs.bare, &payload, &mut samples)?;
        } else {
            bare_block(addrs.bare, &payload, &mut samples)?;
            chat_block(addrs.chat, &payload, &mut samples)?;
        }
    }
    Ok(samples)
}

/// One chat session of [`BLOCK`] turns: an RTT and a turn sample each.
fn chat_block(addr: SocketAddr, payload: &[u8], samples: &mut Latency) -> BenchResult<()> {
    let run = chat_session(addr, payload, BLOCK)?;
    samples.chat_rtt.extend(run.rtts);
    samples.chat_turn.extend(run.turns);
    Ok(())
}

/// One bare connection: [`BLOCK`] ping-pongs, then [`BLOCK`] turns.
fn bare_block(addr: SocketAddr, payload: &[u8], samples: &mut Latency) -> BenchResult<()> {
    let mut client = BareClient::connect(addr)?;
    for _ in 0..BLOCK {
        samples.bare_rtt.push(client.ping(payload)?);
    }
    for _ in 0..BLOCK {
        let (rtt, turn) = client.turn(payload)?;
        samples.bare_turn_rtt.push(rtt);
        samples.bare_turn.push(turn);
    }
    Ok(())
}

/// `len` bytes of a repeating pattern.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// (c): throughput.

/// The sum of throughput runs at one client count.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    acked: u64,
    elapsed: Duration,
    longest_wait: Duration,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.acked += other.acked;
        self.elapsed += other.elapsed;
        self.longest_wait = self.longest_wait.max(other.longest_wait);
    }

    fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.acked as f64 / secs
        } else {
            0.0
        }
    }
}

/// Chat, bare and bare pool throughput at one client count.
#[derive(Debug, Default)]
struct LoadRow {
    clients: usize,
    chat: Load,
    bare: Load,
    /// The bare server on a pool of W threads.
    pooled: Load,
}

/// Every order of the three servers (chat 0, bare 1, bare pool 2), one per throughput round in
/// turn: each goes first, second and last equally often, and follows each other one equally often.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

fn measure_throughput(addrs: &Addrs, plan: &Plan) -> BenchResult<Vec<LoadRow>> {
    let payload = pattern(SMALL);
    let turns = plan.per_client;
    let chat = || chat_session(addrs.chat, &payload, turns).map(|run| (turns as u64, run.wait));
    let bare = || bare_session(addrs.bare, &payload, turns);
    let pooled = || bare_session(addrs.pooled, &payload, turns);
    let mut rows: Vec<LoadRow> = [1, plan.workers, 4 * plan.workers]
        .into_iter()
        .map(|clients| LoadRow {
            clients,
            ..LoadRow::default()
        })
        .collect();
    for round in 0..plan.throughput_rounds {
        for row in &mut rows {
            for server in ORDERS[round % ORDERS.len()] {
                match server {
                    0 => row.chat.add(run_clients(row.clients, chat)?),
                    1 => row.bare.add(run_clients(row.clients, bare)?),
                    _ => row.pooled.add(run_clients(row.clients, pooled)?),
                }
            }
        }
    }
    Ok(rows)
}

/// Starts `clients` threads at once, each running `client` (which returns its acknowledged
/// messages and its wait), and times them until the last one is done.
fn run_clients<F>(clients: usize, client: F) -> BenchResult<Load>
where
    F: Fn() -> BenchResult<(u64, Duration)> + Sync,
{
    let barrier = Barrier::new(clients + 1);
    thread::scope(|scope| {
        let (barrier, client) = (&barrier, &client);
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(move || {
                    barrier.wait();
                    client()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut load = Load::default();
        for thread in threads {
            let (acked, wait) = thread.join().map_err(|_| "a client thread panicked")??;
            load.acked += acked;
            load.longest_wait = load.longest_wait.max(wait);
        }
        load.elapsed = start.elapsed();
        Ok(load)
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics and the report.

/// Percentiles of a set of samples, in microseconds rounded to the tenth that is printed, so
/// that every ratio is computed from the figures shown beside it.
#[derive(Debug, Clone, Copy)]
struct Stats {
    count: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut us: Vec<f64> = samples.iter().map(|d| micros(*d)).collect();
        us.sort_by(f64::total_cmp);
        Stats {
            count: us.len(),
            p50: tenth(percentile(&us, 0.50)),
            p90: tenth(percentile(&us, 0.90)),
            p99: tenth(percentile(&us, 0.99)),
            p999: tenth(percentile(&us, 0.999)),
            max: tenth(us.last().copied().unwrap_or(0.0)),
        }
    }

    fn values(&self) -> [f64; 5] {
        [self.p50, self.p90, self.p99, self.p999, self.max]
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ratio(chat: f64, bare: f64) -> f64 {
    if bare <= 0.0 {
        return 0.0;
    }
    chat / bare
}

/// Rounds to the one decimal that is printed.
fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn report(small: &Latency, large: &Latency, loads: &[LoadRow], plan: &Plan) {
    for samples in [small, large] {
        let size = samples.size;
        print_table(
            &format!("(a) message to ack, {size} B: RTT in us; bare = ping-pong"),
            &samples.chat_rtt,
            &samples.bare_rtt,
        );
        print_reference("bare-in-turn", &samples.bare_turn_rtt, &samples.chat_rtt);
        print_table(
            &format!("(b) full turn (message, ack, echo), {size} B: in us"),
            &samples.chat_turn,
            &samples.bare_turn,
        );
    }
    print_loads(loads, plan.workers);
    print_histogram(
        &format!("chat RTT distribution, {SMALL} B"),
        &small.chat_rtt,
    );
    print_slow(&[small, large]);
}

fn print_table(title: &str, chat: &[Duration], bare: &[Duration]) {
    let (chat, bare) = (Stats::of(chat), Stats::of(bare));
    println!();
    println!("{title} ({} chat, {} bare samples)", chat.count, bare.count);
    println!(
        "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "", "p50", "p90", "p99", "p99.9", "max"
    );
    print_row("chat", chat.values(), 1);
    print_row("bare", bare.values(), 1);
    print_row("ratio", ratios(&chat, &bare), 3);
}

/// Two more rows under a table: another baseline, and the chat's ratio to it (for reading the
/// table, not for the summary).
fn print_reference(name: &str, reference: &[Duration], chat: &[Duration]) {
    let (reference, chat) = (Stats::of(reference), Stats::of(chat));
    print_row(name, reference.values(), 1);
    print_row("ratio", ratios(&chat, &reference), 3);
}

fn print_row(name: &str, values: [f64; 5], decimals: usize) {
    let cells: String = values
        .iter()
        .map(|v| format!("{v:>10.decimals$}"))
        .collect();
    println!("{name:<14}{cells}");
}

/// The chat/bare ratio of each printed percentile.
fn ratios(chat: &Stats, bare: &Stats) -> [f64; 5] {
    let (chat, bare) = (chat.values(), bare.values());
    std::array::from_fn(|i| ratio(chat[i], bare[i]))
}

fn print_loads(loads: &[LoadRow], workers: usize) {
    println!();
    println!(
        "(c) throughput, {SMALL} B turns, W = {workers} workers (bare: a thread per connection; \
         bare pool: W threads fed by a channel, the chat's architecture without the chat)"
    );
    println!(
        "{:>8}{:>14}{:>14}{:>8}{:>15}{:>8}{:>18}{:>18}",
        "clients",
        "chat msg/s",
        "bare msg/s",
        "ratio",
        "bare pool",
        "/pool",
        "chat max wait us",
        "bare connect us"
    );
    for row in loads {
        let [chat, bare, pooled] =
            [row.chat, row.bare, row.pooled].map(|load| load.per_second().round());
        println!(
            "{:>8}{chat:>14.0}{bare:>14.0}{:>8.3}{pooled:>15.0}{:>8.3}{:>18.1}{:>18.1}",
            row.clients,
            ratio(chat, bare),
            ratio(chat, pooled),
            micros(row.chat.longest_wait),
            micros(row.bare.longest_wait)
        );
    }
}

/// Two buckets per octave: bucket `k` holds [2^(k/2), 2^((k+1)/2)) microseconds.
fn bucket(us: f64) -> usize {
    ((us.max(1.0).log2() * 2.0).floor() as usize).min(63)
}

fn print_histogram(title: &str, samples: &[Duration]) {
    const WIDTH: usize = 50;
    let mut counts = [0usize; 64];
    for sample in samples {
        counts[bucket(micros(*sample))] += 1;
    }
    let (Some(first), Some(last)) = (
        counts.iter().position(|&c| c > 0),
        counts.iter().rposition(|&c| c > 0),
    ) else {
        return;
    };
    let peak = counts.iter().copied().max().unwrap_or(1);
    println!();
    println!("{title} ({} samples, us)", samples.len());
    let mut seen = 0;
    for (k, &count) in counts.iter().enumerate().take(last + 1).skip(first) {
        seen += count;
        let bar = "#".repeat((count * WIDTH).div_ceil(peak));
        println!(
            "{:>9.1} .. {:<9.1}|{bar:<WIDTH$}| {count:>7} {:>6.2}%",
            2f64.powf(k as f64 / 2.0),
            2f64.powf((k + 1) as f64 / 2.0),
            100.0 * seen as f64 / samples.len() as f64
        );
    }
}

fn print_slow(sets: &[&Latency]) {
    let slow = |samples: &[Duration]| samples.iter().filter(|d| **d >= SLOW).count();
    let count =
        |pick: fn(&Latency) -> &[Duration]| sets.iter().map(|s| slow(pick(s))).sum::<usize>();
    println!();
    println!(
        "samples of {} ms or more: chat rtt {}, chat turn {}, bare rtt {}, bare turn {}",
        SLOW.as_millis(),
        count(|s| &s.chat_rtt),
        count(|s| &s.chat_turn),
        count(|s| &s.bare_rtt),
        count(|s| &s.bare_turn)
    );
}

/// The last line: key figures, each ratio computed from the rounded figures beside it (the
/// rates are rounded to whole messages per second).
fn summary(small: &Latency, loads: &[LoadRow], workers: usize, rss_kib: u64) -> String {
    let (rtt, bare_rtt) = (Stats::of(&small.chat_rtt), Stats::of(&small.bare_rtt));
    let (turn, bare_turn) = (Stats::of(&small.chat_turn), Stats::of(&small.bare_turn));
    let load = loads
        .iter()
        .find(|row| row.clients == workers)
        .map_or((0.0, 0.0), |row| {
            (row.chat.per_second().round(), row.bare.per_second().round())
        });
    let (rtt50, rtt99, bare50, bare99) = (rtt.p50, rtt.p99, bare_rtt.p50, bare_rtt.p99);
    let (turn50, bare_turn50) = (turn.p50, bare_turn.p50);
    format!(
        "summary: rtt_p50_us={rtt50:.1} rtt_p99_us={rtt99:.1} bare_p50_us={bare50:.1} \
         bare_p99_us={bare99:.1} rtt_ratio_p50={:.3} turn_p50_us={turn50:.1} \
         bare_turn_p50_us={bare_turn50:.1} turn_ratio_p50={:.3} msgs_per_s={:.0} \
         bare_msgs_per_s={:.0} throughput_ratio={:.3} server_rss_kib={rss_kib}",
        ratio(rtt50, bare50),
        ratio(turn50, bare_turn50),
        load.0,
        load.1,
        ratio(load.0, load.1)
    )
}

/// This process's resident set size (VmRSS), in KiB; 0 where /proc is not available.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
