//! `wasmbed serve <service>`: one service on its own, as in Kubernetes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wasmbed_service::RuntimeOptions;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use tokio::net::TcpListener;
use wasmbed_enrollment::EnrollmentConfig;
use wasmbed_gateway::{GatewayConfig, Listeners};
use wasmbed_schemas::GatewayId;
use wasmbed_schemas::permissions::Principal;

#[derive(Subcommand)]
pub enum ServeCommand {
    /// The enrollment service: device identities, the CA, enrollment decisions.
    Enrollment(EnrollmentArgs),
    /// A gateway: the TLS 1.3 endpoint devices connect to.
    Gateway(GatewayArgs),
    /// The telemetry service: device liveness and the fleet's metrics.
    Telemetry(TelemetryArgs),
    /// The deployer: applications (WASM modules) to devices.
    Deployer(DeployerArgs),
    /// The REST api.
    Api(ApiArgs),
    /// The renode-manager: starts and stops emulated devices on command.
    RenodeManager(ManagerArgs),
    /// The projector: Device, Application and Gateway resources from the log (in a cluster:
    /// the in-cluster service account; elsewhere: the kubeconfig).
    Projector(ProjectorArgs),
}

impl ServeCommand {
    /// The service's name in traces.
    pub fn service_name(&self) -> &'static str {
        match self {
            Self::Enrollment(_) => "wasmbed-enrollment",
            Self::Gateway(_) => "wasmbed-gateway",
            Self::Telemetry(_) => "wasmbed-telemetry",
            Self::Deployer(_) => "wasmbed-deployer",
            Self::Api(_) => "wasmbed-api",
            Self::RenodeManager(_) => "wasmbed-renode-manager",
            Self::Projector(_) => "wasmbed-projector",
        }
    }
}

#[derive(Args)]
pub struct ProjectorArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// The namespace the resources are kept in.
    #[arg(long, env = "WASMBED_NAMESPACE", default_value = "wasmbed")]
    namespace: String,
}

/// Which backend runs the emulated devices.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BackendKind {
    /// `qemu-system-arm` processes on this host.
    Qemu,
    /// Renode containers through the Docker Engine API.
    RenodeDocker,
    /// QEMU containers through the Docker Engine API.
    QemuDocker,
    /// Host-simulated devices.
    Sim,
}

#[derive(Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// What runs the devices.
    #[arg(
        long,
        env = "WASMBED_EMULATOR_BACKEND",
        value_enum,
        default_value = "qemu"
    )]
    backend: BackendKind,
    /// The firmware images directory (`firmware/target`).
    #[arg(long, env = "WASMBED_FIRMWARE_DIR", default_value = "firmware/target")]
    firmware: PathBuf,
    /// The QEMU binary (qemu backend).
    #[arg(long, env = "WASMBED_QEMU", default_value = "qemu-system-arm")]
    qemu: PathBuf,
    /// The Docker engine (container backends): its socket, or `tcp://host:port` for a shared
    /// engine that every instance of the manager reaches.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    docker_host: String,
    /// The emulator image (container backends; never pulled).
    #[arg(
        long,
        env = "WASMBED_EMULATOR_IMAGE",
        default_value = "antmicro/renode:latest"
    )]
    image: String,
    /// Where device secrets are kept.
    #[arg(long, env = "WASMBED_DEVICE_KEYS", default_value = ".state/devices")]
    key_dir: PathBuf,
    /// An MCU catalogue file to use instead of the built-in `renode/catalogue.toml`.
    #[arg(long, env = "WASMBED_MCU_CATALOGUE")]
    catalogue: Option<PathBuf>,
    /// The name on the gateways' certificates.
    #[arg(long, env = "WASMBED_GATEWAY_SERVER_NAME", default_value = "localhost")]
    server_name: String,
    /// Restart emulators that end by themselves: never, on-failure, always.
    #[arg(long, env = "WASMBED_EMULATOR_RESTART", default_value = "on-failure")]
    restart: String,
}

