//! Hostile peers against a gateway running as its own process, while honest devices use it:
//! slow-loris handshakes, a telemetry flood from an authenticated device, and a garbage flood.
//! The gateway drops them, its memory stays bounded, and the honest devices neither lose their
//! sessions nor their telemetry. (Impersonation, replay, relayed signatures and subject
//! injection through device-supplied names are in `services/gateway/tests/hostile.rs`.)

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmbed_bus::call;
use wasmbed_device_core::{SessionConfig, Signer};
use wasmbed_e2e::T;
use wasmbed_e2e::cluster::{Cluster, TelemetryCount, rss_kib};
use wasmbed_schemas::command::RegisterDevice;
use wasmbed_schemas::event::Event;
use wasmbed_schemas::frame::codec::encode_to_vec;
use wasmbed_schemas::frame::{Frame, MAX_FRAME_LEN, Telemetry};
use wasmbed_schemas::{AppId, DeviceId};
use wasmbed_sim::{Connector, authenticate, random_key};
use wasmbed_test_support::http_get;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");
/// Connections that trickle a TLS handshake one byte at a time.
const SLOW_LORIS: usize = 300;
/// The gateway's handshake deadline (its default).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

async fn register(cluster: &Cluster, name: &str) -> (DeviceId, ed25519_dalek::SigningKey) {
    let key = random_key();
    let id = DeviceId::new(name).unwrap();
    call(
        &cluster.client,
        &RegisterDevice {
            device_id: id.clone(),
            public_key: key.public_key(),
            mcu: None,
            labels: BTreeMap::new(),
        },
        T,
    )
    .await
    .unwrap();
    (id, key)
}

/// Trickles a TLS ClientHello one byte every 200 ms; returns how long the gateway let it.
async fn slow_loris(addr: std::net::SocketAddr) -> Option<Duration> {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    // A handshake record announcing 512 bytes, then a byte at a time.
    let header = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    let mut buf = [0u8; 64];
    for i in 0.. {
        let byte = header.get(i).copied().unwrap_or(0);
        if tcp.write_all(&[byte]).await.is_err() {
            return Some(started.elapsed());
        }
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if started.elapsed() > T {
            return None;
        }
    }
    None
}

