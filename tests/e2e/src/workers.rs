//! Simulated devices in processes of their own.
//!
//! One process may hold 20,000 file descriptors here, so a fleet larger than about 19,000
//! devices, or one whose gateways would share the devices' process, is spread over worker
//! processes. A worker is the running executable started again with [`WORKER_ENV`] set; a
//! program that spawns workers calls [`serve_if_worker`] first thing in `main`.
//!
//! The parent tells a worker what to run through its environment and keeps its stdin open: when
//! the parent closes it (or dies), the worker exits; a line `stop-telemetry` on it stops the
//! telemetry. The worker prints a [`WorkerReport`] line
//! every 250 ms on stdout.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use wasmbed_bus::call;
use wasmbed_schemas::command::RegisterDevice;
use wasmbed_schemas::frame::{Frame, Telemetry};
use wasmbed_schemas::{AppId, DeviceId, PublicKey};
use wasmbed_sim::{Connector, SimConfig, SimDevice};

/// Set in a worker's environment: it runs devices instead of the program's own `main`.
pub const WORKER_ENV: &str = "WASMBED_DEVICE_WORKER";

/// The line that tells a worker to stop sending telemetry.
const STOP_TELEMETRY: &str = "stop-telemetry";

/// The app id worker devices send telemetry as.
pub const TELEMETRY_APP: &str = "fleet-telemetry";

/// Device `i`'s key: the same in every process, so the parent registers what workers run.
pub fn fleet_key(i: usize) -> SigningKey {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(b"wasmbed fleet device")
        .chain_update((i as u64).to_le_bytes())
        .finalize()
        .into();
    SigningKey::from_bytes(&seed)
}

/// Device `i`'s id.
pub fn fleet_id(i: usize) -> DeviceId {
    DeviceId::new(format!("fleet-{i}")).unwrap()
}

/// Registers devices `devices` with enrollment, `concurrency` requests in flight.
pub async fn register_fleet(
    client: &async_nats::Client,
    devices: Range<usize>,
    concurrency: usize,
) {
    futures::stream::iter(devices)
        .for_each_concurrent(concurrency, |i| async move {
            let register = RegisterDevice {
                device_id: fleet_id(i),
                public_key: PublicKey(fleet_key(i).verifying_key().to_bytes()),
                mcu: None,
                labels: Default::default(),
            };
            call(client, &register, Duration::from_secs(60))
                .await
                .unwrap();
        })
        .await;
}

/// What one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The CA the gateways' certificates chain to (PEM).
    pub ca_pem: String,
    /// The gateways. Device `i` dials gateway `i mod n` first, then the others in an order
    /// that differs between devices, so a lost gateway's devices spread over the rest.
    pub gateways: Vec<SocketAddr>,
    /// Which devices ([`fleet_key`]).
    pub devices: Range<usize>,
    /// The address the devices connect from (one gives ~28,000 ports towards one gateway).
    pub source_ip: Option<IpAddr>,
    /// Every `telemetry_every`-th device sends a telemetry message every `telemetry_interval`
    /// while connected (0: none do).
    pub telemetry_every: usize,
    /// See `telemetry_every`.
    pub telemetry_interval: Duration,
    /// Handshakes a worker keeps in flight while its devices first connect.
    pub connecting_at_once: usize,
}

/// What a worker last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Devices holding an authenticated session now.
    pub connected: usize,
    /// Authenticated sessions opened so far, over all devices.
    pub sessions: u64,
    /// Telemetry messages sent so far.
    pub telemetry_sent: u64,
}

