//! Round-trip benchmark: what the chat costs per message, per turn and per session, set beside
//! bare TCP servers doing the same exchange, with every process placed on CPUs by `taskset`.
//!
//! Run it with `cargo bench --bench roundtrip` (about 35 s on 2 cores, more on a busy machine).
//! `CHAT_BENCH_SCALE` (a positive float, default 1.0) multiplies every iteration count (rounds of
//! blocks, throughput runs, turns per client; each at least 1, turns at least 20):
//! `CHAT_BENCH_SCALE=0.02 cargo bench --bench roundtrip` is the few-second run CI uses, larger
//! values give steadier tails.
//!
//! Why several processes: with the servers and the clients in one process, whether two threads
//! happened to share a vCPU decided the figures. So the clients and the servers run in separate
//! processes, each started under `taskset -c LIST` when pinned, in three placements: `same-cpu`
//! (servers and driver on the first CPU this bench may use), `split-cpu` (servers on the first,
//! driver on the second) and `unpinned` (no taskset). Each placement gets fresh servers. Without
//! a working `taskset`, or with fewer than 2 CPUs, the pinned placements are skipped and their
//! ratios print as `na`.
//!
//! The processes:
//!
//! - the chat server: the real binary, `client_server_chat server 127.0.0.1 0 --echo --quiet
//!   -w W --backlog 128 --idle-timeout 60`, its stdout written to a temporary file, from which
//!   its port is read. `--quiet` leaves out the lines an echo server prints per message (a
//!   front-end's cost that the bare servers do not have; README.md gives what it costs);
//! - bare servers: this executable again, with `CHAT_BENCH_ROLE=bare-server` (the role comes from
//!   the environment because cargo passes `--bench`; arguments are ignored). With
//!   `CHAT_BENCH_THREADS=pool:W`, W long-lived threads take accepted connections from a crossbeam
//!   channel, the chat server's architecture without the chat: the BASELINE of every ratio. With
//!   `per-connection`, a new thread per connection: a reference column in (c) only;
//! - the driver: this executable with `CHAT_BENCH_ROLE=driver`, which opens the connections,
//!   measures, and prints raw samples in nanoseconds on stdout, one tagged line per block or run;
//! - the orchestrator (the process cargo starts): it only starts, places, collects and prints.
//!
//! Every turn has the same shape on both sides: the client writes a MESSAGE frame (the chat's
//! header: a type byte, a big-endian `u32` length); the server answers with the 5-byte ACK and
//! the echo in ONE write; the client writes the ACK of the echo. The chat's client is the
//! library's `Session`; the bare client is a few lines of `std::net`. All sockets have
//! `TCP_NODELAY`, all traffic stays on 127.0.0.1, every port is 0.
//!
//! The measures, in each placement, chat and bare alternating in blocks of [`BLOCK`] messages
//! inside one driver so that drift hits both:
//!
//! - (a) message to ACK at 16 B and 4 KiB: the chat's `Event::Acked` RTT, against the bare
//!   client's clock from just before the write of the message to the ACK's 5 bytes read;
//! - (b) a full automated turn: from the speaker handing out the message (bare: just before the
//!   write) to the echo received and its ACK written (chat: `Event::Received`);
//! - (c) throughput: C = 2 and 8 concurrent sessions against W = 2 and 8 workers, 16 B turns, chat
//!   `-w W` against bare `pool:W` and bare `per-connection`, in rotating order over several
//!   rounds: turns per second (of the median run; a run's rate is all its turns over the time
//!   from the start signal to the last client done) and the first, median and last client's
//!   completion time. With C > W the extra clients
//!   wait in line (chat) or in the pool's channel (bare), as intended;
//! - (d) the chat server's VmRSS: just started (`-w 4 --backlog 128`), with 4 live idle sessions,
//!   and with 64 more waiting in line (unpinned);
//! - (e) the chat RTT samples of (a), both sizes, all placements, under 1 µs: there must be none;
//! - (f) what `--log-sync` costs: message to ACK at 16 B against chat servers with and without
//!   it (each received message written and `sync_data`'d before its ACK), unpinned, in blocks
//!   taken in turn from the orchestrator;
//! - (g) free-order streaming: one client in a duplex chat (`--duplex`, protocol version 2)
//!   sends 16 B messages with up to 32 in flight, the echo server answering each with its ACK and
//!   the echo in one write and the client acknowledging every echo, against a bare client doing
//!   the same with the same frames (the bare pool answers a MESSAGE whenever it comes and takes
//!   ACKs whenever they come): messages per second, from the first write to the last ACK, chat and
//!   bare in turn, the ratio the median of the rounds' ratios.
//!
//! The last line is `summary:` followed by numbers: `rtt_p50_us`, `bare_rtt_p50_us` are the 16 B
//! message-to-ACK medians in the split-cpu placement (unpinned without taskset); `rtt_ratio_*` and
//! `turn_ratio_*` are chat/bare p50 ratios at 16 B in the placement they name (`na` for a pinned
//! placement without taskset); `throughput_ratio_w2_c8` and `throughput_ratio_w8_c8` are chat /
//! bare pool turns per second at C = 8, in split-cpu (unpinned without taskset), as the median of
//! the ratios of runs paired round by round; `duplex_stream_ratio` is (g)'s, in the same
//! placement; `server_rss_*_kib` come from (d), `rtt_under_1us`
//! from (e). The latency ratios are computed from the rounded figures printed beside them.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{self, Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;

use client_server_chat::protocol::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_MESSAGE, Frame, VERSION};
use client_server_chat::session::{
    Ending, Event, Session, Speech, Stopper, Timeouts, Turn, Unsaid,
};
use client_server_chat::wire::FrameReader;

/// Errors of any part end as one message and exit status 1.
type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The environment variable that gives a re-executed copy of this bench its part.
const ROLE_VAR: &str = "CHAT_BENCH_ROLE";
/// [`ROLE_VAR`] for a bare server.
const ROLE_BARE: &str = "bare-server";
/// [`ROLE_VAR`] for the client driver.
const ROLE_DRIVER: &str = "driver";
/// A bare server's thread model: `pool:W` or `per-connection`.
const THREADS_VAR: &str = "CHAT_BENCH_THREADS";
/// The driver's counts, as `key=value` words.
const PLAN_VAR: &str = "CHAT_BENCH_PLAN";
/// The servers' ports for the driver, as `name=port` words.
const PORTS_VAR: &str = "CHAT_BENCH_PORTS";
/// Seconds a child may live: none outlives the orchestrator's own time limit.
const LIFETIME_VAR: &str = "CHAT_BENCH_LIFETIME_S";

/// Bound on every blocking step: a server that stops answering fails the bench this fast.
const IO_LIMIT: Duration = Duration::from_secs(10);
/// How often a wait for another process (its first line, its exit) looks again.
const POLL: Duration = Duration::from_millis(5);
/// Messages per block of (a) and (b); chat and bare blocks alternate.
const BLOCK: usize = 200;
/// The small message size, the one the summary reports.
const SMALL: usize = 16;
/// The large message size.
const LARGE: usize = 4096;
/// Workers of the chat server and the bare pool that serve (a) and (b): one client at a time
/// needs no more, and 2 is this machine's core count.
const LATENCY_WORKERS: usize = 2;
/// Worker counts (W) of (c).
const LOAD_WORKERS: [usize; 2] = [2, 8];
/// Client counts (C) of (c).
const LOAD_CLIENTS: [usize; 2] = [2, 8];
/// The chat server's waiting line; the bare pool's channel holds as many beyond its workers.
const BACKLOG: usize = 128;
/// The chat server's `--idle-timeout`: far longer than any pause of the bench.
const IDLE_TIMEOUT_SECS: u64 = 60;
/// Workers of the server whose memory (d) reads.
const RSS_WORKERS: usize = 4;
/// Clients that wait in line in (d).
const RSS_WAITING: usize = 64;
/// Time given to the server in (d), once it has answered, to print its lines about the clients.
const SETTLE: Duration = Duration::from_millis(50);
/// The chat's MESSAGE type byte; the bare frames use it too, so the same bytes cross the wire.
/// `check_frame_layout` holds it to the library's encoding.
const MESSAGE_KIND: u8 = 0x04;
/// The chat's ACK: a header with an empty payload.
const ACK: [u8; 5] = [0x05, 0, 0, 0, 0];
/// Bytes in a frame header.
const HEADER: usize = 5;
/// Bounds on the loops of the child processes, which otherwise end when they are killed.
const MAX_CONNECTIONS: usize = 1_000_000;
/// Bound on the turns of one bare connection.
const MAX_TURNS: usize = 10_000_000;
/// Bound on the lines read from one child.
const MAX_LINES: usize = 10_000_000;
/// The client sessions' limits; no heartbeat, so that no PING ever crosses a measured turn.
const CLIENT_TIMEOUTS: Timeouts = Timeouts {
    handshake: IO_LIMIT,
    idle: Some(IO_LIMIT),
    heartbeat: None,
};

