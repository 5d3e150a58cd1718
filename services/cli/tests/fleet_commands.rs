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

#[tokio::test]
async fn rollouts_from_the_command_line_say_how_they_ended_in_the_exit_status() {
    let system = System::start().await;
    // Rehearsals start their copies through it.
    let _manager = system
        .start_manager(wasmbed_e2e::emulated::sim_backend())
        .await;
    let (_, sim_a) = system.device("dev-a", &[]).await;
    let (_, sim_b) = system.device("dev-b", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let counter = write("counter.wasm", wasmbed_example_apps::COUNTER);
    let sensor = write("sensor.wasm", wasmbed_example_apps::SENSOR);
    let spin = write("spin.wasm", wasmbed_example_apps::SPIN);
    let out = wasmbed(&system, &["app", "deploy", &counter, "--to", "all"]).await;
    assert!(out.status.success(), "{:?}", text(&out));

    // Nothing in progress: approving is refused with the reason.
    let out = wasmbed(&system, &["rollout", "approve", "counter"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("no rollout in progress"),
        "{:?}",
        text(&out)
    );

    // A healthy version completes: exit 0.
    let args = ["--waves", "1,rest", "--soak", "300ms"];
    let out = wasmbed(
        &system,
        &[&["rollout", "start", "counter", &sensor][..], &args[..]].concat(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("rollout 1 of counter: v1 → v2"), "{stdout}");
    assert!(
        stdout.contains("completed: every device runs v2"),
        "{stdout}"
    );

    // A version that exhausts its fuel fails the first wave and rolls back: exit 1, the reason.
    let out = wasmbed(
        &system,
        &[&["rollout", "start", "counter", &spin][..], &args[..]].concat(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("rollout 2 of counter rolled back: wave 1 failed"),
        "{stderr}"
    );
    assert!(stdout.contains("fuel exhausted"), "{stdout}");

    let out = wasmbed(&system, &["rollout", "status", "counter"]).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(
        stdout.starts_with("rollout 2 of counter: v2 → v3, rolled back"),
        "{stdout}"
    );
    let out = wasmbed(&system, &["rollout", "list"]).await;
    let (stdout, _) = text(&out);
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].contains("rolled back") && rows[1].contains("completed"),
        "{stdout}"
    );
    // Bad waves never reach the bus.
    let out = wasmbed(
        &system,
        &["rollout", "start", "counter", &sensor, "--waves", "150%"],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("150%"), "{:?}", text(&out));

    // A rehearsal alone runs only on a copy: one that exhausts its fuel says so and exits 1, a
    // healthy one exits 0, and neither changes what the devices run.
    let rehearse = |file: &str| {
        [
            "rollout".to_owned(),
            "rehearse".to_owned(),
            "counter".to_owned(),
            file.to_owned(),
            "--soak".to_owned(),
            "300ms".to_owned(),
        ]
    };
    let args = rehearse(&spin);
    let out = wasmbed(
        &system,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rehearsal copy counter-rh3-0 of dev-")
            && stdout.contains("fuel exhausted"),
        "{stdout}"
    );
    let args = rehearse(&counter);
    let out = wasmbed(
        &system,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rehearsal of v1 passed on 1 copies; no real device was touched"),
        "{stdout}"
    );
    let out = wasmbed(&system, &["app", "list"]).await;
    let (stdout, _) = text(&out);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("counter") && l.contains("v2")),
        "{stdout}"
    );
    sim_a.stop().await;
    sim_b.stop().await;
}