impl WorkerReport {
    fn line(&self) -> String {
        format!(
            "{} {} {}\n",
            self.connected, self.sessions, self.telemetry_sent
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        let mut next = || fields.next()?.ok();
        Some(Self {
            connected: next()? as usize,
            sessions: next()?,
            telemetry_sent: next()?,
        })
    }

    /// The sum of `reports`.
    pub fn total(reports: impl IntoIterator<Item = Self>) -> Self {
        reports.into_iter().fold(Self::default(), |sum, r| Self {
            connected: sum.connected + r.connected,
            sessions: sum.sessions + r.sessions,
            telemetry_sent: sum.telemetry_sent + r.telemetry_sent,
        })
    }
}

/// A worker process.
pub struct Worker {
    child: Child,
    /// Held open: the worker exits when it closes.
    stdin: ChildStdin,
    reports: watch::Receiver<WorkerReport>,
}

impl Worker {
    /// Starts this executable again as a worker running `spec`.
    pub fn spawn(spec: &WorkerSpec) -> Self {
        let gateways: Vec<String> = spec.gateways.iter().map(ToString::to_string).collect();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(WORKER_ENV, "1")
            .env("WASMBED_WORKER_CA", &spec.ca_pem)
            .env("WASMBED_WORKER_GATEWAYS", gateways.join(","))
            .env("WASMBED_WORKER_FIRST", spec.devices.start.to_string())
            .env("WASMBED_WORKER_END", spec.devices.end.to_string())
            .env(
                "WASMBED_WORKER_SOURCE_IP",
                spec.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            )
            .env(
                "WASMBED_WORKER_TELEMETRY_EVERY",
                spec.telemetry_every.to_string(),
            )
            .env(
                "WASMBED_WORKER_TELEMETRY_MS",
                spec.telemetry_interval.as_millis().to_string(),
            )
            .env(
                "WASMBED_WORKER_AT_ONCE",
                spec.connecting_at_once.to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, reports) = watch::channel(WorkerReport::default());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(report) = WorkerReport::parse(&line) {
                    let _ = tx.send(report);
                }
            }
        });
        Self {
            child,
            stdin,
            reports,
        }
    }

    /// What it last reported.
    pub fn report(&self) -> WorkerReport {
        *self.reports.borrow()
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Tells its devices to send no more telemetry.
    pub async fn stop_telemetry(&mut self) {
        let line = format!("{STOP_TELEMETRY}\n");
        let _ = self.stdin.write_all(line.as_bytes()).await;
        let _ = self.stdin.flush().await;
    }

    /// Closes its stdin and waits for it to exit.
    pub async fn stop(self) {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
}

/// The sum of what `workers` last reported.
pub fn total(workers: &[Worker]) -> WorkerReport {
    WorkerReport::total(workers.iter().map(Worker::report))
}

/// Runs as a worker if this process was started as one, and then returns true (the caller
/// returns from `main`); otherwise returns false at once.
pub async fn serve_if_worker() -> bool {
    if std::env::var_os(WORKER_ENV).is_none() {
        return false;
    }
    serve().await;
    true
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn env_number(name: &str) -> usize {
    env_var(name).parse().unwrap_or(0)
}

/// Device `i`'s gateways in the order it dials them.
fn dial_order(gateways: &[SocketAddr], i: usize) -> Vec<SocketAddr> {
    let n = gateways.len();
    let first = i % n;
    let mut rest: Vec<SocketAddr> = (1..n).map(|k| gateways[(first + k) % n]).collect();
    if !rest.is_empty() {
        let len = rest.len();
        rest.rotate_left((i / n) % len);
    }
    std::iter::once(gateways[first]).chain(rest).collect()
}

async fn serve() {
    let gateways: Vec<SocketAddr> = env_var("WASMBED_WORKER_GATEWAYS")
        .split(',')
        .filter_map(|a| a.parse().ok())
        .collect();
    let devices = env_number("WASMBED_WORKER_FIRST")..env_number("WASMBED_WORKER_END");
    let source_ip: Option<IpAddr> = env_var("WASMBED_WORKER_SOURCE_IP").parse().ok();
    let telemetry_every = env_number("WASMBED_WORKER_TELEMETRY_EVERY");
    let telemetry_interval =
        Duration::from_millis(env_number("WASMBED_WORKER_TELEMETRY_MS").max(1) as u64);
    let at_once = env_number("WASMBED_WORKER_AT_ONCE").max(1);
    let connector = Connector::new(&env_var("WASMBED_WORKER_CA"), "localhost").unwrap();
    // One configuration per dial order.
    let n = gateways.len();
    let orders = n * (n - 1).max(1);
    let configs: Vec<Arc<SimConfig>> = (0..orders)
        .map(|i| {
            let mut config = SimConfig::new(dial_order(&gateways, i));
            config.source_ips = source_ip.into_iter().collect();
            config.connect_timeout = Duration::from_secs(30);
            Arc::new(config)
        })
        .collect();

    let fleet: Arc<std::sync::Mutex<Vec<Arc<SimDevice>>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let telemetry_on = Arc::new(AtomicBool::new(true));
    let reporter = {
        let (fleet, sent) = (fleet.clone(), sent.clone());
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let report = {
                    let fleet = fleet.lock().unwrap();
                    let statuses: Vec<_> = fleet.iter().map(|d| d.status()).collect();
                    WorkerReport {
                        connected: statuses.iter().filter(|s| s.connected).count(),
                        sessions: statuses.iter().map(|s| u64::from(s.sessions)).sum(),
                        telemetry_sent: sent.load(Ordering::Relaxed),
                    }
                };
                if stdout.write_all(report.line().as_bytes()).await.is_err() {
                    return;
                }
                let _ = stdout.flush().await;
            }
        })
    };
    let starting = async {
        let mut batch = Vec::with_capacity(at_once);
        for i in devices {
            let device = Arc::new(SimDevice::spawn(
                connector.clone(),
                configs[i % orders].clone(),
                fleet_key(i),
            ));
            if telemetry_every > 0 && i % telemetry_every == 0 {
                tokio::spawn(send_telemetry(
                    device.clone(),
                    telemetry_interval,
                    sent.clone(),
                    telemetry_on.clone(),
                ));
            }
            fleet.lock().unwrap().push(device.clone());
            batch.push(device);
            if batch.len() == at_once {
                // Let this batch's handshakes through before starting the next; a device that
                // takes longer keeps trying on its own.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while batch.iter().any(|d| !d.status().connected)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                batch.clear();
            }
        }
        std::future::pending::<()>().await;
    };
    // Runs until the parent closes stdin; a line `stop-telemetry` stops the telemetry.
    let parent = async {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == STOP_TELEMETRY {
                telemetry_on.store(false, Ordering::Relaxed);
            }
        }
    };
    tokio::select! {
        () = starting => {}
        () = parent => {}
    }
    reporter.abort();
}