fn honest_received(count: &TelemetryCount, ids: &[DeviceId]) -> u64 {
    ids.iter().map(|id| count.of(id)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_floods_and_slow_handshakes_leave_the_gateway_bounded_and_honest_devices_unaffected()
{
    let cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    let gateway = cluster.gateway("gw-a");
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4 {
        let (id, key) = register(&cluster, &format!("honest-{i}")).await;
        ids.push(id);
        keys.push(key);
    }
    let mut honest = cluster.devices(&keys, vec![gateway]);
    for device in &mut honest {
        device.wait_for(|s| s.connected, T).await.unwrap();
    }
    let sensor = AppId::new("sensor").unwrap();
    cluster.deploy(&sensor, wasmbed_example_apps::SENSOR).await;
    cluster.wait_running(&sensor, &ids, T).await;
    let pid = cluster.pid("gw-a").unwrap();
    let telemetry = cluster.count_telemetry().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calm = honest_received(&telemetry.lock().unwrap(), &ids);
    let baseline_kib = rss_kib(pid).unwrap();

    // The attack: slow-loris handshakes, a flood of full-size telemetry frames from an
    // authenticated device, and an authenticated device sending garbage frames.
    let attack_started = Instant::now();
    let loris: Vec<_> = (0..SLOW_LORIS)
        .map(|_| tokio::spawn(slow_loris(gateway)))
        .collect();
    let connector = Connector::new(&cluster.ca_pem, "localhost").unwrap();
    let (flooder_id, flooder_key) = register(&cluster, "flooder").await;
    let mut flooder = authenticate(
        &connector,
        gateway,
        None,
        flooder_key,
        SessionConfig::default(),
        T,
    )
    .await
    .unwrap();
    let flood = tokio::spawn(async move {
        let frame = encode_to_vec(&Frame::Telemetry(Telemetry {
            app_id: AppId::new("flood").unwrap(),
            seq: 1,
            topic: "flood".into(),
            payload: vec![0x5a; MAX_FRAME_LEN - 128],
        }))
        .unwrap();
        let mut sent = 0u64;
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            if flooder.stream.write_all(&frame).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let (garbage_id, garbage_key) = register(&cluster, "garbage").await;
    let mut garbage = authenticate(
        &connector,
        gateway,
        None,
        garbage_key,
        SessionConfig::default(),
        T,
    )
    .await
    .unwrap();
    let garbage_sender = tokio::spawn(async move {
        // Frames announcing 100 bytes of zeros: not MessagePack.
        let mut junk = vec![0u8; 4096];
        junk[..4].copy_from_slice(&100u32.to_be_bytes());
        for _ in 0..1000 {
            if garbage.stream.write_all(&junk).await.is_err() {
                break;
            }
        }
    });
    let mut peak_kib = baseline_kib;
    while attack_started.elapsed() < HANDSHAKE_TIMEOUT + Duration::from_secs(2) {
        peak_kib = peak_kib.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let during = honest_received(&telemetry.lock().unwrap(), &ids) - calm;
    let flood_frames = flood.await.unwrap();
    garbage_sender.await.unwrap();
    let mut held = Vec::new();
    for task in loris {
        held.push(
            task.await
                .unwrap()
                .expect("a slow-loris connection was never dropped"),
        );
    }
    held.sort();
    let after_kib = rss_kib(pid).unwrap();

    // Every slow handshake was cut at the deadline, not before and not much after.
    assert!(
        held[0] >= HANDSHAKE_TIMEOUT - Duration::from_millis(500),
        "{:?}",
        held[0]
    );
    assert!(
        held[held.len() - 1] <= HANDSHAKE_TIMEOUT + Duration::from_secs(3),
        "{:?}",
        held.last()
    );
    // The honest devices kept their one session each, and their telemetry kept flowing.
    for (device, id) in honest.iter().zip(&ids) {
        let status = device.status();
        assert!(status.connected && status.sessions == 1, "{id}: {status:?}");
        assert!(telemetry.lock().unwrap().of(id) > 0);
    }
    let window = (HANDSHAKE_TIMEOUT + Duration::from_secs(2)).as_secs_f64();
    let calm_rate = calm as f64 / 2.0;
    let attack_rate = during as f64 / window;
    assert!(
        attack_rate >= calm_rate * 0.5,
        "honest telemetry fell from {calm_rate:.0}/s to {attack_rate:.0}/s under attack"
    );
    // Memory: bounded by the connections it holds, and given back.
    let grown_kib = peak_kib.saturating_sub(baseline_kib);
    let budget_kib = SLOW_LORIS as u64 * 64 + 32 * 1024;
    assert!(
        grown_kib <= budget_kib,
        "gateway RSS grew {grown_kib} KiB under attack (budget {budget_kib} KiB)"
    );
    // The flooder was cut off at its uplink budget (2 MiB at once, 1 MiB/s), with the reason in
    // the log; what it got onto the bus stayed within that budget.
    let flooder_events = cluster
        .log
        .read(&wasmbed_schemas::AggregateId::Device(flooder_id.clone()))
        .await
        .unwrap();
    assert!(
        flooder_events.iter().any(|e| matches!(
            &e.envelope.event,
            Event::DeviceDisconnected(d) if d.reason.starts_with("uplink rate limit exceeded")
        )),
        "the flooder was not cut off"
    );
    let garbage_events = cluster
        .log
        .read(&wasmbed_schemas::AggregateId::Device(garbage_id))
        .await
        .unwrap();
    assert!(
        garbage_events.iter().any(|e| matches!(
            &e.envelope.event,
            Event::DeviceDisconnected(d) if d.reason.starts_with("protocol violation")
        )),
        "the garbage sender kept its session"
    );
    let flooded = telemetry.lock().unwrap().of(&flooder_id);
    let flooded_bytes = flooded * MAX_FRAME_LEN as u64;
    assert!(
        flooded_bytes <= 2 * 1024 * 1024 + 4 * 1024 * 1024,
        "{flooded} flood frames reached the bus"
    );
    // The refusals are counted.
    let (_, metrics) = http_get(cluster.gateway_http("gw-a"), "/metrics").await;
    let timeouts: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("wasmbed_gateway_refused_total") && l.contains("reason=\"timeout\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(timeouts >= SLOW_LORIS as u64, "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wasmbed_gateway_rate_limited_total") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(cluster.nats.permission_violations(), Vec::<String>::new());
    println!(
        "\nhostile: {SLOW_LORIS} slow-loris handshakes dropped after {:.1}-{:.1} s; a flood of \
         {flood_frames} full-size frames written in 4 s, cut off by the uplink budget after \
         {flooded} reached the bus; a garbage sender dropped; gateway RSS \
         {} MiB before, peak {} MiB (+{} KiB, budget {} KiB), {} MiB after; the {} honest \
         devices kept their sessions and sent {:.0} msg/s under attack ({:.0}/s before).",
        held[0].as_secs_f64(),
        held[held.len() - 1].as_secs_f64(),
        baseline_kib / 1024,
        peak_kib / 1024,
        grown_kib,
        budget_kib,
        after_kib / 1024,
        ids.len(),
        attack_rate,
        calm_rate,
    );
    for device in honest {
        device.stop().await;
    }
}

/// A refusal is a security event: it shows under the binary's default filter (`warn`), which
/// the cluster's services run with.
#[tokio::test]
async fn refusals_are_logged_at_the_default_level() {
    let cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    let gateway = cluster.gateway("gw-a");
    let mut tcp = TcpStream::connect(gateway).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(T, tcp.read_to_end(&mut sink)).await;
    let deadline = Instant::now() + T;
    loop {
        let log = cluster.service_log("gw-a");
        if log.lines().any(|l| {
            l.contains("WARN")
                && l.contains("connection refused")
                && l.contains("ProtocolViolation")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal in the gateway's log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateway's defaults (`GatewayConfig::new`), which the cluster's gateway runs with.
const UPLINK_BYTES_PER_SECOND: u64 = 1024 * 1024;
const UPLINK_BURST_BYTES: u64 = 2 * 1024 * 1024;
const SESSION_BURST: u64 = 10;
const SESSIONS_PER_SECOND: u64 = 1;

/// A device floods telemetry and reconnects the moment it is cut off, for 10 s. Its budget
/// follows it across sessions, and its reconnects are throttled: it gets through at most twice
/// what one device may send in 10 s, and the log gains at most two events per admitted
/// session: (10 at once + 1 a second × 10 s) × 2 = 40.
#[tokio::test]
async fn fault_a_flood_through_reconnects_stays_within_the_devices_budget() {
    let cluster = Cluster::start(std::path::Path::new(WASMBED)).await;
    let gateway = cluster.gateway("gw-a");
    let connector = Connector::new(&cluster.ca_pem, "localhost").unwrap();
    let (flooder, key) = register(&cluster, "reconnector").await;
    let mut accepted = cluster
        .client
        .subscribe(format!("wasmbed.telemetry.{flooder}.>"))
        .await
        .unwrap();
    let counted = tokio::spawn(async move {
        use futures::StreamExt;
        let mut bytes = 0u64;
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(3), accepted.next()).await
        {
            bytes += message.payload.len() as u64;
        }
        bytes
    });
    let frame = encode_to_vec(&Frame::Telemetry(Telemetry {
        app_id: AppId::new("flood").unwrap(),
        seq: 1,
        topic: "flood".into(),
        payload: vec![0x5a; MAX_FRAME_LEN - 128],
    }))
    .unwrap();
    let window = Duration::from_secs(10);
    let started = Instant::now();
    let (mut sessions, mut refused, mut offered) = (0u64, 0u64, 0u64);
    while started.elapsed() < window {
        let config = SessionConfig::default();
        let Ok(mut session) = authenticate(&connector, gateway, None, key.clone(), config, T).await
        else {
            refused += 1;
            continue;
        };
        sessions += 1;
        while started.elapsed() < window {
            if session.stream.write_all(&frame).await.is_err() {
                break;
            }
            offered += frame.len() as u64;
        }
    }
    let accepted_bytes = counted.await.unwrap();
    let budget = UPLINK_BURST_BYTES + UPLINK_BYTES_PER_SECOND * window.as_secs();
    let events = cluster.all_events().await;
    let session_events = wasmbed_e2e::cluster::device_events(&events, &flooder)
        .filter(|e| matches!(e, Event::DeviceConnected(_) | Event::DeviceDisconnected(_)))
        .count() as u64;
    let bound = 2 * (SESSION_BURST + SESSIONS_PER_SECOND * window.as_secs());
    println!(
        "reconnect flood, 10 s: {sessions} sessions, {refused} refused, offered {} MiB, \
         accepted {:.1} MiB (budget {} MiB), {session_events} session events (bound {bound})",
        offered >> 20,
        accepted_bytes as f64 / 1048576.0,
        budget >> 20,
    );
    assert!(refused > 0, "the reconnect storm was never throttled");
    assert!(
        accepted_bytes <= 2 * budget,
        "{accepted_bytes} bytes accepted, budget {budget}"
    );
    assert!(session_events <= bound, "{session_events} > {bound}");
}
