//! `wasmbed rollout start|status|approve|pause|resume|abort|list`: staged rollouts, over the
//! bus. `start` uploads the module, starts the rollout and draws each wave until the rollout
//! completes (exit 0), rolls back (exit 1) or waits for an approval (exit 0, saying so).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use wasmbed_bus::call;
use wasmbed_eventlog::modules::upload_module;
use wasmbed_eventlog::{EventLog, LogOptions};
use wasmbed_fleet::Fleet;
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::{
    AbortRollout, ApproveRollout, PauseRollout, ResumeRollout, StartRollout,
};
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::rest::{RolloutState, RolloutView, WaveState};
use wasmbed_schemas::rollout::{MaxFailures, WaveSize, parse_waves};
use wasmbed_schemas::{AggregateKind, AppId, subject};

use crate::device::{Bus, fleet, humantime_secs};
use crate::release::SigningArgs;
use crate::table::Table;

/// A new version: the application, the module, its settings, how it is judged.
#[derive(Args)]
pub struct VersionArgs {
    #[command(flatten)]
    bus: Bus,
    /// The application.
    app_id: AppId,
    /// The WASM module.
    file: PathBuf,
    /// How long a device must run the new version, online, to pass.
    #[arg(long, default_value = "30s", value_parser = humantime_secs)]
    soak: Duration,
    /// How long a device has to pass after its wave starts (default: soak + 2 min).
    #[arg(long, value_parser = humantime_secs)]
    deadline: Option<Duration>,
    /// Fuel per call of an export in the new version (default: the application's).
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory limit in 64 KiB pages of the new version (default: the application's).
    #[arg(long)]
    pages: Option<u32>,
    /// Milliseconds between ticks in the new version (default: the application's).
    #[arg(long)]
    tick_ms: Option<u32>,
    /// Configuration text of the new version (default: the application's).
    #[arg(long)]
    config: Option<String>,
    /// Give up watching after this long (the rollout goes on).
    #[arg(long, default_value = "30m", value_parser = humantime_secs)]
    wait: Duration,
    #[command(flatten)]
    signing: SigningArgs,
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Upload a module and roll it out to the application's target in waves, each behind a
    /// health gate; watch it until it completes, rolls back or waits for an approval.
    Start {
        #[command(flatten)]
        version: VersionArgs,
        /// Cumulative counts or percentages of the target (`1,10%,100%`), label selectors
        /// (`ring=canary`), or `rest`.
        #[arg(long, default_value = "1,10%,50%,100%", value_parser = parse_waves_arg)]
        waves: Waves,
        /// Failures allowed per wave: a count (`2`) or a percentage (`5%`).
        #[arg(long, default_value = "0")]
        max_failures: MaxFailures,
        /// Every wave after the first waits for `wasmbed rollout approve`.
        #[arg(long)]
        approve_each: bool,
        /// First run the new version on simulated copies of the target's devices (through the
        /// renode-manager); a failed rehearsal touches no real device.
        #[arg(long)]
        rehearse: bool,
        /// Start it and return without watching.
        #[arg(long)]
        no_wait: bool,
    },
    /// Run a module on simulated copies of the application's devices only, next to the fleet
    /// (through the renode-manager), and report what each copy did; no real device is touched
    /// and the application's version does not change. Exit 0 when every copy passed.
    Rehearse {
        #[command(flatten)]
        version: VersionArgs,
    },
    /// The application's newest rollout: each wave, its devices, each failure and its reason.
    Status {
        #[command(flatten)]
        bus: Bus,
        /// The application.
        app_id: AppId,
        /// Watch it until it finishes or waits for an approval.
        #[arg(long)]
        watch: bool,
    },
    /// Start the wave that waits for approval.
    Approve {
        #[command(flatten)]
        bus: Bus,
        /// The application.
        app_id: AppId,
    },
    /// Start no further wave until resumed (gates are still judged).
    Pause {
        #[command(flatten)]
        bus: Bus,
        /// The application.
        app_id: AppId,
    },
    /// Let a paused rollout go on.
    Resume {
        #[command(flatten)]
        bus: Bus,
        /// The application.
        app_id: AppId,
    },
    /// Stop the rollout and roll back every device that got the new version.
    Abort {
        #[command(flatten)]
        bus: Bus,
        /// The application.
        app_id: AppId,
        /// Why, for the log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Every application's rollouts, newest first.
    List {
        #[command(flatten)]
        bus: Bus,
        /// How to print.
        #[arg(long, value_enum, default_value_t = crate::tail::Output::Text)]
        output: crate::tail::Output,
    },
}

/// Parsed `--waves`.
#[derive(Clone)]
pub struct Waves(Vec<WaveSize>);

fn parse_waves_arg(text: &str) -> Result<Waves, String> {
    parse_waves(text).map(Waves).map_err(|e| e.to_string())
}

pub async fn run(command: RolloutCommand) -> Result<()> {
    match command {
        RolloutCommand::Start {
            version,
            waves,
            max_failures,
            approve_each,
            rehearse,
            no_wait,
        } => {
            let plan = Plan {
                waves: waves.0,
                max_failures,
                approve_each,
                rehearse,
            };
            start(version, plan, no_wait).await
        }
        RolloutCommand::Rehearse { version } => {
            let plan = Plan {
                waves: vec![WaveSize::Rehearsal],
                max_failures: MaxFailures::Count(0),
                approve_each: false,
                rehearse: false,
            };
            start(version, plan, false).await
        }
        RolloutCommand::Status {
            bus,
            app_id,
            watch: follow,
        } => {
            let client = bus.connect().await?;
            let view = fleet(&client).await?;
            let Some((number, rollout)) = view.rollouts_of(&app_id).next() else {
                bail!("{app_id} has no rollout");
            };
            let rollout = rollout.view(&app_id, number);
            if follow {
                let log = EventLog::open(client.clone(), &LogOptions::default())
                    .await
                    .context("opening the event log")?;
                let day = Duration::from_secs(24 * 3600);
                return watch(&client, &log, &app_id, number, day).await;
            }
            print!("{}", status_text(&rollout));
            Ok(())
        }
        RolloutCommand::Approve { bus, app_id } => {
            let client = bus.connect().await?;
            call(
                &client,
                &ApproveRollout {
                    app_id: app_id.clone(),
                },
                bus.timeout,
            )
            .await?;
            println!("approved the next wave of {app_id}'s rollout");
            Ok(())
        }
        RolloutCommand::Pause { bus, app_id } => {
            let client = bus.connect().await?;
            call(
                &client,
                &PauseRollout {
                    app_id: app_id.clone(),
                },
                bus.timeout,
            )
            .await?;
            println!("paused {app_id}'s rollout: no further wave starts");
            Ok(())
        }
        RolloutCommand::Resume { bus, app_id } => {
            let client = bus.connect().await?;
            call(
                &client,
                &ResumeRollout {
                    app_id: app_id.clone(),
                },
                bus.timeout,
            )
            .await?;
            println!("resumed {app_id}'s rollout");
            Ok(())
        }
        RolloutCommand::Abort {
            bus,
            app_id,
            reason,
        } => {
            let client = bus.connect().await?;
            let abort = AbortRollout {
                app_id: app_id.clone(),
                reason,
            };
            call(&client, &abort, bus.timeout).await?;
            println!("aborting {app_id}'s rollout: every device that got it goes back");
            Ok(())
        }
        RolloutCommand::List { bus, output } => {
            let view = fleet(&bus.connect().await?).await?;
            let mut table = Table::new(&["APP", "NO", "VERSIONS", "PHASE", "WAVES"]);
            for app in view.apps.keys() {
                for (number, r) in view.rollouts_of(app) {
                    let r = r.view(app, number);
                    if let crate::tail::Output::Json = output {
                        println!("{}", serde_json::to_string(&r)?);
                        continue;
                    }
                    let versions = format!("{}→v{}", version_text(r.from_version), r.to_version);
                    let passed = r.waves.iter().filter(|w| w.state == WaveState::Passed);
                    table.row(vec![
                        app.to_string(),
                        number.to_string(),
                        versions,
                        r.state.as_str().to_owned(),
                        format!("{}/{}", passed.count(), r.waves.len()),
                    ]);
                }
            }
            if let crate::tail::Output::Text = output {
                table.print();
            }
            Ok(())
        }
    }
}

/// How a rollout's waves go.
struct Plan {
    waves: Vec<WaveSize>,
    max_failures: MaxFailures,
    approve_each: bool,
    rehearse: bool,
}

/// Uploads the module, starts the rollout and watches it unless `no_wait`.
async fn start(version: VersionArgs, plan: Plan, no_wait: bool) -> Result<()> {
    let VersionArgs {
        bus,
        app_id,
        file,
        soak,
        deadline,
        fuel,
        pages,
        tick_ms,
        config,
        wait,
        signing,
    } = version;
    let module = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let client = bus.connect().await?;
    let log = EventLog::open(client.clone(), &LogOptions::default())
        .await
        .context("opening the event log")?;
    let sha = upload_module(log.jetstream(), &module).await?;
    let view = fleet(&client).await?;
    let Some(app) = view.apps.get(&app_id).filter(|a| !a.deleted()) else {
        bail!("no application {app_id}");
    };
    let limits = (fuel.is_some() || pages.is_some() || tick_ms.is_some()).then(|| Limits {
        fuel_per_invocation: fuel.unwrap_or(app.limits.fuel_per_invocation),
        max_memory_pages: pages.unwrap_or(app.limits.max_memory_pages),
        tick_interval_ms: tick_ms.unwrap_or(app.limits.tick_interval_ms),
    });
    // Signed for the version it becomes if it is new; the deployer ignores the release of a
    // version the application has already (recorded with its own).
    let version = app.latest().map_or(1, |(v, _)| v + 1);
    let release = signing.release_for(&app_id, version, &module, &limits.unwrap_or(app.limits))?;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let start = StartRollout {
        app_id: app_id.clone(),
        module_sha256: sha,
        waves: plan.waves,
        soak_ms: millis(soak),
        deadline_ms: deadline.map(millis),
        max_failures: plan.max_failures,
        approve_each: plan.approve_each,
        rehearse: plan.rehearse,
        limits,
        config: config.map(|text| Blob(text.into_bytes())),
        release,
    };
    let started = call(&client, &start, bus.timeout).await?;
    let from = started
        .from_version
        .map_or_else(|| "not running".to_owned(), |v| format!("v{v}"));
    println!(
        "rollout {} of {app_id}: {from} → v{} in waves of {:?} devices",
        started.number, started.to_version, started.wave_devices
    );
    if no_wait {
        return Ok(());
    }
    watch(&client, &log, &app_id, started.number, wait).await
}

fn version_text(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("v{v}"))
}

/// The state in words, with the wave when one is being judged or waited for.
fn state_text(r: &RolloutView) -> String {
    r.state.describe(r.wave, r.waves.len())
}

fn wave_text(state: WaveState) -> &'static str {
    match state {
        WaveState::Pending => "not started",
        WaveState::Judging => "judging",
        WaveState::Passed => "passed",
        WaveState::Halted => "halted",
    }
}

