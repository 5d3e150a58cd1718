//! `wasmbed up`: the embedded default on one machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_local_nats::{NatsProcess, NatsProcessConfig, find_binary, free_port};

/// The project's nats-server configuration, written into the state directory.
const NATS_CONFIG: &str = include_str!("../../../nats/nats-server.conf");

#[derive(Args)]
pub struct UpArgs {
    /// Where the system keeps its state (the NATS store, logs).
    #[arg(long, env = "WASMBED_STATE_DIR", default_value = ".state")]
    state_dir: PathBuf,
    /// Client port of the local nats-server on 127.0.0.1; 0 picks a free one.
    #[arg(long, env = "WASMBED_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
}

pub async fn run(args: UpArgs) -> Result<()> {
    let state = &args.state_dir;
    std::fs::create_dir_all(state)
        .with_context(|| format!("creating state directory {}", state.display()))?;
    let config_file = state.join("nats-server.conf");
    std::fs::write(&config_file, NATS_CONFIG).context("writing nats-server.conf")?;
    let port = match args.nats_port {
        0 => free_port()?,
        port => port,
    };
    let mut nats = NatsProcess::start(NatsProcessConfig {
        binary: find_binary(&std::env::current_dir()?)?,
        port,
        monitor_port: free_port()?,
        store_dir: state.join("nats"),
        log_file: state.join("nats-server.log"),
        config_file: Some(config_file),
        ready_timeout: Duration::from_secs(20),
    })
    .await
    .with_context(|| format!("starting nats-server on 127.0.0.1:{port}"))?;

    let client = async_nats::connect(nats.url())
        .await
        .context("connecting to the local nats-server")?;
    EventLog::open(client, &LogOptions::default())
        .await
        .context("creating the event log")?;

    println!("wasmbed is up");
    println!("  nats:  {}", nats.url());
    println!("  state: {}", state.display());
    println!("  event log: wasmbed.events.v1.> (try: wasmbed events tail --from-start)");
    println!("Ctrl-C stops everything.");

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping");
    nats.stop(Duration::from_secs(10)).await;
    Ok(())
}
