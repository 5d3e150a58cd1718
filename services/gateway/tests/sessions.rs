//! Devices enroll, connect, publish and reconnect: real nats-server, enrollment and TLS.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use futures::StreamExt;
use wasmbed_e2e::gateway::{RawDevice, quick_config};
use wasmbed_e2e::{Services, System, T};
use wasmbed_schemas::device_message::HeartbeatReport;
use wasmbed_schemas::event::{EnrollmentPath, Event};
use wasmbed_schemas::frame::codec::{decode, encode_to_vec};
use wasmbed_schemas::frame::*;
use wasmbed_schemas::subject::{self, header};
use wasmbed_schemas::{AggregateId, AppId, GatewayId};
use wasmbed_sim::random_key;
use wasmbed_test_support::http_get;

fn telemetry(app: &str, seq: u32, payload: &[u8]) -> Frame {
    Frame::Telemetry(Telemetry {
        app_id: AppId::new(app).unwrap(),
        seq,
        topic: "temperature".into(),
        payload: payload.to_vec(),
    })
}

#[tokio::test]
async fn a_registered_device_enrolls_connects_and_its_telemetry_reaches_a_plain_subscriber() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    let device_id = system.register_key("sensor-1", &key, &[]).await;
    let mut telemetry_sub = system
        .client
        .subscribe(subject::TELEMETRY_ALL)
        .await
        .unwrap();
    let mut heartbeats = system
        .client
        .subscribe(subject::device_heartbeat(&device_id))
        .await
        .unwrap();

    let mut device = system.sim_to(vec![gateway.tls_addr], key);
    let status = device.wait_for(|s| s.connected, T).await.unwrap();
    assert_eq!(status.device_id.as_ref(), Some(&device_id));

    device.send(telemetry("thermo", 1, b"21.5")).await;
    let message = tokio::time::timeout(T, telemetry_sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        message.subject.as_str(),
        "wasmbed.telemetry.sensor-1.thermo"
    );
    assert_eq!(&message.payload[..], b"21.5");
    let headers = message.headers.unwrap();
    assert_eq!(headers.get(header::DEVICE).unwrap().as_str(), "sensor-1");
    assert_eq!(headers.get(header::APP).unwrap().as_str(), "thermo");
    assert_eq!(headers.get(header::SEQUENCE).unwrap().as_str(), "1");
    assert_eq!(headers.get(header::TOPIC).unwrap().as_str(), "temperature");

    // Heartbeats (every 300 ms here) are reported on the bus.
    let beat = tokio::time::timeout(T, heartbeats.next())
        .await
        .unwrap()
        .unwrap();
    let report: HeartbeatReport = serde_json::from_slice(&beat.payload).unwrap();
    assert_eq!(report.device_id, device_id);
    assert_eq!(report.gateway_id.as_str(), "gw-test");

    let events = system
        .wait_events(&AggregateId::Device(device_id.clone()), |e| e.len() >= 3)
        .await;
    assert!(matches!(events[0], Event::DeviceRegistered(_)));
    assert!(
        matches!(&events[1], Event::DeviceEnrolled(e) if e.path == EnrollmentPath::Registered && e.gateway_id.as_str() == "gw-test")
    );
    assert!(matches!(&events[2], Event::DeviceConnected(e) if e.gateway_id.as_str() == "gw-test"));

    // The gateway's own lifecycle is in the log too.
    let gw_events = system
        .events(&AggregateId::Gateway(GatewayId::new("gw-test").unwrap()))
        .await;
    assert!(
        matches!(&gw_events[0], Event::GatewayStarted(e) if e.endpoint == gateway.tls_addr.to_string())
    );

    device.stop().await;
    let events = system
        .wait_events(&AggregateId::Device(device_id), |e| e.len() >= 4)
        .await;
    assert!(
        matches!(&events[3], Event::DeviceDisconnected(e) if e.reason == "closed by the device")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn devices_reconnect_by_themselves_when_the_gateway_restarts() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let port = gateway.tls_addr.port();
    let mut devices = Vec::new();
    for n in 0..3 {
        let key = random_key();
        let id = system.register_key(&format!("dev-{n}"), &key, &[]).await;
        devices.push((id, system.sim_to(vec![gateway.tls_addr], key)));
    }
    for (_, device) in &mut devices {
        device.wait_for(|s| s.connected, T).await.unwrap();
    }

    // Graceful: every device is told to come back later.
    gateway.stop().await;
    for (_, device) in &mut devices {
        let status = device.wait_for(|s| !s.connected, T).await.unwrap();
        assert!(
            matches!(
                status.last_close,
                Some(wasmbed_device_core::CloseReason::GoAway(_))
            ),
            "{status:?}"
        );
    }
    let gateway = system.start_gateway_with(quick_config(), port).await;
    for (_, device) in &mut devices {
        device
            .wait_for(|s| s.connected && s.sessions == 2, T)
            .await
            .unwrap();
    }
    // Abrupt: the gateway vanishes mid-session; devices notice and come back all the same.
    gateway.kill().await;
    for (_, device) in &mut devices {
        device.wait_for(|s| !s.connected, T).await.unwrap();
    }
    let gateway = system.start_gateway_with(quick_config(), port).await;
    for (_, device) in &mut devices {
        device
            .wait_for(|s| s.connected && s.sessions == 3, T)
            .await
            .unwrap();
    }
    for (id, _) in &devices {
        let events = system
            .wait_events(&AggregateId::Device(id.clone()), |e| {
                e.iter()
                    .filter(|e| matches!(e, Event::DeviceConnected(_)))
                    .count()
                    == 3
            })
            .await;
        let story: Vec<&str> = events
            .iter()
            .map(|e| match e {
                Event::DeviceConnected(_) => "connected",
                Event::DeviceDisconnected(d) if d.reason == "gateway shutdown" => {
                    "gateway shutdown"
                }
                Event::DeviceDisconnected(_) => "disconnected",
                _ => "other",
            })
            .filter(|s| *s != "other")
            .collect();
        // The abrupt kill leaves no DeviceDisconnected: that gateway was gone before it could
        // say so (the telemetry service's liveness covers it).
        assert_eq!(
            story,
            ["connected", "gateway shutdown", "connected", "connected"],
            "{id}"
        );
    }
    for (_, device) in devices {
        device.stop().await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn downlink_frames_reach_the_device_and_uplink_frames_reach_the_bus() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    let id = system.register_key("dev-1", &key, &[]).await;
    let mut uplink = system
        .client
        .subscribe(subject::device_uplink(&id))
        .await
        .unwrap();
    let mut device = system.sim_to(vec![gateway.tls_addr], key);
    device.wait_for(|s| s.connected, T).await.unwrap();

    // Garbage on the downlink subject is dropped; a valid frame after it arrives.
    system
        .client
        .publish(subject::device_downlink(&id), "garbage".into())
        .await
        .unwrap();
    let stop = Frame::Stop(Stop {
        app_id: AppId::new("blink").unwrap(),
    });
    system
        .client
        .publish(
            subject::device_downlink(&id),
            encode_to_vec(&stop).unwrap().into(),
        )
        .await
        .unwrap();
    assert_eq!(device.next_frame(T).await, Some(stop));
    assert!(device.status().connected);

    let status = Frame::AppStatus(AppStatus {
        app_id: AppId::new("blink").unwrap(),
        version: 1,
        state: AppState::Stopped,
        fuel_used: 10,
        memory_pages: 1,
        detail: None,
        refusal: None,
        denied_publishes: 0,
    });
    device.send(status.clone()).await;
    // The device's own agent speaks too (its DeviceInfo, its answer to the Stop): every
    // uplink message is one whole frame, and ours arrives among them.
    let found = tokio::time::timeout(T, async {
        loop {
            let message = uplink.next().await.unwrap();
            let (frame, used) = decode(&message.payload).unwrap();
            assert_eq!(used, message.payload.len());
            if frame == status {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the app status never reached the bus");
    device.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_silent_device_is_disconnected_and_a_second_session_replaces_the_first() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    let id = system.register_key("dev-1", &key, &[]).await;

    // Authenticates, then says nothing: closed after 3 × 300 ms.
    let mut silent = RawDevice::authenticated(&system, gateway.tls_addr, key.clone()).await;
    let started = std::time::Instant::now();
    assert_eq!(silent.drain().await, []);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    system
        .wait_events(&AggregateId::Device(id.clone()), |e| {
            e.iter().any(|e| matches!(e, Event::DeviceDisconnected(d) if d.reason.starts_with("heartbeat timeout")))
        })
        .await;

    // The same device twice: the newer session wins.
    let mut first = RawDevice::authenticated(&system, gateway.tls_addr, key.clone()).await;
    let _second = RawDevice::authenticated(&system, gateway.tls_addr, key).await;
    assert_eq!(first.drain().await, []);
    system
        .wait_events(&AggregateId::Device(id), |e| {
            e.iter().any(
                |e| matches!(e, Event::DeviceDisconnected(d) if d.reason.starts_with("replaced")),
            )
        })
        .await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_heart_beating_device_keeps_its_one_session_past_many_silence_limits() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    system.register_key("dev-1", &key, &[]).await;
    let mut device = system.sim_to(vec![gateway.tls_addr], key);
    device.wait_for(|s| s.connected, T).await.unwrap();
    // The silence limit is 3 × 300 ms; 3 s is more than three of them, each with the
    // heartbeat timer moved on by the frames in between.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = device.status();
    assert!(status.connected, "{status:?}");
    assert_eq!(status.sessions, 1, "{status:?}");
    gateway.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let system = System::start_services(Services::enrollment_only()).await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    system.register_key("dev-1", &key, &[]).await;
    let mut device = system.sim_to(vec![gateway.tls_addr], key);
    device.wait_for(|s| s.connected, T).await.unwrap();
    device.send(telemetry("app", 1, b"12345")).await;

    assert_eq!(http_get(gateway.http_addr, "/health").await.0, 200);
    assert_eq!(http_get(gateway.http_addr, "/ready").await.0, 200);
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(gateway.http_addr, "/metrics").await.1;
        if metrics.contains("wasmbed_gateway_telemetry_bytes_total{gateway=\"gw-test\"} 5") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for line in [
        "wasmbed_gateway_sessions_active{gateway=\"gw-test\"} 1",
        "wasmbed_gateway_telemetry_messages_total{gateway=\"gw-test\"} 1",
        "wasmbed_gateway_telemetry_bytes_total{gateway=\"gw-test\"} 5",
        "# TYPE wasmbed_gateway_refused counter",
        "wasmbed_gateway_session_setup_seconds_count{gateway=\"gw-test\"} 1",
        "wasmbed_gateway_telemetry_forward_seconds_count{gateway=\"gw-test\"} 1",
        "# EOF",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in:\n{metrics}"
        );
    }
    device.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn the_gateway_renews_its_certificate_before_expiry_without_dropping_sessions() {
    // Certificates live 3 s here; the gateway renews after two thirds of that.
    let system = System::start_services(Services {
        certificate_validity: Duration::from_secs(3),
        ..Services::enrollment_only()
    })
    .await;
    let gateway = system.start_gateway_with(quick_config(), 0).await;
    let key = random_key();
    system.register_key("dev-1", &key, &[]).await;
    let mut device = system.sim_to(vec![gateway.tls_addr], key);
    device.wait_for(|s| s.connected, T).await.unwrap();
    // A second device probes which certificate new connections get.
    let probe_key = random_key();
    system.register_key("probe", &probe_key, &[]).await;
    let first = RawDevice::authenticated(&system, gateway.tls_addr, probe_key.clone())
        .await
        .fingerprint;

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let probe = RawDevice::authenticated(&system, gateway.tls_addr, probe_key.clone()).await;
        if probe.fingerprint != first {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "certificate never renewed"
        );
    }
    // The session opened under the old certificate is still the device's first one.
    let status = device.status();
    assert!(status.connected && status.sessions == 1, "{status:?}");
    device.stop().await;
    gateway.stop().await;
}
