//! `wasmbed up` and `wasmbed events tail` as a user runs them: real processes, a real
//! nats-server, real TLS.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_renode_manager::firmware::{self, Board};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::{AggregateId, DeviceId};
use wasmbed_test_support::{http_get, workspace_root};

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

/// Starts `wasmbed up` on free ports; returns it and the lines it printed up to "Ctrl-C".
async fn up(state: &Path, devices: usize, emulated: usize) -> (Child, Vec<String>) {
    up_with(state, devices, emulated, &[]).await
}

/// The same with more arguments.
async fn up_with(
    state: &Path,
    devices: usize,
    emulated: usize,
    more: &[&str],
) -> (Child, Vec<String>) {
    let nats_server = wasmbed_local_nats::find_binary(&workspace_root()).unwrap();
    if emulated > 0 {
        firmware::build(&workspace_root(), Board::Mps2An385).unwrap();
    }
    let firmware = workspace_root().join("firmware/target");
    let mut child = Command::new(WASMBED)
        .args([
            "up",
            "--nats-port",
            "0",
            "--gateway-port",
            "0",
            "--gateway-http-port",
            "0",
            "--telemetry-http-port",
            "0",
            "--api-port",
            "0",
        ])
        .args(["--devices", &devices.to_string()])
        .args(["--emulated", &emulated.to_string(), "--firmware"])
        .arg(&firmware)
        .args(more)
        .env("WASMBED_STATE_DIR", state)
        .env("WASMBED_NATS_SERVER", &nats_server)
        .stdout(Stdio::piped())
        // With --trace the caller reads the printed spans.
        .stderr(if more.contains(&"--trace") {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let printed = tokio::time::timeout(Duration::from_secs(60), async {
        let mut printed = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.starts_with("Ctrl-C");
            printed.push(line);
            if done {
                return printed;
            }
        }
        panic!("up exited early after printing {printed:?}");
    })
    .await
    .expect("up came up in time");
    (child, printed)
}

fn field(printed: &[String], name: &str) -> String {
    printed
        .iter()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {name} line in {printed:?}"))
}

async fn ctrl_c(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("up exits after Ctrl-C")
        .unwrap();
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn up_runs_the_system_with_devices_that_enroll_and_stops_cleanly() {
    let state = tempfile::tempdir().unwrap();
    let (child, printed) = up(state.path(), 2, 1).await;
    let url = field(&printed, "nats:");
    assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
    assert!(field(&printed, "devices:").starts_with("2 of 2 simulated devices connected"));
    assert_eq!(
        field(&printed, "emulated:"),
        "1 of 1 QEMU mps2-an385 boards enrolled (qemu-1)"
    );

    let log = EventLog::open(
        async_nats::connect(&url).await.unwrap(),
        &LogOptions::default(),
    )
    .await
    .unwrap();
    for id in ["sim-1", "sim-2"] {
        let events = log
            .read(&AggregateId::Device(DeviceId::new(id).unwrap()))
            .await
            .unwrap();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e.envelope.event.type_name())
            .filter(|k| *k != "DeviceDescribed")
            .collect();
        assert_eq!(
            kinds,
            ["DeviceRegistered", "DeviceEnrolled", "DeviceConnected"],
            "{id}"
        );
    }

    // The example app runs on every device, the firmware in QEMU included.
    assert!(field(&printed, "apps:").starts_with("sensor deployed to every device"));
    for id in ["sim-1", "sim-2", "qemu-1"] {
        let deployment = AggregateId::Deployment {
            app: wasmbed_schemas::AppId::new("sensor").unwrap(),
            device: DeviceId::new(id).unwrap(),
        };
        let mut last = None;
        for _ in 0..200 {
            let events = log.read(&deployment).await.unwrap();
            last = events.last().map(|e| e.envelope.event.type_name());
            if last == Some("DeploymentRunning") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(last, Some("DeploymentRunning"), "{id}");
    }

    // The api answers with the printed token, and shows the fleet.
    let api: std::net::SocketAddr = field(&printed, "api:")
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let token = field(&printed, "token:");
    assert_eq!(
        std::fs::read_to_string(state.path().join("api-token")).unwrap(),
        token
    );
    let auth = format!("Bearer {token}");
    let (status, body) = wasmbed_test_support::http_request(
        api,
        "GET",
        "/api/v1/devices",
        &[("Authorization", &auth)],
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let devices: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 3, "{devices}");
    assert_eq!(http_get(api, "/api/v1/devices").await.0, 401);
    assert_eq!(
        field(&printed, "dashboard:"),
        format!("http://{api}/#token={token}")
    );
    assert_eq!(http_get(api, "/").await.0, 200);

    // The fleet's metrics count both devices online (liveness is checked every second).
    let fleet = field(&printed, "fleet:");
    let addr: std::net::SocketAddr = fleet
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    let mut online = String::new();
    for _ in 0..100 {
        online = http_get(addr, "/metrics").await.1;
        if online.lines().any(|l| l == "wasmbed_devices_online 3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        online.lines().any(|l| l == "wasmbed_devices_online 3"),
        "{online}"
    );

    // The CLI reads the same log.
    let tail = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(WASMBED)
            .args([
                "events",
                "tail",
                "--from-start",
                "--limit",
                "1",
                "--output",
                "json",
            ])
            .env("NATS_URL", &url)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&tail.stdout).unwrap();
    assert_eq!(line["sequence"], 1);
    // The gateway starting and the first registration race; either is the first event.
    let first = line["envelope"]["event"]["type"].as_str().unwrap();
    assert!(
        ["GatewayStarted", "DeviceRegistered"].contains(&first),
        "{line}"
    );
    let envelope: wasmbed_schemas::event::EventEnvelope =
        serde_json::from_value(line["envelope"].clone()).unwrap();
    assert_eq!(envelope.event.type_name(), first);

    // The emulators, through the CLI: a board the firmware cannot run is refused in one line;
    // the list shows the QEMU board running.
    let refused = cli(
        &url,
        &["emulator", "start", "odd-1", "--mcu", "Esp32DevkitC"],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a Cortex-M"), "{stderr}");
    let list = cli(&url, &["emulator", "list"]).await;
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let qemu = list
        .lines()
        .find(|l| l.starts_with("qemu-1 "))
        .unwrap_or_default();
    assert!(qemu.contains("running  Mps2An385 on qemu (pid "), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("odd-1 ") && l.contains("refused")),
        "{list}"
    );

    ctrl_c(child).await;
    assert!(
        async_nats::connect(&url).await.is_err(),
        "nats-server is gone with up"
    );

    // Again on the same state: the same devices (keys kept) and the same CA come back.
    let (child, printed) = up(state.path(), 2, 0).await;
    assert!(field(&printed, "devices:").starts_with("2 of 2"));
    let url = field(&printed, "nats:");
    let log = EventLog::open(
        async_nats::connect(&url).await.unwrap(),
        &LogOptions::default(),
    )
    .await
    .unwrap();
    let events = log
        .read(&AggregateId::Device(DeviceId::new("sim-1").unwrap()))
        .await
        .unwrap();
    let connects = events
        .iter()
        .filter(|e| matches!(e.envelope.event, Event::DeviceConnected(_)))
        .count();
    assert_eq!(connects, 2);
    // The first run's board was stopped with it, and the log says so.
    let board = log
        .read(&AggregateId::Emulator(DeviceId::new("qemu-1").unwrap()))
        .await
        .unwrap();
    match board.last().map(|e| &e.envelope.event) {
        Some(Event::EmulatorExited(exit)) => {
            assert_eq!(exit.reason, wasmbed_schemas::event::ExitReason::Stopped);
        }
        other => panic!("qemu-1 did not end stopped: {other:?}"),
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.envelope.event, Event::DeviceRegistered(_))
                && e.sequence > events[0].sequence),
        "registered once"
    );
    ctrl_c(child).await;
}

