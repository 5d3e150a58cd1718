//! `wasmbed up` and `wasmbed events tail` as a user runs them: real processes, a real
//! nats-server.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use wasmbed_eventlog::{EventLog, ExpectedVersion, LogOptions};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::event::{DeviceBackOnline, EventEnvelope};
use wasmbed_test_support::workspace_root;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

#[tokio::test]
async fn up_serves_the_event_log_and_stops_cleanly_on_ctrl_c() {
    let state = tempfile::tempdir().unwrap();
    let nats_server = wasmbed_local_nats::find_binary(&workspace_root()).unwrap();
    let mut up = Command::new(WASMBED)
        .args(["up", "--nats-port", "0"])
        .env("WASMBED_STATE_DIR", state.path())
        .env("WASMBED_NATS_SERVER", &nats_server)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.trim().strip_prefix("nats:") {
                return url.trim().to_owned();
            }
        }
        panic!("up exited before printing the nats URL");
    })
    .await
    .expect("up printed its nats URL in time");
    assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
    assert!(
        state.path().join("nats").is_dir(),
        "store under the state dir"
    );

    // The log is there; append an event and read it back through the CLI.
    let log = EventLog::open(
        async_nats::connect(&url).await.unwrap(),
        &LogOptions::default(),
    )
    .await
    .unwrap();
    let event = EventEnvelope::new(
        DeviceBackOnline {
            device_id: DeviceId::new("dev-1").unwrap(),
        }
        .into(),
    );
    log.append(ExpectedVersion::Any, &event).await.unwrap();
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
    assert_eq!(line["envelope"]["event_id"], event.event_id.to_string());
    assert_eq!(line["envelope"]["event"]["type"], "DeviceBackOnline");

    // Ctrl-C: up stops its nats-server and exits 0.
    let pid = up.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), up.wait())
        .await
        .expect("up exits after Ctrl-C")
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(
        async_nats::connect(&url).await.is_err(),
        "nats-server is gone with up"
    );
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
