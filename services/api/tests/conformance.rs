//! The api against its own published document, checked by a tool we did not write:
//! schemathesis (pinned in the project's tool venv by `scripts/setup`), every check, the
//! examples, coverage, fuzzing and stateful phases, over a running system (real nats-server,
//! enrollment, deployer, telemetry, a simulated device). Any finding fails the test; the number
//! of generated cases is printed.
//!
//! The live streams (`/api/v1/stream/…`, Server-Sent Events that never end) are left out: a
//! fuzzer cannot wait for the end of a response that has none. Their own tests are in `api.rs`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use wasmbed_api::Access;

mod support;
use support::{start_api, token};
use wasmbed_e2e::System;

const ADMIN: &str = "conformance-admin";

/// `WASMBED_SCHEMATHESIS_EXAMPLES` sets the examples per operation (default 30).
fn examples() -> String {
    std::env::var("WASMBED_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "30".into())
}

fn schemathesis() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = root.join(".tools/venv/bin/schemathesis");
    assert!(
        binary.exists(),
        "{} is missing: run scripts/setup",
        binary.display()
    );
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_the_published_document() {
    let binary = schemathesis();
    let system = System::start().await;
    // Something for the reads to find (a connected device), and the renode-manager the
    // emulator routes command (simulated boards).
    let (_, device) = system.device("conformance-1", &[]).await;
    let _manager = system
        .start_manager(wasmbed_e2e::emulated::sim_backend())
        .await;
    let api = start_api(&system, vec![token("admin", ADMIN, Access::ReadWrite)]).await;
    let reports = tempfile::tempdir().unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(900),
        tokio::process::Command::new(binary)
            .args([
                "--config-file",
                concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis.toml"),
                "run",
                &format!("http://{api}/api/openapi.json"),
                "--checks",
                "all",
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--max-examples",
                &examples(),
                "--seed",
                "1",
                "--workers",
                "1",
                "--exclude-path-regex",
                "^/api/v1/stream/",
                "--header",
                &format!("Authorization: Bearer {ADMIN}"),
                "--request-timeout",
                "20",
                "--no-color",
                "--generation-database",
                "none",
                "--report",
                "junit",
                "--report-dir",
            ])
            .arg(reports.path())
            .env("SCHEMATHESIS_HOOKS", "")
            // Its caches land in its working directory: a temporary one.
            .current_dir(reports.path())
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("schemathesis ran for more than 15 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found failures (above)"
    );
    device.stop().await;
}
