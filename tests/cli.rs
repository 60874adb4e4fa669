//! The command line as an operator meets it: help texts, one server per data directory, a busy
//! port, `admin` run from the wrong directory, and log colour.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn faultline() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
    // Nothing from the environment the tests happen to run in.
    for var in [
        "FAULTLINE_LISTEN",
        "FAULTLINE_DATA_DIR",
        "FAULTLINE_ADMIN_TOKEN",
        "FAULTLINE_LOG__COLOR",
        "NO_COLOR",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_BACKTRACE", "0");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("faultline runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server started as an operator starts it; killed when dropped.
struct Running {
    child: Child,
    /// Everything it logged up to "listening".
    log: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on a free port in `dir` with `env`, and waits until it listens.
fn serve(dir: &Path, env: &[(&str, &str)]) -> Running {
    let mut cmd = faultline();
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else {
            break;
        };
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on") {
            // Keep reading in the background so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Running { child, log };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("faultline did not start: {log}");
}

#[test]
fn help_names_the_environment_and_keeps_serve_flags_to_serve() {
    let serve = text(&run(faultline().args(["serve", "--help"])).stdout);
    for var in [
        "FAULTLINE_LISTEN",
        "FAULTLINE_DATA_DIR",
        "FAULTLINE_EXTERNAL_URL",
        "FAULTLINE_ADMIN_TOKEN",
        "FAULTLINE_LOG__COLOR",
    ] {
        assert!(serve.contains(var), "serve --help names {var}: {serve}");
    }
    assert!(serve.contains("--listen") && serve.contains("--external-url"));
    let admin = text(&run(faultline().args(["admin", "--help"])).stdout);
    assert!(admin.contains("create-user"), "{admin}");
    assert!(
        !admin.contains("--listen") && !admin.contains("--external-url"),
        "admin --help offers only what admin takes: {admin}"
    );
}

#[test]
fn a_second_server_on_one_data_directory_stops_at_once_and_names_the_first() {
    let dir = tempfile::tempdir().expect("dir");
    let first = serve(dir.path(), &[]);
    let started = Instant::now();
    let second = run(faultline().arg("--data-dir").arg(dir.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert!(!second.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = text(&second.stderr);
    assert!(
        err.contains(&dir.path().display().to_string()),
        "names the directory: {err}"
    );
    assert!(
        err.contains(&format!("pid {}", first.child.id())),
        "names the holder: {err}"
    );

    // Offline admin commands still work beside the running server.
    let out = run(faultline().arg("--data-dir").arg(dir.path()).args([
        "admin",
        "create-user",
        "--username",
        "carol",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"carol\""),
        "{}",
        text(&out.stdout)
    );
    drop(first);

    // Once the first is gone, the directory is free again.
    let again = serve(dir.path(), &[]);
    drop(again);
}

#[test]
fn a_busy_port_leaves_no_data_directory_and_no_token_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("addr").port();
    let parent = tempfile::tempdir().expect("dir");
    let dir = parent.path().join("data");
    let out = run(faultline().arg("--data-dir").arg(&dir).args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("binding 127.0.0.1:{port}")),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).is_empty(), "no token printed");
    assert!(!dir.exists(), "no data directory made");
}

#[test]
fn admin_in_a_directory_without_a_database_refuses_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let out = run(faultline()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["admin", "list-tokens"]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no database at"), "{err}");
    assert!(err.contains("--create-database"), "{err}");
    assert!(text(&out.stdout).is_empty(), "no `[]` as if all were well");
    assert!(!dir.path().join("faultline.db").exists());

    let out = run(faultline().arg("--data-dir").arg(dir.path()).args([
        "admin",
        "--create-database",
        "list-tokens",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");
}

#[test]
fn logs_carry_colour_only_when_asked_or_on_a_terminal() {
    let dir = tempfile::tempdir().expect("dir");
    let piped = serve(dir.path(), &[]);
    assert!(
        !piped.log.contains('\u{1b}'),
        "a pipe gets plain text: {:?}",
        piped.log
    );
    drop(piped);
    let forced = serve(dir.path(), &[("FAULTLINE_LOG__COLOR", "always")]);
    assert!(forced.log.contains("\u{1b}["), "{:?}", forced.log);
}
