//! The `ping` subcommand against the real server binary over 127.0.0.1: PING probes to an
//! operator's server, MESSAGE probes to an echo server, waiting in line, Ctrl-C, a server that
//! leaves, and the command line's refusals.

mod common;

use common::{Proc, TIMEOUT, run, start_client, start_server};

/// Runs `ping 127.0.0.1 PORT ARGS...` to its end.
fn ping(port: u16, args: &[&str]) -> common::Finished {
    with_ping_args(port, args, |all| run(all, b""))
}

/// Starts `ping 127.0.0.1 PORT ARGS...`.
fn spawn_ping(port: u16, args: &[&str]) -> Proc {
    with_ping_args(port, args, |all| Proc::spawn("ping", all))
}

/// Calls `f` with the command line `ping 127.0.0.1 PORT ARGS...`.
fn with_ping_args<T>(port: u16, args: &[&str], f: impl FnOnce(&[&str]) -> T) -> T {
    let port = port.to_string();
    let mut all = vec!["ping", "127.0.0.1", &port];
    all.extend_from_slice(args);
    f(&all)
}

/// The `seq=N time=S.SSSSSSs` lines of `stdout`, as (N, the time's text).
fn probe_lines(stdout: &str) -> Vec<(u64, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (seq, time) = line.strip_prefix("seq=")?.split_once(" time=")?;
            Some((seq.parse().ok()?, time.to_string()))
        })
        .collect()
}

/// True for `S.SSSSSSs` that is not zero.
fn is_rtt(text: &str) -> bool {
    let Some((whole, fraction)) = text.strip_suffix('s').and_then(|t| t.split_once('.')) else {
        return false;
    };
    whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() == 6
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && text != "0.000000s"
}

/// Checks the two summary lines for `answered` probes all answered.
fn assert_clean_summary(stdout: &str, answered: u64) {
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.ends_with(" lost"))
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert_eq!(
        lines[at],
        format!("{answered} sent, {answered} answered, 0 lost")
    );
    let figures = lines[at + 1]
        .strip_prefix("rtt min/p50/avg/p99/max = ")
        .and_then(|rest| rest.strip_suffix(" s"))
        .unwrap_or_else(|| panic!("bad rtt line: {:?}", lines[at + 1]));
    let figures: Vec<f64> = figures
        .split('/')
        .map(|f| {
            assert!(is_rtt(&format!("{f}s")), "bad figure {f:?}");
            f.parse().unwrap()
        })
        .collect();
    assert_eq!(figures.len(), 5, "{stdout}");
    let [min, p50, avg, p99, max] = [0, 1, 2, 3, 4].map(|i| figures[i]);
    assert!(min <= p50 && p50 <= p99 && p99 <= max, "{stdout}");
    assert!(min <= avg && avg <= max, "{stdout}");
}

#[test]
fn ping_times_each_probe_against_an_operator_server_that_never_types() {
    let (mut server, port) = start_server(&["-n", "hub"]);
    let ping = ping(port, &["-c", "5", "-i", "0.01"]);
    assert_eq!(ping.code(), 0, "{ping:#?}");
    assert!(
        ping.stdout
            .starts_with(&format!("PING 127.0.0.1:{port} (#1 on hub): PING frames\n")),
        "{ping:#?}"
    );
    let probes = probe_lines(&ping.stdout);
    assert_eq!(
        probes.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(probes.iter().all(|(_, t)| is_rtt(t)), "{probes:?}");
    assert_clean_summary(&ping.stdout, 5);
    // The operator was never asked anything, and saw the prober come and go.
    server.expect_line("[#1 127.0.0.1:");
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1] The other side left the chat."
    );
    assert!(!server.dump().contains("Send to"), "{}", server.dump());
}

#[test]
fn message_probes_are_echoed_and_quiet_prints_only_the_summary() {
    let (mut server, port) = start_server(&["--echo"]);
    let ping = ping(
        port,
        &["--messages", "-s", "300", "-c", "3", "-i", "0", "-q"],
    );
    assert_eq!(ping.code(), 0, "{ping:#?}");
    assert_eq!(
        ping.stdout.lines().collect::<Vec<_>>()[..2],
        ["", &format!("--- 127.0.0.1:{port} ping statistics ---")],
        "{ping:#?}"
    );
    assert_eq!(ping.stdout.lines().count(), 4, "{ping:#?}");
    assert_clean_summary(&ping.stdout, 3);
    for _ in 0..3 {
        let received = server.expect_line("Received: ");
        assert_eq!(received.len(), "[#1] Received: ".len() + 300, "{received}");
    }
}