/// Plays the part [`ROLE_VAR`] names; the orchestrator's without one.
fn main() {
    let role = std::env::var(ROLE_VAR).unwrap_or_default();
    let (who, result) = match role.as_str() {
        "" => ("roundtrip bench", orchestrate()),
        ROLE_BARE => ("roundtrip bench: bare server", bare_server()),
        ROLE_DRIVER => ("roundtrip bench: driver", drive()),
        other => (
            "roundtrip bench",
            Err(format!("unknown {ROLE_VAR} {other:?}").into()),
        ),
    };
    if let Err(e) = result {
        eprintln!("{who} failed: {e}");
        // `process::exit` runs no destructors: end any child a guard did not get to.
        end_all_children();
        process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// The orchestrator.

/// The process cargo starts: every placement in turn, then (d) and (e), then the report.
fn orchestrate() -> BenchResult<()> {
    let started = Instant::now();
    ctrlc::set_handler(|| {
        // The registry stays locked until the process exits: the main thread, which may be
        // failing because its children just died, then can neither start a child nor exit
        // before they are all reaped.
        let mut registry = CHILDREN.lock();
        end_locked(&mut registry);
        eprintln!("roundtrip bench interrupted");
        process::exit(130);
    })?;
    check_frame_layout()?;
    let plan = Plan::from_env()?;
    let pinning = Pinning::detect(plan.cores)?;
    plan.print(&pinning);
    let mut results = Vec::new();
    for placement in Placement::ALL {
        let Some(cpus) = placement.cpus(&pinning) else {
            println!();
            println!("== {placement}: skipped, no pinning: {} ==", pinning.note);
            results.push((placement, None));
            continue;
        };
        let measured = measure_placement(placement, &cpus, &plan)?;
        print_placement(placement, &cpus, &measured, &plan);
        results.push((placement, Some(measured)));
    }
    let rss = measure_rss()?;
    rss.print();
    measure_log_sync(&plan)?;
    let under = under_1us(&results);
    println!();
    println!(
        "(e) chat RTT samples under 1 us: {} of {} (must be 0: a smaller RTT than one write and \
         one read means the clock starts too late)",
        under.0, under.1
    );
    println!();
    println!("wall time: {:.1} s", started.elapsed().as_secs_f64());
    println!("{}", summary(&results, &rss, under.0));
    Ok(())
}

/// (f): what `--log-sync` (each received message on disk before its ACK) costs a round trip:
/// chat servers with and without it, unpinned, taking turns in blocks from this process.
fn measure_log_sync(plan: &Plan) -> BenchResult<()> {
    let log = temp_log("log-sync");
    let log_arg = log.to_string_lossy().into_owned();
    let plain = ChatServer::start(LATENCY_WORKERS, None)?;
    let synced = ChatServer::start_with(LATENCY_WORKERS, None, &["--log", &log_arg, "--log-sync"])?;
    let payload = text(SMALL);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..plan.log_sync_rounds {
        let order = if round % 2 == 0 {
            [(plain.port, false), (synced.port, true)]
        } else {
            [(synced.port, true), (plain.port, false)]
        };
        for (port, is_synced) in order {
            let rtts = chat_block(port, &payload)?.rtts;
            let nanos = rtts.iter().map(|rtt| rtt.as_nanos() as u64);
            if is_synced { &mut with } else { &mut without }.extend(nanos);
        }
    }
    drop((plain, synced));
    let _ = fs::remove_file(&log);
    print_pair(
        &format!("(f) message to ACK, {SMALL} B, chat with --log-sync against without, unpinned"),
        ("log-sync", &with),
        ("no log", &without),
    );
    Ok(())
}

/// Fails at once if the library's frames no longer have the layout the bare frames copy.
fn check_frame_layout() -> BenchResult<()> {
    let message = Frame::Message(b"xy".to_vec()).encode();
    if Frame::Ack.encode() != ACK || message != [MESSAGE_KIND, 0, 0, 0, 2, b'x', b'y'] {
        return Err("the chat's MESSAGE or ACK frame changed: update the bare frames".into());
    }
    Ok(())
}

/// How much to measure.
#[derive(Debug)]
struct Plan {
    scale: f64,
    /// CPUs this process may use.
    cores: usize,
    /// Rounds (one chat block, one bare block each) at 16 B, per placement.
    small_rounds: usize,
    /// Rounds at 4 KiB, per placement.
    large_rounds: usize,
    /// Throughput runs of each server at each (W, C), per placement.
    load_rounds: usize,
    /// Rounds (one block each side) of (f).
    log_sync_rounds: usize,
    /// Turns each throughput client takes.
    per_client: usize,
    /// Messages each streaming run of (g) sends.
    stream_messages: usize,
    /// The limit on the whole bench, and on the life of every child.
    lifetime: Duration,
}

impl Plan {
    /// The plan at the scale `CHAT_BENCH_SCALE` asks for.
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
        Ok(Plan {
            scale,
            cores: thread::available_parallelism().map_or(1, |n| n.get()),
            small_rounds: scaled(150.0),
            large_rounds: scaled(50.0),
            // Every order of the three servers, three times.
            load_rounds: scaled(18.0),
            log_sync_rounds: scaled(10.0),
            per_client: scaled(250.0).max(20),
            stream_messages: scaled(5000.0).max(100),
            // Ten times what the default run takes: only a broken run meets it.
            lifetime: Duration::from_secs_f64(600.0 * scale.max(1.0)),
        })
    }

    /// The driver's part of the plan, for [`PLAN_VAR`].
    fn for_driver(&self) -> String {
        format!(
            "small_rounds={} large_rounds={} load_rounds={} per_client={} stream_messages={}",
            self.small_rounds,
            self.large_rounds,
            self.load_rounds,
            self.per_client,
            self.stream_messages
        )
    }

    /// The report's header.
    fn print(&self, pinning: &Pinning) {
        let taskset = match pinning.cpus {
            Some(_) => format!("used, {}", pinning.note),
            None => format!(
                "NOT used ({}): pinned placements skipped, their ratios print as na",
                pinning.note
            ),
        };
        println!(
            "roundtrip bench: scale {}, {} cores, taskset {taskset}",
            self.scale, self.cores
        );
        println!(
            "chat server: client_server_chat server --echo --quiet (this build's binary); bare \
             servers and driver: this bench re-executed"
        );
        println!(
            "per placement: blocks of {BLOCK} messages, chat and bare alternating, {} rounds at \
             {SMALL} B and {} at {LARGE} B (chat -w {LATENCY_WORKERS} against bare pool \
             {LATENCY_WORKERS}); throughput {} runs per server and (W, C), {} turns per client",
            self.small_rounds, self.large_rounds, self.load_rounds, self.per_client
        );
    }
}

/// Whether processes can be pinned, and on which two CPUs.
#[derive(Debug)]
struct Pinning {
    /// The CPU of the servers, and the driver's CPU in split-cpu; `None`: no pinning.
    cpus: Option<(usize, usize)>,
    /// What the header says about it; when it is not used, why pinned placements are skipped.
    note: String,
}

impl Pinning {
    /// Pinning needs 2 CPUs and a `taskset` that works on both.
    fn detect(cores: usize) -> BenchResult<Pinning> {
        if cores < 2 {
            return Ok(Pinning {
                cpus: None,
                note: format!("only {cores} CPU"),
            });
        }
        let (first, second) = allowed_cpus().unwrap_or((0, 1));
        for cpu in [first, second] {
            if !taskset_works(cpu)? {
                return Ok(Pinning {
                    cpus: None,
                    note: format!("`taskset -c {cpu} true` failed, or there is no taskset"),
                });
            }
        }
        Ok(Pinning {
            cpus: Some((first, second)),
            note: format!("servers on CPU {first}, split-cpu driver on CPU {second}"),
        })
    }
}

/// The first two CPUs this process may run on (`Cpus_allowed_list`, such as `0-1` or `2,5-7`):
/// CPU 0 may not be ours under a cpuset.
fn allowed_cpus() -> Option<(usize, usize)> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    let mut cpus = Vec::new();
    for part in list.trim().split(',').take(1024) {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        let (low, high) = (low.trim().parse::<usize>().ok()?, high.trim().parse().ok()?);
        cpus.extend((low..=high).take(2));
        if cpus.len() >= 2 {
            return Some((cpus[0], cpus[1]));
        }
    }
    None
}

/// Whether `taskset -c CPU true` runs and succeeds.
fn taskset_works(cpu: usize) -> BenchResult<bool> {
    let spawned = Command::new("taskset")
        .args(["-c", &cpu.to_string(), "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        return Ok(false);
    };
    let guard = ChildGuard::track(format!("taskset -c {cpu} true"), child);
    Ok(guard.wait_exit(IO_LIMIT)?.success())
}

/// Where the processes of one set of measures run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Servers and driver share one CPU: every wake-up is a context switch.
    SameCpu,
    /// Servers on one CPU, driver on another: every wake-up crosses CPUs.
    SplitCpu,
    /// Wherever the scheduler puts them.
    Unpinned,
}

