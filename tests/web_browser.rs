//! The web UI in a real browser: headless Chromium driven over WebDriver (ChromeDriver), through
//! a user's whole journey: sign in, see the error a real SDK (the `sentry` crate) sent, search
//! for it, open it, read its stack trace down to the failing line, resolve it, watch it leave
//! the unresolved tab, see a new event reopen it, create a key, copy its DSN, make an alert
//! rule with channels and send them a test notification, sign out.
//!
//! It needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test says so and passes, except under `CI=true`, where it fails. Screenshots of the list, the
//! detail, the settings page and its alert rules go to `target/screenshots/`, or to `docs/screenshots/` with
//! `FAULTLINE_UPDATE_SCREENSHOTS=1` (the README shows those).

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{sdk, spawn_app_with, TestApp};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// ChromeDriver on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|p| p.is_file())
}

async fn start_driver(program: PathBuf) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(program)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/status", driver.url)).await {
            if r.status().is_success() {
                return driver;
            }
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    args.push("--lang=en-US".into());
    let mut options = json!({ "args": args });
    if let Some(chromium) = find_program("chromium") {
        options["binary"] = json!(chromium);
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

fn screenshot_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = if std::env::var("FAULTLINE_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Saves the whole page (up to 2,000 pixels high), not only the first screenful.
async fn save_screenshot(c: &Client, name: &str) {
    let height = c
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .expect("page height")
        .as_u64()
        .unwrap_or(1000)
        .clamp(700, 2000) as u32;
    c.set_window_size(1280, height).await.expect("resize");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Saves one element of the page, e.g. a card.
async fn save_element_screenshot(c: &Client, css: &str, name: &str) {
    let height = c
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .expect("page height")
        .as_u64()
        .unwrap_or(1000)
        .clamp(700, 4000) as u32;
    c.set_window_size(1280, height).await.expect("resize");
    let png = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .screenshot()
        .await
        .expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

/// An error with a stack trace whose failing line and variables the SDK sent, as the `sentry`
/// crate sends every event.
fn send_checkout_error(dsn: String, order: u32) {
    use sentry::protocol::{Event, Exception, Frame, Level, Stacktrace};
    let (hub, client) = sdk(&dsn);
    let mut vars = BTreeMap::new();
    vars.insert("order_id".to_owned(), json!(order));
    vars.insert("cart".to_owned(), json!({"items": 3, "total": "42.00"}));
    let frames = vec![
        Frame {
            function: Some("tokio::runtime::task::poll".into()),
            filename: Some("tokio/src/runtime/task/mod.rs".into()),
            lineno: Some(480),
            in_app: Some(false),
            ..Default::default()
        },
        Frame {
            function: Some("shop::checkout::submit".into()),
            filename: Some("src/checkout.rs".into()),
            lineno: Some(57),
            in_app: Some(true),
            pre_context: vec![
                "    let cart = load_cart(order_id)?;".into(),
                "    let total = cart.total();".into(),
            ],
            context_line: Some("    let payment = charge(&cart).expect(\"card declined\");".into()),
            post_context: vec!["    ship(cart, payment)".into(), "}".into()],
            vars,
            ..Default::default()
        },
    ];
    let event = Event {
        level: Level::Error,
        exception: vec![Exception {
            ty: "PaymentError".into(),
            value: Some(format!("card declined for order {order}")),
            stacktrace: Some(Stacktrace {
                frames,
                ..Default::default()
            }),
            ..Default::default()
        }]
        .into(),
        ..Default::default()
    };
    hub.capture_event(event);
    assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
}

#[derive(Debug)]
struct UpstreamTimeout(u32);
impl std::fmt::Display for UpstreamTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inventory service timed out after {} s", self.0)
    }
}
impl std::error::Error for UpstreamTimeout {}

/// Other errors of the project, so the list is not a list of one.
async fn send_other_errors(dsn: &str) {
    let dsn = dsn.to_owned();
    tokio::task::spawn_blocking(move || {
        let (hub, client) = sdk(&dsn);
        for s in [30, 30, 45] {
            hub.capture_error(&UpstreamTimeout(s));
        }
        hub.capture_message("inventory sync is slow", sentry::Level::Warning);
        assert!(client.flush(Some(Duration::from_secs(10))), "SDK flushed");
    })
    .await
    .expect("sdk thread");
}

async fn sdk_send(dsn: &str, order: u32) {
    let dsn = dsn.to_owned();
    tokio::task::spawn_blocking(move || send_checkout_error(dsn, order))
        .await
        .expect("sdk thread");
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The titles of the error list's rows.
async fn titles(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for e in c
        .find_all(Locator::Css("table.errors a.title"))
        .await
        .expect("rows")
    {
        out.push(e.text().await.expect("text"));
    }
    out
}

async fn path_of(c: &Client) -> String {
    let url = c.current_url().await.expect("url");
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

async fn type_into(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn channel_rows(c: &Client) -> usize {
    c.find_all(Locator::Css("table.channels tbody tr"))
        .await
        .expect("rows")
        .len()
}

/// Adds a channel through the rule's form and waits for the page that lists it.
async fn add_channel(c: &Client, kind: &str, target: &str) {
    let before = channel_rows(c).await;
    c.find(Locator::Css(".rule form.add-channel select"))
        .await
        .expect("the channel type")
        .select_by_value(kind)
        .await
        .expect("select the type");
    type_into(c, ".rule form.add-channel input[name=target]", target).await;
    click(c, ".rule form.add-channel button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel_rows(c).await != before + 1 {
        assert!(
            Instant::now() < deadline,
            "the {kind} channel is not listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The channel of the first rule in row `row` (1-based): its "Send test" button.
fn test_button(row: usize) -> String {
    format!("table.channels tbody tr:nth-child({row}) form[action$='/test'] button")
}

/// Alert rules on the settings page: a rule made with the form, a channel of each kind, the
/// webhook's secret shown once, a test that arrives and one that fails, as the page shows them.
async fn alerts_journey(app: &TestApp, c: &Client, pid: i64, recv: &Receiver) {
    let settings = app.url("/errors/shop/-/settings/error_tracking");
    c.goto(&settings).await.expect("goto");
    type_into(c, "#new-rule input[name=name]", "Checkout in production").await;
    type_into(c, "#new-rule input[name=frequency_count]", "100").await;
    type_into(c, "#new-rule input[name=frequency_minutes]", "10").await;
    type_into(c, "#new-rule input[name=quiet_minutes]", "60").await;
    type_into(c, "#new-rule input[name=environments]", "production").await;
    click(c, "#new-rule input[value=fatal]").await;
    click(c, "#new-rule input[value=error]").await;
    click(c, "#new-rule button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css(".rule h3"))
        .await
        .expect("the rule is listed");
    let (s, rules) = app
        .call(
            "GET",
            &format!("/api/v4/projects/{pid}/error_tracking/alert_rules"),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(rules[0]["name"], "Checkout in production");
    assert_eq!(rules[0]["levels"], json!(["fatal", "error"]));

    add_channel(c, "slack", &recv.url("/services/T024/B0XY/slack-secret")).await;
    add_channel(c, "webhook", &recv.url("/hooks/faultline")).await;
    let secret = c
        .find(Locator::Css(".secret-once input"))
        .await
        .expect("the secret, once")
        .prop("value")
        .await
        .expect("value")
        .expect("a value");
    assert!(secret.starts_with("whsec_"), "{secret}");
    add_channel(c, "email", "oncall@example.com, payments@example.com").await;
    assert!(
        c.find(Locator::Css(".secret-once")).await.is_err(),
        "the secret is not shown again"
    );
    let source = c.source().await.expect("source");
    assert!(!source.contains(&secret) && !source.contains("slack-secret"));

    // A test that arrives, then one the receiver refuses: the page shows each outcome.
    click(c, &test_button(1)).await;
    recv.wait_for("/services/T024/B0XY/slack-secret", 1).await;
    recv.fail_next(1000);
    click(c, &test_button(2)).await;
    recv.wait_for("/hooks/faultline", 1).await;
    common::eventually("both outcomes are recorded", || async {
        let (_, rules) = app
            .call(
                "GET",
                &format!("/api/v4/projects/{pid}/error_tracking/alert_rules"),
                Some(&app.admin_token),
                None,
            )
            .await;
        rules[0]["channels"][0]["last_success_at"].is_string()
            && rules[0]["channels"][1]["last_failure"]["status"] == 500
    })
    .await;
    c.goto(&format!("{settings}#alert-rules"))
        .await
        .expect("goto");
    let failure = c
        .wait()
        .for_element(Locator::Css(".badge.failed"))
        .await
        .expect("the failure is shown");
    assert_eq!(failure.text().await.expect("text"), "HTTP 500");
    save_element_screenshot(c, "#alert-rules", "alert-rules").await;
}

async fn journey(app: &TestApp, c: &Client, recv: &Receiver) {
    let (pid, _, dsn) = app.project_with_key("shop").await;
    send_other_errors(&dsn).await;
    sdk_send(&dsn, 1001).await;
    let password = app.server.initial_admin_password.clone().expect("password");

    // Sign in.
    c.goto(&app.url("/")).await.expect("goto");
    assert!(path_of(c).await.starts_with("/users/sign_in"));
    c.find(Locator::Css("input[name=username]"))
        .await
        .expect("username field")
        .send_keys("root")
        .await
        .expect("type");
    c.find(Locator::Css("input[name=password]"))
        .await
        .expect("password field")
        .send_keys(&password)
        .await
        .expect("type");
    click(c, "form.stack button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("table.projects"))
        .await
        .expect("the projects page");

    // The project, and the error the SDK sent.
    click(c, "table.projects a.title").await;
    let title = c
        .wait()
        .for_element(Locator::Css("table.errors a.title"))
        .await
        .expect("an error listed");
    // The newest first.
    assert_eq!(title.text().await.expect("text"), "PaymentError");
    assert_eq!(titles(c).await.len(), 3);
    save_screenshot(c, "error-list").await;

    // Search for it, then for something else.
    let search = c
        .find(Locator::Css("input[name=query]"))
        .await
        .expect("search");
    search.send_keys("card declined").await.expect("type");
    click(c, "form.search button[type=submit]").await;
    // The click returns before the browser has loaded the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path_of(c).await.contains("query=card+declined") {
        assert!(Instant::now() < deadline, "the search did not load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(titles(c).await, ["PaymentError"]);

    // Open it and read the failing line of its stack trace.
    click(c, "table.errors a.title").await;
    let failing = c
        .wait()
        .for_element(Locator::Css("li.failing"))
        .await
        .expect("the failing line");
    assert!(failing
        .text()
        .await
        .expect("text")
        .contains("charge(&cart).expect(\"card declined\")"));
    let first_frame = c
        .find(Locator::Css(".stacktrace > details.frame"))
        .await
        .expect("first frame");
    assert!(first_frame
        .text()
        .await
        .expect("text")
        .contains("src/checkout.rs"));
    assert!(c.source().await.expect("source").contains("order_id"));
    save_screenshot(c, "error-detail").await;

    // Resolve it: it leaves the unresolved tab.
    let detail = path_of(c).await;
    click(c, ".status-buttons button[value=resolved]").await;
    c.wait()
        .for_element(Locator::Css(".badge.resolved"))
        .await
        .expect("resolved");
    c.goto(&app.url("/errors/shop/-/error_tracking"))
        .await
        .expect("goto");
    c.wait()
        .for_element(Locator::Css("table.errors"))
        .await
        .expect("the list");
    assert!(!titles(c).await.contains(&"PaymentError".to_owned()));
    assert_eq!(titles(c).await.len(), 2);

    // A new event reopens it.
    sdk_send(&dsn, 1002).await;
    c.refresh().await.expect("reload");
    c.wait()
        .for_element(Locator::Css("table.errors"))
        .await
        .expect("the list");
    assert!(
        titles(c).await.contains(&"PaymentError".to_owned()),
        "reopened"
    );
    c.goto(&app.url(detail.split('?').next().unwrap_or(&detail)))
        .await
        .expect("goto");
    c.wait()
        .for_element(Locator::Css(".badge.unresolved"))
        .await
        .expect("unresolved again");

    // Create a key and copy its DSN.
    click(c, ".tabs a[href$='/-/settings/error_tracking']").await;
    let before = c
        .find_all(Locator::Css("button.copy"))
        .await
        .expect("keys")
        .len();
    click(c, ".card-head form button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css(".flash.ok"))
        .await
        .expect("key created");
    let copies = c.find_all(Locator::Css("button.copy")).await.expect("keys");
    assert_eq!(copies.len(), before + 1);
    let keys = app.keys(pid).await;
    let newest = keys.iter().max_by_key(|k| k["id"].as_i64()).expect("a key");
    let dsn_field = c
        .find(Locator::Css(&format!("#dsn-{}", newest["id"])))
        .await
        .expect("the new key's DSN");
    assert_eq!(
        dsn_field.prop("value").await.expect("value").as_deref(),
        newest["sentry_dsn"].as_str()
    );
    let button = c
        .find(Locator::Css(&format!(
            "button[data-copy='dsn-{}']",
            newest["id"]
        )))
        .await
        .expect("its copy button");
    button.click().await.expect("copy");
    c.wait()
        .for_element(Locator::Css("button.copy.copied"))
        .await
        .expect("the button says it copied");
    save_screenshot(c, "settings").await;

    alerts_journey(app, c, pid, recv).await;

    // Sign out: back to the sign-in page, and pages need signing in again.
    click(c, ".who button").await;
    c.wait()
        .for_element(Locator::Css("input[name=password]"))
        .await
        .expect("the sign-in page");
    c.goto(&app.url("/errors/shop/-/error_tracking"))
        .await
        .expect("goto");
    assert!(path_of(c).await.starts_with("/users/sign_in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_triages_an_error_in_a_real_browser() {
    let Some(chromedriver) = find_program("chromedriver") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromedriver is missing: CI must install chromium and chromium-driver (.ci/run)"
        );
        eprintln!(
            "skipped: chromedriver is not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    // Alerts may reach the loopback receiver; a mail server is named so email channels can
    // be made (nothing is sent to it).
    let app = spawn_app_with(|c| {
        c.alerts.allowed_internal_networks = vec!["127.0.0.0/8".into()];
        c.alerts.retry_base_ms = 50;
        c.alerts.poll_interval_ms = 50;
        c.alerts.smtp.host = Some("127.0.0.1".into());
        c.alerts.smtp.port = Some(9);
        c.alerts.smtp.security = faultline::config::SmtpSecurity::None;
    })
    .await;
    let recv = Receiver::start().await;
    let driver = start_driver(chromedriver).await;
    let profile = tempfile::tempdir().expect("profile dir");
    let c = browser(&driver, profile.path()).await;
    journey(&app, &c, &recv).await;
    c.close().await.expect("browser closes");
}
