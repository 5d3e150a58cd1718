//! `wasmbed`: run the system (`up`), drive it (`device`, `app`) and look at it (`events tail`,
//! `telemetry tail`).

mod app;
mod device;
mod emulated;
mod emulator;
mod events;
mod observe;
mod release;
mod rollout;
mod serve;
mod table;
mod tail;
mod telemetry;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};

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

/// The name a process of `command` has in traces.
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::Up(_) => "wasmbed",
        Command::Serve(serve) => serve.service_name(),
        _ => "wasmbed-cli",
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let print_spans = matches!(&cli.command, Command::Up(args) if args.trace);
    let tracing = observe::init(service_name(&cli.command), print_spans);
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
    drop(tracing);
    if let Err(e) = result {
        // One line: scripts read it.
        eprintln!("wasmbed: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words of one shell command line: quotes group, `$(…)` stays one word.
    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut depth = 0usize;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '"' | '\'') if depth == 0 => quote = Some(c),
                (None, '(') if word.ends_with('$') || depth > 0 => {
                    depth += 1;
                    word.push(c);
                }
                (None, ')') if depth > 0 => {
                    depth -= 1;
                    word.push(c);
                }
                (None, ' ') if depth == 0 => {
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                }
                (None, c) => word.push(c),
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out
    }

    /// Every `wasmbed …` command in the README's `sh` blocks, as written (comments cut,
    /// `;`-separated commands split, continuation lines joined).
    fn readme_commands() -> Vec<String> {
        let readme = include_str!("../../../README.md");
        let mut commands = Vec::new();
        let mut in_sh = false;
        let mut pending = String::new();
        for line in readme.lines() {
            if line.starts_with("```") {
                in_sh = line == "```sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            let line = line.split(" # ").next().unwrap_or("").trim_end();
            if let Some(start) = line.strip_suffix('\\') {
                pending.push_str(start);
                continue;
            }
            let full = std::mem::take(&mut pending) + line;
            for command in full.split("; ") {
                let command = command.trim();
                let command = command.strip_prefix("target/release/").unwrap_or(command);
                if command.starts_with("wasmbed ") {
                    commands.push(command.to_owned());
                }
            }
        }
        commands
    }

    /// Every `wasmbed` command the README shows parses: its subcommands and flags exist and
    /// take what it gives them. (What they do against a running system is walked by
    /// `a_new_user_walks_the_readme_after_up`.) A placeholder like `<64 hex digits…>` stands for
    /// a value: a real one of its kind is put in its place.
    #[test]
    fn every_wasmbed_command_in_the_readme_parses() {
        let commands = readme_commands();
        assert!(commands.len() >= 40, "{commands:?}");
        for command in &commands {
            let mut line = command.clone();
            if let (Some(start), Some(end)) = (line.find('<'), line.find('>')) {
                line.replace_range(start..=end, &"ab".repeat(32));
            }
            let args = words(&line);
            if let Err(e) = Cli::try_parse_from(&args) {
                panic!("README: `{command}` does not parse:\n{e}");
            }
        }
    }
}
