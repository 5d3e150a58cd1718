//! The system as containers on a real Docker engine (Debian's dockerd, started here): the three
//! images of `scripts/images` (FROM scratch, nothing pulled), `compose/compose.yaml` brought up
//! by Debian's docker-compose, and, from outside the compose network as a user would, boards
//! started, an app deployed, and its telemetry read on `wasmbed.telemetry.>`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use wasmbed_bus::call;
use wasmbed_e2e::docker::DockerEngine;
use wasmbed_local_nats::free_port;
use wasmbed_renode_manager::firmware::{self, Board};
use wasmbed_schemas::command::GetCaCertificate;
use wasmbed_test_support::workspace_root;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

/// The NATS users of `nats/permissions.conf`, whose passwords the compose file needs.
const USERS: [&str; 8] = [
    "ENROLLMENT",
    "GATEWAY",
    "DEPLOYER",
    "TELEMETRY",
    "RENODE_MANAGER",
    "API",
    "PROJECTOR",
    "OPERATOR",
];

fn secret() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compose project on `engine`, taken down (volumes too) when dropped.
struct Project<'a> {
    engine: &'a DockerEngine,
    env_file: PathBuf,
    name: String,
}

impl Project<'_> {
    fn compose(&self, args: &[&str]) -> Result<String, String> {
        let root = workspace_root();
        let socket = self.engine.host.trim_start_matches("unix://");
        let out = Command::new("docker-compose")
            .arg("--project-name")
            .arg(&self.name)
            .arg("--project-directory")
            .arg(root.join("compose"))
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("--file")
            .arg(root.join("compose/compose.yaml"))
            .args(args)
            .env("DOCKER_HOST", &self.engine.host)
            .env("WASMBED_DOCKER_SOCKET", socket)
            .output()
            .map_err(|e| format!("docker-compose: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(logs) = self.compose(&["logs", "--no-color", "--tail", "15"]) {
                eprintln!("compose logs (last 15 lines each):\n{logs}");
            }
        }
        let _ = self.compose(&["down", "--volumes", "--timeout", "2"]);
    }
}

/// `wasmbed` as a user runs it, against the compose deployment.
fn wasmbed(nats_url: &str, args: &[&str]) -> String {
    try_wasmbed(nats_url, args).unwrap_or_else(|e| panic!("wasmbed {args:?}: {e}"))
}

fn try_wasmbed(nats_url: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(WASMBED)
        .args(args)
        .env("NATS_URL", nats_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(text + &String::from_utf8_lossy(&out.stderr))
    }
}

