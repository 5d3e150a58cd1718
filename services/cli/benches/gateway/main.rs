//! Gateway figures on this machine, with the gateway and enrollment as separate processes
//! (`wasmbed serve …`), a real nats-server, and simulated devices in this process.
//!
//! `cargo bench -p wasmbed-cli --bench gateway`. Settings (environment):
//! - `WASMBED_BENCH_SESSIONS` (2000): authentications timed, first enrollments then reconnects;
//! - `WASMBED_BENCH_CONCURRENCY` (128): authentications in flight;
//! - `WASMBED_BENCH_IDLE` (10000): idle sessions held. The full mode is 100000: it raises the
//!   file-descriptor limits with `prlimit` when they are too low (which needs the right to) and
//!   spreads devices over 127.0.0.x sources;
//! - `WASMBED_BENCH_HOLD_SECS` (25): how long idle sessions are held, heart-beating;
//! - `WASMBED_BENCH_MESSAGES` (200000): telemetry messages for the throughput comparison;
//! - `WASMBED_BENCH_PARTS` (`sessions,idle,telemetry,overhead`): which parts run.
//!
//! Targets (issue 3): ≥ 5,000 new authenticated sessions/s; idle sessions at ≤ 32 KiB gateway
//! RSS each; telemetry ≥ 50 % of raw NATS core publish; p99 < 5 ms at 10k msg/s.
//!
//! Next to the session figure it measures its ceiling on this machine: bare TLS 1.3 handshakes
//! with the same provider, certificate kind and client (`tls_ceiling`), and the gateway's own
//! CPU time per session.

mod tls_ceiling;
mod tracing_overhead;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use wasmbed_bus::call;
use wasmbed_device_core::SessionConfig;
use wasmbed_e2e::processes::{CpuMeter, fd_limit, metric, setting};
use wasmbed_schemas::command::{GetCaCertificate, RegisterDevice};
use wasmbed_schemas::frame::{Frame, Telemetry};
use wasmbed_schemas::{AppId, DeviceId, PublicKey};
use wasmbed_sim::{Connector, SimConfig, SimDevice, authenticate, random_key};
use wasmbed_test_support::NatsServer;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

/// Whether `part` is among `WASMBED_BENCH_PARTS` (all parts when unset).
fn runs(part: &str) -> bool {
    std::env::var("WASMBED_BENCH_PARTS")
        .map_or(true, |parts| parts.split(',').any(|p| p.trim() == part))
}

fn spawn(args: &[&str], nats: &str, log: &Path) -> Child {
    spawn_with(args, nats, log, &[])
}

