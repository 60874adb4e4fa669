//! The real binary as a child process, for the tests that kill it or run several: start it on
//! a free port with JSON logs, set a project up over the API, and load it with envelopes from
//! concurrent workers, keeping the ids it acknowledged.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The administrator token every gateway started here accepts.
pub const ADMIN: &str = "glpat-process-test-admin-token";

pub struct Gateway {
    pub child: Child,
    pub base: String,
}

/// A failing assertion must not leave the server running after the test.
impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `faultline serve` on a free port with `env` added and returns once it listens.
    pub fn start(dir: &std::path::Path, env: &[(&str, String)]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_faultline"));
        cmd.arg("serve")
            .env("FAULTLINE_LISTEN", "127.0.0.1:0")
            .env("FAULTLINE_DATA_DIR", dir)
            .env("FAULTLINE_ADMIN_TOKEN", ADMIN)
            .env("FAULTLINE_LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("binary starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(
                Instant::now() < deadline,
                "server did not report its address"
            );
            let line = lines
                .next()
                .expect("server log line (did it exit?)")
                .expect("utf-8 log");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(a) = v["fields"]["addr"].as_str() {
                    break a.to_owned();
                }
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Gateway {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// An admin API call that must succeed; returns its JSON body (null for an empty one).
pub async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut req = client.request(method, url).header("PRIVATE-TOKEN", ADMIN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("api call");
    assert!(
        resp.status().is_success(),
        "api call failed: {}",
        resp.status()
    );
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Creates a project with tracking on; returns (project id, public key).
pub async fn setup(client: &reqwest::Client, base: &str, name: &str) -> (i64, String) {
    let p = api(
        client,
        reqwest::Method::POST,
        format!("{base}/api/v4/projects"),
        Some(json!({"name": name, "namespace_path": "ops"})),
    )
    .await;
    let id = p["id"].as_i64().expect("id");
    api(
        client,
        reqwest::Method::PUT,
        format!("{base}/api/v4/projects/{id}/error_tracking/settings?active=true&integrated=true"),
        None,
    )
    .await;
    let keys = api(
        client,
        reqwest::Method::GET,
        format!("{base}/api/v4/projects/{id}/error_tracking/client_keys"),
        None,
    )
    .await;
    (id, keys[0]["public_key"].as_str().expect("key").to_owned())
}

/// An envelope with one error event; `n` picks one of seven groups (by the in-app function,
/// which grouping reads; line numbers it ignores).
pub fn envelope(event_id: &str, n: usize) -> Vec<u8> {
    let event = json!({
        "event_id": event_id,
        "platform": "python",
        "level": "error",
        "exception": {"values": [{"type": "CrashTest", "value": format!("failure {n}"),
            "stacktrace": {"frames": [{"function": format!("work{}", n % 7), "module": "app.jobs", "in_app": true, "lineno": n}]}}]}
    })
    .to_string();
    format!(
        "{{\"event_id\":\"{event_id}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n{event}\n",
        event.len()
    )
    .into_bytes()
}

/// Sends one envelope; the status, or `None` when the server could not be reached.
pub async fn send(
    client: &reqwest::Client,
    base: &str,
    project: i64,
    key: &str,
    event_id: &str,
    n: usize,
) -> Option<reqwest::StatusCode> {
    client
        .post(format!("{base}/api/{project}/envelope/"))
        .header(
            "X-Sentry-Auth",
            format!("Sentry sentry_key={key}, sentry_version=7"),
        )
        .body(envelope(event_id, n))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

/// What a load saw: the ids answered 200 with their id, and every other status.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub acked: Vec<String>,
    pub refused: Vec<u16>,
}

/// Sends events from `workers` concurrent loops until `stop` is set. Ids are
/// `<tag><worker><n>`, so loads on several gateways never share one. With `tolerate` false
/// any status but 200 fails the test; with it true such answers are only recorded (an outage
/// test expects 503s). A worker whose server went away stops.
#[allow(clippy::too_many_arguments)]
pub async fn load(
    base: String,
    project: i64,
    key: String,
    tag: u8,
    workers: usize,
    tolerate: bool,
    stop: Arc<AtomicBool>,
    result: Arc<Mutex<LoadResult>>,
) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (base, key, stop, result) = (base.clone(), key.clone(), stop.clone(), result.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("{tag:02x}{w:06x}{n:024x}");
                let resp = client
                    .post(format!("{base}/api/{project}/envelope/"))
                    .header(
                        "X-Sentry-Auth",
                        format!("Sentry sentry_key={key}, sentry_version=7"),
                    )
                    .body(envelope(&id, n))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        // Only a complete 200 answer counts as an acknowledgement.
                        if let Ok(body) = r.json::<Value>().await {
                            assert_eq!(body["id"], id.as_str());
                            result.lock().expect("lock").acked.push(id);
                        }
                    }
                    Ok(r) if tolerate => {
                        result
                            .lock()
                            .expect("lock")
                            .refused
                            .push(r.status().as_u16());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break,
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
}

/// Waits until the load has at least `n` acknowledgements.
pub async fn wait_for_acks(result: &Mutex<LoadResult>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while result.lock().expect("lock").acked.len() < n {
        assert!(Instant::now() < deadline, "load made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