/// Runs `wasmbed ARGS` against the system at `url`.
async fn cli(url: &str, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(WASMBED)
            .args(args)
            .env("NATS_URL", url)
            .output(),
    )
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn events_tail_without_a_server_fails_with_one_line() {
    let port = wasmbed_local_nats::free_port().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(WASMBED)
            .args([
                "events",
                "tail",
                "--nats",
                &format!("nats://127.0.0.1:{port}"),
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("wasmbed: connecting to nats://127.0.0.1:"),
        "{stderr}"
    );
}

#[tokio::test]
async fn ca_init_makes_the_ca_once_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let run = || async {
        Command::new(WASMBED)
            .args(["ca-init", "--dir"])
            .arg(&ca)
            .output()
            .await
            .unwrap()
    };
    let first = run().await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(first.stdout.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let second = run().await;
    assert_eq!(first.stdout, second.stdout, "the same CA the second time");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is the owner's only");
}

#[tokio::test]
async fn a_bus_only_service_answers_health_while_it_has_nats() {
    let mut nats = wasmbed_test_support::NatsServer::start().await.unwrap();
    let port = wasmbed_local_nats::free_port().unwrap();
    let mut deployer = Command::new(WASMBED)
        .args(["serve", "deployer", "--nats", &nats.url()])
        .args(["--health-listen", &format!("127.0.0.1:{port}")])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = http_get(addr, "/health").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    nats.kill();
    for _ in 0..100 {
        status = http_get(addr, "/health").await.0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 503, "still healthy without NATS");
    let _ = deployer.kill().await;
}

/// The process whose command line contains `needle` (a nats-server node, by its store path).
fn pid_of(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
}

#[tokio::test]
async fn up_with_three_replicas_runs_a_cluster_that_outlives_a_node() {
    use futures::StreamExt;
    let state = tempfile::tempdir().unwrap();
    let (child, printed) = up_with(state.path(), 2, 0, &["--replicas", "3"]).await;
    assert!(
        field(&printed, "cluster:").starts_with("3 JetStream nodes"),
        "{printed:?}"
    );
    let urls: Vec<String> = field(&printed, "nats:")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(urls.len(), 3, "{urls:?}");
    let client = async_nats::connect(urls[0].as_str()).await.unwrap();
    let log = EventLog::open(client.clone(), &LogOptions { replicas: 3 })
        .await
        .unwrap();
    // Two instances of the gateway announced themselves.
    let gateways: Vec<Event> = log
        .page(Some("wasmbed.events.v1.gateway.>".into()), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.event)
        .collect();
    let started = gateways
        .iter()
        .filter(|e| matches!(e, Event::GatewayStarted(_)))
        .count();
    assert_eq!(started, 2, "{gateways:?}");
    let mut telemetry = client.subscribe("wasmbed.telemetry.>").await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), telemetry.next())
        .await
        .expect("telemetry flows");

    // A node killed: telemetry keeps flowing through the other two.
    let store = state.path().join("nats-cluster/node-2/store");
    let pid = pid_of(&store.display().to_string()).expect("node 2 runs");
    let status = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let killed = std::time::Instant::now();
    while tokio::time::timeout(Duration::from_millis(10), telemetry.next())
        .await
        .is_ok()
    {}
    tokio::time::timeout(Duration::from_secs(20), telemetry.next())
        .await
        .expect("telemetry after a node was killed");
    eprintln!(
        "up --replicas 3: node 2 killed; telemetry flowing again {:?} after",
        killed.elapsed()
    );

    // Ctrl-C stops everything, the two nodes left included.
    let pid = child.id().unwrap().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    let mut child = child;
    tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("up exits after Ctrl-C")
        .unwrap();
    assert_eq!(
        pid_of(&state.path().join("nats-cluster").display().to_string()),
        None
    );
}