/// Sends a telemetry message every `interval` while `device` is connected.
async fn send_telemetry(
    device: Arc<SimDevice>,
    interval: Duration,
    sent: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
) {
    let app = AppId::new(TELEMETRY_APP).unwrap();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u32;
    loop {
        tick.tick().await;
        if !on.load(Ordering::Relaxed) {
            return;
        }
        if !device.status().connected {
            continue;
        }
        seq += 1;
        device
            .send(Frame::Telemetry(Telemetry {
                app_id: app.clone(),
                seq,
                topic: "t".into(),
                payload: vec![0x5a; 64],
            }))
            .await;
        sent.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_dials_every_gateway_once_and_a_lost_gateways_devices_spread() {
        let gateways: Vec<SocketAddr> = (0..5)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], 1000 + p)))
            .collect();
        let mut second_choice = std::collections::BTreeMap::new();
        for i in 0..1000 {
            let order = dial_order(&gateways, i);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, gateways, "device {i}");
            assert_eq!(order[0], gateways[i % 5]);
            if i % 5 == 4 {
                *second_choice.entry(order[1]).or_insert(0) += 1;
            }
        }
        // The devices of gateway 5 fall back on the other four evenly.
        assert_eq!(second_choice.len(), 4);
        assert!(
            second_choice.values().all(|&n| n == 50),
            "{second_choice:?}"
        );
    }

    #[test]
    fn reports_survive_their_line() {
        let report = WorkerReport {
            connected: 3,
            sessions: 5,
            telemetry_sent: 6,
        };
        assert_eq!(WorkerReport::parse(&report.line()), Some(report));
        assert_eq!(WorkerReport::parse("3 x 6"), None);
    }

    #[test]
    fn keys_are_the_same_in_every_process_and_differ_between_devices() {
        assert_eq!(fleet_key(7).to_bytes(), fleet_key(7).to_bytes());
        assert_ne!(fleet_key(7).to_bytes(), fleet_key(8).to_bytes());
    }
}