/// The `taskset -c` lists of a placement; `None` runs unpinned.
#[derive(Debug)]
struct Cpus {
    servers: Option<String>,
    driver: Option<String>,
}

impl Placement {
    /// In the order they run and print.
    const ALL: [Placement; 3] = [Placement::SameCpu, Placement::SplitCpu, Placement::Unpinned];

    /// The CPU lists of this placement; `None` when it needs pinning and there is none.
    fn cpus(self, pinning: &Pinning) -> Option<Cpus> {
        match (self, pinning.cpus) {
            (Placement::Unpinned, _) => Some(Cpus {
                servers: None,
                driver: None,
            }),
            (_, None) => None,
            (Placement::SameCpu, Some((first, _))) => Some(Cpus {
                servers: Some(first.to_string()),
                driver: Some(first.to_string()),
            }),
            (Placement::SplitCpu, Some((first, second))) => Some(Cpus {
                servers: Some(first.to_string()),
                driver: Some(second.to_string()),
            }),
        }
    }
}

impl fmt::Display for Placement {
    /// The placement's name in the report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::SameCpu => "same-cpu",
            Placement::SplitCpu => "split-cpu",
            Placement::Unpinned => "unpinned",
        })
    }
}

/// A command for `program`, under `taskset -c LIST` when `cpus` is given.
fn placed(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(list) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(list).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Starts fresh servers in `cpus`, runs a driver against them and collects what it measured.
fn measure_placement(placement: Placement, cpus: &Cpus, plan: &Plan) -> BenchResult<Measured> {
    let servers = cpus.servers.as_deref();
    // The guards keep the servers alive until the driver is done.
    let mut guards = Vec::new();
    let mut ports = Vec::new();
    for workers in LOAD_WORKERS {
        let chat = ChatServer::start(workers, servers)?;
        ports.push(format!("{}={}", Target::Chat.key(workers), chat.port));
        guards.push(chat.guard);
        let (guard, port) = start_bare(BareModel::Pool(workers), servers, plan)?;
        ports.push(format!("{}={port}", Target::Pool.key(workers)));
        guards.push(guard);
    }
    let (guard, port) = start_bare(BareModel::PerConnection, servers, plan)?;
    ports.push(format!("{}={port}", Target::PerConnection.key(0)));
    guards.push(guard);

    let mut command = bench_child(ROLE_DRIVER, cpus.driver.as_deref(), plan)?;
    command
        .env(PLAN_VAR, plan.for_driver())
        .env(PORTS_VAR, ports.join(" "));
    let driver = ChildGuard::spawn(format!("the {placement} driver"), command, None)?;
    let measured = collect(&driver, plan)?;
    drop(driver);
    drop(guards);
    Ok(measured)
}

/// Reads the driver's lines until its `done`, within the silence and total limits.
fn collect(driver: &ChildGuard, plan: &Plan) -> BenchResult<Measured> {
    let deadline = Instant::now() + plan.lifetime;
    let mut doing = String::from("starting");
    let mut measured = Measured::default();
    for _ in 0..MAX_LINES {
        let line = match driver.next_line(IO_LIMIT) {
            Ok(Some(line)) => line,
            Ok(None) => {
                let status = driver.wait_exit(IO_LIMIT)?;
                return Err(format!(
                    "{} ended ({status}) before it was done, while {doing}",
                    driver.name
                )
                .into());
            }
            Err(e) => {
                return Err(format!(
                    "{e}, while {doing}: a server stopped answering, or a client is stuck"
                )
                .into());
            }
        };
        if line == "done" {
            let status = driver.wait_exit(IO_LIMIT)?;
            if !status.success() {
                return Err(format!("{} ended with {status}", driver.name).into());
            }
            return Ok(measured);
        }
        if let Some(note) = line.strip_prefix("# ") {
            doing = note.to_string();
        } else {
            measured
                .add(&line)
                .map_err(|e| format!("bad line from {}: {e}: {line:.80}", driver.name))?;
        }
        if Instant::now() > deadline {
            return Err(format!("the bench took longer than {:?}", plan.lifetime).into());
        }
    }
    Err(format!("{} printed more than {MAX_LINES} lines", driver.name).into())
}

/// The real chat server binary, serving with `--echo`.
struct ChatServer {
    guard: ChildGuard,
    port: u16,
}

impl ChatServer {
    /// Starts it on 127.0.0.1 port 0, its stdout going to a temporary file (removed with the
    /// guard), and reads its port from that file's first line.
    fn start(workers: usize, cpus: Option<&str>) -> BenchResult<ChatServer> {
        ChatServer::start_with(workers, cpus, &[])
    }

    /// As [`ChatServer::start`], with `extra` arguments.
    fn start_with(workers: usize, cpus: Option<&str>, extra: &[&str]) -> BenchResult<ChatServer> {
        let log = temp_log("chat-server");
        // A file, not a pipe, which would need someone to drain it while the driver runs.
        let file = File::create(&log)
            .map_err(|e| format!("cannot create the log {}: {e}", log.display()))?;
        let program = Path::new(env!("CARGO_BIN_EXE_client_server_chat"));
        let mut command = placed(program, cpus);
        command
            .args(["server", "127.0.0.1", "0", "--echo", "--quiet", "-w"])
            .arg(workers.to_string())
            .arg("--backlog")
            .arg(BACKLOG.to_string())
            .arg("--idle-timeout")
            .arg(IDLE_TIMEOUT_SECS.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::inherit());
        let name = format!("the chat server (-w {workers})");
        let guard = ChildGuard::spawn(name, command, Some(log.clone()))?;
        let first = poll(IO_LIMIT, || {
            if let Some(status) = guard.try_status()? {
                return Err(format!("{} exited ({status}) before it listened", guard.name).into());
            }
            let text = fs::read(&log)?;
            Ok(text
                .split(|&b| b == b'\n')
                .next()
                .filter(|_| text.contains(&b'\n'))
                .map(|line| String::from_utf8_lossy(line).into_owned()))
        })
        .map_err(|e| format!("{}: no address line: {e}", guard.name))?;
        let port = port_in(&first)
            .ok_or_else(|| format!("{}: no port in its first line {first:?}", guard.name))?;
        Ok(ChatServer { guard, port })
    }
}

/// This bench run again as `role`, placed in `cpus`, living at most the plan's lifetime.
fn bench_child(role: &str, cpus: Option<&str>, plan: &Plan) -> BenchResult<Command> {
    let mut command = placed(&std::env::current_exe()?, cpus);
    command
        .env(ROLE_VAR, role)
        .env(LIFETIME_VAR, plan.lifetime.as_secs().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(command)
}

/// Starts a bare server in `cpus` and reads its port from its first line.
fn start_bare(model: BareModel, cpus: Option<&str>, plan: &Plan) -> BenchResult<(ChildGuard, u16)> {
    let mut command = bench_child(ROLE_BARE, cpus, plan)?;
    command.env(THREADS_VAR, model.to_string());
    let guard = ChildGuard::spawn(format!("the bare server ({model})"), command, None)?;
    let first = guard
        .next_line(IO_LIMIT)?
        .ok_or_else(|| format!("{} exited before it listened", guard.name))?;
    let port = port_in(&first)
        .ok_or_else(|| format!("{}: no port in its first line {first:?}", guard.name))?;
    Ok((guard, port))
}

/// The port in a line that says `127.0.0.1:PORT`.
fn port_in(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("127.0.0.1:")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

/// A fresh temporary file name, unique to this bench run.
fn temp_log(what: &str) -> PathBuf {
    /// Names used so far by this process.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("roundtrip-bench-{}-{what}-{n}.log", process::id()))
}

/// Calls `check` every [`POLL`] until it has an answer, for at most `limit`.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> BenchResult<Option<T>>) -> BenchResult<T> {
    let deadline = Instant::now() + limit;
    let tries = limit.as_millis() / POLL.as_millis().max(1) + 1;
    for _ in 0..tries {
        if let Some(found) = check()? {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL);
    }
    Err(format!("nothing within {} s", limit.as_secs()).into())
}

// ---------------------------------------------------------------------------------------------
// Child processes: every one is tracked, so that every exit path ends it.

/// A running child and the temporary file it writes, if any.
#[derive(Debug)]
struct Tracked {
    pid: u32,
    child: Child,
    log: Option<PathBuf>,
}

/// Every child still running. The Ctrl-C handler empties it too, so children are spawned with it
/// locked, and none is spawned once it is closed.
#[derive(Debug)]
struct Registry {
    closed: bool,
    children: Vec<Tracked>,
}

/// The children of this process, from spawn to reaping.
static CHILDREN: Mutex<Registry> = Mutex::new(Registry {
    closed: false,
    children: Vec::new(),
});

/// Kills and reaps a child, and removes its file.
fn end(mut tracked: Tracked) {
    // It may have exited already; reaping is what matters.
    let _ = tracked.child.kill();
    let _ = tracked.child.wait();
    if let Some(log) = tracked.log {
        let _ = fs::remove_file(log);
    }
}

/// Ends every child still running, and any that would be started after.
fn end_all_children() {
    end_locked(&mut CHILDREN.lock());
}

/// [`end_all_children`] with the registry already locked.
fn end_locked(registry: &mut Registry) {
    registry.closed = true;
    // Newest first: a driver goes before the servers it talks to, so it reports no broken
    // connection.
    while let Some(tracked) = registry.children.pop() {
        end(tracked);
    }
}

/// A child process, killed and reaped (and its file removed) when the guard drops, whatever the
/// exit path.
#[derive(Debug)]
struct ChildGuard {
    name: String,
    pid: u32,
    /// Our end of the child's stdin: the bench's own children (bare servers, drivers) exit when
    /// it closes, so that even a killed orchestrator leaves none of them behind. The chat server
    /// reads no stdin with `--echo`: only this guard or the Ctrl-C handler ends it.
    _lifeline: Option<ChildStdin>,
    /// The child's stdout, line by line, when it is piped.
    lines: Option<Receiver<String>>,
}

impl ChildGuard {
    /// Spawns `command` and tracks it; `log` is removed when it ends.
    fn spawn(name: String, mut command: Command, log: Option<PathBuf>) -> BenchResult<ChildGuard> {
        let mut registry = CHILDREN.lock();
        let spawned = if registry.closed {
            Err("the bench is stopping".to_string())
        } else {
            command
                .spawn()
                .map_err(|e| format!("cannot start {name}: {e}"))
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // Nobody else will remove it.
                if let Some(log) = log {
                    let _ = fs::remove_file(log);
                }
                return Err(e.into());
            }
        };
        let lifeline = child.stdin.take();
        let stdout = child.stdout.take();
        let pid = child.id();
        registry.children.push(Tracked { pid, child, log });
        drop(registry);
        let mut guard = ChildGuard {
            name,
            pid,
            _lifeline: lifeline,
            lines: None,
        };
        if let Some(stdout) = stdout {
            guard.lines = Some(forward_lines(stdout)?);
        }
        Ok(guard)
    }

    /// Tracks a child spawned elsewhere, with nothing piped.
    fn track(name: String, child: Child) -> ChildGuard {
        let pid = child.id();
        let mut registry = CHILDREN.lock();
        let tracked = Tracked {
            pid,
            child,
            log: None,
        };
        if registry.closed {
            drop(registry);
            end(tracked);
        } else {
            registry.children.push(tracked);
        }
        ChildGuard {
            name,
            pid,
            _lifeline: None,
            lines: None,
        }
    }

    /// The child's next line of stdout; `None` at its end. Silence for `limit` is an error.
    fn next_line(&self, limit: Duration) -> BenchResult<Option<String>> {
        let lines = self
            .lines
            .as_ref()
            .ok_or_else(|| format!("{}: stdout not piped", self.name))?;
        match lines.recv_timeout(limit) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("{} printed nothing for {} s", self.name, limit.as_secs()).into())
            }
        }
    }

    /// The exit status, if the child has exited.
    fn try_status(&self) -> BenchResult<Option<ExitStatus>> {
        let mut registry = CHILDREN.lock();
        let stopping = registry.closed;
        let Some(tracked) = registry
            .children
            .iter_mut()
            .find(|tracked| tracked.pid == self.pid)
        else {
            let why = if stopping {
                "the bench is stopping"
            } else {
                "no longer tracked"
            };
            return Err(format!("{}: {why}", self.name).into());
        };
        Ok(tracked.child.try_wait()?)
    }

    /// Waits at most `limit` for the child to exit.
    fn wait_exit(&self, limit: Duration) -> BenchResult<ExitStatus> {
        poll(limit, || self.try_status())
            .map_err(|e| format!("{} did not exit: {e}", self.name).into())
    }
}