/// `wasmbed rollout status`: the rollout, each wave, each failure.
pub fn status_text(r: &RolloutView) -> String {
    let mut out = format!(
        "rollout {} of {}: {} → v{}, {}\n",
        r.number,
        r.app_id,
        version_text(r.from_version),
        r.to_version,
        state_text(r)
    );
    if let Some(why) = &r.halted {
        out.push_str(&format!("  halted: {why}\n"));
    }
    for (i, w) in r.waves.iter().enumerate() {
        out.push_str(&format!(
            "  wave {:<2} {:<12} {:>4} devices  {:>4} passed  {:>4} failed  {}\n",
            i + 1,
            w.size,
            w.devices.len(),
            w.passed,
            w.failed,
            wave_text(w.state)
        ));
    }
    for failure in &r.failures {
        out.push_str(&format!("  {}: {}\n", failure.device_id, failure.reason));
    }
    for copy in &r.rehearsal {
        let verdict = match (&copy.reason, copy.passed) {
            (_, true) => "passed".to_owned(),
            (Some(why), false) => format!("failed: {why}"),
            (None, false) => "failed".to_owned(),
        };
        let number = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        out.push_str(&format!(
            "  rehearsal copy {} of {}: {verdict}; fuel of its last tick {}, memory pages {}\n",
            copy.device_id,
            copy.of,
            number(copy.fuel_used),
            number(copy.memory_pages.map(u64::from)),
        ));
    }
    out
}

