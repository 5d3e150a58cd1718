//! `wasmbed app deploy|list|stop|delete`: applications, over the bus. `deploy` uploads the
//! module, creates or updates the application, rolls it out and shows progress until every
//! target device runs it, or says why not.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use wasmbed_bus::call;
use wasmbed_eventlog::modules::upload_module;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::{
    CreateApplication, DeleteApplication, DeployApplication, StopApplication, UpdateApplication,
};
use wasmbed_schemas::event::{Event, Target};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::rest::DesiredState;
use wasmbed_schemas::{AggregateKind, AppId, DeviceId, subject};

use crate::device::{Bus, fleet, humantime_secs, phase_text};
use crate::release::SigningArgs;
use crate::table::Table;
use crate::tail::Output;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Upload a module, create or update the application, deploy it and wait until it runs.
    Deploy {
        #[command(flatten)]
        bus: Bus,
        /// The WASM module (or `--example NAME`).
        #[arg(required_unless_present = "example", conflicts_with = "example")]
        file: Option<PathBuf>,
        /// One of the example modules built into this binary: `counter`, `sensor` or `spin`
        /// (their sources are in `apps/`).
        #[arg(long, value_parser = example_names())]
        example: Option<String>,
        /// Where: `all`, device ids (`dev-1,dev-2`), or labels (`label:room=lab,floor=2`).
        #[arg(long)]
        to: String,
        /// The application id (default: the one `--release` names, else the file name without
        /// `.wasm`).
        #[arg(long)]
        app_id: Option<AppId>,
        /// Configuration text the app reads through the host API.
        #[arg(long, default_value = "")]
        config: String,
        /// Fuel per call of an export.
        #[arg(long, default_value_t = 1_000_000)]
        fuel: u64,
        /// Memory limit in 64 KiB pages.
        #[arg(long, default_value_t = 2)]
        pages: u32,
        /// Milliseconds between ticks.
        #[arg(long, default_value_t = 1000)]
        tick_ms: u32,
        /// Give up waiting after this long.
        #[arg(long, default_value = "120s", value_parser = humantime_secs)]
        wait: Duration,
        #[command(flatten)]
        signing: Box<SigningArgs>,
    },
    /// Every application and where it runs.
    List {
        #[command(flatten)]
        bus: Bus,
        /// How to print.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Stop an application on every device.
    Stop {
        #[command(flatten)]
        bus: Bus,
        /// The application.
        app_id: AppId,
    },
    /// Stop and delete an application.
    Delete {
        #[command(flatten)]
        bus: Bus,
        /// The application.
        app_id: AppId,
    },
}

fn target(to: &str) -> Result<Target> {
    if to == "all" {
        return Ok(Target::All);
    }
    if let Some(labels) = to.strip_prefix("label:") {
        let labels: BTreeMap<String, String> = labels
            .split(',')
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .with_context(|| format!("--to label:{labels}: {kv:?} is not KEY=VALUE"))
            })
            .collect::<Result<_>>()?;
        return Ok(Target::Labels(labels));
    }
    let ids = to
        .split(',')
        .map(|id| DeviceId::new(id).with_context(|| format!("--to: {id:?} is not a device id")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Target::Devices(ids))
}

/// The names `--example` takes.
fn example_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        wasmbed_example_apps::ALL.iter().map(|(name, _)| *name),
    )
}

/// The module to deploy, and the name its default app id comes from: the file's stem, or the
/// example's name.
fn module_of(file: Option<&std::path::Path>, example: Option<&str>) -> Result<(Vec<u8>, String)> {
    if let Some(name) = example {
        let (name, module) = wasmbed_example_apps::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .with_context(|| format!("--example {name}: no such example"))?;
        return Ok((module.to_vec(), (*name).to_owned()));
    }
    let file = file.context("a module file or --example NAME")?;
    let module = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    Ok((module, stem))
}