/// What the README tells a new user to do after `scripts/up`, as written: deploy the example
/// by name and from the file `up` wrote, list the apps and the devices (aligned tables), tail
/// the telemetry. (No emulated board here: the test above runs one.)
#[tokio::test]
async fn a_new_user_walks_the_readme_after_up() {
    let state = tempfile::tempdir().unwrap();
    let (child, printed) = up(state.path(), 2, 0).await;
    let url = field(&printed, "nats:");
    let examples = field(&printed, "examples:");
    assert!(
        examples.starts_with(&state.path().display().to_string()),
        "{examples}"
    );
    let run = |args: Vec<String>| {
        let url = url.clone();
        let state = state.path().to_path_buf();
        async move {
            let out = tokio::time::timeout(
                Duration::from_secs(120),
                Command::new(WASMBED)
                    .args(&args)
                    .env("NATS_URL", url)
                    .env("WASMBED_STATE_DIR", state)
                    .output(),
            )
            .await
            .expect("the command ended")
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(out.status.success(), "wasmbed {args:?}: {stdout}{stderr}");
            stdout
        }
    };
    let args = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    run(args("app deploy --example counter --to all")).await;
    let sensor = state.path().join("examples/sensor.wasm");
    let mut deploy_file = args("app deploy --to all --config kitchen --fuel 500000 --pages 2");
    deploy_file.insert(2, sensor.display().to_string());
    run(deploy_file).await;
    let apps = run(args("app list")).await;
    wasmbed_e2e::assert_table_aligned(&apps);
    assert!(apps.lines().any(|l| l.starts_with("counter ")), "{apps}");
    let devices = run(args("device list")).await;
    wasmbed_e2e::assert_table_aligned(&devices);
    assert_eq!(
        devices.lines().filter(|l| l.contains("online")).count(),
        2,
        "{devices}"
    );
    // `telemetry tail` runs until stopped: a few seconds of it.
    let mut tail = Command::new(WASMBED)
        .args(["telemetry", "tail", "--output", "json"])
        .env("NATS_URL", &url)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut apps_heard = std::collections::BTreeSet::new();
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let message: serde_json::Value = serde_json::from_str(&line).unwrap();
            apps_heard.insert(message["app"].as_str().unwrap_or("").to_owned());
            if apps_heard.contains("counter") && apps_heard.contains("sensor") {
                return;
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "telemetry of both apps: {apps_heard:?}");
    tail.kill().await.unwrap();
    ctrl_c(child).await;
}

