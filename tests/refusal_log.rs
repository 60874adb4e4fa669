//! A refused ingestion request is visible in the log at `info`, so an operator can see an SDK
//! sending with a mistyped key, yet a flood of refusals stays a few lines a second and the key
//! shows only by its first characters.

mod common;

use std::time::Instant;

use common::{spawn_app, LogCapture};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_at_info_briefly_and_without_the_key() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let app = spawn_app().await;
    let (project, _key, _) = app.project_with_key("mistyped").await;
    let mistyped = "glet_0123456789abcdef0123456789abcdef";
    let url = app.url(&format!(
        "/api/{project}/envelope/?sentry_key={mistyped}&sentry_version=7"
    ));
    let started = Instant::now();
    for _ in 0..60 {
        let r = app
            .client
            .post(&url)
            .body("{}\n{\"type\":\"event\"}\n{\"message\":\"hi\"}\n")
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status(), 401);
    }
    let seconds = started.elapsed().as_secs() + 1;

    let logs = capture.text();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("ingestion refused") && l.contains("unknown_key"))
        .collect();
    assert!(!lines.is_empty(), "the refusal is logged: {logs}");
    assert!(lines.iter().all(|l| l.contains(" INFO ")), "{lines:?}");
    assert!(
        lines[0].contains("key=\"glet_0123…\""),
        "the key's first characters name it: {}",
        lines[0]
    );
    assert!(
        !logs.contains(&mistyped[9..]),
        "the rest of the key stays out"
    );
    // At most five lines a second, over the seconds the flood took (a boundary can split one).
    assert!(
        lines.len() as u64 <= 5 * (seconds + 1),
        "{} lines in {seconds} s",
        lines.len()
    );
    assert!(lines.len() < 60, "not one line per refusal");
}