/// Draws the rollout, wave by wave, until it finishes or waits for an approval.
async fn watch(
    client: &async_nats::Client,
    log: &EventLog,
    app: &AppId,
    number: u32,
    wait: Duration,
) -> Result<()> {
    let prefix = subject::events_of_kind(AggregateKind::Rollout);
    let prefix = prefix.trim_end_matches(".>");
    let mut follow = log
        .follow(vec![
            format!("{prefix}.{app}.{number}"),
            subject::events_of_kind(AggregateKind::Deployment),
        ])
        .await?;
    // Followed first, folded second: what lands in between is applied twice, which the fold
    // ignores.
    let mut view: Fleet = fleet(client).await?;
    let mut bars = Bars::new(&view, app, number)?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Some(r) = view.rollout(app, number).map(|r| r.view(app, number)) else {
            bail!("rollout {number} of {app} is not in the log");
        };
        bars.draw(&r);
        match r.state {
            RolloutState::Completed if r.waves.iter().all(|w| w.size == "rehearsal") => {
                bars.finish();
                print!("{}", status_text(&r));
                println!(
                    "rehearsal of v{} passed on {} copies; no real device was touched",
                    r.to_version,
                    r.rehearsal.len()
                );
                return Ok(());
            }
            RolloutState::Completed => {
                bars.finish();
                println!(
                    "rollout {number} of {app} completed: every device runs v{}",
                    r.to_version
                );
                return Ok(());
            }
            RolloutState::RolledBack => {
                bars.finish();
                print!("{}", status_text(&r));
                bail!(
                    "rollout {number} of {app} rolled back: {}",
                    r.halted.as_deref().unwrap_or("no reason recorded")
                );
            }
            RolloutState::AwaitingApproval => {
                bars.finish();
                println!(
                    "rollout {number} of {app} waits before wave {}: wasmbed rollout approve {app}",
                    r.wave + 1
                );
                return Ok(());
            }
            _ => {}
        }
        let next = tokio::time::timeout_at(deadline, follow.next()).await;
        let Ok(Some(next)) = next else {
            bars.finish();
            bail!(
                "rollout {number} of {app} still {} after {wait:?}; it goes on",
                state_text(&r)
            );
        };
        let (stored, _) = next?;
        view.apply(&stored);
    }
}