pub async fn run(command: AppCommand) -> Result<()> {
    match command {
        AppCommand::Deploy {
            bus,
            file,
            example,
            to,
            app_id,
            config,
            fuel,
            pages,
            tick_ms,
            wait,
            signing,
        } => {
            let target = target(&to)?;
            let (module, stem) = module_of(file.as_deref(), example.as_deref())?;
            let mut signing = signing;
            if let Some(name) = &example {
                signing.default_topics(wasmbed_example_apps::topics(name));
            }
            let app_id = match app_id.or(signing.given_app()?) {
                Some(id) => id,
                None => AppId::new(stem.to_lowercase().replace('_', "-"))
                    .with_context(|| format!("{stem:?} is no app id; pass --app-id"))?,
            };
            let limits = Limits {
                fuel_per_invocation: fuel,
                max_memory_pages: pages,
                tick_interval_ms: tick_ms,
            };
            let new = NewApp {
                module,
                app_id,
                target,
                config,
                limits,
            };
            deploy(&bus, new, &signing, wait).await
        }
        AppCommand::List { bus, output } => {
            let view = fleet(&bus.connect().await?).await?;
            if let Output::Json = output {
                for app in view.app_views() {
                    println!("{}", serde_json::to_string(&app)?);
                }
                return Ok(());
            }
            let mut table = Table::new(&["APP", "DESIRED", "VERSIONS", "DEVICES"]);
            let now = chrono::Utc::now();
            for app in view.app_views() {
                let desired = match app.desired {
                    DesiredState::Running { version } => format!("v{version}"),
                    other => format!("{other:?}").to_lowercase(),
                };
                let devices: Vec<String> = app
                    .devices
                    .iter()
                    .map(|(d, dep)| format!("{d}:{}", phase_text(dep, now)))
                    .collect();
                table.row(vec![
                    app.app_id.to_string(),
                    desired,
                    app.versions.len().to_string(),
                    devices.join(","),
                ]);
            }
            table.print();
            Ok(())
        }
        AppCommand::Stop { bus, app_id } => {
            let client = bus.connect().await?;
            call(
                &client,
                &StopApplication {
                    app_id: app_id.clone(),
                },
                bus.timeout,
            )
            .await?;
            println!("stopping {app_id} everywhere");
            Ok(())
        }
        AppCommand::Delete { bus, app_id } => {
            let client = bus.connect().await?;
            call(
                &client,
                &DeleteApplication {
                    app_id: app_id.clone(),
                },
                bus.timeout,
            )
            .await?;
            println!("deleted {app_id}");
            Ok(())
        }
    }
}

/// What `app deploy` was asked to run.
struct NewApp {
    module: Vec<u8>,
    app_id: AppId,
    target: Target,
    config: String,
    limits: Limits,
}

/// The root span of one `app deploy`: with tracing on, the deployer, the gateways and the
/// devices' acknowledgements all continue its trace.
#[tracing::instrument(name = "app deploy", skip_all, fields(app = %new.app_id))]
async fn deploy(bus: &Bus, new: NewApp, signing: &SigningArgs, wait: Duration) -> Result<()> {
    let NewApp {
        module,
        app_id,
        target,
        config,
        limits,
    } = new;
    let client = bus.connect().await?;
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .context("opening the event log")?;
    let sha = upload_module(log.jetstream(), &module).await?;
    // One read of the fleet decides everything: create or update, the version that results,
    // and the devices it must reach (refused before anything is sent when there are none).
    let fleet = fleet(&client).await?;
    // A deleted application is left for the deployer to refuse: ids are not reused.
    let existing = fleet.apps.get(&app_id).filter(|app| !app.deleted());
    let latest = existing.and_then(wasmbed_fleet::App::latest);
    let version = match &latest {
        None => 1,
        Some((v, m)) if m.sha256 == sha => *v,
        Some((v, _)) => v + 1,
    };
    let targets: BTreeSet<DeviceId> = fleet
        .devices
        .iter()
        .filter(|(id, d)| match existing {
            Some(app) => app.targets(id, d),
            None => wasmbed_fleet::in_target(&target, id, d),
        })
        .map(|(id, _)| id.clone())
        .collect();
    if targets.is_empty() {
        bail!("{app_id} v{version}: no device matches the target");
    }
    match (existing, latest) {
        (None, _) => {
            let create = CreateApplication {
                app_id: app_id.clone(),
                name: app_id.to_string(),
                module_sha256: sha,
                target: target.clone(),
                config: Blob(config.into_bytes()),
                release: signing.release_for(&app_id, version, &module, &limits)?,
                limits,
            };
            call(&client, &create, bus.timeout).await?;
        }
        (Some(_), Some((_, m))) if m.sha256 == sha => {}
        (Some(app), _) => {
            let update = UpdateApplication {
                app_id: app_id.clone(),
                module_sha256: sha,
                release: signing.release_for(&app_id, version, &module, &app.limits)?,
            };
            call(&client, &update, bus.timeout).await?;
        }
    }
    call(
        &client,
        &DeployApplication {
            app_id: app_id.clone(),
        },
        bus.timeout,
    )
    .await?;
    println!("{app_id} v{version} ({sha}) → {} devices", targets.len());
    progress(&log, &app_id, version, &targets, wait).await
}