impl Drop for ChildGuard {
    /// Kills and reaps the child, unless an interruption already has.
    fn drop(&mut self) {
        let tracked = {
            let mut registry = CHILDREN.lock();
            let index = registry.children.iter().position(|t| t.pid == self.pid);
            index.map(|index| registry.children.swap_remove(index))
        };
        if let Some(tracked) = tracked {
            end(tracked);
        }
    }
}

/// Hands a child's stdout over line by line from a thread, so that the reader can time out.
fn forward_lines(stdout: ChildStdout) -> io::Result<Receiver<String>> {
    let (lines, receiver) = crossbeam_channel::unbounded();
    thread::Builder::new()
        .name("child-stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines().take(MAX_LINES) {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        })?;
    Ok(receiver)
}

/// In a child: exits when the orchestrator goes (our stdin reaches its end) or when the bench's
/// time limit has passed, so that no child outlives the bench.
fn watch_lifeline() -> BenchResult<()> {
    let secs: u64 = std::env::var(LIFETIME_VAR)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("{LIFETIME_VAR} is not set to a number of seconds"))?;
    thread::Builder::new().name("lifeline".into()).spawn(|| {
        // Nothing is ever written to our stdin: any return means the orchestrator is gone.
        let _ = io::stdin().read(&mut [0u8; 64]);
        process::exit(1);
    })?;
    thread::Builder::new()
        .name("lifetime".into())
        .spawn(move || {
            thread::sleep(Duration::from_secs(secs));
            eprintln!("roundtrip bench: a child outlived the bench's limit of {secs} s");
            process::exit(1);
        })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What the driver measured, as the orchestrator gathers it.

/// The two clocks of (a) and (b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Measure {
    /// Message to ACK.
    Rtt,
    /// The whole automated turn.
    Turn,
}

impl Measure {
    /// Its tag in the driver's lines.
    fn name(self) -> &'static str {
        match self {
            Measure::Rtt => "rtt",
            Measure::Turn => "turn",
        }
    }

    /// The measure tagged `text`.
    fn parse(text: &str) -> Option<Measure> {
        [Measure::Rtt, Measure::Turn]
            .into_iter()
            .find(|m| m.name() == text)
    }
}

/// The servers of (c); `Chat` and `Pool` also serve (a) and (b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// The real chat server, `--echo`.
    Chat,
    /// The bare pool: the baseline.
    Pool,
    /// The bare thread per connection: a reference.
    PerConnection,
}

impl Target {
    /// In the order of the table's columns.
    const ALL: [Target; 3] = [Target::Chat, Target::Pool, Target::PerConnection];

    /// Its tag in the driver's lines.
    fn name(self) -> &'static str {
        match self {
            Target::Chat => "chat",
            Target::Pool => "pool",
            Target::PerConnection => "per-connection",
        }
    }

    /// The server tagged `text`.
    fn parse(text: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == text)
    }

    /// The name of the server with `workers` workers in [`PORTS_VAR`].
    fn key(self, workers: usize) -> String {
        match self {
            Target::PerConnection => self.name().to_string(),
            _ => format!("{}{workers}", self.name()),
        }
    }
}

/// One throughput run: C clients started at once against one server.
#[derive(Debug, Clone)]
struct LoadRun {
    turns: u64,
    /// From the start signal to the last client done.
    wall_ns: u64,
    /// Each client's completion time from the start signal, sorted.
    done_ns: Vec<u64>,
}

/// Everything one driver reported.
#[derive(Debug, Default)]
struct Measured {
    /// (a) and (b): (measure, chat or pool, size) to samples in nanoseconds.
    samples: BTreeMap<(Measure, Target, usize), Vec<u64>>,
    /// (c): (W, C, server) to runs.
    loads: BTreeMap<(usize, usize, Target), Vec<LoadRun>>,
    /// (g): chat or pool to its streaming runs (messages, wall time), in round order.
    streams: BTreeMap<Target, Vec<(u64, u64)>>,
}