fn write_env(path: &Path, ports: &[(&str, u16)], operator: &str) {
    let mut env = String::new();
    for user in USERS {
        let password = if user == "OPERATOR" {
            operator.to_owned()
        } else {
            secret()
        };
        env.push_str(&format!("WASMBED_NATS_PASSWORD_{user}={password}\n"));
    }
    env.push_str(&format!("WASMBED_API_TOKEN={}\n", secret()));
    for (name, port) in ports {
        env.push_str(&format!("{name}={port}\n"));
    }
    std::fs::write(path, env).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_deployment_enrolls_boards_deploys_and_streams_telemetry() {
    let engine = match DockerEngine::start() {
        Ok(engine) => engine,
        Err(why) => {
            println!("NOT RUN against a real Docker engine: {why}");
            return;
        }
    };
    let root = workspace_root();
    // The debug binary the test build already made; the release image differs only in speed.
    let began = Instant::now();
    let images = Command::new(root.join("scripts/images"))
        .env("DOCKER_HOST", &engine.host)
        .env("WASMBED_IMAGE_PROFILE", "debug")
        .output()
        .unwrap();
    let built = String::from_utf8_lossy(&images.stdout).into_owned();
    assert!(
        images.status.success(),
        "scripts/images: {built}{}",
        String::from_utf8_lossy(&images.stderr)
    );
    println!("{} (built in {:?})", built.trim(), began.elapsed());
    firmware::build(&root, Board::Mps2An385).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let operator = secret();
    let nats_port = free_port().unwrap();
    let ports = [
        ("WASMBED_NATS_PORT", nats_port),
        ("WASMBED_GATEWAY_PORT_1", free_port().unwrap()),
        ("WASMBED_GATEWAY_PORT_2", free_port().unwrap()),
        ("WASMBED_API_PORT_1", free_port().unwrap()),
        ("WASMBED_API_PORT_2", free_port().unwrap()),
    ];
    let project = Project {
        engine: &engine,
        env_file: dir.path().join("compose.env"),
        name: format!("wasmbed-test-{}", std::process::id()),
    };
    write_env(&project.env_file, &ports, &operator);
    let started = Instant::now();
    project
        .compose(&["up", "--detach"])
        .unwrap_or_else(|e| panic!("compose up: {e}"));
    let running = project.compose(&["ps", "--services", "--filter", "status=running"]);
    let running: BTreeSet<String> = running
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        running.len(),
        15,
        "3 NATS nodes and two of each of 6 services: {running:?}"
    );

    // From outside the compose network: the operator on the published NATS port.
    let nats_url = format!("nats://operator:{operator}@127.0.0.1:{nats_port}");
    let client = loop {
        let connecting =
            async_nats::ConnectOptions::with_user_and_password("operator".into(), operator.clone())
                .connect(format!("127.0.0.1:{nats_port}"));
        let error = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(Ok(client)) => break client,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in 5 s".to_owned(),
        };
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "NATS never up on 127.0.0.1:{nats_port}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    while call(&client, &GetCaCertificate {}, Duration::from_millis(500))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "enrollment never answered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answering = started.elapsed();

    // Two boards, each QEMU in its own container started by the renode-manager.
    // The renode-manager may still be taking its lease, or the gateways announcing themselves:
    // asked again while nobody answers or it says it cannot yet.
    for board in ["qemu-1", "qemu-2"] {
        while let Err(e) = try_wasmbed(&nats_url, &["emulator", "start", board]) {
            assert!(
                (e.contains("no responders") || e.contains("Unavailable"))
                    && started.elapsed() < Duration::from_secs(120),
                "emulator start {board}: {e}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let boards = Instant::now();
    loop {
        let list = wasmbed(&nats_url, &["device", "list"]);
        let online = list.lines().filter(|l| l.contains(" online ")).count();
        if online == 2 {
            break;
        }
        assert!(
            boards.elapsed() < Duration::from_secs(120),
            "boards not online: {list}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let online = boards.elapsed();
    let containers = engine
        .docker(&[
            "ps",
            "--filter",
            "label=io.wasmbed.device",
            "--format",
            "{{.Names}}",
        ])
        .unwrap();
    assert_eq!(
        containers.lines().count(),
        2,
        "one container per board: {containers}"
    );

    let mut telemetry = client.subscribe("wasmbed.telemetry.>").await.unwrap();
    let deploying = Instant::now();
    wasmbed(
        &nats_url,
        &["app", "deploy", "--example", "sensor", "--to", "all"],
    );
    let mut heard = BTreeSet::new();
    while heard.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(30), telemetry.next())
            .await
            .expect("telemetry from the boards")
            .unwrap();
        if let Some(device) = message.subject.split('.').nth(2) {
            heard.insert(device.to_owned());
        }
    }
    assert_eq!(
        heard,
        BTreeSet::from(["qemu-1".to_owned(), "qemu-2".to_owned()])
    );
    println!(
        "compose: 15 containers up, enrollment answering {answering:?} after `up`; 2 QEMU boards \
         online {online:?} after `emulator start`; the sensor app deployed and telemetry from \
         both on 127.0.0.1:{nats_port} {:?} after `app deploy`",
        deploying.elapsed()
    );
}
