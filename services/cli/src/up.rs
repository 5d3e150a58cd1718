//! `wasmbed up`: the embedded default on one machine — a local nats-server, every service built
//! so far (enrollment, a gateway, telemetry, the deployer) in this process, each on its own
//! NATS connection and talking only over the bus, and simulated devices that enroll, connect
//! and run an example app.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use ed25519_dalek::SigningKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmbed_bus::call;
use wasmbed_enrollment::EnrollmentConfig;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_gateway::{GatewayConfig, Listeners};
use wasmbed_local_nats::{
    ClusterConfig, NatsProcess, NatsProcessConfig, NatsUsers, find_binary, free_port,
    start_cluster, write_secured_config,
};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::{
    CreateApplication, DeployApplication, GetCaCertificate, RegisterDevice, TrustPublisher,
};
use wasmbed_schemas::event::Target;
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::{AppId, DeviceId, GatewayId, PublicKey};
use wasmbed_sim::{Connector, SimConfig, SimDevice};

/// Prints a line; a closed stdout (`wasmbed up | head`) must not take the system down.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The project's nats-server configuration, written into the state directory.
const NATS_CONFIG: &str = include_str!("../../../nats/nats-server.conf");
const NATS_PERMISSIONS: &str = include_str!("../../../nats/permissions.conf");

#[derive(Args)]
pub struct UpArgs {
    /// Print every span as it closes (with its timing) on stderr: one deploy or enrollment
    /// followed through the services. `WASMBED_TRACE` filters them (default `info`).
    #[arg(long)]
    pub trace: bool,
    /// Where the system keeps its state (the NATS store, the CA, device keys, logs).
    #[arg(long, env = "WASMBED_STATE_DIR", default_value = ".state")]
    state_dir: PathBuf,
    /// Client port of the local nats-server on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "WASMBED_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    /// The gateway's TLS port on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "WASMBED_GATEWAY_PORT", default_value_t = 8081)]
    gateway_port: u16,
    /// The gateway's HTTP port (health, metrics) on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "WASMBED_GATEWAY_HTTP_PORT", default_value_t = 8080)]
    gateway_http_port: u16,
    /// The telemetry service's HTTP port (health, fleet metrics) on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "WASMBED_TELEMETRY_HTTP_PORT", default_value_t = 8082)]
    telemetry_http_port: u16,
    /// The api's port on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "WASMBED_API_PORT", default_value_t = 3001)]
    api_port: u16,
    /// How many simulated devices to run.
    #[arg(long, env = "WASMBED_DEVICES", default_value_t = 3)]
    devices: usize,
    /// How many emulated boards the renode-manager boots (QEMU mps2-an385 running the device
    /// firmware; simulated when QEMU or the firmware image is missing).
    #[arg(long, env = "WASMBED_EMULATED", default_value_t = 1)]
    emulated: usize,
    /// The firmware images directory (`scripts/firmware` builds the images into it).
    #[arg(long, env = "WASMBED_FIRMWARE_DIR", default_value = "firmware/target")]
    firmware: PathBuf,
    /// The QEMU binary.
    #[arg(long, env = "WASMBED_QEMU", default_value = "qemu-system-arm")]
    qemu: String,
    /// The example app to deploy to every device (`sensor`, `counter`), or `none`.
    #[arg(long, env = "WASMBED_EXAMPLE_APP", default_value = "sensor")]
    example_app: String,
    /// Accept modules without a signed release (by default only releases signed by a trusted
    /// publisher key are accepted; `up` makes the first key, `publisher.key` in the state
    /// directory, and provisions every device with it).
    #[arg(long, env = "WASMBED_ALLOW_UNSIGNED")]
    allow_unsigned: bool,
    /// 3: a 3-node JetStream cluster (client ports --nats-port and the next two), every stream
    /// and bucket with three replicas, and two instances of every service (to watch failover on
    /// one machine: kill a node or an instance and see the rest carry on). 1: one of each.
    #[arg(long, env = "WASMBED_REPLICAS", default_value_t = 1, value_parser = replicas_arg)]
    replicas: usize,
}

fn replicas_arg(text: &str) -> Result<usize, String> {
    match text {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!(
            "{text:?}: 1 (one server, one of each service) or 3 (a cluster)"
        )),
    }
}

/// The local nats-server: one process, or the nodes of a cluster.
struct Nats {
    nodes: Vec<NatsProcess>,
}

impl Nats {
    fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsProcess::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn addresses(&self) -> Vec<async_nats::ServerAddr> {
        self.nodes
            .iter()
            .filter_map(|n| n.url().parse().ok())
            .collect()
    }