impl Measured {
    /// Takes in one line of the driver's: `rtt|turn chat|pool SIZE NS,NS,...` or
    /// `load SERVER W C TURNS WALL_NS NS,NS,...`.
    fn add(&mut self, line: &str) -> BenchResult<()> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stream", target, messages, wall] => {
                let target = Target::parse(target).ok_or("unknown side")?;
                self.streams
                    .entry(target)
                    .or_default()
                    .push((messages.parse()?, wall.parse()?));
            }
            ["load", target, workers, clients, turns, wall, done] => {
                let target = Target::parse(target).ok_or("unknown server")?;
                let mut done = numbers(done)?;
                done.sort_unstable();
                let run = LoadRun {
                    turns: turns.parse()?,
                    wall_ns: wall.parse()?,
                    done_ns: done,
                };
                self.loads
                    .entry((workers.parse()?, clients.parse()?, target))
                    .or_default()
                    .push(run);
            }
            [measure, target, size, samples] => {
                let measure = Measure::parse(measure).ok_or("unknown measure")?;
                let target = Target::parse(target).ok_or("unknown side")?;
                self.samples
                    .entry((measure, target, size.parse()?))
                    .or_default()
                    .extend(numbers(samples)?);
            }
            _ => return Err("not a line of results".into()),
        }
        Ok(())
    }

    /// The samples of one measure, side and size (none if the driver sent none).
    fn samples(&self, measure: Measure, target: Target, size: usize) -> &[u64] {
        self.samples
            .get(&(measure, target, size))
            .map_or(&[], Vec::as_slice)
    }

    /// The throughput runs of one server at (W, C).
    fn runs(&self, workers: usize, clients: usize, target: Target) -> &[LoadRun] {
        self.loads
            .get(&(workers, clients, target))
            .map_or(&[], Vec::as_slice)
    }

    /// Turns per second of the median run of one server at (W, C), rounded as printed.
    fn rate(&self, workers: usize, clients: usize, target: Target) -> f64 {
        // The median run, not all runs pooled: on a shared VM one run in a dozen can stall for a
        // few hundred ms, and pooled it would decide the figure.
        let mut rates: Vec<u64> = self
            .runs(workers, clients, target)
            .iter()
            .filter(|run| run.wall_ns > 0)
            .map(|run| (run.turns as f64 / (run.wall_ns as f64 / 1e9)).round() as u64)
            .collect();
        if rates.is_empty() {
            return 0.0;
        }
        rates.sort_unstable();
        percentile(&rates, 0.5) as f64
    }

    /// (g): messages per second of the median run of `target`.
    fn stream_rate(&self, target: Target) -> f64 {
        let mut rates: Vec<u64> = self
            .streams
            .get(&target)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|&(messages, wall)| (messages as f64 / (wall.max(1) as f64 / 1e9)).round() as u64)
            .collect();
        if rates.is_empty() {
            return 0.0;
        }
        rates.sort_unstable();
        percentile(&rates, 0.5) as f64
    }

    /// (g): chat over bare messages per second, the median of the rounds' ratios.
    fn stream_ratio(&self) -> Option<f64> {
        let runs = |target| self.streams.get(&target).map_or(&[][..], Vec::as_slice);
        let rate = |&(messages, wall): &(u64, u64)| messages as f64 / wall.max(1) as f64;
        median_ratio(
            runs(Target::Chat)
                .iter()
                .zip(runs(Target::Pool))
                .map(|(c, b)| rate(c) / rate(b)),
        )
    }

    /// Chat over `target` in turns per second at (W, C): the median of the ratios of the runs
    /// paired round by round (each round runs every server once, back to back), so that a
    /// round the whole machine ran slow in counts against both.
    fn paired_ratio(&self, workers: usize, clients: usize, target: Target) -> Option<f64> {
        let rate = |run: &LoadRun| run.turns as f64 / (run.wall_ns.max(1) as f64 / 1e9);
        let chat = self.runs(workers, clients, Target::Chat);
        let other = self.runs(workers, clients, target);
        median_ratio(chat.iter().zip(other).map(|(c, o)| rate(c) / rate(o)))
    }
}

/// The median of the finite `ratios` of runs paired round by round (the lower middle one of an
/// even count); `None` without any.
fn median_ratio(ratios: impl Iterator<Item = f64>) -> Option<f64> {
    let mut ratios: Vec<f64> = ratios.filter(|r| r.is_finite()).collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(ratios[(ratios.len() - 1) / 2])
}

/// Comma-separated whole numbers.
fn numbers(text: &str) -> BenchResult<Vec<u64>> {
    text.split(',')
        .map(|n| n.parse::<u64>().map_err(Into::into))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// (d): the chat server's memory.

/// The chat server's VmRSS in KiB at three moments; `None` where /proc cannot tell.
#[derive(Debug)]
struct Rss {
    idle: Option<u64>,
    live: Option<u64>,
    waiting: Option<u64>,
}

impl Rss {
    /// The (d) line of the report.
    fn print(&self) {
        let kib = |v: Option<u64>| v.map_or("na".to_string(), |v| format!("{v} KiB"));
        println!();
        println!(
            "(d) chat server VmRSS (-w {RSS_WORKERS} --backlog {BACKLOG}, unpinned): just started \
             {}, {RSS_WORKERS} live idle sessions {}, and {RSS_WAITING} more waiting in line {}",
            kib(self.idle),
            kib(self.live),
            kib(self.waiting)
        );
    }
}

/// Starts a chat server, reads its RSS idle, with live sessions, and with a waiting line.
fn measure_rss() -> BenchResult<Rss> {
    let server = ChatServer::start(RSS_WORKERS, None)?;
    let pid = server.guard.pid;
    let idle = rss_kib(pid);
    let mut clients = Vec::with_capacity(RSS_WORKERS + RSS_WAITING);
    // `count` more clients, each answered as `expected` says, then the server's RSS.
    let mut join = |count: usize, expected: fn(&Frame) -> bool| -> BenchResult<Option<u64>> {
        for _ in 0..count {
            clients.push(hello(server.port, expected)?);
        }
        // The server prints its lines about a client after it has answered it.
        thread::sleep(SETTLE);
        Ok(rss_kib(pid))
    };
    let live = join(RSS_WORKERS, |frame| matches!(frame, Frame::Welcome { .. }))?;
    let waiting = join(RSS_WAITING, |frame| matches!(frame, Frame::Waiting { .. }))?;
    drop(clients);
    drop(server);
    Ok(Rss {
        idle,
        live,
        waiting,
    })
}

/// Connects a raw client, says HELLO, and reads the server's first answer, which must pass
/// `expected`: then the server has accepted it and holds what it holds for it.
fn hello(port: u16, expected: fn(&Frame) -> bool) -> BenchResult<TcpStream> {
    let mut stream = connect(port)?;
    let hello = Frame::Hello {
        version: VERSION,
        max_message: DEFAULT_MAX_MESSAGE as u32,
        name: "rss".into(),
    };
    stream.write_all(&hello.encode())?;
    let frame = FrameReader::new(DEFAULT_MAX_MESSAGE)
        .read_frame(&mut stream)
        .map_err(|e| format!("no answer to HELLO from the chat server: {e}"))?;
    if !expected(&frame) {
        return Err(format!("the chat server answered HELLO with {}", frame.name()).into());
    }
    Ok(stream)
}

/// The VmRSS of process `pid` in KiB; `None` where /proc is not available.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
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
    max: f64,
}

impl Stats {
    /// The statistics of samples in nanoseconds.
    fn of(ns: &[u64]) -> Stats {
        let mut sorted = ns.to_vec();
        sorted.sort_unstable();
        let us = |ns: u64| tenth(ns as f64 / 1e3);
        Stats {
            count: sorted.len(),
            p50: us(percentile(&sorted, 0.50)),
            p90: us(percentile(&sorted, 0.90)),
            p99: us(percentile(&sorted, 0.99)),
            max: us(sorted.last().copied().unwrap_or(0)),
        }
    }

    /// The figures in the order of the table's columns.
    fn values(&self) -> [f64; 4] {
        [self.p50, self.p90, self.p99, self.max]
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds to the one decimal that is printed.
fn tenth(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// chat / baseline, rounded to the 3 decimals printed; `None` without a baseline.
fn ratio(chat: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| (chat / baseline * 1000.0).round() / 1000.0)
}

/// A ratio as printed, `na` where there is none.
fn show_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "na".to_string(), |r| format!("{r:.3}"))
}

/// The tables of one placement.
fn print_placement(placement: Placement, cpus: &Cpus, measured: &Measured, plan: &Plan) {
    let on = |list: &Option<String>| {
        list.as_ref()
            .map_or_else(|| "any CPU".to_string(), |cpu| format!("CPU {cpu}"))
    };
    println!();
    println!(
        "== {placement}: servers on {}, driver on {} ==",
        on(&cpus.servers),
        on(&cpus.driver)
    );
    for (measure, size, title) in [
        (Measure::Rtt, SMALL, "(a) message to ACK"),
        (Measure::Rtt, LARGE, "(a) message to ACK"),
        (
            Measure::Turn,
            SMALL,
            "(b) full turn (message, ACK + echo, ACK)",
        ),
        (Measure::Turn, LARGE, "(b) full turn, for reference"),
    ] {
        print_latency(
            &format!("{title}, {size} B"),
            measured.samples(measure, Target::Chat, size),
            measured.samples(measure, Target::Pool, size),
        );
    }
    print_loads(measured, plan);
    println!();
    println!(
        "(g) duplex streaming, one client, {SMALL} B messages, up to {DEFAULT_MAX_IN_FLIGHT} in \
         flight, each echoed, {} per run, {} runs each: messages/s (median run); ratio: median \
         of the rounds' ratios",
        plan.stream_messages, plan.load_rounds
    );
    println!("{:>12}{:>12}{:>8}", "chat", "bare pool", "ratio");
    println!(
        "{:>12.0}{:>12.0}{:>8}",
        measured.stream_rate(Target::Chat),
        measured.stream_rate(Target::Pool),
        show_ratio(measured.stream_ratio())
    );
}

/// One table of (a) or (b): percentiles of chat and bare, and their ratios.
fn print_latency(title: &str, chat: &[u64], bare: &[u64]) {
    print_pair(title, ("chat", chat), ("bare pool", bare));
}

