//! One `wasmbed app deploy` is one trace: every service is its own process exporting over
//! OTLP/HTTP to a receiver the test owns (decoding the real OTLP protobuf), and the spans of the
//! CLI, the deployer, both gateways' downlinks and the devices' acknowledgements share one trace
//! id, start in that order, and name the device and the app.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;
use wasmbed_e2e::T;
use wasmbed_e2e::cluster::{Cluster, register, wait_connected};
use wasmbed_e2e::otlp::{ReceivedSpan, Receiver};
use wasmbed_schemas::AppId;
use wasmbed_schemas::permissions::Principal;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_deploy_is_one_trace_from_the_cli_to_the_devices_acknowledgements() {
    let receiver = Receiver::start().await;
    let otel = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver.endpoint(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    let cluster = Cluster::start_with_env(Path::new(WASMBED), otel.clone()).await;
    let (ids, keys) = register(&cluster, 2).await;
    let gateways = vec![cluster.gateway("gw-a"), cluster.gateway("gw-b")];
    let mut devices = cluster.devices(&keys, gateways);
    wait_connected(&mut devices, 1, Instant::now()).await;

    let operator = cluster
        .nats
        .users()
        .password(Principal::Operator)
        .to_owned();
    let port = cluster.nats.url().rsplit(':').next().unwrap().to_owned();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(WASMBED)
            .args(["app", "deploy", "--example", "sensor", "--app-id", "sensor"])
            .args(["--to", "all", "--wait", "20s"])
            .env(
                "NATS_URL",
                format!("nats://operator:{operator}@127.0.0.1:{port}"),
            )
            .envs(otel)
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
    let sensor = AppId::new("sensor").unwrap();
    cluster.wait_running(&sensor, &ids, T).await;

    // The services export every 100 ms; the CLI flushed on exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (root, trace) = loop {
        let spans = receiver.spans();
        let root = spans
            .iter()
            .find(|s| s.name == "app deploy" && s.service == "wasmbed-cli")
            .cloned();
        if let Some(root) = root {
            let trace: Vec<ReceivedSpan> = spans
                .into_iter()
                .filter(|s| s.trace_id == root.trace_id)
                .collect();
            // Each process exports on its own schedule: wait for every hop of every device.
            let has = |service: &str, name: &str, device: &str| {
                trace.iter().any(|s| {
                    s.service == service
                        && s.name == name
                        && s.attributes.get("device").map(String::as_str) == Some(device)
                })
            };
            let complete = ids.iter().all(|id| {
                [
                    ("wasmbed-deployer", "downlink"),
                    ("wasmbed-gateway", "downlink"),
                    ("wasmbed-gateway", "uplink"),
                    ("wasmbed-deployer", "uplink"),
                ]
                .iter()
                .all(|(service, name)| has(service, name, id.as_str()))
            });
            // And every span's parent has arrived too.
            let ids_in_trace: BTreeSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
            let dangling = trace.iter().any(|s| {
                !s.parent_span_id.is_empty() && !ids_in_trace.contains(s.parent_span_id.as_str())
            });
            if complete && !dangling {
                break (root, trace);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete trace within 10 s (every hop of every device, no span whose parent \
             is missing); received: {:#?}",
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let services: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    println!(
        "one trace {}: {} spans from {services:?}",
        root.trace_id,
        trace.len()
    );
    let mut ordered = trace.clone();
    ordered.sort_by_key(|s| s.start);
    for s in &ordered {
        let device = s.attributes.get("device").map_or("", String::as_str);
        println!(
            "  +{:>7.1} ms  {:<17} {:<16} {device}",
            (s.start - root.start) as f64 / 1e6,
            s.service,
            s.name
        );
    }
    for service in ["wasmbed-cli", "wasmbed-deployer", "wasmbed-gateway"] {
        assert!(
            services.contains(service),
            "{service} missing: {services:?}"
        );
    }
    assert_eq!(root.parent_span_id, "", "the CLI's span is the root");
    assert_eq!(
        root.attributes.get("app").map(String::as_str),
        Some("sensor")
    );

    // In order, for each device: the deployer's command, its downlink to the device, the
    // gateway delivering it, the gateway forwarding the device's answer, the deployer taking it.
    let first = |service: &str, name: &str, device: Option<&str>| -> u64 {
        trace
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .filter(|s| {
                device.is_none_or(|d| s.attributes.get("device").map(String::as_str) == Some(d))
            })
            .map(|s| s.start)
            .min()
            .unwrap_or_else(|| panic!("no {name} span of {service} for {device:?}"))
    };
    // The gateway's spans of a deployment's frames link to the device's session (a trace of
    // its own, open as long as the device is connected).
    for span in trace.iter().filter(|s| s.service == "wasmbed-gateway") {
        assert!(
            span.links
                .iter()
                .any(|(trace_id, _)| *trace_id != root.trace_id),
            "{} of the gateway for {:?} has no link to its session: {:?}",
            span.name,
            span.attributes.get("device"),
            span.links
        );
    }
    // The deployer's latency histograms point to this trace (OpenMetrics exemplars).
    let deployer = cluster
        .metrics_endpoints()
        .into_iter()
        .find(|(name, _)| name == "deployer")
        .unwrap()
        .1;
    let (_, metrics) = wasmbed_test_support::http_get(deployer, "/metrics").await;
    let exemplar = format!("# {{trace_id=\"{}\"}}", root.trace_id);
    for histogram in [
        "wasmbed_command_handling_seconds_bucket",
        "wasmbed_deployment_seconds_bucket",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(histogram) && l.contains(&exemplar)),
            "no exemplar of the trace in {histogram}:\n{metrics}"
        );
    }

    let command = first("wasmbed-deployer", "command", None);
    assert!(root.start <= command);
    for id in &ids {
        let device = Some(id.as_str());
        let downlink = first("wasmbed-deployer", "downlink", device);
        let delivered = first("wasmbed-gateway", "downlink", device);
        let answered = first("wasmbed-gateway", "uplink", device);
        let acknowledged = first("wasmbed-deployer", "uplink", device);
        assert!(
            command <= downlink
                && downlink <= delivered
                && delivered <= answered
                && answered <= acknowledged,
            "{id}: command {command}, downlink {downlink}, delivered {delivered}, answered {answered}, acknowledged {acknowledged}"
        );
    }
}