/// One progress bar per wave (hidden when stdout is not a terminal; lines are printed then).
struct Bars {
    _multi: MultiProgress,
    waves: Vec<ProgressBar>,
    plain: bool,
    last: String,
}

impl Bars {
    fn new(view: &Fleet, app: &AppId, number: u32) -> Result<Self> {
        let Some(r) = view.rollout(app, number) else {
            bail!("rollout {number} of {app} is not in the log");
        };
        let plain = !std::io::IsTerminal::is_terminal(&std::io::stdout());
        let multi = MultiProgress::with_draw_target(if plain {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stdout()
        });
        let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos:>4}/{len:4} {msg}")
            .context("progress style")?
            .progress_chars("=> ");
        let waves = r
            .waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let bar = multi.add(ProgressBar::new(w.devices.len() as u64));
                bar.set_style(style.clone());
                bar.set_prefix(format!("wave {} ({})", i + 1, w.size));
                bar
            })
            .collect();
        Ok(Self {
            _multi: multi,
            waves,
            plain,
            last: String::new(),
        })
    }

    fn draw(&mut self, r: &RolloutView) {
        for (bar, w) in self.waves.iter().zip(&r.waves) {
            bar.set_position(u64::from(w.passed + w.failed));
            bar.set_message(format!("{} ({} failed)", wave_text(w.state), w.failed));
        }
        if self.plain {
            let passed = r.waves.iter().filter(|w| w.state == WaveState::Passed);
            let line = format!(
                "{}; waves passed {}/{}",
                state_text(r),
                passed.count(),
                r.waves.len()
            );
            if self.last != line {
                println!("  {line}");
                self.last = line;
            }
        }
    }

    fn finish(&self) {
        for bar in &self.waves {
            bar.abandon();
        }
    }
}