/// A table of percentiles of two sets of samples (ns), shown in µs, and the ratio of `a` to
/// `b`.
fn print_pair(title: &str, (a_name, a): (&str, &[u64]), (b_name, b): (&str, &[u64])) {
    let (a, b) = (Stats::of(a), Stats::of(b));
    println!();
    println!(
        "{title}: us ({} {a_name}, {} {b_name} samples)",
        a.count, b.count
    );
    println!(
        "{:<12}{:>10}{:>10}{:>10}{:>10}",
        "", "p50", "p90", "p99", "max"
    );
    let row = |name: &str, cells: [String; 4]| {
        println!(
            "{name:<12}{:>10}{:>10}{:>10}{:>10}",
            cells[0], cells[1], cells[2], cells[3]
        );
    };
    row(a_name, a.values().map(|v| format!("{v:.1}")));
    row(b_name, b.values().map(|v| format!("{v:.1}")));
    let (av, bv) = (a.values(), b.values());
    row(
        "ratio",
        std::array::from_fn(|i| show_ratio(ratio(av[i], bv[i]))),
    );
}

/// The table of (c).
fn print_loads(measured: &Measured, plan: &Plan) {
    println!();
    println!(
        "(c) throughput, {SMALL} B turns, {} per client, {} runs each: turns/s (median run); \
         ratio: median of the runs' ratios, paired round by round; completion ms \
         (first/median/last client, median over runs)",
        plan.per_client, plan.load_rounds
    );
    println!(
        "{:>3}{:>4}{:>10}{:>11}{:>8}{:>10}{:>8}{:>22}{:>22}",
        "W", "C", "chat", "bare pool", "ratio", "per-conn", "ratio", "chat ms", "bare pool ms"
    );
    for workers in LOAD_WORKERS {
        for clients in LOAD_CLIENTS {
            let [chat, pool, per_connection] =
                Target::ALL.map(|target| measured.rate(workers, clients, target));
            println!(
                "{workers:>3}{clients:>4}{chat:>10.0}{pool:>11.0}{:>8}{per_connection:>10.0}\
                 {:>8}{:>22}{:>22}",
                show_ratio(measured.paired_ratio(workers, clients, Target::Pool)),
                show_ratio(measured.paired_ratio(workers, clients, Target::PerConnection)),
                completion(measured.runs(workers, clients, Target::Chat)),
                completion(measured.runs(workers, clients, Target::Pool)),
            );
        }
    }
}

/// `first/median/last` client completion in ms, each the median over the runs.
fn completion(runs: &[LoadRun]) -> String {
    let pick = |p: f64| {
        let mut each: Vec<u64> = runs.iter().map(|run| percentile(&run.done_ns, p)).collect();
        each.sort_unstable();
        percentile(&each, 0.5) as f64 / 1e6
    };
    format!("{:.1}/{:.1}/{:.1}", pick(0.0), pick(0.5), pick(1.0))
}

/// (e): the chat RTT samples under 1 µs, and all of them.
fn under_1us(results: &[(Placement, Option<Measured>)]) -> (usize, usize) {
    let mut under = 0;
    let mut all = 0;
    for measured in results.iter().filter_map(|(_, m)| m.as_ref()) {
        for size in [SMALL, LARGE] {
            let samples = measured.samples(Measure::Rtt, Target::Chat, size);
            under += samples.iter().filter(|&&ns| ns < 1_000).count();
            all += samples.len();
        }
    }
    (under, all)
}

/// The last line.
fn summary(results: &[(Placement, Option<Measured>)], rss: &Rss, under_1us: usize) -> String {
    let of = |placement: Placement| {
        results
            .iter()
            .find(|(p, _)| *p == placement)
            .and_then(|(_, m)| m.as_ref())
    };
    let p50 = |m: &Measured, measure: Measure, target: Target| {
        Stats::of(m.samples(measure, target, SMALL)).p50
    };
    let p50_ratio = |placement: Placement, measure: Measure| {
        show_ratio(
            of(placement)
                .and_then(|m| ratio(p50(m, measure, Target::Chat), p50(m, measure, Target::Pool))),
        )
    };
    // The reference placement: split-cpu when there is one.
    let main = of(Placement::SplitCpu).or_else(|| of(Placement::Unpinned));
    let us = |target: Target| {
        main.map_or_else(
            || "na".to_string(),
            |m| format!("{:.1}", p50(m, Measure::Rtt, target)),
        )
    };
    let throughput =
        |workers: usize| show_ratio(main.and_then(|m| m.paired_ratio(workers, 8, Target::Pool)));
    let kib = |v: Option<u64>| v.map_or_else(|| "na".to_string(), |v| v.to_string());
    format!(
        "summary: rtt_p50_us={} bare_rtt_p50_us={} rtt_ratio_same_cpu={} rtt_ratio_split_cpu={} \
         turn_ratio_same_cpu={} turn_ratio_split_cpu={} turn_ratio_unpinned={} \
         throughput_ratio_w2_c8={} throughput_ratio_w8_c8={} duplex_stream_ratio={} \
         server_rss_idle_kib={} server_rss_live4_kib={} rtt_under_1us={under_1us}",
        us(Target::Chat),
        us(Target::Pool),
        p50_ratio(Placement::SameCpu, Measure::Rtt),
        p50_ratio(Placement::SplitCpu, Measure::Rtt),
        p50_ratio(Placement::SameCpu, Measure::Turn),
        p50_ratio(Placement::SplitCpu, Measure::Turn),
        p50_ratio(Placement::Unpinned, Measure::Turn),
        throughput(2),
        throughput(8),
        show_ratio(main.and_then(Measured::stream_ratio)),
        kib(rss.idle),
        kib(rss.live),
    )
}

// ---------------------------------------------------------------------------------------------
// The bare server (CHAT_BENCH_ROLE=bare-server).

/// How a bare server gives its connections threads.
#[derive(Debug, Clone, Copy)]
enum BareModel {
    /// This many long-lived threads taking connections from a crossbeam channel, as the chat's
    /// worker pool does: the baseline.
    Pool(usize),
    /// A new thread for each connection: a reference.
    PerConnection,
}

impl BareModel {
    /// The model [`THREADS_VAR`] names.
    fn from_env() -> BenchResult<BareModel> {
        let text = std::env::var(THREADS_VAR).unwrap_or_default();
        if text == "per-connection" {
            return Ok(BareModel::PerConnection);
        }
        text.strip_prefix("pool:")
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .map(BareModel::Pool)
            .ok_or_else(|| {
                format!("{THREADS_VAR} must be pool:N or per-connection, not {text:?}").into()
            })
    }
}

impl fmt::Display for BareModel {
    /// As [`THREADS_VAR`] spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BareModel::Pool(workers) => write!(f, "pool:{workers}"),
            BareModel::PerConnection => f.write_str("per-connection"),
        }
    }
}

/// A bare server's process: listens on 127.0.0.1 port 0, prints the address, serves until killed.
fn bare_server() -> BenchResult<()> {
    watch_lifeline()?;
    let model = BareModel::from_env()?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "bare server ({model}) listening on {}",
            listener.local_addr()?
        )?;
        out.flush()?;
    }
    match model {
        BareModel::Pool(workers) => {
            let (jobs, queue) = crossbeam_channel::bounded::<TcpStream>(workers + BACKLOG);
            for i in 0..workers {
                let queue = queue.clone();
                thread::Builder::new()
                    .name(format!("bare-worker-{i}"))
                    .spawn(move || {
                        for stream in queue.iter().take(MAX_CONNECTIONS) {
                            serve_quietly(stream);
                        }
                    })?;
            }
            for conn in listener.incoming().take(MAX_CONNECTIONS) {
                // A connection that failed before it was taken harms no other.
                let Ok(stream) = conn else { continue };
                jobs.send(stream).map_err(|_| "the bare workers are gone")?;
            }
        }
        BareModel::PerConnection => {
            for conn in listener.incoming().take(MAX_CONNECTIONS) {
                let Ok(stream) = conn else { continue };
                thread::Builder::new()
                    .name("bare-peer".into())
                    .spawn(move || serve_quietly(stream))?;
            }
        }
    }
    Ok(())
}

/// Serves one bare connection. A client that leaves mid-exchange ends it; that is no failure
/// here (a broken exchange shows on the driver's side).
fn serve_quietly(stream: TcpStream) {
    drop(serve_bare(stream));
}

/// One bare connection: each MESSAGE is answered with the ACK and the echo in one write; the
/// ACKs of the echoes are taken as they come (after each echo in turns, between the messages
/// of a stream); ends when the client closes.
fn serve_bare(stream: TcpStream) -> io::Result<()> {
    tune(&stream)?;
    let mut reader = BufReader::new(&stream);
    let mut out = Vec::with_capacity(2 * HEADER + LARGE);
    let mut payload = Vec::new();
    for _ in 0..MAX_TURNS {
        match read_frame(&mut reader, &mut payload)? {
            None => return Ok(()),
            Some(MESSAGE_KIND) => {}
            Some(kind) if kind == ACK[0] && payload.is_empty() => continue,
            Some(_) => return Err(invalid("expected a MESSAGE or an ACK")),
        }
        out.clear();
        out.extend_from_slice(&ACK);
        push_frame(&mut out, MESSAGE_KIND, &payload)?;
        (&stream).write_all(&out)?;
    }
    Ok(())
}