#[derive(Args)]
pub struct ApiArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Where the api listens.
    #[arg(long, env = "WASMBED_API_LISTEN", default_value = "127.0.0.1:3001")]
    listen: SocketAddr,
    /// A read-write token, as NAME=SECRET (repeatable; comma-separated in the environment).
    #[arg(
        long = "token",
        env = "WASMBED_API_TOKENS",
        value_delimiter = ',',
        required = true
    )]
    tokens: Vec<String>,
    /// A read-only token, as NAME=SECRET (repeatable).
    #[arg(
        long = "read-token",
        env = "WASMBED_API_READ_TOKENS",
        value_delimiter = ','
    )]
    read_tokens: Vec<String>,
}

fn token(spec: &str, access: wasmbed_api::Access) -> Result<wasmbed_api::Token> {
    let (name, secret) = spec
        .split_once('=')
        .filter(|(n, s)| !n.is_empty() && s.len() >= 16)
        .context("a token is NAME=SECRET, the secret at least 16 characters")?;
    Ok(wasmbed_api::Token {
        name: name.to_owned(),
        secret: secret.to_owned(),
        access,
    })
}

#[derive(Args)]
pub struct DeployerArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// RAM budget for apps, in KiB, on devices that have not reported their own.
    #[arg(long, env = "WASMBED_DEFAULT_APP_RAM_KIB", default_value_t = 256)]
    default_app_ram_kib: u32,
    /// Accept only modules with a release signed by a trusted publisher key.
    #[arg(long, env = "WASMBED_REQUIRE_SIGNED")]
    require_signed: bool,
}

/// Where the bus is.
#[derive(Args, Clone)]
pub struct NatsArgs {
    /// The NATS server, or the nodes of a cluster comma-separated.
    #[arg(
        long = "nats",
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// This service's NATS password (its user is the service's name; see
    /// `nats/permissions.conf`). Without it, the user and password in the URL if any, else no
    /// credentials.
    #[arg(long, env = "WASMBED_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Replicas of the streams a service creates (3 in a cluster).
    #[arg(long, env = "WASMBED_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// For services without HTTP of their own (enrollment, deployer, renode-manager,
    /// projector): serve `GET /health` here (200 while connected to NATS) and `GET /ready`
    /// (200 once caught up on the log and serving).
    #[arg(long, env = "WASMBED_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
}

impl NatsArgs {
    /// How the service runs: replicas, and `/health` + `/ready` when asked.
    fn runtime(&self) -> RuntimeOptions {
        RuntimeOptions {
            replicas: self.replicas,
            health_listen: self.health_listen,
            ..RuntimeOptions::default()
        }
    }

    /// The same, for a service that answers `/health` on its own HTTP listener.
    fn runtime_with_own_http(&self) -> RuntimeOptions {
        RuntimeOptions {
            health_listen: None,
            ..self.runtime()
        }
    }
}

#[derive(Args)]
pub struct EnrollmentArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Directory of the CA key and certificate (created on first start).
    #[arg(long, env = "WASMBED_CA_DIR", default_value = ".state/ca")]
    ca_dir: PathBuf,
    /// Validity of gateway certificates, in seconds.
    #[arg(long, env = "WASMBED_GATEWAY_CERT_VALIDITY_SECS", default_value_t = 30 * 24 * 3600)]
    gateway_cert_validity_secs: u64,
}

#[derive(Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// This gateway's id.
    #[arg(long, env = "WASMBED_GATEWAY_ID", default_value = "gateway-1")]
    gateway_id: GatewayId,
    /// Where devices connect (TLS 1.3).
    #[arg(
        long,
        env = "WASMBED_GATEWAY_TLS_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    tls_listen: SocketAddr,
    /// Where `/health`, `/ready` and `/metrics` are served.
    #[arg(
        long,
        env = "WASMBED_GATEWAY_HTTP_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    http_listen: SocketAddr,
    /// `host:port` devices dial, if not the TLS listen address.
    #[arg(long, env = "WASMBED_GATEWAY_ADVERTISE")]
    advertise: Option<String>,
    /// A name or address for the certificate (repeatable; default localhost and 127.0.0.1).
    #[arg(long = "san", env = "WASMBED_GATEWAY_SANS", value_delimiter = ',')]
    subject_alt_names: Vec<String>,
    /// Heartbeat interval devices are told to keep, in milliseconds.
    #[arg(long, env = "WASMBED_HEARTBEAT_INTERVAL_MS", default_value_t = 5000)]
    heartbeat_interval_ms: u64,
    /// Sessions beyond this many are refused.
    #[arg(long, env = "WASMBED_GATEWAY_MAX_SESSIONS", default_value_t = 200_000)]
    max_sessions: usize,
    /// Bytes per second each device may send, sustained; a device over it is disconnected.
    #[arg(long, env = "WASMBED_GATEWAY_UPLINK_BYTES_PER_SECOND", default_value_t = 1024 * 1024)]
    uplink_bytes_per_second: u64,
    /// Bytes each device may send at once, above the sustained rate.
    #[arg(long, env = "WASMBED_GATEWAY_UPLINK_BURST_BYTES", default_value_t = 2 * 1024 * 1024)]
    uplink_burst_bytes: u64,
}

