//! `wasmbed device` and `wasmbed app` against a running system (real nats-server, services,
//! simulated devices running real WASM), found through `NATS_URL` as scripts would.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::process::Output;

use tokio::process::Command;
use wasmbed_e2e::System;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

async fn wasmbed(system: &System, args: &[&str]) -> Output {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        Command::new(WASMBED)
            .args(args)
            .env("NATS_URL", system.nats.url())
            .output(),
    )
    .await
    .unwrap()
    .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn devices_and_apps_from_the_command_line() {
    let system = System::start().await;
    let (_, sim_a) = system.device("dev-a", &[("room", "lab")]).await;
    let (_, sim_b) = system.device("dev-b", &[("room", "lab")]).await;

    // Register a third device by key; list and show them.
    let key = wasmbed_sim::random_key();
    let hex: String = key
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = wasmbed(
        &system,
        &["device", "register", "dev-c", &hex, "--label", "room=attic"],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = wasmbed(&system, &["device", "list"]).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("dev-a") && l.contains("online")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("dev-c") && l.contains("registered")),
        "{stdout}"
    );
    let out = wasmbed(&system, &["device", "show", "dev-c"]).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["labels"]["room"], "attic");
    let out = wasmbed(&system, &["device", "show", "nobody"]).await;
    assert!(!out.status.success());
    assert_eq!(text(&out).1.trim(), "wasmbed: no device nobody");

    // Deploy a module file to the lab: it waits until both run it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("counter.wasm");
    std::fs::write(&file, wasmbed_example_apps::COUNTER).unwrap();
    let file = file.to_str().unwrap();
    let out = wasmbed(&system, &["app", "deploy", file, "--to", "label:room=lab"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("all 2 devices run counter v1"), "{stdout}");
    let out = wasmbed(&system, &["app", "list"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("dev-a:running") && stdout.contains("dev-b:running"),
        "{stdout}"
    );

    // A device that never connects: a clear failure after the wait, naming it.
    let out = wasmbed(
        &system,
        &[
            "app", "deploy", file, "--to", "dev-c", "--app-id", "lonely", "--wait", "2s",
        ],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("0/1 running") && stderr.contains("dev-c (requested)"),
        "{stderr}"
    );

    // A refusal is reported with its reason.
    let out = wasmbed(
        &system,
        &[
            "app", "deploy", file, "--to", "dev-a", "--app-id", "greedy", "--pages", "64",
        ],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("dev-a: refused") && stderr.contains("KiB"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = wasmbed(&system, &["app", "stop", "counter"]).await;
    assert!(out.status.success());
    let out = wasmbed(&system, &["app", "delete", "counter"]).await;
    assert!(out.status.success());
    let out = wasmbed(
        &system,
        &["app", "deploy", "/nonexistent.wasm", "--to", "all"],
    )
    .await;
    assert!(
        text(&out)
            .1
            .starts_with("wasmbed: reading /nonexistent.wasm")
    );
    sim_a.stop().await;
    sim_b.stop().await;
}