/// The error of a peer that broke the exchange.
fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one frame into `payload` and returns its type; `None` when the peer closed between
/// frames.
fn read_frame(reader: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Option<u8>> {
    let mut header = [0u8; HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > DEFAULT_MAX_MESSAGE {
        return Err(invalid("bare frame over the limit"));
    }
    payload.resize(len, 0);
    reader.read_exact(payload)?;
    Ok(Some(header[0]))
}

/// Reads the 5 bytes of an ACK.
fn read_ack(reader: &mut impl Read) -> io::Result<()> {
    let mut ack = [0u8; HEADER];
    reader.read_exact(&mut ack)?;
    if ack == ACK {
        Ok(())
    } else {
        Err(invalid("expected an ACK"))
    }
}

/// Appends a frame to `out`, so that it can go out in one write with what is already there.
fn push_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| invalid("payload too long"))?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The driver (CHAT_BENCH_ROLE=driver).

/// The driver's counts, from [`PLAN_VAR`].
#[derive(Debug)]
struct DriverPlan {
    small_rounds: usize,
    large_rounds: usize,
    load_rounds: usize,
    per_client: usize,
    stream_messages: usize,
}

impl DriverPlan {
    /// The counts the orchestrator put in [`PLAN_VAR`].
    fn from_env() -> BenchResult<DriverPlan> {
        let words = pairs(PLAN_VAR)?;
        let get = |key: &str| -> BenchResult<usize> {
            words
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{PLAN_VAR} has no number {key}").into())
        };
        Ok(DriverPlan {
            small_rounds: get("small_rounds")?,
            large_rounds: get("large_rounds")?,
            load_rounds: get("load_rounds")?,
            per_client: get("per_client")?,
            stream_messages: get("stream_messages")?,
        })
    }
}

/// The `key=value` words of environment variable `var`.
fn pairs(var: &str) -> BenchResult<BTreeMap<String, String>> {
    let text = std::env::var(var).map_err(|_| format!("{var} is not set"))?;
    text.split_whitespace()
        .map(|word| {
            word.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{var}: {word:?} is not key=value").into())
        })
        .collect()
}

/// Every order of the three servers of (c), one per round in turn: each goes first, second and
/// last equally often, and follows each other one equally often.
const ORDERS: [[Target; 3]; 6] = [
    [Target::Chat, Target::Pool, Target::PerConnection],
    [Target::Chat, Target::PerConnection, Target::Pool],
    [Target::Pool, Target::Chat, Target::PerConnection],
    [Target::Pool, Target::PerConnection, Target::Chat],
    [Target::PerConnection, Target::Chat, Target::Pool],
    [Target::PerConnection, Target::Pool, Target::Chat],
];

/// The driver's process: warm-up, (a) and (b) in alternating blocks, then (c); every sample on
/// stdout, then `done`.
fn drive() -> BenchResult<()> {
    watch_lifeline()?;
    let plan = DriverPlan::from_env()?;
    let ports = pairs(PORTS_VAR)?;
    let port = |target: Target, workers: usize| -> BenchResult<u16> {
        let key = target.key(workers);
        ports
            .get(&key)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{PORTS_VAR} has no port for {key}").into())
    };
    let (chat, bare) = (
        port(Target::Chat, LATENCY_WORKERS)?,
        port(Target::Pool, LATENCY_WORKERS)?,
    );
    let mut out = BufWriter::new(io::stdout().lock());
    let small = text(SMALL);
    let large = text(LARGE);

    note(&mut out, "warming up")?;
    // The first connections of a fresh server pay for its page faults: thrown away.
    chat_block(chat, &small)?;
    bare_block(bare, &small)?;
    for (payload, rounds) in [(&small, plan.small_rounds), (&large, plan.large_rounds)] {
        note(
            &mut out,
            &format!(
                "measuring latency at {} B against chat -w {LATENCY_WORKERS} and bare pool",
                payload.len()
            ),
        )?;
        for round in 0..rounds {
            // Take turns at going first, so that neither always follows the other.
            let chat_first = round % 2 == 0;
            for is_chat in [chat_first, !chat_first] {
                let block = if is_chat {
                    chat_block(chat, payload)?
                } else {
                    bare_block(bare, payload)?
                };
                block.write(&mut out)?;
            }
            out.flush()?;
        }
    }
    for round in 0..plan.load_rounds {
        for workers in LOAD_WORKERS {
            for clients in LOAD_CLIENTS {
                for target in ORDERS[round % ORDERS.len()] {
                    note(
                        &mut out,
                        &format!(
                            "measuring throughput against {} W={workers} with C={clients}",
                            target.name()
                        ),
                    )?;
                    let run = run_load(target, port(target, workers)?, clients, &plan, &small)?;
                    let done: Vec<String> = run.done_ns.iter().map(u64::to_string).collect();
                    writeln!(
                        out,
                        "load {} {workers} {clients} {} {} {}",
                        target.name(),
                        run.turns,
                        run.wall_ns,
                        done.join(",")
                    )?;
                    out.flush()?;
                }
            }
        }
    }
    note(
        &mut out,
        &format!("measuring duplex streaming against chat -w {LATENCY_WORKERS} and bare pool"),
    )?;
    for round in 0..plan.load_rounds {
        let chat_first = round % 2 == 0;
        for is_chat in [chat_first, !chat_first] {
            let (target, wall) = if is_chat {
                (
                    Target::Chat,
                    chat_stream(chat, &small, plan.stream_messages)?,
                )
            } else {
                (
                    Target::Pool,
                    bare_stream(bare, &small, plan.stream_messages)?,
                )
            };
            writeln!(
                out,
                "stream {} {} {}",
                target.name(),
                plan.stream_messages,
                wall.as_nanos()
            )?;
        }
        out.flush()?;
    }
    writeln!(out, "done")?;
    out.flush()?;
    Ok(())
}

/// (g), chat: a duplex session sends `messages` copies of `payload` with as many in flight as
/// the protocol allows; the time from the first write to the last ACK.
fn chat_stream(port: u16, payload: &[u8], messages: usize) -> BenchResult<Duration> {
    let stream = connect(port)?;
    let stopper = Stopper::new(&stream)?;
    let mut session = Session::new(stream, DEFAULT_MAX_MESSAGE, CLIENT_TIMEOUTS, stopper)?;
    if let Err(ending) = session.client_handshake("bench", true, &mut |_| {}) {
        return Err(format!("duplex handshake: {ending}").into());
    }
    let outbox = session.outbox();
    // MyTurn once (the floor is open), then a token per ACK.
    let (tokens, taken) = crossbeam_channel::unbounded();
    let runner = thread::spawn(move || {
        session.run(Turn::Mine, None, &mut |event| {
            if matches!(event, Event::MyTurn | Event::Acked { .. }) {
                let _ = tokens.send(());
            }
        })
    });
    let wait = || taken.recv_timeout(IO_LIMIT).map_err(|_| "no ACK in time");
    wait()?;
    let start = Instant::now();
    let mut acked = 0;
    for _ in 0..messages {
        loop {
            match outbox.say(Speech::Message(payload.to_vec())) {
                Ok(()) => break,
                Err(Unsaid::Busy { .. }) => {
                    wait()?;
                    acked += 1;
                }
                Err(e) => return Err(format!("streaming: {e:?}").into()),
            }
        }
    }
    while acked < messages {
        wait()?;
        acked += 1;
    }
    let wall = start.elapsed();
    outbox.say(Speech::End).map_err(|e| format!("END: {e:?}"))?;
    let ending = runner.join().map_err(|_| "the session thread panicked")?;
    if !matches!(ending, Ending::EndedByMe) {
        return Err(format!("the stream ended: {ending}").into());
    }
    Ok(wall)
}

/// (g), bare: the same frames with `std::net` alone: a writer keeping at most
/// [`DEFAULT_MAX_IN_FLIGHT`] messages unacknowledged, a reader taking the ACKs and answering
/// each echo with its ACK.
fn bare_stream(port: u16, payload: &[u8], messages: usize) -> BenchResult<Duration> {
    let stream = connect(port)?;
    let writer = std::sync::Arc::new(Mutex::new(stream.try_clone()?));
    let (tokens, taken) = crossbeam_channel::unbounded();
    let reading = {
        let writer = std::sync::Arc::clone(&writer);
        thread::spawn(move || -> io::Result<()> {
            let mut reader = BufReader::new(stream);
            let mut frame = Vec::new();
            let mut acked = 0;
            while acked < messages {
                match read_frame(&mut reader, &mut frame)? {
                    Some(MESSAGE_KIND) => writer.lock().write_all(&ACK)?,
                    Some(kind) if kind == ACK[0] => {
                        acked += 1;
                        let _ = tokens.send(());
                    }
                    _ => return Err(invalid("expected an ACK or an echo")),
                }
            }
            Ok(())
        })
    };
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    push_frame(&mut frame, MESSAGE_KIND, payload)?;
    let start = Instant::now();
    let mut in_flight = 0;
    for _ in 0..messages {
        if in_flight == DEFAULT_MAX_IN_FLIGHT {
            taken.recv_timeout(IO_LIMIT).map_err(|_| "no ACK in time")?;
            in_flight -= 1;
        }
        writer.lock().write_all(&frame)?;
        in_flight += 1;
    }
    reading.join().map_err(|_| "the bare reader panicked")??;
    Ok(start.elapsed())
}

/// Tells the orchestrator what comes next, for its message should it stall there.
fn note(out: &mut impl Write, what: &str) -> io::Result<()> {
    writeln!(out, "# {what}")?;
    out.flush()
}

/// `len` bytes of printable text, as a chat message would be.
fn text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// No Nagle delay, and every read and write bounded by [`IO_LIMIT`].
fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_LIMIT))?;
    stream.set_write_timeout(Some(IO_LIMIT))
}

