//! Every service's `/metrics` after one deployment, each service its own process (the projector
//! against a Kubernetes API that is not there): the text
//! parses with the Python Prometheus client's strict OpenMetrics parser, holds the latency
//! histograms with observations where the service did the work, and names every metric that the
//! alert rules and the dashboard in `k8s/monitoring/` query (so neither watches a name nobody
//! exposes).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use wasmbed_bus::call;
use wasmbed_e2e::T;
use wasmbed_e2e::apps::create_application;
use wasmbed_e2e::cluster::{Cluster, register, wait_connected};
use wasmbed_schemas::command::StartEmulator;
use wasmbed_schemas::event::Target;
use wasmbed_schemas::{AppId, DeviceId};
use wasmbed_test_support::{http_request, workspace_root};

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

/// A kubeconfig naming an API server nobody runs.
const UNREACHABLE_KUBE_API: &str = "apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: \"http://127.0.0.1:9\"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: wasmbed}}]
current-context: none
";

/// Sample name → the sum of its values, per service, as the Python parser read them.
type Parsed = BTreeMap<String, BTreeMap<String, f64>>;

/// Runs the Python parser over each service's text.
fn parse(texts: &BTreeMap<String, String>) -> Parsed {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (service, text) in texts {
        let path = dir.path().join(format!("{service}.txt"));
        std::fs::write(&path, text).unwrap();
        paths.push((service.clone(), path));
    }
    let root = workspace_root();
    let output = std::process::Command::new(root.join(".tools/venv/bin/python"))
        .arg(root.join("services/cli/tests/support/openmetrics.py"))
        .args(paths.iter().map(|(_, p)| p))
        .output()
        .expect("the Python parser runs (scripts/setup installs prometheus-client)");
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused a service's /metrics: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let by_path: BTreeMap<String, BTreeMap<String, f64>> =
        serde_json::from_slice(&output.stdout).unwrap();
    paths
        .into_iter()
        .map(|(service, path)| (service, by_path[path.to_str().unwrap()].clone()))
        .collect()
}

/// The `wasmbed_…` names a PromQL text uses.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("wasmbed_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_exposes_parseable_metrics_with_its_histograms_after_a_deploy() {
    // The projector's Kubernetes API answers nothing (there is none here): it serves /metrics
    // all the same.
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = kube.path().join("config");
    std::fs::write(&kubeconfig, UNREACHABLE_KUBE_API).unwrap();
    let env = vec![("KUBECONFIG".to_owned(), kubeconfig.display().to_string())];
    let mut cluster = Cluster::start_with_env(Path::new(WASMBED), env).await;
    cluster.start_renode_manager("renode-manager").await;
    cluster.start_projector("projector").await;
    let (api, token) = cluster.start_api("api").await;
    let (ids, keys) = register(&cluster, 3).await;
    let gateways = vec![cluster.gateway("gw-a"), cluster.gateway("gw-b")];
    let mut devices = cluster.devices(&keys, gateways);
    wait_connected(&mut devices, 1, Instant::now()).await;
    // An emulated device too: the renode-manager registers it with enrollment and starts it.
    let emulated = DeviceId::new("emulated-1").unwrap();
    let start = StartEmulator {
        device_id: emulated.clone(),
        mcu: "Nrf52840DK".into(),
        simulated: false,
        labels: Default::default(),
    };
    call(&cluster.client, &start, T).await.unwrap();

    // The deployment goes through the REST api: api → deployer → gateways → devices.
    let sensor = AppId::new("sensor").unwrap();
    create_application(
        &cluster.client,
        &cluster.log,
        &sensor,
        wasmbed_example_apps::SENSOR,
        Target::All,
        wasmbed_e2e::test_limits(),
        None,
    )
    .await
    .unwrap();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let (status, body) = http_request(
        api,
        "POST",
        &format!("/api/v1/applications/{sensor}/deploy"),
        &auth,
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut everyone = ids.clone();
    everyone.push(emulated);
    cluster.wait_running(&sensor, &everyone, T).await;
    // Heartbeats and telemetry of a few intervals.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut texts = BTreeMap::new();
    for (service, addr) in cluster.metrics_endpoints() {
        let (status, text) = http_request(addr, "GET", "/metrics", &auth, &[]).await;
        assert_eq!(status, 200, "{service}: {text}");
        texts.insert(service, text);
    }
    let services: Vec<&str> = texts.keys().map(String::as_str).collect();
    assert_eq!(
        services,
        [
            "api",
            "deployer",
            "enrollment",
            "gw-a",
            "gw-b",
            "projector",
            "renode-manager",
            "telemetry"
        ]
    );
    let parsed = parse(&texts);
    for (service, samples) in &parsed {
        println!("{service}: {} samples", samples.len());
    }

    // Each histogram, observed where its work was done.
    let observed = |service: &str, count: &str| parsed[service].get(count).copied().unwrap_or(0.0);
    let want = [
        ("api", "wasmbed_command_round_trip_seconds_count"),
        ("deployer", "wasmbed_command_handling_seconds_count"),
        ("deployer", "wasmbed_event_append_seconds_count"),
        ("deployer", "wasmbed_deployment_seconds_count"),
        ("enrollment", "wasmbed_command_handling_seconds_count"),
        ("enrollment", "wasmbed_event_append_seconds_count"),
        ("renode-manager", "wasmbed_command_handling_seconds_count"),
        ("renode-manager", "wasmbed_command_round_trip_seconds_count"),
        ("telemetry", "wasmbed_heartbeat_lag_seconds_count"),
        // Every attempt fails here (no API server), and is measured all the same.
        ("projector", "wasmbed_projection_apply_seconds_count"),
    ];
    for (service, count) in want {
        assert!(
            observed(service, count) >= 1.0,
            "{service} has no observation in {count}:\n{}",
            texts[service]
        );
    }
    // Every device ran the app once: one deployment observation per device.
    assert_eq!(
        observed("deployer", "wasmbed_deployment_seconds_count"),
        everyone.len() as f64
    );
    // Sessions and telemetry split over the gateways; together, every device.
    let both = |count: &str| observed("gw-a", count) + observed("gw-b", count);
    assert!(both("wasmbed_gateway_session_setup_seconds_count") >= everyone.len() as f64);
    assert!(both("wasmbed_gateway_telemetry_forward_seconds_count") >= 1.0);

    // What the alerts and the dashboard query exists somewhere.
    let exposed: BTreeSet<&str> = parsed
        .values()
        .flat_map(|samples| samples.keys().map(String::as_str))
        .collect();
    let monitoring = workspace_root().join("k8s/monitoring");
    for file in ["prometheusrule.yaml", "fleet-dashboard.json"] {
        let text = std::fs::read_to_string(monitoring.join(file)).unwrap();
        let names = names_in(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        let unknown: Vec<&String> = names
            .iter()
            .filter(|n| !exposed.contains(n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics no service exposes: {unknown:?}"
        );
    }
}
