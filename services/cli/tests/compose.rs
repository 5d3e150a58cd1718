//! The system as containers on a real Docker engine (Debian's dockerd, started here): the three
//! images of `scripts/images` (FROM scratch, nothing pulled), `compose/compose.yaml` brought up
//! by Debian's docker-compose, and, from outside the compose network as a user would, boards
//! started, an app deployed, and its telemetry read on `wasmbed.telemetry.>`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmbed_bus::call;
use wasmbed_e2e::apps::{create_application, deploy_application};
use wasmbed_e2e::cluster::{all_events, event_stream_leader, wait_running};
use wasmbed_e2e::docker::DockerEngine;
use wasmbed_e2e::fleet::{Heard, connected_fleet};
use wasmbed_e2e::test_limits;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_local_nats::{NatsUsers, free_port};
use wasmbed_renode_manager::firmware::{self, Board};
use wasmbed_schemas::command::GetCaCertificate;
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::{AppId, DeviceId};
use wasmbed_sim::{SimConfig, SimDevice};
use wasmbed_test_support::workspace_root;

const WASMBED: &str = env!("CARGO_BIN_EXE_wasmbed");

/// 128 random bits as hex (the api token).
fn secret() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compose project on `engine`, taken down (volumes too) when dropped.
struct Project<'a> {
    engine: &'a DockerEngine,
    env_file: PathBuf,
    name: String,
    /// The operator's URL on the published NATS port.
    nats_url: String,
}

impl Project<'_> {
    /// The container of compose service `service`.
    fn container(&self, service: &str) -> String {
        self.compose(&["ps", "--quiet", service])
            .unwrap()
            .trim()
            .to_owned()
    }

    /// The network `network` of this project, as the engine names it.
    fn network(&self, network: &str) -> String {
        format!("{}_{network}", self.name)
    }

    /// The address of compose service `service` on the project's network `network`.
    fn address(&self, service: &str, network: &str) -> std::net::IpAddr {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network(network)
        );
        let ip = self
            .engine
            .docker(&["inspect", "--format", &format, &self.container(service)])
            .unwrap();
        ip.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{service} on {network}: {ip:?}: {e}"))
    }

    fn compose(&self, args: &[&str]) -> Result<String, String> {
        let root = workspace_root();
        let socket = self.engine.host.trim_start_matches("unix://");
        let out = Command::new("docker-compose")
            .arg("--project-name")
            .arg(&self.name)
            .arg("--project-directory")
            .arg(root.join("compose"))
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("--file")
            .arg(root.join("compose/compose.yaml"))
            .args(args)
            .env("DOCKER_HOST", &self.engine.host)
            .env("WASMBED_DOCKER_SOCKET", socket)
            .output()
            .map_err(|e| format!("docker-compose: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(logs) = self.compose(&["logs", "--no-color", "--tail", "15"]) {
                eprintln!("compose logs (last 15 lines each):\n{logs}");
            }
        }
        let _ = self.compose(&["down", "--volumes", "--timeout", "2"]);
    }
}

/// `wasmbed` as a user runs it, against the compose deployment.
fn wasmbed(nats_url: &str, args: &[&str]) -> String {
    try_wasmbed(nats_url, args).unwrap_or_else(|e| panic!("wasmbed {args:?}: {e}"))
}