/// [`spawn`] with `env` added to the process's environment.
fn spawn_with(args: &[&str], nats: &str, log: &Path, env: &[(&str, String)]) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(WASMBED)
        .args(args)
        .env("NATS_URL", nats)
        .env("WASMBED_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("wasmbed starts")
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `GET path`: the whole response, or empty when nothing answers.
async fn http_get(http: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(http).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    let mut response = String::new();
    let _ = s.read_to_string(&mut response).await;
    response
}

async fn register_all(client: &async_nats::Client, keys: &[SigningKey], offset: usize) {
    futures::stream::iter(keys.iter().enumerate())
        .for_each_concurrent(64, |(i, key)| async move {
            call(
                client,
                &RegisterDevice {
                    device_id: DeviceId::new(format!("bench-{}", offset + i)).expect("valid id"),
                    public_key: PublicKey(key.verifying_key().to_bytes()),
                    mcu: None,
                    labels: Default::default(),
                },
                Duration::from_secs(30),
            )
            .await
            .expect("registered");
        })
        .await;
}

/// Authenticates every key once, `concurrency` at a time; returns sessions per second.
///
/// Each authentication is its own task, so the devices' side of the handshakes runs on every
/// worker thread, as separate devices would.
async fn handshakes(
    connector: &Connector,
    addr: SocketAddr,
    keys: &[SigningKey],
    concurrency: usize,
) -> f64 {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for key in keys.iter().cloned() {
        let slot = slots.clone().acquire_owned().await.expect("semaphore open");
        let connector = connector.clone();
        tasks.spawn(async move {
            let result = authenticate(
                &connector,
                addr,
                None,
                key,
                SessionConfig::default(),
                Duration::from_secs(30),
            )
            .await;
            drop(slot);
            result.err().map(|e| e.to_string())
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Some(failure) = done.expect("authentication task") {
            failures.push(failure);
        }
    }
    let elapsed = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} authentications failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    keys.len() as f64 / elapsed.as_secs_f64()
}

fn raise_fd_limit(pid: u32, limit: usize) -> bool {
    std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Receives up to `expected` messages; returns how many arrived and when the last one did.
/// Stops after 2 s without one: nats-server drops what a subscriber falls too far behind on
/// (a slow consumer), and waiting longer would only dilute the rate.
async fn receive(sub: &mut async_nats::Subscriber, expected: usize) -> (usize, Instant) {
    let (mut got, mut last) = (0, Instant::now());
    while got < expected {
        match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            Ok(Some(_)) => {
                got += 1;
                last = Instant::now();
            }
            _ => break,
        }
    }
    (got, last)
}

/// A gateway process as the benchmarks run it: heartbeats every 10 s, and the uplink budget
/// raised. The telemetry senders stand in for a fleet: each sends ~11k msg/s, far over a
/// device's uplink budget (1 MiB/s), so the figure is the gateway's throughput, not the budget's.
fn spawn_gateway(
    name: &str,
    tls_listen: &str,
    http_listen: &str,
    nats: &str,
    log: &Path,
    env: &[(&str, String)],
) -> Child {
    let args = [
        "serve",
        "gateway",
        "--gateway-id",
        name,
        "--tls-listen",
        tls_listen,
        "--http-listen",
        http_listen,
        "--heartbeat-interval-ms",
        "10000",
        "--uplink-bytes-per-second",
        "1073741824",
        "--uplink-burst-bytes",
        "1073741824",
    ];
    spawn_with(&args, nats, log, env)
}

/// Sends `per_device` telemetry messages of `payload` from each device of `fleet`, all devices at
/// once.
async fn send_telemetry(fleet: &[SimDevice], app: &AppId, per_device: usize, payload: &[u8]) {
    let sending = fleet.iter().map(|device| async move {
        for seq in 0..per_device {
            device
                .send(Frame::Telemetry(Telemetry {
                    app_id: app.clone(),
                    seq: seq as u32,
                    topic: "t".into(),
                    payload: payload.to_vec(),
                }))
                .await;
        }
    });
    futures::future::join_all(sending).await;
}

/// Publishes `messages` 128-byte messages on `subject` from this process and receives them
/// on `sub_client`: (messages per second received, how many arrived, CPU report). With
/// `headers`, each carries the gateway's four telemetry headers.
async fn raw_publish(
    client: &async_nats::Client,
    sub_client: &async_nats::Client,
    subject: &'static str,
    headers: bool,
    messages: usize,
    processes: &[(&'static str, u32)],
) -> (f64, usize, String) {
    use wasmbed_schemas::subject::header;
    let mut sub = sub_client.subscribe(subject).await.expect("subscribe");
    sub_client.flush().await.expect("flush");
    let meter = CpuMeter::start(processes);
    let started = Instant::now();
    let publisher = {
        let client = client.clone();
        let payload = vec![0x5a_u8; 128];
        tokio::spawn(async move {
            for seq in 0..messages {
                let sent = if headers {
                    let mut map = async_nats::HeaderMap::new();
                    map.insert(header::DEVICE, "raw-headers");
                    map.insert(header::APP, "bench");
                    map.insert(header::SEQUENCE, seq.to_string().as_str());
                    map.insert(header::TOPIC, "t");
                    client
                        .publish_with_headers(subject, map, payload.clone().into())
                        .await
                } else {
                    client.publish(subject, payload.clone().into()).await
                };
                sent.expect("publish");
            }
            client.flush().await.expect("flush");
        })
    };
    let (got, last) = receive(&mut sub, messages).await;
    let rate = got as f64 / (last - started).as_secs_f64();
    publisher.await.expect("publisher");
    (rate, got, meter.report())
}

/// How many times nats-server has reported a slow consumer so far.
fn slow_consumers(nats: &NatsServer) -> usize {
    nats.log().matches("Slow Consumer").count()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let sessions = setting("WASMBED_BENCH_SESSIONS", 2000);
    let concurrency = setting("WASMBED_BENCH_CONCURRENCY", 128);
    let idle = setting("WASMBED_BENCH_IDLE", 10_000);
    let hold = Duration::from_secs(setting("WASMBED_BENCH_HOLD_SECS", 25) as u64);
    let messages = setting("WASMBED_BENCH_MESSAGES", 200_000);

    let nats = NatsServer::start().await.expect("nats-server");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let free = || wasmbed_local_nats::free_port().expect("free port");
    let (tls_port, http_port) = (free(), free());
    let ca_dir = dir.path().join("ca");
    let enrollment = spawn(
        &[
            "serve",
            "enrollment",
            "--ca-dir",
            ca_dir.to_str().expect("utf-8 path"),
        ],
        &url,
        &dir.path().join("enrollment.log"),
    );
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let http_listen = format!("127.0.0.1:{http_port}");
    let gateway = spawn_gateway(
        "gateway-1",
        &tls_listen,
        &http_listen,
        &url,
        &dir.path().join("gateway.log"),
        &[],
    );
    let gateway_pid = gateway.id().expect("gateway pid");
    let (addr, http): (SocketAddr, SocketAddr) = (
        tls_listen.parse().expect("addr"),
        http_listen.parse().expect("addr"),
    );
    let client = nats.client().await.expect("client");
    let mut ca = None;
    for _ in 0..600 {
        if ca.is_none() {
            ca = call(&client, &GetCaCertificate {}, Duration::from_millis(200))
                .await
                .ok()
                .map(|reply| reply.certificate_pem);
        }
        let ready = http_get(http, "/ready").await;
        if ca.is_some() && ready.split_whitespace().nth(1) == Some("200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connector = Connector::new(&ca.expect("enrollment answers"), "localhost").expect("CA");
    let processes = [
        ("gateway", gateway_pid),
        ("enrollment", enrollment.id().expect("enrollment pid")),
        ("nats-server", nats.pid().expect("nats-server pid")),
        ("devices (this process)", std::process::id()),
    ];
    println!(
        "gateway benchmark (gateway and enrollment as separate processes; 2 cores shared with nats-server and the simulated devices)"
    );

    if runs("sessions") {
        // 1. New authenticated sessions per second.
        let keys: Vec<SigningKey> = (0..sessions).map(|_| random_key()).collect();
        register_all(&client, &keys, 0).await;
        let first = handshakes(&connector, addr, &keys, concurrency).await;
        let meter = CpuMeter::start(&processes);
        let again = handshakes(&connector, addr, &keys, concurrency).await;
        let reconnect_cpu = meter.report();
        let gateway_us = meter.used("gateway") / sessions as f64 * 1e6;
        let ceiling = tls_ceiling::measure(sessions, concurrency).await;
        println!(
            "new authenticated sessions (TLS 1.3 + challenge + enrollment), {sessions} devices, {concurrency} in flight:"
        );
        println!("  first enrollment: {first:>7.0} sessions/s");
        println!(
            "  reconnect:        {again:>7.0} sessions/s   (target >= 5000: {})",
            if again >= 5000.0 { "met" } else { "NOT met" }
        );
        println!("{reconnect_cpu}");
        println!(
            "  gateway CPU per session: {gateway_us:.0} us, so the gateway with both cores to itself would serve about {:.0}/s",
            2e6 / gateway_us
        );
        println!(
            "  ceiling on these 2 cores: bare TLS 1.3 full handshakes (gateway's provider, P-256 CA-issued certificate, the devices' client), no challenge, no NATS:"
        );
        println!(
            "    over loopback TCP, both ends in this process: {:>7.0}/s",
            ceiling.over_tcp
        );
        println!(
            "    the same with the challenge's Ed25519 signature, verified strictly: {:>7.0}/s",
            ceiling.with_signatures
        );
        println!(
            "    in memory, both ends on one core:             {:>7.0}/s (the server's side alone: {:.0}/s per core)",
            ceiling.in_memory_pair, ceiling.in_memory_server
        );
        let ratio = again / ceiling.over_tcp;
        println!(
            "  reconnects: {ratio:.2} of bare TLS, {:.2} of TLS with the signatures   (target >= 0.80 of bare TLS: {})",
            again / ceiling.with_signatures,
            if ratio >= 0.8 { "met" } else { "NOT met" }
        );
    }

    if runs("idle") {
        // 2. Idle sessions held, heart-beating.
        // Each session holds a descriptor here and one in the gateway; one source address gives
        // about 28k ephemeral ports towards the gateway's one address.
        let needed = idle + 1000;
        if needed > fd_limit() {
            let raised =
                raise_fd_limit(std::process::id(), needed) && raise_fd_limit(gateway_pid, needed);
            assert!(
                raised,
                "{idle} idle sessions need {needed} file descriptors per process; the limit here is {} \
                 and raising it (prlimit) was refused",
                fd_limit()
            );
        }
        let mut source_ips = Vec::new();
        if idle > 25_000 {
            source_ips = (2..=(idle / 25_000 + 2) as u8)
                .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
                .collect();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_before = rss_bytes(gateway_pid);
        let idle_keys: Vec<SigningKey> = (0..idle).map(|_| random_key()).collect();
        register_all(&client, &idle_keys, sessions).await;
        let mut config = SimConfig::new(vec![addr]);
        config.source_ips = source_ips;
        config.connect_timeout = Duration::from_secs(30);
        let config = Arc::new(config);
        let opened = Instant::now();
        let mut devices = Vec::with_capacity(idle);
        for key in idle_keys {
            devices.push(SimDevice::spawn(connector.clone(), config.clone(), key));
            if devices.len() % concurrency == 0 {
                // Let the handshakes of this batch go through before starting the next.
                while metric(http, "wasmbed_gateway_sessions_active").await + (concurrency as u64)
                    < devices.len() as u64
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        while metric(http, "wasmbed_gateway_sessions_active").await < idle as u64 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                opened.elapsed() < Duration::from_secs(600),
                "sessions did not all open"
            );
        }
        let open_secs = opened.elapsed().as_secs_f64();
        let frames_before = metric(http, "wasmbed_gateway_frames_in_total").await;
        tokio::time::sleep(hold).await;
        let active = metric(http, "wasmbed_gateway_sessions_active").await;
        let heartbeats = metric(http, "wasmbed_gateway_frames_in_total").await - frames_before;
        let rss_after = rss_bytes(gateway_pid);
        let per_session = (rss_after.saturating_sub(rss_before)) as f64 / idle as f64;
        println!(
            "idle sessions: {idle} opened in {open_secs:.1} s, held {hold:?} with 10 s heartbeats:"
        );
        println!("  still open: {active}, heartbeats received while held: {heartbeats}");
        println!(
            "  gateway RSS {:.1} MiB -> {:.1} MiB: {:.1} KiB per session   (target <= 32 KiB: {})",
            rss_before as f64 / 1048576.0,
            rss_after as f64 / 1048576.0,
            per_session / 1024.0,
            if per_session <= 32.0 * 1024.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        for device in devices {
            device.stop().await;
        }
    }

    // A deep subscription buffer: the bench's own subscriber shares the cores with 16 sending
    // devices, and async-nats drops what overflows a subscription's buffer.
    let sub_client = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 21)
        .connect(nats.url())
        .await
        .expect("client");
    let senders = 16;
    if runs("telemetry") {
        // 3. Telemetry: device -> gateway -> subscriber, next to raw core publish.
        let keys: Vec<SigningKey> = (0..senders).map(|_| random_key()).collect();
        register_all(&client, &keys, sessions + idle).await;
        let config = Arc::new(SimConfig::new(vec![addr]));
        let mut fleet = Vec::new();
        for key in keys {
            let mut device = SimDevice::spawn(connector.clone(), config.clone(), key);
            device
                .wait_for(|s| s.connected, Duration::from_secs(30))
                .await
                .expect("connected");
            fleet.push(device);
        }
        let app = AppId::new("bench").expect("valid id");
        let payload = vec![0x5a; 128];

        // The raw baselines publish on telemetry subjects too, so nats-server stores them in the
        // telemetry stream exactly as it stores what the gateway publishes. The second carries the
        // four headers the gateway sets: what nats-server alone does for each gateway message.
        let (raw_rate, raw_got, raw_cpu) = raw_publish(
            &client,
            &sub_client,
            "wasmbed.telemetry.raw-baseline.bench",
            false,
            messages,
            &processes,
        )
        .await;
        let (headers_rate, headers_got, headers_cpu) = raw_publish(
            &client,
            &sub_client,
            "wasmbed.telemetry.raw-headers.bench",
            true,
            messages,
            &processes,
        )
        .await;

        let mut sub = sub_client
            .subscribe("wasmbed.telemetry.>")
            .await
            .expect("subscribe");
        sub_client.flush().await.expect("flush");
        let meter = CpuMeter::start(&processes);
        let started = Instant::now();
        let per_device = messages / senders;
        let sent = per_device * senders;
        let (_, (got, last)) = tokio::join!(
            send_telemetry(&fleet, &app, per_device, &payload),
            receive(&mut sub, sent)
        );
        let telemetry_rate = got as f64 / (last - started).as_secs_f64();
        let telemetry_cpu = meter.report();
        let ratio = telemetry_rate / raw_rate;
        println!("telemetry, {sent} messages of 128 B from {senders} devices:");
        println!(
            "  raw NATS core publish -> subscriber: {raw_rate:>8.0} msg/s ({raw_got} of {messages} arrived; same subject scheme, stored by the telemetry stream)"
        );
        println!("{raw_cpu}");
        println!(
            "  the same with the gateway's 4 headers, from one connection as the gateway's: {headers_rate:>6.0} msg/s ({headers_got} of {messages} arrived): ratio {:.2} of raw, before any TLS or gateway work",
            headers_rate / raw_rate
        );
        println!("{headers_cpu}");
        println!(
            "  device -> gateway -> subscriber:     {telemetry_rate:>8.0} msg/s ({got} of {sent} arrived)"
        );
        println!("{telemetry_cpu}");
        let slow = slow_consumers(&nats);
        if raw_got < messages || headers_got < messages || got < sent {
            println!(
                "  rates are over the time to the last arrival; nats-server reported {slow} slow consumer(s): it drops what the bench's subscriber, on the same busy cores, cannot take in time"
            );
        }
        println!(
            "  ratio {ratio:.2}   (target >= 0.50: {})",
            if ratio >= 0.5 { "met" } else { "NOT met" }
        );

        // Latency at a steady 10k msg/s: each payload carries its send time.
        let epoch = Instant::now();
        let rate = 10_000usize;
        let seconds = 3usize;
        let ticks = seconds * 1000;
        let receiving = async {
            let mut latencies = Vec::with_capacity(rate * seconds);
            while latencies.len() < rate * seconds {
                match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                    Ok(Some(message)) if message.payload.len() >= 8 => {
                        let sent_ns =
                            u64::from_le_bytes(message.payload[..8].try_into().expect("8 bytes"));
                        let now_ns = epoch.elapsed().as_nanos() as u64;
                        latencies.push(now_ns.saturating_sub(sent_ns) as f64 / 1e6);
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            latencies
        };
        let sending = async {
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for tick in 0..ticks {
                interval.tick().await;
                for i in 0..rate / 1000 {
                    let device = &fleet[(tick * 10 + i) % fleet.len()];
                    let mut payload = (epoch.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
                    payload.resize(128, 0);
                    device
                        .send(Frame::Telemetry(Telemetry {
                            app_id: app.clone(),
                            seq: tick as u32,
                            topic: "t".into(),
                            payload,
                        }))
                        .await;
                }
            }
        };
        let (_, mut latencies) = tokio::join!(sending, receiving);
        latencies.sort_by(f64::total_cmp);
        if latencies.is_empty() {
            println!("latency at {rate} msg/s: no messages arrived");
        } else {
            let p99 = percentile(&latencies, 0.99);
            println!(
                "latency device -> subscriber at {rate} msg/s for {seconds} s ({} samples): p50 {:.2} ms, p99 {p99:.2} ms, max {:.2} ms   (target p99 < 5 ms: {})",
                latencies.len(),
                percentile(&latencies, 0.5),
                latencies[latencies.len() - 1],
                if p99 < 5.0 { "met" } else { "NOT met" }
            );
        }
        for device in fleet {
            device.stop().await;
        }
    }

    if runs("overhead") {
        // 5. What exporting traces costs the same path.
        tracing_overhead::run(
            tracing_overhead::Setup {
                nats_url: &url,
                dir: dir.path(),
                client: &client,
                sub_client: &sub_client,
                connector: &connector,
                key_offset: sessions + idle + senders,
            },
            setting("WASMBED_BENCH_OVERHEAD_MESSAGES", 100_000),
            setting("WASMBED_BENCH_OVERHEAD_ROUNDS", 3),
        )
        .await;
    }
}
