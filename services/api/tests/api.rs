//! The REST facade against a running system: real nats-server, enrollment, gateway, deployer,
//! simulated devices over real TLS running real WASM.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use wasmbed_api::Access;

mod support;
use support::{start_api, token};
use wasmbed_e2e::{System, T};
use wasmbed_sim::random_key;
use wasmbed_test_support::{http_get, http_request};

const ADMIN: &str = "admin-secret";
const VIEWER: &str = "viewer-secret";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let auth = bearer(ADMIN);
    let (status, body) = http_request(addr, "GET", path, &[("Authorization", &auth)], &[]).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn send_json(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let auth = bearer(ADMIN);
    let bytes = serde_json::to_vec(body).unwrap();
    let (status, body) = http_request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &bytes,
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

const BOUNDARY: &str = "wasmbed-test-boundary";

fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post_multipart(addr: SocketAddr, path: &str, parts: &[(&str, &[u8])]) -> (u16, Value) {
    let auth = bearer(ADMIN);
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let (status, body) = http_request(
        addr,
        "POST",
        path,
        &[("Authorization", &auth), ("Content-Type", &content_type)],
        &multipart(parts),
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn wait_json(addr: SocketAddr, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (_, body) = get(addr, path).await;
        if ok(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never matched: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_route_but_health_needs_a_token_and_read_only_tokens_cannot_write() {
    let system = System::start().await;
    let api = start_api(
        &system,
        vec![
            token("admin", ADMIN, Access::ReadWrite),
            token("dashboard", VIEWER, Access::ReadOnly),
        ],
    )
    .await;
    assert_eq!(http_get(api, "/health").await.0, 200);
    for path in [
        "/metrics",
        "/api/v1/devices",
        "/api/v1/applications",
        "/api/v1/gateways",
        "/api/v1/emulators",
        "/api/v1/events",
    ] {
        assert_eq!(http_get(api, path).await.0, 401, "{path} without a token");
        let wrong = bearer("nope");
        let (status, body) =
            http_request(api, "GET", path, &[("Authorization", &wrong)], &[]).await;
        assert_eq!(status, 401, "{path} with a wrong token");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let viewer = bearer(VIEWER);
        assert_eq!(
            http_request(api, "GET", path, &[("Authorization", &viewer)], &[])
                .await
                .0,
            200,
            "{path}"
        );
    }
    // Read-only tokens read (also as a query parameter, for EventSource) but never write.
    assert_eq!(
        http_get(api, &format!("/api/v1/devices?token={VIEWER}"))
            .await
            .0,
        200
    );
    let viewer = bearer(VIEWER);
    for (method, path) in [
        ("POST", "/api/v1/devices"),
        ("DELETE", "/api/v1/devices/dev-1"),
        ("POST", "/api/v1/applications"),
        ("POST", "/api/v1/applications/x/deploy"),
        ("POST", "/api/v1/applications/x/stop"),
        ("POST", "/api/v1/applications/x/update"),
        ("DELETE", "/api/v1/applications/x"),
        ("POST", "/api/v1/emulators"),
        ("DELETE", "/api/v1/emulators/x"),
        ("POST", "/api/v1/emulators/x/restart"),
    ] {
        let (status, _) =
            http_request(api, method, path, &[("Authorization", &viewer)], b"{}").await;
        assert_eq!(status, 403, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulators_are_started_listed_restarted_and_stopped_over_rest() {
    let system = System::start().await;
    let _manager = system
        .start_manager(wasmbed_e2e::emulated::sim_backend())
        .await;
    let api = start_api(&system, vec![token("admin", ADMIN, Access::ReadWrite)]).await;

    // Bad bodies name the field; a board the firmware cannot run is refused with the reason.
    let (status, body) = send_json(
        api,
        "POST",
        "/api/v1/emulators",
        &json!({ "mcu": "Mps2An385" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("device_id"),
        "{body}"
    );
    let (status, body) = send_json(
        api,
        "POST",
        "/api/v1/emulators",
        &json!({ "device_id": "emu-1", "mcu": "Pdp11" }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in the MCU catalogue"),
        "{body}"
    );

    // The manager may still be catching up: the first start is retried until it answers.
    let mut started = (0, Value::Null);
    for _ in 0..100 {
        started = send_json(
            api,
            "POST",
            "/api/v1/emulators",
            &json!({ "device_id": "emu-1" }),
        )
        .await;
        if started.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(started.0, 201, "{}", started.1);
    let list = wait_json(api, "/api/v1/emulators", |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["device_id"] == "emu-1" && e["state"] == "running")
        })
    })
    .await;
    let emu = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["device_id"] == "emu-1")
        .unwrap()
        .clone();
    assert_eq!(
        (
            emu["mcu"].as_str(),
            emu["backend"].as_str(),
            emu["attempt"].as_u64()
        ),
        (Some("Mps2An385"), Some("sim"), Some(1))
    );
    // The emulated device enrolls and shows up as a device.
    wait_json(api, "/api/v1/devices/emu-1", |d| d["state"] == "online").await;

    let (status, body) =
        send_json(api, "POST", "/api/v1/emulators/emu-1/restart", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    wait_json(api, "/api/v1/emulators", |v| {
        v[0]["attempt"] == 2 && v[0]["state"] == "running"
    })
    .await;
    let (status, body) = send_json(api, "DELETE", "/api/v1/emulators/emu-1", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let list = wait_json(api, "/api/v1/emulators", |v| v[0]["state"] == "stopped").await;
    assert_eq!(list[0]["instance"], Value::Null);
    let (status, body) = send_json(api, "DELETE", "/api/v1/emulators/emu-1", &json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = send_json(api, "DELETE", "/api/v1/emulators/Not.An.Id", &json!({})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn devices_are_registered_listed_shown_and_decommissioned() {
    let system = System::start().await;
    let api = start_api(
        &system,
        vec![
            token("admin", ADMIN, Access::ReadWrite),
            token("dashboard", VIEWER, Access::ReadOnly),
        ],
    )
    .await;
    let key = random_key();
    let public_key: String = key
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let register = json!({
        "device_id": "dev-1", "public_key": public_key, "mcu": "Mps2An385",
        "labels": {"room": "lab"}
    });
    let (status, body) = send_json(api, "POST", "/api/v1/devices", &register).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["sequence"].as_u64().unwrap() > 0);
    // Read your write: the list already has it.
    let (_, list) = get(api, "/api/v1/devices").await;
    assert_eq!(list[0]["device_id"], "dev-1");
    assert_eq!(list[0]["state"], "registered");
    assert_eq!(list[0]["labels"]["room"], "lab");

    // The device connects: the api shows it online, on the gateway.
    let mut sim = system.sim(key);
    sim.wait_for(|s| s.connected, T).await.unwrap();
    let shown = wait_json(api, "/api/v1/devices/dev-1", |d| {
        d["state"] == "online" && d["last_heard"].is_string()
    })
    .await;
    assert_eq!(shown["gateway_id"], "gw-e2e");
    let gateways = wait_json(api, "/api/v1/gateways", |g| g[0]["devices"][0] == "dev-1").await;
    assert_eq!(gateways[0]["running"], true);

    // Bad input: the message names what is wrong.
    let (status, body) = send_json(
        api,
        "POST",
        "/api/v1/devices",
        &json!({"device_id": "dev-2"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("public_key"),
        "{body}"
    );
    let (status, body) = send_json(
        api,
        "POST",
        "/api/v1/devices",
        &json!({"device_id": "Not_An_Id", "public_key": public_key}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = get(api, "/api/v1/devices/NOT_AN_ID").await;
    assert_eq!(status, 400);
    let (status, _) = get(api, "/api/v1/devices/nobody").await;
    assert_eq!(status, 404);
    let other_key: String = random_key()
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let other = json!({"device_id": "dev-1", "public_key": other_key});
    let (status, body) = send_json(api, "POST", "/api/v1/devices", &other).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_exists");
    // A small-order key (here the identity point) would let anyone forge its signatures.
    let identity = format!("01{}", "00".repeat(31));
    let weak = json!({"device_id": "dev-weak", "public_key": identity});
    let (status, body) = send_json(api, "POST", "/api/v1/devices", &weak).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("full order"),
        "{body}"
    );

    let (status, body) = send_json(
        api,
        "DELETE",
        "/api/v1/devices/dev-1",
        &json!({"reason": "retired"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Gone from its own address (404, as after any DELETE); still in the list, as
    // decommissioned, and its history in the log.
    let (status, shown) = get(api, "/api/v1/devices/dev-1").await;
    assert_eq!(status, 404, "{shown}");
    assert!(
        shown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("decommissioned")
    );
    let (_, list) = get(api, "/api/v1/devices").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == "dev-1")
        .unwrap();
    assert_eq!(listed["state"], "decommissioned");
    let (_, history) = get(api, "/api/v1/events?kind=device&id=dev-1").await;
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["envelope"]["event"]["type"] == "DeviceDecommissioned"),
        "{history}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn applications_go_through_their_whole_life_over_rest() {
    let system = System::start().await;
    let api = start_api(
        &system,
        vec![
            token("admin", ADMIN, Access::ReadWrite),
            token("dashboard", VIEWER, Access::ReadOnly),
        ],
    )
    .await;
    let (device, sim) = system.device("dev-1", &[]).await;
    let metadata = json!({
        "app_id": "climate",
        "target": {"kind": "devices", "value": [device.as_str()]},
        "config": "6c6162"
    });
    let metadata = serde_json::to_vec(&metadata).unwrap();
    let (status, body) = post_multipart(
        api,
        "/api/v1/applications",
        &[
            ("metadata", &metadata),
            ("module", wasmbed_example_apps::SENSOR),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sha256"].as_str().unwrap().len(), 64);
    let (status, body) = send_json(
        api,
        "POST",
        "/api/v1/applications/climate/deploy",
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let app = wait_json(api, "/api/v1/applications/climate", |a| {
        a["devices"]["dev-1"]["phase"] == "running"
    })
    .await;
    assert_eq!(app["desired"], json!({"state": "running", "version": 1}));
    assert_eq!(app["limits"]["max_memory_pages"], 2);
    let (_, shown) = get(api, "/api/v1/devices/dev-1").await;
    assert_eq!(shown["apps"]["climate"]["phase"], "running");
    let metrics = wait_json(api, "/metrics", |m| {
        m.as_str()
            .is_some_and(|t| t.lines().any(|l| l == "wasmbed_apps_running 1"))
    })
    .await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.lines().any(|l| l == "wasmbed_devices_online 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l == "wasmbed_applications 1"),
        "{metrics}"
    );

    // Update, stop, delete.
    let (status, body) = post_multipart(
        api,
        "/api/v1/applications/climate/update",
        &[("module", wasmbed_example_apps::COUNTER)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_json(api, "/api/v1/applications/climate", |a| {
        a["devices"]["dev-1"]["phase"] == "running" && a["devices"]["dev-1"]["version"] == 2
    })
    .await;
    let (status, _) = send_json(api, "POST", "/api/v1/applications/climate/stop", &json!({})).await;
    assert_eq!(status, 200);
    wait_json(api, "/api/v1/applications/climate", |a| {
        a["devices"]["dev-1"]["phase"] == "stopped"
    })
    .await;
    let (status, _) = send_json(api, "DELETE", "/api/v1/applications/climate", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(get(api, "/api/v1/applications/climate").await.0, 404);

    // Refusals keep their meaning as statuses, with the reason.
    let forking = b"\0asm\x01\0\0\0";
    let meta = serde_json::to_vec(&json!({"app_id": "bad", "target": {"kind": "all"}})).unwrap();
    let (status, body) = post_multipart(
        api,
        "/api/v1/applications",
        &[("metadata", &meta), ("module", forking)],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("tick"),
        "{body}"
    );
    let (status, body) = post_multipart(api, "/api/v1/applications", &[("metadata", &meta)]).await;
    assert_eq!(
        (status, body["error"]["message"].as_str().unwrap()),
        (400, "module: missing")
    );
    let unknown =
        serde_json::to_vec(&json!({"app_id": "x", "target": {"kind": "all"}, "colour": 1}))
            .unwrap();
    let (status, body) = post_multipart(
        api,
        "/api/v1/applications",
        &[
            ("metadata", &unknown),
            ("module", wasmbed_example_apps::SENSOR),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );
    let (status, _) = send_json(
        api,
        "POST",
        "/api/v1/applications/nothing/deploy",
        &json!({}),
    )
    .await;
    assert_eq!(status, 404);
    sim.stop().await;
}

/// A device that went away is not known to run anything: its apps show their last report, with
/// `current: false`, and do not count as running.
#[tokio::test]
async fn an_app_is_running_only_while_its_device_says_so() {
    let system = System::start().await;
    let api = start_api(&system, vec![token("admin", ADMIN, Access::ReadWrite)]).await;
    let (device, sim) = system.device("dev-1", &[]).await;
    let metadata = json!({
        "app_id": "climate",
        "target": {"kind": "devices", "value": [device.as_str()]},
    });
    let metadata = serde_json::to_vec(&metadata).unwrap();
    let (status, body) = post_multipart(
        api,
        "/api/v1/applications",
        &[
            ("metadata", &metadata),
            ("module", wasmbed_example_apps::SENSOR),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = send_json(
        api,
        "POST",
        "/api/v1/applications/climate/deploy",
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let app = wait_json(api, "/api/v1/applications/climate", |a| {
        a["devices"]["dev-1"]["phase"] == "running"
    })
    .await;
    assert_eq!(app["devices"]["dev-1"]["current"], true, "{app}");
    wait_json(api, "/metrics", |m| {
        m.as_str()
            .is_some_and(|t| t.lines().any(|l| l == "wasmbed_apps_running 1"))
    })
    .await;

    sim.stop().await;
    let shown = wait_json(api, "/api/v1/devices/dev-1", |d| {
        d["state"] == "disconnected"
    })
    .await;
    let last = &shown["apps"]["climate"];
    assert_eq!(
        (&last["phase"], &last["current"]),
        (&json!("running"), &json!(false)),
        "{shown}"
    );
    let (_, app) = get(api, "/api/v1/applications/climate").await;
    assert_eq!(app["devices"]["dev-1"]["current"], false, "{app}");
    let (_, metrics) = get(api, "/metrics").await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.lines().any(|l| l == "wasmbed_apps_running 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_log_is_paged_and_filtered() {
    let system = System::start().await;
    let api = start_api(
        &system,
        vec![
            token("admin", ADMIN, Access::ReadWrite),
            token("dashboard", VIEWER, Access::ReadOnly),
        ],
    )
    .await;
    let (_, sim) = system.device("dev-1", &[]).await;
    let (status, first) = get(api, "/api/v1/events?limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let after = first["next_after"].as_u64().unwrap();
    assert_eq!(after, first["events"][1]["sequence"].as_u64().unwrap());
    let (_, second) = get(api, &format!("/api/v1/events?after={after}&limit=2")).await;
    assert!(second["events"][0]["sequence"].as_u64().unwrap() > after);

    let (_, device) = get(api, "/api/v1/events?kind=device&id=dev-1").await;
    let types: Vec<&str> = device["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["envelope"]["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        &types[..3],
        ["DeviceRegistered", "DeviceEnrolled", "DeviceConnected"]
    );
    // The largest sequence there is: nothing after it (found by schemathesis: it overflowed).
    let (status, none) = get(api, "/api/v1/events?after=18446744073709551615").await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["events"], json!([]));
    // An id alone: whatever has that id, of any kind.
    let (status, any) = get(api, "/api/v1/events?id=dev-1").await;
    assert_eq!(status, 200, "{any}");
    assert_eq!(any["events"], device["events"]);
    for bad in [
        "/api/v1/events?limit=0",
        "/api/v1/events?kind=planet",
        "/api/v1/events?id=Dev_1",
        "/api/v1/events?kind=deployment&id=a.b.c",
        "/api/v1/events?after=minus",
    ] {
        let (status, body) = get(api, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    sim.stop().await;
}

/// Reads a Server-Sent Events response line by line until `want` is seen in a `data:` line
/// that follows an `event: {event}` line; returns that data.
async fn sse_until(
    addr: SocketAddr,
    path: String,
    event: &'static str,
    want: &'static str,
) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut current = String::new();
    let found = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(name) = line.strip_prefix("event: ") {
                current = name.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                if current == event && data.contains(want) {
                    return data.to_owned();
                }
            }
        }
        panic!("stream ended before {event} with {want}");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {event} with {want} on {path}"))
}

#[tokio::test]
async fn live_streams_carry_events_telemetry_and_console_lines() {
    let system = System::start().await;
    let api = start_api(
        &system,
        vec![
            token("admin", ADMIN, Access::ReadWrite),
            token("dashboard", VIEWER, Access::ReadOnly),
        ],
    )
    .await;
    // The log, live, with a read-only token in the query (as EventSource sends it).
    let events = tokio::spawn(sse_until(
        api,
        format!("/api/v1/stream/events?token={VIEWER}"),
        "DeviceConnected",
        "\"dev-1\"",
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (device, sim) = system.device("dev-1", &[]).await;
    let data = events.await.unwrap();
    let logged: Value = serde_json::from_str(&data).unwrap();
    assert!(logged["sequence"].as_u64().unwrap() > 0);

    let telemetry = tokio::spawn(sse_until(
        api,
        format!("/api/v1/stream/telemetry/{device}?token={VIEWER}"),
        "telemetry",
        "temperature",
    ));
    let console = tokio::spawn(sse_until(
        api,
        format!("/api/v1/stream/console/{device}?token={VIEWER}"),
        "log",
        "sensor started",
    ));
    let uart = tokio::spawn(sse_until(
        api,
        format!("/api/v1/stream/console/{device}?token={VIEWER}"),
        "uart",
        "booted",
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metadata =
        serde_json::to_vec(&json!({"app_id": "sensor", "target": {"kind": "all"}})).unwrap();
    let (status, body) = post_multipart(
        api,
        "/api/v1/applications",
        &[
            ("metadata", &metadata),
            ("module", wasmbed_example_apps::SENSOR),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    send_json(
        api,
        "POST",
        "/api/v1/applications/sensor/deploy",
        &json!({}),
    )
    .await;
    system
        .client
        .publish(
            wasmbed_schemas::subject::emulator_uart(&device),
            "booted\r\n".into(),
        )
        .await
        .unwrap();
    let reading: Value = serde_json::from_str(&telemetry.await.unwrap()).unwrap();
    assert_eq!(reading["app_id"], "sensor");
    assert_eq!(reading["topic"], "temperature");
    let text: Value = serde_json::from_str(reading["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["device"], "dev-1");
    let log: Value = serde_json::from_str(&console.await.unwrap()).unwrap();
    assert_eq!(log["app_id"], "sensor");
    assert_eq!(uart.await.unwrap(), "booted");
    assert_eq!(http_get(api, "/api/v1/stream/events").await.0, 401);
    sim.stop().await;
    // The api did all of this (uploads, commands, streams, the liveness read model) as its own
    // NATS user, within its permissions.
    assert_eq!(system.nats.permission_violations(), Vec::<String>::new());
}

/// The status line of a request, without waiting for the body (streams never end).
async fn status_of(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    status_with(addr, method, path, Some(ADMIN)).await
}

async fn status_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let system = System::start().await;
    let api = start_api(
        &system,
        vec![
            token("admin", ADMIN, Access::ReadWrite),
            token("dashboard", VIEWER, Access::ReadOnly),
        ],
    )
    .await;
    let (status, doc) = get(api, "/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(operations.len() >= 19, "{operations:?}");
    // Every documented operation is served: the router's own 404 (no JSON body) or 405 would
    // mean the document lies.
    for (method, path) in &operations {
        let concrete = path.replace("{id}", "nobody");
        let (status, text) = status_of(api, method, &concrete).await;
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status != 404 || text.contains("not_found"),
            "{method} {path}: {text}"
        );
        assert_ne!(status, 0, "{method} {path}");
        // And every one but the page and the health check wants a token.
        if path != "/" && path != "/health" {
            let (status, _) = status_with(api, method, &concrete, None).await;
            assert_eq!(status, 401, "{method} {path} without a token");
            let (status, _) = status_with(api, method, &concrete, Some("wrong")).await;
            assert_eq!(status, 401, "{method} {path} with a wrong token");
        }
    }
    // And a route that is not documented is not served.
    assert_eq!(status_of(api, "PUT", "/api/v1/devices").await.0, 405);
    assert_eq!(status_of(api, "GET", "/api/v1/nothing").await.0, 404);
    // Every referenced schema is in the components.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in text.split("#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
}

#[tokio::test]
async fn a_rollout_is_started_watched_approved_and_aborted_over_rest() {
    let system = System::start().await;
    let api = start_api(&system, vec![token("admin", ADMIN, Access::ReadWrite)]).await;
    let (_, one) = system.device("dev-1", &[]).await;
    let (_, two) = system.device("dev-2", &[]).await;
    let metadata =
        serde_json::to_vec(&json!({"app_id": "climate", "target": {"kind": "all"}})).unwrap();
    let (status, body) = post_multipart(
        api,
        "/api/v1/applications",
        &[
            ("metadata", &metadata),
            ("module", wasmbed_example_apps::SENSOR),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    send_json(
        api,
        "POST",
        "/api/v1/applications/climate/deploy",
        &json!({}),
    )
    .await;

    // Bad waves and an unknown field are refused before anything is uploaded or recorded.
    for (meta, needle) in [
        (json!({"waves": "150%"}), "150%"),
        (json!({"waves": "1"}), "cover 1 of the target's 2"),
        (
            json!({"waves": "rest", "max_failures": "lots"}),
            "max_failures",
        ),
        (json!({"waves": "rest", "colour": 1}), "colour"),
    ] {
        let meta = serde_json::to_vec(&meta).unwrap();
        let (status, body) = post_multipart(
            api,
            "/api/v1/applications/climate/rollouts",
            &[
                ("metadata", &meta),
                ("module", wasmbed_example_apps::COUNTER),
            ],
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    let (status, body) = get(api, "/api/v1/applications/climate/rollouts").await;
    assert_eq!((status, body), (200, json!([])));
    let (status, _) = send_json(
        api,
        "POST",
        "/api/v1/applications/climate/rollout/approve",
        &json!({}),
    )
    .await;
    assert_eq!(status, 404);

    let meta =
        serde_json::to_vec(&json!({"waves": "1,rest", "soak_ms": 300, "approve_each": true}))
            .unwrap();
    let (status, started) = post_multipart(
        api,
        "/api/v1/applications/climate/rollouts",
        &[
            ("metadata", &meta),
            ("module", wasmbed_example_apps::COUNTER),
        ],
    )
    .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["wave_devices"], json!([1, 1]));
    let waiting = wait_json(api, "/api/v1/applications/climate", |a| {
        a["rollout"]["state"] == "awaiting_approval"
    })
    .await;
    assert_eq!(waiting["rollout"]["waves"][0]["state"], "passed");
    assert_eq!(waiting["rollout"]["waves"][0]["passed"], 1);
    let (status, body) = send_json(
        api,
        "POST",
        "/api/v1/applications/climate/rollout/approve",
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_json(api, "/api/v1/applications/climate/rollouts", |r| {
        r[0]["state"] == "completed"
    })
    .await;
    let app = wait_json(api, "/api/v1/applications/climate", |a| {
        a["devices"]["dev-1"]["version"] == 2 && a["devices"]["dev-2"]["version"] == 2
    })
    .await;
    assert_eq!(app["desired"], json!({"state": "running", "version": 2}));

    // A long soak, aborted with a reason: the rollback is in the view.
    let meta = serde_json::to_vec(&json!({"waves": "1,rest", "soak_ms": 60000})).unwrap();
    let (status, _) = post_multipart(
        api,
        "/api/v1/applications/climate/rollouts",
        &[
            ("metadata", &meta),
            ("module", wasmbed_example_apps::SENSOR),
        ],
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = send_json(
        api,
        "POST",
        "/api/v1/applications/climate/rollout/abort",
        &json!({"reason": "wrong build"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rollouts = wait_json(api, "/api/v1/applications/climate/rollouts", |r| {
        r[0]["state"] == "rolled_back"
    })
    .await;
    assert_eq!(rollouts[0]["number"], 2);
    assert!(
        rollouts[0]["halted"]
            .as_str()
            .unwrap()
            .contains("wrong build"),
        "{rollouts}"
    );
    one.stop().await;
    two.stop().await;
}