/// `wasmbed` asked again while the service it needs is not up yet (nobody answers, or it says
/// it cannot yet: a lease being taken, no gateway announced), up to 2 min after `started`.
async fn wasmbed_once_up(nats_url: &str, args: &[&str], started: Instant) -> String {
    loop {
        match try_wasmbed(nats_url, args) {
            Ok(out) => return out,
            Err(e) => assert!(
                (e.contains("no responders") || e.contains("Unavailable"))
                    && started.elapsed() < Duration::from_secs(120),
                "wasmbed {args:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn try_wasmbed(nats_url: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(WASMBED)
        .args(args)
        .env("NATS_URL", nats_url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(text + &String::from_utf8_lossy(&out.stderr))
    }
}

/// The compose file's variables: every NATS user's password, an api token, the host ports.
fn write_env(path: &Path, users: &NatsUsers, ports: &[(&str, u16)]) {
    let mut env = String::new();
    for (name, password) in users.env() {
        env.push_str(&format!("{name}={password}\n"));
    }
    env.push_str(&format!("WASMBED_API_TOKEN={}\n", secret()));
    for (name, port) in ports {
        env.push_str(&format!("{name}={port}\n"));
    }
    std::fs::write(path, env).unwrap();
}

/// Creates `app` from `module` for exactly `devices` and deploys it, as the operator.
async fn deploy_to(
    client: &async_nats::Client,
    log: &EventLog,
    app: &AppId,
    module: &[u8],
    devices: &[DeviceId],
) {
    let target = Target::Devices(devices.to_vec());
    create_application(client, log, app, module, target, test_limits(), None)
        .await
        .unwrap();
    deploy_application(client, app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_deployment_runs_a_fleet_and_rides_out_partitions() {
    let engine = match DockerEngine::start_isolating() {
        Ok(engine) => engine,
        Err(why) => {
            println!("NOT RUN against a real Docker engine: {why}");
            return;
        }
    };
    let root = workspace_root();
    // The debug binary the test build already made; the release image differs only in speed.
    let began = Instant::now();
    let images = Command::new(root.join("scripts/images"))
        .env("DOCKER_HOST", &engine.host)
        .env("WASMBED_IMAGE_PROFILE", "debug")
        .output()
        .unwrap();
    let built = String::from_utf8_lossy(&images.stdout).into_owned();
    assert!(
        images.status.success(),
        "scripts/images: {built}{}",
        String::from_utf8_lossy(&images.stderr)
    );
    println!("{} (built in {:?})", built.trim(), began.elapsed());
    firmware::build(&root, Board::Mps2An385).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let users = NatsUsers::generate().unwrap();
    let operator = users.password(Principal::Operator).to_owned();
    let nats_port = free_port().unwrap();
    let ports = [
        ("WASMBED_NATS_PORT", nats_port),
        ("WASMBED_GATEWAY_PORT_1", free_port().unwrap()),
        ("WASMBED_GATEWAY_PORT_2", free_port().unwrap()),
        ("WASMBED_API_PORT_1", free_port().unwrap()),
        ("WASMBED_API_PORT_2", free_port().unwrap()),
    ];
    let project = Project {
        engine: &engine,
        env_file: dir.path().join("compose.env"),
        name: format!("wasmbed-test-{}", std::process::id()),
        nats_url: format!("nats://operator:{operator}@127.0.0.1:{nats_port}"),
    };
    write_env(&project.env_file, &users, &ports);
    let started = Instant::now();
    project
        .compose(&["up", "--detach"])
        .unwrap_or_else(|e| panic!("compose up: {e}"));
    let running = project.compose(&["ps", "--services", "--filter", "status=running"]);
    let running: BTreeSet<String> = running
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        // The boards' one-shot starters run (and are restarted) until the manager answers.
        .filter(|l| !l.is_empty() && !l.starts_with("board-"))
        .collect();
    assert_eq!(
        running.len(),
        15,
        "3 NATS nodes and two of each of 6 services: {running:?}"
    );

    // From outside the compose network: the operator on the published NATS port.
    let nats_url = project.nats_url.clone();
    let client = loop {
        let connecting =
            async_nats::ConnectOptions::with_user_and_password("operator".into(), operator.clone())
                .connect(format!("127.0.0.1:{nats_port}"));
        let error = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(Ok(client)) => break client,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in 5 s".to_owned(),
        };
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "NATS never up on 127.0.0.1:{nats_port}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    while call(&client, &GetCaCertificate {}, Duration::from_millis(500))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "enrollment never answered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answering = started.elapsed();

    // The two boards compose asks for (board-1, board-2), each QEMU in its own container
    // started by the renode-manager: online without anyone doing anything.
    loop {
        let list = wasmbed(&nats_url, &["device", "list"]);
        let online = list.lines().filter(|l| l.contains(" online ")).count();
        if online == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "boards not online: {list}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let online = started.elapsed();
    let containers = engine
        .docker(&[
            "ps",
            "--filter",
            "label=io.wasmbed.device",
            "--format",
            "{{.Names}}",
        ])
        .unwrap();
    assert_eq!(
        containers.lines().count(),
        2,
        "one container per board: {containers}"
    );

    let heard = Heard::follow(&client).await;
    let boards = [
        DeviceId::new("qemu-1").unwrap(),
        DeviceId::new("qemu-2").unwrap(),
    ];
    let deploying = Instant::now();
    wasmbed_once_up(
        &nats_url,
        &["app", "deploy", "--example", "sensor", "--to", "all"],
        started,
    )
    .await;
    while heard.of_since(&boards, deploying) < boards.len() {
        assert!(
            deploying.elapsed() < Duration::from_secs(60),
            "telemetry from {} of the 2 boards",
            heard.of_since(&boards, deploying)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let telemetry_after = deploying.elapsed();
    let ca = call(&client, &GetCaCertificate {}, Duration::from_secs(5))
        .await
        .unwrap()
        .certificate_pem;
    println!(
        "compose: 15 service containers up, enrollment answering {answering:?} after `up`; the \
         2 QEMU boards compose asks for online {online:?} after `up`; the sensor app deployed \
         and telemetry from both on 127.0.0.1:{nats_port} {telemetry_after:?} after `app \
         deploy`"
    );

    let log = EventLog::open(client.clone(), &LogOptions { replicas: 3 })
        .await
        .unwrap();
    let (sims, ids) = gateway_partitioned(&engine, &project, &client, &log, &heard, &ca).await;
    deployer_paused(&engine, &project, &client, &log, &ids).await;
    nats_node_cut(&engine, &project, &client, &log, &heard, &ids).await;
    for sim in sims {
        sim.stop().await;
    }
}

/// Simulated devices attached to gateway-1 on the `edge` network; gateway-1 is then cut from the
/// bus (`docker network disconnect` of `fleet`), its devices must move to gateway-2 and their
/// telemetry flow again; then it is connected again.
async fn gateway_partitioned(
    engine: &DockerEngine,
    project: &Project<'_>,
    client: &async_nats::Client,
    log: &EventLog,
    heard: &Heard,
    ca: &str,
) -> (Vec<SimDevice>, Vec<DeviceId>) {
    const DEVICES: usize = 10;
    let edge = |service| std::net::SocketAddr::new(project.address(service, "edge"), 8081);
    // gateway-1 first: every device starts there.
    let mut config = SimConfig::new(vec![edge("gateway-1"), edge("gateway-2")]);
    config.backoff_base = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(1);
    let (ids, sims) =
        connected_fleet(client, ca, config, "edge", DEVICES, Duration::from_secs(60)).await;
    // The sensor app (deployed to all) runs on them: telemetry from each.
    let edge_heard = |after: Instant| heard.of_since(&ids, after);
    let deadline = Instant::now() + Duration::from_secs(90);
    while edge_heard(Instant::now() - Duration::from_secs(5)) < DEVICES {
        assert!(Instant::now() < deadline, "telemetry from the edge devices");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sessions_before: Vec<u32> = sims.iter().map(|s| s.status().sessions).collect();

    let gateway = project.container("gateway-1");
    engine
        .docker(&["network", "disconnect", &project.network("fleet"), &gateway])
        .unwrap();
    let cut = Instant::now();
    let moved = loop {
        let moved = sims
            .iter()
            .zip(&sessions_before)
            .filter(|(s, before)| s.status().connected && s.status().sessions > **before)
            .count();
        if moved == DEVICES {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "{moved} of {DEVICES} devices moved after gateway-1 was cut off: {:?}",
            sims.iter().map(|s| s.status()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Telemetry sent through the new sessions, not what was in flight at the cut.
    let all_moved = Instant::now();
    let flowing = loop {
        if edge_heard(all_moved) == DEVICES {
            break cut.elapsed();
        }
        assert!(
            all_moved.elapsed() < Duration::from_secs(30),
            "telemetry from {} of {DEVICES} moved devices",
            edge_heard(all_moved)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    engine
        .docker(&["network", "connect", &project.network("fleet"), &gateway])
        .unwrap();
    let listed = last_gateways(log, &ids).await;
    println!(
        "compose, gateway-1 cut from the bus with {DEVICES} devices attached: all on another \
         gateway {moved:?} after, their telemetry flowing again {flowing:?} after ({listed})"
    );
    (sims, ids)
}

/// The deployer holding the lease is frozen (`docker pause`) past its lease while an app is
/// being deployed to `ids`; the other takes over and completes the deployment. Unfrozen, the
/// first must not act on what it was doing: every device runs the app once, no event twice.
async fn deployer_paused(
    engine: &DockerEngine,
    project: &Project<'_>,
    client: &async_nats::Client,
    log: &EventLog,
    ids: &[DeviceId],
) {
    let leases = log
        .jetstream()
        .get_key_value(wasmbed_schemas::subject::LEASES_BUCKET)
        .await
        .unwrap();
    let holder = || async {
        let value = leases.get("deployer").await.ok().flatten()?;
        Some(String::from_utf8_lossy(&value).into_owned())
    };
    // A container's host name is its id's first 12 characters.
    let deployers = ["deployer-1", "deployer-2"].map(|s| project.container(s));
    let holding = holder().await.expect("a deployer holds the lease");
    let frozen = deployers
        .iter()
        .find(|id| holding.contains(&id[..12]))
        .unwrap_or_else(|| panic!("{holding} is neither of {deployers:?}"))
        .clone();
    // The commands are answered first: a frozen instance keeps its share of the command queue
    // until the server drops it (about 6 s without pongs), and those commands go unanswered.
    let counter = AppId::new("counter").unwrap();
    deploy_to(client, log, &counter, wasmbed_example_apps::COUNTER, ids).await;
    engine.docker(&["pause", &frozen]).unwrap();
    let paused = Instant::now();
    let taken_over = loop {
        if let Some(now) = holder().await
            && !now.contains(&frozen[..12])
        {
            break paused.elapsed();
        }
        assert!(
            paused.elapsed() < Duration::from_secs(30),
            "nobody took the lease from the frozen deployer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_running(log, &counter, ids, paused + Duration::from_secs(60)).await;
    let done = paused.elapsed();
    engine.docker(&["unpause", &frozen]).unwrap();
    // What the unfrozen instance might still do shows within a few seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let events = all_events(log).await;
    let audit = wasmbed_e2e::cluster::LogAudit::of(&events);
    assert_eq!(audit.duplicate_ids, 0, "an event recorded twice");
    wasmbed_e2e::cluster::assert_ran_once(&events, &[&counter], ids);
    println!(
        "compose, the deployer holding the lease frozen (docker pause) with a deployment to {} \
         devices starting: the other took the lease {taken_over:?} after, the app ran on every \
         device {done:?} after; unfrozen, nothing recorded twice ({} events, each device ran it \
         once)",
        ids.len(),
        audit.events
    );
}

/// The NATS node leading the event stream is cut from the network while the devices send
/// telemetry and an app is being deployed to them, then connected again: nothing acknowledged
/// before is lost, nothing is doubled, the deployment completes and telemetry resumes.
async fn nats_node_cut(
    engine: &DockerEngine,
    project: &Project<'_>,
    client: &async_nats::Client,
    log: &EventLog,
    heard: &Heard,
    ids: &[DeviceId],
) {
    let leader = event_stream_leader(log).await;
    // Only nats-0's port is published and the test's own connection goes through it: when
    // nats-0 leads, nats-1 (a follower) is cut instead.
    let victim = if leader == "nats-0" {
        "nats-1"
    } else {
        leader.as_str()
    };
    let before = all_events(log).await;
    let gauge = AppId::new("gauge").unwrap();
    deploy_to(client, log, &gauge, wasmbed_example_apps::SENSOR, ids).await;
    let node = project.container(victim);
    engine
        .docker(&["network", "disconnect", &project.network("fleet"), &node])
        .unwrap();
    let cut = Instant::now();
    let resumed = loop {
        if heard.of_since(ids, cut) == ids.len() {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "telemetry from {} of {} devices after {victim} was cut",
            heard.of_since(ids, cut),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_running(log, &gauge, ids, cut + Duration::from_secs(90)).await;
    let deployed = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed())).await;
    engine
        .docker(&["network", "connect", &project.network("fleet"), &node])
        .unwrap();
    let after = all_events(log).await;
    let kept: BTreeSet<_> = after.iter().map(|e| e.envelope.event_id).collect();
    let lost = before
        .iter()
        .filter(|e| !kept.contains(&e.envelope.event_id))
        .count();
    let audit = wasmbed_e2e::cluster::LogAudit::of(&after);
    println!(
        "compose, {victim} (leading the event stream: {leader}) cut from the network with \
         telemetry flowing and a deployment to {} devices starting: telemetry from all {resumed:?} \
         after, the app running on all {deployed:?} after; {} events acknowledged before the cut, \
         {lost} of them lost, {} duplicates in {} events",
        ids.len(),
        before.len(),
        audit.duplicate_ids,
        audit.events
    );
    assert_eq!(lost, 0);
    assert_eq!(audit.duplicate_ids, 0);
    wasmbed_e2e::cluster::assert_ran_once(&after, &[&gauge], ids);
}

/// How many of `ids` were last connected to each gateway, per the log.
async fn last_gateways(log: &EventLog, ids: &[DeviceId]) -> String {
    let mut on: HashMap<String, String> = HashMap::new();
    for stored in &all_events(log).await {
        if let Event::DeviceConnected(c) = &stored.envelope.event
            && ids.contains(&c.device_id)
        {
            on.insert(c.device_id.to_string(), c.gateway_id.to_string());
        }
    }
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for gateway in on.values() {
        *count.entry(gateway.clone()).or_default() += 1;
    }
    format!("last connected per the log: {count:?}")
}
