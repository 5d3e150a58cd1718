//! The dashboard in a real browser: headless Chromium (installed by `scripts/setup`) opens it
//! on a running system, driven over the DevTools protocol. It must show the device in the
//! topology, then show an application's state change live (the page is already open when the
//! app is deployed), plot a device's telemetry and the fleet's states from live data, and the
//! run leaves screenshots in `target/screenshots/` (`dashboard.png`, `dashboard-plots.png`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wasmbed_api::Access;

mod support;
use support::{start_api, token};
use wasmbed_e2e::releases::{ALL_IMPORTS, grants, public, publisher, signed};
use wasmbed_e2e::{System, T};
use wasmbed_test_support::{http_get, http_request, workspace_root};

const ADMIN: &str = "dashboard-test-secret";

/// Headless Chromium with the DevTools protocol on a port it picks itself.
struct Browser {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    async fn launch(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                // The network is closed: without these Chromium spends its start-up on lookups
                // and connections that are refused.
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(profile.path().join("stderr.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium is installed (scripts/setup installs it)");
        let port_file = profile.path().join("DevToolsActivePort");
        // A first start on a loaded 2-core machine has taken over 20 s.
        let deadline = tokio::time::Instant::now() + 3 * T;
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.parse().ok()))
            {
                break port;
            }
            if tokio::time::Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(profile.path().join("stderr.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "chromium did not start; its last lines:\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            child,
            _profile: profile,
            port,
        }
    }