/// `up --trace` prints every span as it ends with its trace id, and the traces are the ones the
/// services carry over the bus: the deploy `up` makes is one trace through the deployer's
/// command, its downlinks, the gateway delivering them and the devices' answers.
#[tokio::test]
async fn up_with_trace_prints_one_deploy_as_one_trace() {
    let state = tempfile::tempdir().unwrap();
    let (mut child, printed) = up_with(state.path(), 2, 0, &["--trace"]).await;
    assert!(field(&printed, "apps:").starts_with("sensor deployed to every device"));
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // trace id → the span names of that trace
    let mut traces: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let deploy_trace = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["trace", id, "span", name, ..] = words.as_slice() {
                let spans = traces.entry((*id).to_owned()).or_default();
                spans.push(format!("{name} {line}"));
                let has = |what: &str, with: &str| {
                    spans
                        .iter()
                        .any(|s| s.starts_with(what) && s.contains(with))
                };
                if has("command", "command=deploy_application")
                    && has("downlink", "frame=Deploy")
                    && has("uplink", "frame=AppStatus")
                {
                    return (*id).to_owned();
                }
            }
        }
        panic!("up ended; traces printed: {traces:#?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no deploy trace printed within 20 s: {traces:#?}"));
    assert_eq!(deploy_trace.len(), 32, "a W3C trace id: {deploy_trace}");
    ctrl_c(child).await;
}
