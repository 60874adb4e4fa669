//! The processes under test: the release `faultline` binary and the baseline (this bench binary
//! re-run with `--baseline-server`), each started on `127.0.0.1:0`, plus what `/proc` tells about
//! them (peak and current RSS, CPU time per thread).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A child server; killed when dropped, so a panicking bench leaves nothing running.
pub struct ServerProc {
    pub name: &'static str,
    pub child: Child,
    pub addr: SocketAddr,
    /// From spawn to the "listening" line.
    pub startup: Duration,
}

impl ServerProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to 30 s for a clean exit (the writer drains); idempotent.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            // Already exited (and reaped): its pid may belong to someone else by now.
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{}: did not stop within 30 s, killing it", self.name);
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `target/release/faultline`, next to the directory holding this bench executable
/// (`target/release/deps/ingest_load-<hash>`). It is rebuilt first unless
/// `FAULTLINE_BENCH_NO_BUILD` is set, so the numbers are always those of the current source.
/// `FAULTLINE_BENCH_SERVER_BIN` names another binary instead (nothing is built), for comparing two
/// builds of the server in back-to-back runs.
pub fn faultline_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FAULTLINE_BENCH_SERVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let release_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench executable has no grandparent directory")?
        .to_path_buf();
    let bin = release_dir.join("faultline");
    if std::env::var_os("FAULTLINE_BENCH_NO_BUILD").is_none() {
        eprintln!("building the release server (cargo build --release --bin faultline)...");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--bin", "faultline"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release failed");
        }
    }
    if !bin.exists() {
        bail!(
            "{} does not exist; run cargo build --release",
            bin.display()
        );
    }
    Ok(bin)
}

/// Reads `child`'s stream line by line on a thread; the first line containing `marker` is sent
/// back, then every line is drained (so the child never blocks on a full pipe), and lines that
/// look like warnings or errors are echoed with the server's name.
fn watch_lines(
    name: &'static str,
    stream: impl std::io::Read + Send + 'static,
    marker: &'static str,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut echoed = 0;
        let mut tx = Some(tx);
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.is_some() && line.contains(marker) {
                let _ = tx.take().expect("checked").send(line);
                continue;
            }
            if (line.contains("WARN") || line.contains("ERROR") || line.contains("panicked"))
                && echoed < 20
            {
                echoed += 1;
                eprintln!("  [{name}] {line}");
            }
        }
    });
    rx
}