#[derive(Args)]
pub struct TelemetryArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Where `/health` and `/metrics` are served.
    #[arg(
        long,
        env = "WASMBED_TELEMETRY_HTTP_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    http_listen: SocketAddr,
    /// The heartbeat interval gateways tell devices, in milliseconds.
    #[arg(long, env = "WASMBED_HEARTBEAT_INTERVAL_MS", default_value_t = 5000)]
    heartbeat_interval_ms: u64,
    /// A device silent for this many intervals is offline.
    #[arg(long, env = "WASMBED_MISSED_HEARTBEATS", default_value_t = 3)]
    missed_heartbeats: u32,
}

pub async fn run(command: ServeCommand) -> Result<()> {
    match command {
        ServeCommand::Enrollment(args) => {
            let client = connect(&args.nats, Principal::Enrollment).await?;
            let mut config = EnrollmentConfig::new(args.ca_dir);
            config.gateway_certificate_validity =
                Duration::from_secs(args.gateway_cert_validity_secs);
            config.runtime = args.nats.runtime();
            wasmbed_enrollment::run(client, config, ctrl_c()).await?;
        }
        ServeCommand::Gateway(args) => {
            let client = connect(&args.nats, Principal::Gateway).await?;
            let mut config = GatewayConfig::new(args.gateway_id);
            config.advertised_endpoint = args.advertise;
            if !args.subject_alt_names.is_empty() {
                config.subject_alt_names = args.subject_alt_names;
            }
            config.heartbeat_interval = Duration::from_millis(args.heartbeat_interval_ms);
            config.max_sessions = args.max_sessions;
            config.uplink_bytes_per_second = args.uplink_bytes_per_second;
            config.uplink_burst_bytes = args.uplink_burst_bytes;
            config.runtime = args.nats.runtime_with_own_http();
            let listeners = Listeners {
                tls: TcpListener::bind(args.tls_listen)
                    .await
                    .with_context(|| format!("binding {}", args.tls_listen))?,
                http: TcpListener::bind(args.http_listen)
                    .await
                    .with_context(|| format!("binding {}", args.http_listen))?,
            };
            wasmbed_gateway::run(client, config, listeners, ctrl_c()).await?;
        }
        ServeCommand::Telemetry(args) => {
            let client = connect(&args.nats, Principal::Telemetry).await?;
            let config = wasmbed_telemetry::TelemetryConfig {
                heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
                missed_heartbeats: args.missed_heartbeats,
                runtime: args.nats.runtime_with_own_http(),
                ..Default::default()
            };
            let http = TcpListener::bind(args.http_listen)
                .await
                .with_context(|| format!("binding {}", args.http_listen))?;
            wasmbed_telemetry::run(client, config, http, ctrl_c()).await?;
        }
        ServeCommand::Deployer(args) => {
            let client = connect(&args.nats, Principal::Deployer).await?;
            let config = wasmbed_deployer::DeployerConfig {
                default_app_ram_bytes: args.default_app_ram_kib.saturating_mul(1024),
                require_signed: args.require_signed,
                runtime: args.nats.runtime(),
                ..Default::default()
            };
            wasmbed_deployer::run(client, config, ctrl_c()).await?;
        }
        ServeCommand::Api(args) => {
            let mut tokens = Vec::new();
            for spec in &args.tokens {
                tokens.push(token(spec, wasmbed_api::Access::ReadWrite)?);
            }
            for spec in &args.read_tokens {
                tokens.push(token(spec, wasmbed_api::Access::ReadOnly)?);
            }
            let client = connect(&args.nats, Principal::Api).await?;
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("binding {}", args.listen))?;
            let config = wasmbed_api::ApiConfig {
                tokens,
                runtime: args.nats.runtime_with_own_http(),
            };
            wasmbed_api::run(client, config, listener, ctrl_c()).await?;
        }
        ServeCommand::Projector(args) => {
            let client = connect(&args.nats, Principal::Projector).await?;
            let kube = kube::Client::try_default()
                .await
                .context("no Kubernetes API: neither in a cluster nor a kubeconfig")?;
            let config = wasmbed_projector::ProjectorConfig {
                namespace: args.namespace,
                runtime: args.nats.runtime(),
                ..Default::default()
            };
            wasmbed_projector::run(client, kube, config, ctrl_c()).await?;
        }
        ServeCommand::RenodeManager(args) => {
            let client = connect(&args.nats, Principal::RenodeManager).await?;
            let config = manager_config(args)?;
            wasmbed_renode_manager::run(client, config, ctrl_c()).await?;
        }
    }
    Ok(())
}