#[tokio::test]
async fn publisher_keys_signed_releases_and_rotations_from_the_command_line() {
    let system = System::start_with(wasmbed_deployer::DeployerConfig {
        require_signed: true,
        ..wasmbed_e2e::deployer_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // A key pair: the secret only for its owner.
    let out = wasmbed(&system, &["release", "keygen", &path("first.key")]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path("first.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read_to_string(path("first.pub")).unwrap();
    let first = wasmbed_schemas::PublicKey::from_hex(first.trim()).unwrap();
    let out = wasmbed(
        &system,
        &[
            "release",
            "trust",
            &path("first.pub"),
            "--name",
            "release team",
        ],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));

    // A device provisioned to trust it.
    let (device, key) = system.register("cli-signed", &[]).await;
    let mut sim = system.trusting_sim(key, &[first], 1);
    sim.wait_for(|s| s.connected, wasmbed_e2e::T).await.unwrap();
    let module = path("counter.wasm");
    std::fs::write(&module, wasmbed_example_apps::COUNTER).unwrap();

    // Unsigned: refused by the fleet's policy, with the reason.
    let out = wasmbed(
        &system,
        &[
            "app",
            "deploy",
            &module,
            "--to",
            device.as_str(),
            "--unsigned",
        ],
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("require_signed"), "{stderr}");
    // Signing a module that publishes needs its topics.
    let out = wasmbed(
        &system,
        &[
            "app",
            "deploy",
            &module,
            "--to",
            device.as_str(),
            "--key",
            &path("first.key"),
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--topics"), "{:?}", text(&out));
    let out = wasmbed(
        &system,
        &[
            "app",
            "deploy",
            &module,
            "--to",
            device.as_str(),
            "--key",
            &path("first.key"),
            "--topics",
            "count",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("all 1 devices run counter v1"), "{stdout}");
    assert!(stderr.contains("topics count"), "{stderr}");

    // Signed beforehand into a file beside the module, deployed as the next version.
    let second = path("counter-2.wasm");
    std::fs::write(
        &second,
        wasmbed_e2e::padded(wasmbed_example_apps::COUNTER, 4096),
    )
    .unwrap();
    let out = wasmbed(
        &system,
        &[
            "release",
            "sign",
            &second,
            "--key",
            &path("first.key"),
            "--app-id",
            "counter",
            "--version",
            "2",
            "--topics",
            "count",
        ],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let release = format!("{second}.release.json");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&release).unwrap()).unwrap();
    assert_eq!(written["manifest"]["version"], 2);
    let out = wasmbed(
        &system,
        &[
            "app",
            "deploy",
            &second,
            "--to",
            device.as_str(),
            "--release",
            &release,
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("run counter v2"), "{stdout}");

    // Rotation: a second key trusted by the first, then the first revoked by the second; the
    // device applies both.
    let out = wasmbed(&system, &["release", "keygen", &path("second.key")]).await;
    assert!(out.status.success());
    let out = wasmbed(
        &system,
        &[
            "release",
            "trust",
            &path("second.pub"),
            "--name",
            "next team",
        ],
    )
    .await;
    assert!(!out.status.success(), "a second key needs a signer");
    let out = wasmbed(
        &system,
        &[
            "release",
            "trust",
            &path("second.pub"),
            "--name",
            "next team",
            "--signer",
            &path("first.key"),
        ],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = wasmbed(
        &system,
        &[
            "release",
            "revoke",
            &path("first.pub"),
            "--signer",
            &path("second.key"),
            "--reason",
            "rotated",
        ],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = wasmbed(&system, &["release", "list"]).await;
    let (stdout, _) = text(&out);
    assert!(stdout.starts_with("trust serial 3"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("release team") && l.contains(" 3 ")),
        "{stdout}"
    );
    let table: String = stdout.lines().skip(1).map(|l| format!("{l}\n")).collect();
    wasmbed_e2e::assert_table_aligned(&table);
    let out = wasmbed(&system, &["release", "list", "--output", "json"]).await;
    let view: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(view["serial"], 3, "{view}");
    system
        .wait_events(
            &wasmbed_schemas::AggregateId::Device(device.clone()),
            |events| {
                events.iter().any(|e| {
                    matches!(e, wasmbed_schemas::event::Event::DeviceDescribed(d) if d.trust_serial == 3)
                })
            },
        )
        .await;
    sim.stop().await;
}

/// `device list` and `app list` print aligned tables whatever the ids' lengths, or JSON lines;
/// `app deploy --example` needs no file.
#[tokio::test]
async fn lists_print_aligned_tables_or_json_and_examples_deploy_by_name() {
    let system = System::start().await;
    let (_, short) = system.device("d", &[]).await;
    let long_id = "a-device-id-well-past-the-twenty-four-columns-of-old";
    let (_, long) = system.device(long_id, &[]).await;
    let out = wasmbed(
        &system,
        &["app", "deploy", "--example", "counter", "--to", "all"],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    for list in [["device", "list"], ["app", "list"]] {
        let out = wasmbed(&system, &list).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        wasmbed_e2e::assert_table_aligned(&stdout);
        let out = wasmbed(&system, &[list[0], list[1], "--output", "json"]).await;
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        let rows: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows.len(),
            if list[0] == "device" { 2 } else { 1 },
            "{stdout}"
        );
    }
    let out = wasmbed(&system, &["device", "list"]).await;
    assert!(text(&out).0.contains(long_id));
    short.stop().await;
    long.stop().await;
}