/// The address after `marker` in a log line, ignoring ANSI colour codes around it.
fn addr_after(line: &str, marker: &str) -> anyhow::Result<SocketAddr> {
    let rest = &line[line.find(marker).context("marker")? + marker.len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
        .collect();
    addr.parse()
        .with_context(|| format!("no address in log line {line:?}"))
}

fn wait_listening(
    name: &'static str,
    mut child: Child,
    rx: mpsc::Receiver<String>,
    marker: &str,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<ServerProc> {
    match rx.recv_timeout(timeout) {
        Ok(line) => {
            let startup = started.elapsed();
            let addr = addr_after(&line, marker)?;
            Ok(ServerProc {
                name,
                child,
                addr,
                startup,
            })
        }
        Err(_) => {
            let _ = child.kill();
            bail!("{name} did not report listening within {timeout:?}")
        }
    }
}

/// Starts `faultline serve` on a free loopback port with `data_dir`; returns once it listens.
pub fn spawn_faultline(
    bin: &Path,
    data_dir: &Path,
    admin_token: &str,
) -> anyhow::Result<ServerProc> {
    spawn_faultline_with(bin, data_dir, admin_token, &[])
}

/// [`spawn_faultline`] with more environment, e.g. `FAULTLINE_DATABASE__URL` for a node on
/// PostgreSQL.
pub fn spawn_faultline_with(
    bin: &Path,
    data_dir: &Path,
    admin_token: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<ServerProc> {
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("FAULTLINE_LISTEN", "127.0.0.1:0")
        .env("FAULTLINE_DATA_DIR", data_dir)
        .env("FAULTLINE_ADMIN_TOKEN", admin_token)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The bench's own settings are not the server's (figment would read them as config keys);
    // every other FAULTLINE_* variable passes through, e.g. FAULTLINE_INGEST__BATCH_INTERVAL_MS.
    for (k, _) in std::env::vars() {
        if k.starts_with("FAULTLINE_BENCH") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting faultline")?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let marker = "faultline listening on ";
    let rx = watch_lines("faultline", stderr, marker);
    // Start-up with a million keys or millions of events may legitimately take a while.
    wait_listening(
        "faultline",
        child,
        rx,
        marker,
        started,
        Duration::from_secs(600),
    )
}

/// Starts this executable again as the baseline server (`parse`: the parse-only variant, see
/// [`super::baseline::Work`]). Its stdin is a pipe from us: when this process exits for any
/// reason, the baseline sees end-of-file and exits too.
pub fn spawn_baseline(parse: bool) -> anyhow::Result<ServerProc> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let started = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.arg("--baseline-server");
    if parse {
        cmd.arg("--parse");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the baseline server")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let marker = "baseline listening on ";
    let rx = watch_lines("baseline", stdout, marker);
    wait_listening(
        "baseline",
        child,
        rx,
        marker,
        started,
        Duration::from_secs(30),
    )
}

/// Memory figures from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn mem(pid: u32) -> Mem {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// Resets the peak-RSS counter (`VmHWM`) of `pid` to its current RSS, so that each phase reports
/// its own peak (Linux `clear_refs` value 5). Returns whether the kernel allowed it.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time (user + system) of each thread of `pid`, by thread name, in clock ticks.
pub fn thread_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The name is in parentheses and may contain spaces; the fields after it are fixed.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks = fields
            .get(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        // Group tokio's numbered workers and blocking threads under one name.
        let name = if name.starts_with("tokio-r") {
            "tokio workers".to_string()
        } else {
            name
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += ticks,
            None => out.push((name, ticks)),
        }
    }
    out
}

/// Time each thread of `pid` spent runnable but waiting for a CPU (the run-queue delay, second
/// field of `/proc/<pid>/task/<tid>/schedstat`), by thread name, in nanoseconds. On a machine
/// shared with other work this says how much of a phase the server was starved rather than busy.
pub fn thread_runq_wait(pid: u32) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let (Ok(name), Ok(sched)) = (
            std::fs::read_to_string(entry.path().join("comm")),
            std::fs::read_to_string(entry.path().join("schedstat")),
        ) else {
            continue;
        };
        let wait = sched
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let name = name.trim();
        let name = if name.starts_with("tokio-r") {
            "tokio workers".to_string()
        } else {
            name.to_string()
        };
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(e) => e.1 += wait,
            None => out.push((name, wait)),
        }
    }
    out
}

/// Clock ticks per second for `/proc` CPU times (USER_HZ; 100 on every Linux we run on).
pub fn ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Per-thread CPU seconds used between two [`thread_cpu`] samples (threads that appeared in
/// between count from zero), sorted by use.
pub fn cpu_delta(before: &[(String, u64)], after: &[(String, u64)], hz: f64) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .map(|(name, t)| {
            let b = before
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .unwrap_or(0);
            (name.clone(), t.saturating_sub(b) as f64 / hz)
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// CPU time (user + system) of the whole process `pid`, exited threads included, in seconds.
pub fn process_cpu(pid: u32, hz: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (get(11) + get(12)) as f64 / hz
}

/// The fields of `/proc/<pid>/stat` after the command name (the first is the state), empty when
/// the process is gone.
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return Vec::new();
    };
    // The state is a letter; keep the positions by reading it as 0.
    stat[close + 2..]
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect()
}

/// CPU time of the process tree a server forks, `pid` at its root and its direct children (a
/// PostgreSQL postmaster and its backends, WAL writer, checkpointer, autovacuum...), in seconds:
/// what each live process used, plus what the children that have exited and been waited for
/// used (the root's `cutime` and `cstime`). Differences between two samples are exact across
/// children that exit in between: a child's time moves from its own line to its parent's.
pub fn tree_cpu(pid: u32, hz: f64) -> f64 {
    // After the name: ppid is field 1, utime 11, stime 12, cutime 13, cstime 14.
    let own = stat_fields(pid);
    let get = |f: &[u64], i: usize| f.get(i).copied().unwrap_or(0);
    let mut ticks = get(&own, 11) + get(&own, 12) + get(&own, 13) + get(&own, 14);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let f = stat_fields(child);
            if get(&f, 1) == u64::from(pid) {
                ticks += get(&f, 11) + get(&f, 12) + get(&f, 13) + get(&f, 14);
            }
        }
    }
    ticks as f64 / hz
}