fn manager_config(args: ManagerArgs) -> Result<wasmbed_renode_manager::ManagerConfig> {
    use wasmbed_renode_manager::backend::{Backend, QemuBackend};
    use wasmbed_renode_manager::docker::{ContainerBackend, ContainerConfig};
    let container = |config: fn(String, String, PathBuf) -> ContainerConfig| {
        Backend::Container(std::sync::Arc::new(ContainerBackend::new(config(
            args.docker_host.clone(),
            args.image.clone(),
            args.firmware.clone(),
        ))))
    };
    let backend = match args.backend {
        BackendKind::Qemu => Backend::Qemu(QemuBackend {
            qemu: args.qemu.clone(),
            images: args.firmware.clone(),
        }),
        BackendKind::RenodeDocker => container(ContainerConfig::renode),
        BackendKind::QemuDocker => container(ContainerConfig::qemu),
        BackendKind::Sim => Backend::Sim,
    };
    let catalogue = match &args.catalogue {
        Some(path) => wasmbed_renode_manager::catalogue::Catalogue::load(path)?,
        None => wasmbed_renode_manager::catalogue::Catalogue::bundled()?,
    };
    let mode = match args.restart.as_str() {
        "never" => wasmbed_renode_manager::RestartMode::Never,
        "on-failure" => wasmbed_renode_manager::RestartMode::OnFailure,
        "always" => wasmbed_renode_manager::RestartMode::Always,
        other => anyhow::bail!("--restart {other:?}: choose never, on-failure or always"),
    };
    Ok(wasmbed_renode_manager::ManagerConfig {
        backend,
        catalogue,
        key_dir: args.key_dir,
        server_name: args.server_name,
        restart: wasmbed_renode_manager::RestartPolicy {
            mode,
            ..Default::default()
        },
        runtime: args.nats.runtime(),
    })
}

/// A connection as the service's own NATS user that keeps retrying, so a service may start
/// before NATS. `--nats` may list several servers, comma-separated (the nodes of a cluster):
/// the client moves to another when one goes.
pub async fn connect(nats: &NatsArgs, principal: Principal) -> Result<async_nats::Client> {
    let options = wasmbed_local_nats::connect_options(principal, nats.nats_password.as_deref());
    let servers: Vec<&str> = nats.nats_url.split(',').map(str::trim).collect();
    let options = match nats.nats_password {
        Some(_) => options,
        None => wasmbed_local_nats::with_url_credentials(options, servers[0]),
    };
    let addresses = servers
        .iter()
        .map(|url| url.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--nats {}", nats.nats_url))?;
    options
        .retry_on_initial_connect()
        .connect(addresses)
        .await
        .with_context(|| format!("connecting to {}", nats.nats_url))
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn ctrl_c() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