#[test]
fn message_probes_to_a_server_that_does_not_echo_are_lost_and_exit_1() {
    let (_server, port) = start_server(&[]);
    let ping = ping(port, &["--messages", "-c", "3", "-W", "0.3"]);
    assert_eq!(ping.code(), 1, "{ping:#?}");
    assert!(
        ping.stdout.contains("1 sent, 0 answered, 1 lost"),
        "{ping:#?}"
    );
    assert!(ping.stderr.contains("--echo"), "{ping:#?}");
}

#[test]
fn ping_waits_in_line_while_every_worker_is_busy() {
    let (mut server, port) = start_server(&["-w", "1", "--echo"]);
    let mut live = start_client("live", port);
    live.expect_line("Connected!");
    server.expect_line("[#1 127.0.0.1:");
    let mut ping = spawn_ping(port, &["-c", "2", "-i", "0"]);
    assert_eq!(
        ping.expect_line("waiting"),
        "All workers are busy: waiting in line (position 1)."
    );
    live.send_line("end");
    live.expect_exit(0);
    let ping = ping.expect_exit(0);
    assert_eq!(probe_lines(&ping.stdout).len(), 2, "{ping:#?}");
    assert_clean_summary(&ping.stdout, 2);
}

#[test]
fn ctrl_c_ends_an_endless_run_with_its_summary_and_exit_0() {
    let (mut server, port) = start_server(&[]);
    let mut ping = spawn_ping(port, &["-c", "0", "-i", "0.02"]);
    ping.expect_line("seq=3 ");
    ping.interrupt();
    let ping = ping.expect_exit(0);
    let answered = probe_lines(&ping.stdout).len() as u64;
    assert!(answered >= 3, "{ping:#?}");
    assert_clean_summary(&ping.stdout, answered);
    // The server was told, as by a client's Ctrl-C.
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1] The other side left the chat."
    );
}

#[test]
fn a_server_that_shuts_down_mid_run_ends_it_and_the_probes_answered_stand() {
    let (mut server, port) = start_server(&[]);
    // Back to back, so that the shutdown most likely cuts a probe short: it is not counted.
    let mut ping = spawn_ping(port, &["-c", "0", "-i", "0"]);
    ping.expect_line("seq=20 ");
    server.interrupt();
    let ping = ping.finish();
    assert_eq!(ping.code(), 0, "{ping:#?}");
    assert!(
        ping.stdout
            .contains("The server is shutting down. The chat has ended."),
        "{ping:#?}"
    );
    let answered = probe_lines(&ping.stdout).len() as u64;
    assert_clean_summary(&ping.stdout, answered);
    assert!(server.wait_exit(TIMEOUT).success(), "{}", server.dump());
}

#[test]
fn message_probes_over_the_servers_limit_are_refused_before_any_is_sent() {
    let (mut server, port) = start_server(&["--echo", "--max-message", "100"]);
    let ping = ping(port, &["--messages", "-s", "200"]);
    assert_eq!(ping.code(), 1, "{ping:#?}");
    assert!(
        ping.stderr
            .contains("probes of 200 bytes are over the server's limit of 100 bytes"),
        "{ping:#?}"
    );
    assert!(!ping.stdout.contains("seq="), "{ping:#?}");
    // The prober said goodbye properly.
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1] The other side left the chat."
    );
}

#[test]
fn ping_options_outside_ping_and_nonsense_values_are_usage_errors() {
    for args in [
        &["ping", "127.0.0.1", "1", "-s", "10"][..],
        &["ping", "127.0.0.1", "1", "-i", "-1"],
        &["ping", "127.0.0.1", "1", "-i", "soon"],
        &["ping", "127.0.0.1", "1", "-c", "-3"],
        &["ping", "127.0.0.1", "1", "-W", "0"],
        &["ping", "127.0.0.1", "1", "--echo"],
        &["ping", "127.0.0.1", "1", "--heartbeat", "5"],
        &["client", "127.0.0.1", "1", "-c", "3"],
        &["server", "127.0.0.1", "0", "--messages"],
    ] {
        let done = run(args, b"");
        assert_eq!(done.code(), 2, "{args:?}: {done:#?}");
        assert!(done.stderr.starts_with("error: "), "{args:?}: {done:#?}");
        assert!(done.stderr.contains("Usage:"), "{args:?}: {done:#?}");
    }
}

#[test]
fn ping_without_a_server_says_offline_and_exits_1() {
    let port = common::free_port();
    let ping = run(&["ping", "127.0.0.1", &port.to_string()], b"");
    assert_eq!(ping.code(), 1, "{ping:#?}");
    assert!(ping.stderr.contains("offline"), "{ping:#?}");
}
