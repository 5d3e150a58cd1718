//! `wasmbed`: run the system (`up`), drive it (`device`, `app`) and look at it (`events tail`,
//! `telemetry tail`).

mod app;
mod device;
mod emulated;
mod emulator;
mod events;
mod release;
mod rollout;
mod serve;
mod table;
mod tail;
mod telemetry;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Wasmbed: WebAssembly applications on microcontroller fleets.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded default: a local nats-server with the event log, and the services.
    Up(up::UpArgs),
    /// Devices: register, list, show.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Applications: deploy (upload, roll out, wait), list, stop, delete.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Staged rollouts: start (waves behind health gates), status, approve, pause, resume,
    /// abort, list.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Signed releases: publisher keys (keygen), signing modules (sign), the fleet's trusted
    /// keys (trust, revoke, list).
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Emulated devices: start, stop, restart, list.
    #[command(subcommand)]
    Emulator(emulator::EmulatorCommand),
    /// Read the event log.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Read telemetry.
    #[command(subcommand)]
    Telemetry(telemetry::TelemetryCommand),
    /// Create the CA (ca-key.pem, ca-cert.pem) in a directory, or show the one there: for the
    /// cluster's `wasmbed-ca` Secret.
    CaInit {
        /// The directory.
        #[arg(long, default_value = "ca")]
        dir: std::path::PathBuf,
    },
    /// Print the Kubernetes CRDs (Device, Application, Gateway) as YAML, generated from the
    /// Rust types: `wasmbed crds > k8s/crds/wasmbed.yaml`.
    Crds,
    /// Print the NATS users and their permissions (one per service) as nats-server config,
    /// generated from the Rust table: `wasmbed nats-permissions > nats/permissions.conf`.
    NatsPermissions,
    /// Run one service on its own (as in Kubernetes).
    #[command(subcommand)]
    Serve(serve::ServeCommand),
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WASMBED_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Events(command) => events::run(command).await,
        Command::Release(command) => release::run(command).await,
        Command::Emulator(command) => emulator::run(command).await,
        Command::Device(command) => device::run(command).await,
        Command::App(command) => app::run(command).await,
        Command::Rollout(command) => rollout::run(command).await,
        Command::Serve(command) => serve::run(command).await,
        Command::CaInit { dir } => wasmbed_enrollment::CertificateAuthority::load_or_create(&dir)
            .map(|ca| print!("{}", ca.certificate_pem()))
            .map_err(|e| anyhow::anyhow!("the CA in {}: {e}", dir.display())),
        Command::NatsPermissions => {
            print!("{}", wasmbed_schemas::permissions::authorization_conf());
            Ok(())
        }
        Command::Crds => wasmbed_projector::crd::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(|e| anyhow::anyhow!("rendering the CRDs: {e}")),
        Command::Telemetry(command) => telemetry::run(command).await,
    };
    if let Err(e) = result {
        // One line: scripts read it.
        eprintln!("wasmbed: {e:#}");
        std::process::exit(1);
    }
}