    async fn stop(&mut self, grace: Duration) {
        for node in &mut self.nodes {
            node.stop(grace).await;
        }
    }
}

/// A task of one more instance of a service, whatever its error type.
type Extra = (&'static str, tokio::task::JoinHandle<Result<()>>);

fn extra<E: Into<anyhow::Error>>(
    name: &'static str,
    task: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> Extra {
    (
        name,
        tokio::spawn(async move { task.await.map_err(Into::into) }),
    )
}

pub async fn run(args: UpArgs) -> Result<()> {
    let state = args.state_dir.clone();
    std::fs::create_dir_all(&state)
        .with_context(|| format!("creating state directory {}", state.display()))?;
    // Every service is its own NATS user (nats/permissions.conf), with a password made for
    // this run; a client without credentials (the CLI on this machine) is the operator.
    let users = NatsUsers::generate().context("making the NATS users' passwords")?;
    let replicas = args.replicas;
    let mut nats = start_nats(&state, args.nats_port, &users, replicas).await?;
    let addresses = nats.addresses();
    let connect = |principal: Principal| {
        let addresses = addresses.clone();
        let password = users.password(principal).to_owned();
        async move {
            wasmbed_local_nats::connect_options(principal, Some(&password))
                .connect(addresses)
                .await
                .with_context(|| {
                    format!("connecting {} to the local nats-server", principal.name())
                })
        }
    };
    // A new cluster elects its meta leader first: creating the streams waits for it.
    let mut opened = None;
    for _ in 0..100 {
        match EventLog::open(
            connect(Principal::Operator).await?,
            &LogOptions { replicas },
        )
        .await
        {
            Ok(log) => {
                opened = Some(log);
                break;
            }
            Err(e) if replicas > 1 => {
                tracing::debug!(error = %e, "the cluster is not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("creating the event log"),
        }
    }
    opened.context("the NATS cluster did not become ready within 20 s")?;
    let runtime = || wasmbed_service::RuntimeOptions {
        replicas,
        ..Default::default()
    };
    let instances = if replicas > 1 { 2 } else { 1 };
    let mut extras: Vec<Extra> = Vec::new();

    let (stop, stopping) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let enrollment_config = || {
        let mut config = EnrollmentConfig::new(state.join("ca"));
        config.runtime = runtime();
        config
    };
    let enrollment = tokio::spawn(wasmbed_enrollment::run(
        connect(Principal::Enrollment).await?,
        enrollment_config(),
        until_stopped(stopping.clone()),
    ));
    // The gateway asks enrollment for its certificate: start it once enrollment answers.
    let client = connect(Principal::Operator).await?;
    let ca = wait_for_ca(&client).await?;
    // The second enrollment once the first has made the CA (they share its directory).
    for _ in 1..instances {
        extras.push(extra(
            "enrollment",
            wasmbed_enrollment::run(
                connect(Principal::Enrollment).await?,
                enrollment_config(),
                until_stopped(stopping.clone()),
            ),
        ));
    }
    let tls = TcpListener::bind(("127.0.0.1", args.gateway_port))
        .await
        .with_context(|| format!("binding the gateway to 127.0.0.1:{}", args.gateway_port))?;
    let http = TcpListener::bind(("127.0.0.1", args.gateway_http_port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.gateway_http_port))?;
    let (gateway_addr, http_addr) = (tls.local_addr()?, http.local_addr()?);
    let gateway_config = |id: &str| -> Result<GatewayConfig> {
        let mut config = GatewayConfig::new(GatewayId::new(id)?);
        config.runtime = runtime();
        Ok(config)
    };
    let gateway = tokio::spawn(wasmbed_gateway::run(
        connect(Principal::Gateway).await?,
        gateway_config("gateway-1")?,
        Listeners { tls, http },
        until_stopped(stopping.clone()),
    ));
    let mut gateway_addrs = vec![gateway_addr];
    for n in 2..=instances {
        let tls = TcpListener::bind(("127.0.0.1", 0)).await?;
        let http = TcpListener::bind(("127.0.0.1", 0)).await?;
        gateway_addrs.push(tls.local_addr()?);
        extras.push(extra(
            "gateway",
            wasmbed_gateway::run(
                connect(Principal::Gateway).await?,
                gateway_config(&format!("gateway-{n}"))?,
                Listeners { tls, http },
                until_stopped(stopping.clone()),
            ),
        ));
    }

    let telemetry_http = TcpListener::bind(("127.0.0.1", args.telemetry_http_port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.telemetry_http_port))?;
    let telemetry_addr = telemetry_http.local_addr()?;
    let telemetry_config = || wasmbed_telemetry::TelemetryConfig {
        runtime: runtime(),
        ..Default::default()
    };
    let telemetry = tokio::spawn(wasmbed_telemetry::run(
        connect(Principal::Telemetry).await?,
        telemetry_config(),
        telemetry_http,
        until_stopped(stopping.clone()),
    ));
    let deployer_config = || wasmbed_deployer::DeployerConfig {
        require_signed: !args.allow_unsigned,
        runtime: runtime(),
        ..Default::default()
    };
    let deployer = tokio::spawn(wasmbed_deployer::run(
        connect(Principal::Deployer).await?,
        deployer_config(),
        until_stopped(stopping.clone()),
    ));
    for _ in 1..instances {
        extras.push(extra(
            "telemetry",
            wasmbed_telemetry::run(
                connect(Principal::Telemetry).await?,
                telemetry_config(),
                TcpListener::bind(("127.0.0.1", 0)).await?,
                until_stopped(stopping.clone()),
            ),
        ));
        extras.push(extra(
            "deployer",
            wasmbed_deployer::run(
                connect(Principal::Deployer).await?,
                deployer_config(),
                until_stopped(stopping.clone()),
            ),
        ));
    }
    let publisher = crate::release::keygen(&state.join(crate::release::STATE_KEY))?;
    let trust = trust_first_key(&client, &publisher).await?;

    let api_listener = TcpListener::bind(("127.0.0.1", args.api_port))
        .await
        .with_context(|| format!("binding the api to 127.0.0.1:{}", args.api_port))?;
    let api_addr = api_listener.local_addr()?;
    let api_token = api_token(&state)?;
    let api_config = || wasmbed_api::ApiConfig {
        tokens: vec![wasmbed_api::Token {
            name: "up".into(),
            secret: api_token.clone(),
            access: wasmbed_api::Access::ReadWrite,
        }],
        runtime: runtime(),
    };
    let api = tokio::spawn(wasmbed_api::run(
        connect(Principal::Api).await?,
        api_config(),
        api_listener,
        until_stopped(stopping.clone()),
    ));
    let mut api_addrs = vec![api_addr];
    for _ in 1..instances {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        api_addrs.push(listener.local_addr()?);
        extras.push(extra(
            "api",
            wasmbed_api::run(
                connect(Principal::Api).await?,
                api_config(),
                listener,
                until_stopped(stopping.clone()),
            ),
        ));
    }

    let connector = Connector::new(&ca, "localhost")?;
    let mut sim_config = SimConfig::new(gateway_addrs.clone());
    // Provisioned like every board: the fleet's publisher keys as of now.
    sim_config.agent.publishers = trust.trusted();
    sim_config.agent.trust_serial = trust.serial;
    let sim_config = Arc::new(sim_config);
    let mut devices = Vec::new();
    for n in 1..=args.devices {
        let id = DeviceId::new(format!("sim-{n}"))?;
        let key = device_key(&state, &id)?;
        register(&client, &id, &key, "simulated").await?;
        devices.push((
            id,
            SimDevice::spawn(connector.clone(), sim_config.clone(), key),
        ));
    }
    let mut connected = 0;
    for (id, device) in &mut devices {
        match device
            .wait_for(|s| s.connected, Duration::from_secs(30))
            .await
        {
            Ok(_) => connected += 1,
            Err(status) => tracing::warn!(device = %id, ?status, "device did not connect"),
        }
    }

    let (mut manager_config, emulator_kind) =
        crate::emulated::manager_config(&state, args.firmware.clone(), &args.qemu)?;
    manager_config.runtime = runtime();
    for _ in 1..instances {
        extras.push(extra(
            "renode-manager",
            wasmbed_renode_manager::run(
                connect(Principal::RenodeManager).await?,
                manager_config.clone(),
                until_stopped(stopping.clone()),
            ),
        ));
    }
    let board_prefix = match manager_config.backend {
        wasmbed_renode_manager::backend::Backend::Qemu(_) => "qemu",
        _ => "emu",
    };
    let manager = tokio::spawn(wasmbed_renode_manager::run(
        connect(Principal::RenodeManager).await?,
        manager_config,
        until_stopped(stopping.clone()),
    ));
    let boards_line =
        crate::emulated::start(&client, args.emulated, board_prefix, &emulator_kind).await?;

    let app_line = deploy_example(&client, &args.example_app, &publisher).await?;

    say!("wasmbed is up");
    if replicas > 1 {
        say!(
            "  cluster: {} JetStream nodes (stores in {}), three replicas of every stream; two \
             instances of every service (the second gateway on {}, the second api on {})",
            nats.nodes.len(),
            state.join("nats-cluster").display(),
            gateway_addrs
                .get(1)
                .map_or_else(String::new, ToString::to_string),
            api_addrs
                .get(1)
                .map_or_else(String::new, ToString::to_string)
        );
    }
    say!("  nats:    {}", nats.url());
    say!("  gateway: {gateway_addr} (TLS 1.3)  http://{http_addr}/metrics");
    say!("  fleet:   http://{telemetry_addr}/metrics");
    say!(
        "  api:     http://{api_addr}  (token in {})",
        state.join("api-token").display()
    );
    say!("  token:   {api_token}");
    say!("  dashboard: http://{api_addr}/#token={api_token}");
    say!(
        "  devices: {connected} of {} simulated devices connected ({})",
        devices.len(),
        devices
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    say!("  emulated: {boards_line}");
    say!("  apps:    {app_line}");
    let examples = write_examples(&state)?;
    say!(
        "  examples: {} (or `wasmbed app deploy --example NAME`)",
        examples.display()
    );
    say!(
        "  releases: signed by {} ({}){}",
        crate::release::public(&publisher),
        state.join(crate::release::STATE_KEY).display(),
        if args.allow_unsigned {
            "; unsigned modules accepted too"
        } else {
            "; unsigned modules are refused"
        }
    );
    say!("  state:   {}", state.display());
    say!(
        "Watch the log: wasmbed events tail --from-start --nats {}",
        nats.nodes[0].url()
    );
    say!("Ctrl-C stops everything.");

    crate::serve::ctrl_c().await;
    say!("stopping");
    for (_, device) in devices {
        device.stop().await;
    }
    let _ = stop.send(true);
    // The manager stops its boards before it returns; the gateway must outlive their goodbyes.
    let manager = manager.await;
    let (gateway, enrollment, telemetry, deployer, api) = (
        gateway.await,
        enrollment.await,
        telemetry.await,
        deployer.await,
        api.await,
    );
    for (name, task) in extras {
        task.await
            .with_context(|| format!("{name} task"))?
            .with_context(|| format!("the second {name}"))?;
    }
    nats.stop(Duration::from_secs(10)).await;
    gateway.context("gateway task")??;
    enrollment.context("enrollment task")??;
    telemetry.context("telemetry task")??;
    deployer.context("deployer task")??;
    api.context("api task")??;
    manager.context("renode-manager task")??;
    Ok(())
}

/// The api token of this state directory: made once, kept (0600) so scripts and a second `up`
/// use the same one.
fn api_token(state: &Path) -> Result<String> {
    let path = state.join("api-token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim();
        if !token.is_empty() {
            return Ok(token.to_owned());
        }
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(token)
}

/// Writes the example modules built into this binary to `<state>/examples/<name>.wasm`, so the
/// README's commands have files to deploy; returns the directory.
fn write_examples(state: &std::path::Path) -> Result<PathBuf> {
    let dir = state.join("examples");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, module) in wasmbed_example_apps::ALL {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, module).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

/// Trusts `key` as the fleet's first publisher key (nothing to do when it is trusted already);
/// returns the trust chain as it stands.
async fn trust_first_key(
    client: &async_nats::Client,
    key: &SigningKey,
) -> Result<wasmbed_fleet::Publishers> {
    let public = crate::release::public(key);
    let publishers = crate::device::fleet(client).await?.publishers;
    if publishers.trusted().contains(&public) {
        return Ok(publishers);
    }
    if publishers.serial > 0 {
        tracing::warn!(%public, "the state directory's publisher key is not trusted by this fleet");
        return Ok(publishers);
    }
    let trust = TrustPublisher {
        public_key: public,
        name: "wasmbed up".to_owned(),
        rotation: None,
    };
    retry_until_answered(client, &trust)
        .await
        .context("trusting the publisher key")?;
    Ok(crate::device::fleet(client).await?.publishers)
}

/// Calls `command`, retrying while nobody answers (a service still catching up on the log).
async fn retry_until_answered<C: wasmbed_schemas::command::Command>(
    client: &async_nats::Client,
    command: &C,
) -> Result<C::Reply> {
    for _ in 0..100 {
        match call(client, command, Duration::from_millis(500)).await {
            Err(wasmbed_bus::CallError::Transport { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
    bail!("{} did not answer within 60 s", C::SERVICE.as_str())
}

/// Deploys one of the built-in example apps to every device (idempotent across restarts),
/// signed by `publisher`; returns a line for the banner.
async fn deploy_example(
    client: &async_nats::Client,
    name: &str,
    publisher: &SigningKey,
) -> Result<String> {
    if name == "none" {
        return Ok("none deployed (--example-app none)".to_owned());
    }
    let Some((_, module)) = wasmbed_example_apps::ALL
        .iter()
        .find(|(n, _)| *n == name && *n != "spin")
    else {
        bail!("--example-app {name:?}: choose sensor, counter or none");
    };
    let js = async_nats::jetstream::new(client.clone());
    let sha = wasmbed_deployer::upload_module(&js, module).await?;
    let app_id = AppId::new(name)?;
    let limits = Limits {
        fuel_per_invocation: 1_000_000,
        max_memory_pages: 2,
        tick_interval_ms: 1000,
    };
    let topics: Vec<String> = wasmbed_example_apps::topics(name)
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    let release = crate::release::sign(publisher, &app_id, 1, module, &limits, &topics)?;
    // The deployer may still be catching up on the log: retry until it answers.
    let create = CreateApplication {
        app_id: app_id.clone(),
        name: format!("example: {name}"),
        module_sha256: sha,
        target: Target::All,
        config: Blob(b"embedded".to_vec()),
        limits,
        release: Some(release),
    };
    retry_until_answered(client, &create)
        .await
        .with_context(|| format!("creating the {name} app"))?;
    call(
        client,
        &DeployApplication {
            app_id: app_id.clone(),
        },
        Duration::from_secs(5),
    )
    .await
    .with_context(|| format!("deploying the {name} app"))?;
    Ok(format!(
        "{app_id} deployed to every device; watch it: wasmbed telemetry tail"
    ))
}

async fn start_nats(state: &Path, port: u16, users: &NatsUsers, replicas: usize) -> Result<Nats> {
    let config_file = write_secured_config(
        state,
        NATS_CONFIG,
        NATS_PERMISSIONS,
        Some(Principal::Operator),
    )
    .context("writing the nats-server config")?;
    let binary = find_binary(&std::env::current_dir()?)?;
    if replicas > 1 {
        let client_ports = (0..replicas)
            .map(|i| if port == 0 { 0 } else { port + i as u16 })
            .collect();
        let nodes = start_cluster(&ClusterConfig {
            binary,
            client_ports,
            dir: state.join("nats-cluster"),
            config_file: Some(config_file),
            env: users.env(),
            name: "wasmbed".into(),
        })
        .await
        .with_context(|| format!("starting a {replicas}-node nats-server cluster"))?;
        return Ok(Nats { nodes });
    }
    let port = match port {
        0 => free_port()?,
        port => port,
    };
    let node = NatsProcess::start(NatsProcessConfig {
        binary,
        port,
        monitor_port: free_port()?,
        store_dir: state.join("nats"),
        log_file: state.join("nats-server.log"),
        config_file: Some(config_file),
        ready_timeout: Duration::from_secs(20),
        env: users.env(),
        extra_args: Vec::new(),
    })
    .await
    .with_context(|| format!("starting nats-server on 127.0.0.1:{port}"))?;
    Ok(Nats { nodes: vec![node] })
}

async fn wait_for_ca(client: &async_nats::Client) -> Result<String> {
    for _ in 0..100 {
        if let Ok(ca) = call(client, &GetCaCertificate {}, Duration::from_millis(300)).await {
            return Ok(ca.certificate_pem);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("enrollment did not answer within 30 s")
}

/// The device's key, kept in the state directory so it is the same device after a restart
/// (the same key store the renode-manager keeps its boards' secrets in).
fn device_key(state: &Path, id: &DeviceId) -> Result<SigningKey> {
    let secret = wasmbed_renode_manager::keys::KeyStore::new(state.join("devices")).secret(id)?;
    Ok(SigningKey::from_bytes(&secret))
}

pub(crate) async fn register(
    client: &async_nats::Client,
    id: &DeviceId,
    key: &SigningKey,
    mcu: &str,
) -> Result<()> {
    call(
        client,
        &RegisterDevice {
            device_id: id.clone(),
            public_key: PublicKey(key.verifying_key().to_bytes()),
            mcu: Some(mcu.into()),
            labels: Default::default(),
        },
        Duration::from_secs(5),
    )
    .await
    .with_context(|| format!("registering {id}"))?;
    Ok(())
}