    /// The DevTools WebSocket of the page.
    async fn page(&self) -> Page {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = tokio::time::Instant::now() + T;
        let url = loop {
            let body = devtools_list(addr).await;
            let pages: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let Some(url) = pages.as_array().and_then(|p| {
                p.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            }) {
                break url;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no page in chromium"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Page { socket, next_id: 1 }
    }
}

/// `GET /json/list` of the DevTools HTTP endpoint, which speaks only HTTP/1.1 and keeps the
/// connection open: read the headers, then exactly Content-Length bytes.
async fn devtools_list(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    // The WebSocket URLs it answers with use this host.
    let request = format!("GET /json/list HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return body.to_owned();
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return String::new(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.unwrap_or_default()
}

struct Page {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(T, self.socket.next())
                .await
                .expect("DevTools answered")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` evaluates to `want` in the page.
    async fn wait_for(&mut self, expression: &str, want: &str) {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let got = self.eval(expression).await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{expression} is {got}, never {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn multipart(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn the_dashboard_shows_the_fleet_and_an_app_going_live() {
    let system = System::start().await;
    let api = start_api(&system, vec![token("test", ADMIN, Access::ReadWrite)]).await;
    let (_, sim) = system.device("dev-1", &[]).await;
    let _manager = system
        .start_manager(wasmbed_e2e::emulated::sim_backend())
        .await;
    let (status, page_html) = http_get(api, "/").await;
    assert_eq!(status, 200);
    assert!(page_html.contains("<title>Wasmbed</title>"));

    let browser = Browser::launch(&format!("http://{api}/#token={ADMIN}")).await;
    let mut page = browser.page().await;
    page.wait_for(
        r#"document.querySelector('#topology circle[data-device="dev-1"]')?.getAttribute('data-state') ?? 'absent'"#,
        "online",
    )
    .await;
    page.wait_for(
        r#"document.querySelector('#topology rect[data-gateway="gw-e2e"]') ? 'yes' : 'no'"#,
        "yes",
    )
    .await;
    page.wait_for("document.getElementById('stat-online').textContent", "1")
        .await;
    page.wait_for(
        r#"document.querySelector('#devices tr[data-device="dev-1"] td.heard')?.dataset.heard ? 'heard' : 'not yet'"#,
        "heard",
    )
    .await;

    // The page is open; a publisher key is trusted, and the app is created with its signed
    // release and deployed now, through the api.
    let key = publisher(4);
    system.trust(&key, None).await.unwrap();
    let limits = wasmbed_api::DEFAULT_LIMITS;
    let release = signed(
        &wasmbed_schemas::AppId::new("sensor").unwrap(),
        1,
        wasmbed_example_apps::SENSOR,
        grants(ALL_IMPORTS, &["temperature"], &limits),
        &key,
    );
    let release = serde_json::to_vec(&release).unwrap();
    let metadata =
        serde_json::to_vec(&json!({"app_id": "sensor", "target": {"kind": "all"}})).unwrap();
    let body = multipart(
        "b0undary",
        &[
            ("metadata", &metadata),
            ("module", wasmbed_example_apps::SENSOR),
            ("release", &release),
        ],
    );
    let auth = format!("Bearer {ADMIN}");
    let (status, answer) = http_request(
        api,
        "POST",
        "/api/v1/applications",
        &[
            ("Authorization", &auth),
            ("Content-Type", "multipart/form-data; boundary=b0undary"),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _) = http_request(
        api,
        "POST",
        "/api/v1/applications/sensor/deploy",
        &[("Authorization", &auth)],
        &[],
    )
    .await;
    assert_eq!(status, 200);
    page.wait_for(
        r#"document.querySelector('#apps tr[data-app="sensor"] [data-device="dev-1"]')?.dataset.phase ?? 'absent'"#,
        "running",
    )
    .await;
    page.wait_for("document.getElementById('stat-running').textContent", "1")
        .await;
    // Who signed it and what it may do; the publisher in the trust table.
    let released = page
        .eval(r#"document.querySelector('#apps tr[data-app="sensor"] td.release').textContent"#)
        .await;
    let released = released.as_str().unwrap();
    assert!(
        released.contains(&format!("key {}", public(&key))),
        "{released}"
    );
    assert!(released.contains("topics temperature"), "{released}");
    page.wait_for(
        &format!(
            "document.querySelector('#publishers tr[data-publisher=\"{}\"]') ? 'listed' : 'absent'",
            public(&key)
        ),
        "listed",
    )
    .await;
    let timeline = page
        .eval("document.getElementById('events').textContent")
        .await;
    assert!(
        timeline.as_str().unwrap().contains("DeploymentRunning"),
        "{timeline}"
    );
    // The device's telemetry plotted live: clicking its row follows it, and the sensor's
    // numeric fields become points (one reading a second). The fleet plot has points too.
    page.eval(r#"document.querySelector('#devices tr[data-device="dev-1"]').click() ?? 'clicked'"#)
        .await;
    page.wait_for(
        r#"document.querySelectorAll('#plot circle[data-series="sensor/temperature.millicelsius"]').length >= 3 ? 'plotted' : 'not yet'"#,
        "plotted",
    )
    .await;
    let legend = page
        .eval("document.getElementById('plot-legend').textContent")
        .await;
    assert!(
        legend
            .as_str()
            .unwrap()
            .contains("sensor/temperature.millicelsius"),
        "{legend}"
    );
    page.wait_for(
        r#"document.querySelector('#fleet-plot circle[data-series="devices online"]') ? 'plotted' : 'not yet'"#,
        "plotted",
    )
    .await;

    // A rollout started through the api shows its wave being judged; its abort button rolls it
    // back.
    let rollout_meta = serde_json::to_vec(&json!({"waves": "rest", "soak_ms": 60000})).unwrap();
    let body = multipart(
        "b0undary",
        &[
            ("metadata", &rollout_meta),
            ("module", wasmbed_example_apps::COUNTER),
        ],
    );
    let (status, answer) = http_request(
        api,
        "POST",
        "/api/v1/applications/sensor/rollouts",
        &[
            ("Authorization", &auth),
            ("Content-Type", "multipart/form-data; boundary=b0undary"),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    page.wait_for(
        r#"document.querySelector('#rollouts tr[data-rollout="sensor"]')?.dataset.state ?? 'absent'"#,
        "judging",
    )
    .await;
    page.eval(r#"document.querySelector('#rollouts tr[data-rollout="sensor"] button[data-action="abort"]').click() ?? 'clicked'"#)
        .await;
    page.wait_for(
        r#"document.querySelector('#rollouts tr[data-rollout="sensor"]')?.dataset.state ?? 'absent'"#,
        "rolled_back",
    )
    .await;
    page.wait_for(
        r#"document.querySelector('#rollouts tr[data-rollout="sensor"] [data-wave="0"]')?.dataset.state ?? 'absent'"#,
        "halted",
    )
    .await;

    // An emulator started from the dashboard's form runs, and its stop button stops it.
    page.eval(
        r#"(() => { const f = document.getElementById('emulator-start');
                    f.querySelector('[name=device_id]').value = 'emu-d1';
                    f.requestSubmit(); return 'sent'; })()"#,
    )
    .await;
    page.wait_for(
        r#"document.querySelector('#emulators tr[data-emulator="emu-d1"]')?.dataset.state ?? 'absent'"#,
        "running",
    )
    .await;
    page.wait_for(
        r#"document.querySelector('#topology circle[data-device="emu-d1"]')?.getAttribute('data-state') ?? 'absent'"#,
        "online",
    )
    .await;
    page.eval(r#"document.querySelector('#emulators tr[data-emulator="emu-d1"] button').click() ?? 'clicked'"#)
        .await;
    page.wait_for(
        r#"document.querySelector('#emulators tr[data-emulator="emu-d1"]')?.dataset.state ?? 'absent'"#,
        "stopped",
    )
    .await;

    // Two screenshots: the top of the page, and the plots (scrolled into view).
    let dir: PathBuf = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, scroll) in [
        ("dashboard.png", "window.scrollTo(0, 0) ?? 'top'"),
        (
            "dashboard-plots.png",
            "document.getElementById('plot').scrollIntoView({block: 'center'}) ?? 'plots'",
        ),
    ] {
        page.eval(scroll).await;
        let shot = page
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(dir.join(name), &png).unwrap();
        println!("screenshot: {}", dir.join(name).display());
    }
    drop(page);
    let mut child = browser.child;
    let _ = child.kill().await;
    sim.stop().await;
}
