//! `wasmbed telemetry tail` against a real nats-server and the real telemetry stream.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use async_nats::HeaderMap;
use tokio::process::Command;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AppId, DeviceId};
use wasmbed_test_support::NatsServer;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

async fn publish(client: &async_nats::Client, device: &str, seq: u32, payload: &str) {
    let (device, app) = (
        DeviceId::new(device).unwrap(),
        AppId::new("thermo").unwrap(),
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::DEVICE, device.as_str());
    headers.insert(header::APP, app.as_str());
    headers.insert(header::SEQUENCE, seq.to_string().as_str());
    headers.insert(header::TOPIC, "temperature");
    client
        .publish_with_headers(
            subject::telemetry(&device, &app),
            headers,
            payload.to_owned().into(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn tail_replays_one_devices_history_from_the_telemetry_stream() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    // Opening the log creates the telemetry stream, as every service does at start.
    EventLog::open(client.clone(), &LogOptions::default())
        .await
        .unwrap();
    for seq in 1..=3 {
        publish(&client, "d1", seq, &format!("2{seq}.5")).await;
        publish(&client, "d2", seq, "99").await;
    }
    client.flush().await.unwrap();

    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(WASMBED)
            .args([
                "telemetry",
                "tail",
                "d1",
                "--since",
                "10m",
                "--limit",
                "3",
                "--output",
                "json",
            ])
            .env("NATS_URL", server.url())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["device"].as_str().unwrap().to_owned(),
                l["seq"].as_str().unwrap().to_owned(),
                l["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("d1".into(), "1".into(), "21.5".into()),
            ("d1".into(), "2".into(), "22.5".into()),
            ("d1".into(), "3".into(), "23.5".into()),
        ]
    );
    assert_eq!(lines[0]["subject"], "wasmbed.telemetry.d1.thermo");
    assert_eq!(lines[0]["topic"], "temperature");

    let bad = Command::new(WASMBED)
        .args(["telemetry", "tail", "--since", "ten minutes"])
        .env("NATS_URL", server.url())
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--since"), "{stderr}");
}
