//! Device liveness end to end: a simulated device over real TLS to a real gateway, enrollment
//! and the telemetry service, all on one real nats-server.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use wasmbed_bus::call;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_gateway::{GatewayConfig, Listeners};
use wasmbed_schemas::command::{GetCaCertificate, RegisterDevice};
use wasmbed_schemas::event::Event;
use wasmbed_schemas::{AggregateId, DeviceId, GatewayId, PublicKey};
use wasmbed_sim::{Connector, SimConfig, SimDevice, random_key};
use wasmbed_telemetry::TelemetryConfig;
use wasmbed_test_support::{NatsServer, http_get};

const HEARTBEAT: Duration = Duration::from_millis(200);
const T: Duration = Duration::from_secs(15);

async fn liveness_story(log: &EventLog, device: &DeviceId) -> Vec<&'static str> {
    log.read(&AggregateId::Device(device.clone()))
        .await
        .unwrap()
        .iter()
        .filter_map(|e| match e.envelope.event {
            Event::DeviceConnected(_) => Some("connected"),
            Event::DeviceDisconnected(_) => Some("disconnected"),
            Event::DeviceWentOffline(_) => Some("offline"),
            Event::DeviceBackOnline(_) => Some("online"),
            _ => None,
        })
        .collect()
}

async fn wait_story(log: &EventLog, device: &DeviceId, want: &[&str]) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let got = liveness_story(log, device).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {want:?}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_device_that_disappears_goes_offline_once_and_comes_back_online_once() {
    offline_once_and_back_once(1).await;
}

/// Two telemetry services at once decide every transition, both append it under the same
/// derived id, and the log keeps one; one of them killed, the other carries on alone.
#[tokio::test]
async fn two_telemetry_services_record_each_transition_once_and_one_survives_the_other() {
    offline_once_and_back_once(2).await;
}

async fn offline_once_and_back_once(instances: usize) {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let never = std::future::pending::<()>;

    tokio::spawn(wasmbed_enrollment::run(
        nats.client().await.unwrap(),
        wasmbed_enrollment::EnrollmentConfig::new(ca_dir.path().to_path_buf()),
        never(),
    ));
    let mut ca = None;
    for _ in 0..100 {
        if let Ok(reply) = call(&client, &GetCaCertificate {}, Duration::from_millis(200)).await {
            ca = Some(reply.certificate_pem);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ca = ca.expect("enrollment answers");

    let mut gateway_config = GatewayConfig::new(GatewayId::new("gw-e2e").unwrap());
    gateway_config.heartbeat_interval = HEARTBEAT;
    let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (gateway_addr, gateway_http_addr) = (
        tls.local_addr().unwrap(),
        gateway_http.local_addr().unwrap(),
    );
    tokio::spawn(wasmbed_gateway::run(
        nats.client().await.unwrap(),
        gateway_config,
        Listeners {
            tls,
            http: gateway_http,
        },
        never(),
    ));
    let mut telemetry = Vec::new();
    let mut ready = vec![(gateway_http_addr, "/ready")];
    for _ in 0..instances {
        let telemetry_http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ready.push((telemetry_http.local_addr().unwrap(), "/health"));
        telemetry.push(tokio::spawn(wasmbed_telemetry::run(
            nats.client().await.unwrap(),
            TelemetryConfig {
                heartbeat_interval: HEARTBEAT,
                missed_heartbeats: 3,
                sweep_interval: Duration::from_millis(50),
                runtime: Default::default(),
            },
            telemetry_http,
            never(),
        )));
    }
    let telemetry_addr = ready[1].0;
    for (addr, path) in ready {
        let deadline = tokio::time::Instant::now() + T;
        while http_get(addr, path).await.0 != 200 {
            assert!(tokio::time::Instant::now() < deadline, "{addr} never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let key = random_key();
    let device = DeviceId::new("sensor-1").unwrap();
    call(
        &client,
        &RegisterDevice {
            device_id: device.clone(),
            public_key: PublicKey(key.verifying_key().to_bytes()),
            mcu: None,
            labels: Default::default(),
        },
        T,
    )
    .await
    .unwrap();
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .unwrap();
    let connector = Connector::new(&ca, "localhost").unwrap();
    let config = Arc::new(SimConfig::new(vec![gateway_addr]));

    // Connected and heart-beating: online, no transition.
    let mut sim = SimDevice::spawn(connector.clone(), config.clone(), key.clone());
    sim.wait_for(|s| s.connected, T).await.unwrap();
    tokio::time::sleep(HEARTBEAT * 5).await;
    assert_eq!(liveness_story(&log, &device).await, ["connected"]);
    let (_, metrics) = http_get(telemetry_addr, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l == "wasmbed_devices_online 1"),
        "{metrics}"
    );

    // Gone: the gateway records the disconnect, the telemetry service the silence, once.
    sim.stop().await;
    wait_story(&log, &device, &["connected", "disconnected", "offline"]).await;
    tokio::time::sleep(HEARTBEAT * 5).await;
    assert_eq!(
        liveness_story(&log, &device).await,
        ["connected", "disconnected", "offline"]
    );

    // With two instances, the first is killed (its task dropped mid-loop): the other records
    // the next transition alone.
    if instances > 1 {
        telemetry.remove(0).abort();
    }

    // Back: connected again, and back online once.
    let mut sim = SimDevice::spawn(connector, config, key);
    sim.wait_for(|s| s.connected, T).await.unwrap();
    wait_story(
        &log,
        &device,
        &[
            "connected",
            "disconnected",
            "offline",
            "connected",
            "online",
        ],
    )
    .await;
    tokio::time::sleep(HEARTBEAT * 5).await;
    assert_eq!(
        liveness_story(&log, &device).await,
        [
            "connected",
            "disconnected",
            "offline",
            "connected",
            "online"
        ]
    );
    sim.stop().await;
}