/// Connects to 127.0.0.1:`port`, bounded by [`IO_LIMIT`].
fn connect(port: u16) -> io::Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), IO_LIMIT)?;
    tune(&stream)?;
    Ok(stream)
}

/// The samples of one block.
#[derive(Debug)]
struct Block {
    target: Target,
    size: usize,
    rtts: Vec<Duration>,
    turns: Vec<Duration>,
}

impl Block {
    /// One line per measure: `rtt|turn chat|pool SIZE NS,NS,...`.
    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        for (measure, samples) in [(Measure::Rtt, &self.rtts), (Measure::Turn, &self.turns)] {
            let ns: Vec<String> = samples.iter().map(|d| d.as_nanos().to_string()).collect();
            writeln!(
                out,
                "{} {} {} {}",
                measure.name(),
                self.target.name(),
                self.size,
                ns.join(",")
            )?;
        }
        Ok(())
    }
}

/// One chat session of [`BLOCK`] turns.
fn chat_block(port: u16, payload: &[u8]) -> BenchResult<Block> {
    let run = chat_session(port, payload, BLOCK)?;
    Ok(Block {
        target: Target::Chat,
        size: payload.len(),
        rtts: run.rtts,
        turns: run.turns,
    })
}

/// One bare connection of [`BLOCK`] turns.
fn bare_block(port: u16, payload: &[u8]) -> BenchResult<Block> {
    let mut client = BareClient::connect(port)?;
    let mut block = Block {
        target: Target::Pool,
        size: payload.len(),
        rtts: Vec::with_capacity(BLOCK),
        turns: Vec::with_capacity(BLOCK),
    };
    for _ in 0..BLOCK {
        let (rtt, turn) = client.turn(payload)?;
        block.rtts.push(rtt);
        block.turns.push(turn);
    }
    Ok(block)
}

/// What one chat session measured.
#[derive(Debug)]
struct ChatRun {
    /// `Event::Acked` round-trip times.
    rtts: Vec<Duration>,
    /// From handing out a message to `Event::Received` of its echo.
    turns: Vec<Duration>,
}

/// Connects through the library's client session, shakes hands (waiting in line if need be),
/// takes `messages` turns, ends the chat.
fn chat_session(port: u16, payload: &[u8], messages: usize) -> BenchResult<ChatRun> {
    let stream = connect(port)?;
    let stopper = Stopper::new(&stream)?;
    let mut session = Session::new(stream, DEFAULT_MAX_MESSAGE, CLIENT_TIMEOUTS, stopper)?;
    session
        .client_handshake("bench", false, &mut |_position| {})
        .map_err(|e| format!("chat handshake failed: {e}"))?;
    let mut run = ChatRun {
        rtts: Vec::with_capacity(messages),
        turns: Vec::with_capacity(messages),
    };
    let outbox = session.outbox();
    let mut handed_out = None;
    let mut left = messages;
    let ending = session.run(Turn::Mine, None, &mut |event| match event {
        // The front-end's part: on each turn, the next copy (its hand-out time noted), then END.
        Event::MyTurn => {
            let speech = if left == 0 {
                Speech::End
            } else {
                left -= 1;
                handed_out = Some(Instant::now());
                Speech::Message(payload.to_vec())
            };
            if let Err(unsaid) = outbox.say(speech) {
                eprintln!("the bench's message was not sent: {unsaid:?}");
            }
        }
        Event::Acked { rtt, .. } => run.rtts.push(rtt),
        Event::Received(_) => {
            if let Some(at) = handed_out.take() {
                run.turns.push(at.elapsed());
            }
        }
        _ => {}
    });
    match ending {
        Ending::EndedByMe if run.turns.len() == messages && run.rtts.len() == messages => Ok(run),
        Ending::EndedByMe => Err(format!(
            "the chat session took {} turns and {} ACKs of {messages}",
            run.turns.len(),
            run.rtts.len()
        )
        .into()),
        ending => Err(format!("chat session ended early: {ending}").into()),
    }
}

/// A bare client connection.
struct BareClient {
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    echo: Vec<u8>,
}

impl BareClient {
    /// Connects to the bare server on `port`.
    fn connect(port: u16) -> io::Result<BareClient> {
        Ok(BareClient {
            reader: BufReader::new(connect(port)?),
            out: Vec::with_capacity(HEADER + LARGE),
            echo: Vec::new(),
        })
    }

    /// One turn: the message, its ACK and the echo, the echo's ACK. Returns the RTT (from just
    /// before the write, as the chat's clock, to the ACK's 5 bytes read) and the whole turn.
    fn turn(&mut self, payload: &[u8]) -> io::Result<(Duration, Duration)> {
        self.out.clear();
        push_frame(&mut self.out, MESSAGE_KIND, payload)?;
        let start = Instant::now();
        self.reader.get_ref().write_all(&self.out)?;
        read_ack(&mut self.reader)?;
        let rtt = start.elapsed();
        match read_frame(&mut self.reader, &mut self.echo)? {
            Some(MESSAGE_KIND) if self.echo == payload => {}
            Some(_) => return Err(invalid("expected the echo")),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
        self.reader.get_ref().write_all(&ACK)?;
        Ok((rtt, start.elapsed()))
    }
}

/// Connects and takes `turns` turns.
fn bare_session(port: u16, payload: &[u8], turns: usize) -> BenchResult<()> {
    let mut client = BareClient::connect(port)?;
    for _ in 0..turns {
        client.turn(payload)?;
    }
    Ok(())
}

/// (c): starts `clients` sessions of `plan.per_client` turns at once against one server, and
/// times each until it is done.
fn run_load(
    target: Target,
    port: u16,
    clients: usize,
    plan: &DriverPlan,
    payload: &[u8],
) -> BenchResult<LoadRun> {
    let turns = plan.per_client;
    let (ready, readied) = crossbeam_channel::bounded::<()>(clients);
    // Dropping `start` releases every client at once; `go` tells them it is a start, not an
    // abandoned run.
    let (start, started) = crossbeam_channel::bounded::<()>(0);
    let go = AtomicBool::new(false);
    thread::scope(|scope| -> BenchResult<LoadRun> {
        // Owned here, so that an early return releases (and so ends) the clients already spawned
        // before the scope waits for them.
        let start = start;
        let mut threads = Vec::with_capacity(clients);
        for i in 0..clients {
            let (ready, started, go) = (ready.clone(), started.clone(), &go);
            let client = move || -> BenchResult<Instant> {
                ready.send(())?;
                // Only a disconnection releases the clients; a timeout means a stuck start.
                if started.recv_timeout(IO_LIMIT) != Err(RecvTimeoutError::Disconnected)
                    || !go.load(Ordering::SeqCst)
                {
                    return Err("the run was abandoned".into());
                }
                match target {
                    Target::Chat => drop(chat_session(port, payload, turns)?),
                    Target::Pool | Target::PerConnection => bare_session(port, payload, turns)?,
                }
                Ok(Instant::now())
            };
            let spawned = thread::Builder::new()
                .name(format!("client-{i}"))
                .spawn_scoped(scope, client);
            threads.push(spawned?);
        }
        for _ in 0..clients {
            readied
                .recv_timeout(IO_LIMIT)
                .map_err(|_| "the client threads did not get ready")?;
        }
        go.store(true, Ordering::SeqCst);
        // The clock starts before the release: a client may be done before this thread is
        // scheduled again.
        let begun = Instant::now();
        drop(start);
        let mut done_ns = Vec::with_capacity(clients);
        for thread in threads {
            let finished = thread.join().map_err(|_| "a client thread panicked")??;
            done_ns.push(finished.saturating_duration_since(begun).as_nanos() as u64);
        }
        done_ns.sort_unstable();
        Ok(LoadRun {
            turns: (clients * turns) as u64,
            wall_ns: done_ns.last().copied().unwrap_or(0),
            done_ns,
        })
    })
}