/// How many devices are in each phase but running: `2 transferring, 1 waiting`.
fn phases_text(phase: &BTreeMap<DeviceId, &'static str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in phase.values().filter(|p| **p != "running") {
        *counts.entry(p).or_default() += 1;
    }
    counts
        .iter()
        .map(|(p, n)| format!("{n} {p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Follows the app's deployment events until every target runs `version` (a progress bar on a
/// terminal).
async fn progress(
    log: &EventLog,
    app: &AppId,
    version: u32,
    targets: &BTreeSet<DeviceId>,
    wait: Duration,
) -> Result<()> {
    let filter = format!(
        "{}.{app}.*",
        subject::events_of_kind(AggregateKind::Deployment).trim_end_matches(".>")
    );
    let mut follow = log.follow(vec![filter]).await?;
    let mut phase: BTreeMap<DeviceId, &'static str> =
        targets.iter().map(|d| (d.clone(), "waiting")).collect();
    let bar = ProgressBar::with_draw_target(
        Some(targets.len() as u64),
        if std::io::stdout().is_terminal() {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("  [{bar:30}] {pos:>4}/{len:4} running  {msg}")
            .context("progress style")?
            .progress_chars("=> "),
    );
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let running = phase.values().filter(|p| **p == "running").count();
        bar.set_position(running as u64);
        bar.set_message(phases_text(&phase));
        if running == targets.len() {
            bar.finish_and_clear();
            println!("all {} devices run {app} v{version}", targets.len());
            return Ok(());
        }
        let next = tokio::time::timeout_at(deadline, follow.next()).await;
        let Ok(Some(next)) = next else {
            bar.abandon();
            let waiting: Vec<String> = phase
                .iter()
                .filter(|(_, p)| **p != "running")
                .map(|(d, p)| format!("{d} ({p})"))
                .collect();
            bail!(
                "{running}/{} running after {wait:?}; still waiting: {}",
                targets.len(),
                waiting.join(", ")
            );
        };
        let (stored, _) = next?;
        let (device, this, new_phase, reason) = match &stored.envelope.event {
            Event::DeploymentRequested(e) => (&e.device_id, e.version, "requested", None),
            Event::DeploymentTransferStarted(e) => (&e.device_id, e.version, "transferring", None),
            Event::DeploymentDelivered(e) => (&e.device_id, e.version, "delivered", None),
            Event::DeploymentRunning(e) => (&e.device_id, e.version, "running", None),
            Event::DeploymentFailed(e) => (&e.device_id, e.version, "failed", Some(&e.reason)),
            Event::DeploymentRefused(e) => (&e.device_id, e.version, "refused", Some(&e.reason)),
            _ => continue,
        };
        if this != version || !targets.contains(device) {
            continue;
        }
        if let Some(reason) = reason {
            bar.abandon();
            bail!("{device}: {new_phase}: {reason}");
        }
        phase.insert(device.clone(), new_phase);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_message_counts_the_devices_not_yet_running_by_phase() {
        let cases: &[(&[&'static str], &str)] = &[
            (&[], ""),
            (&["running", "running"], ""),
            (&["waiting", "running", "waiting"], "2 waiting"),
            (
                &["transferring", "delivered", "transferring", "requested"],
                "1 delivered, 1 requested, 2 transferring",
            ),
        ];
        for (phases, want) in cases {
            let phase: BTreeMap<DeviceId, &'static str> = phases
                .iter()
                .enumerate()
                .map(|(i, p)| (DeviceId::new(format!("d{i}")).unwrap(), *p))
                .collect();
            assert_eq!(phases_text(&phase), *want, "{phases:?}");
        }
    }
}
