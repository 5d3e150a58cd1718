//! Reading a stream from a point onwards: shared by `events tail` and `telemetry tail`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use clap::{Args, ValueEnum};
use wasmbed_eventlog::LiveReader;

/// What every `tail` subcommand takes.
#[derive(Args)]
pub struct TailArgs {
    /// The NATS server.
    #[arg(
        long = "nats",
        env = "NATS_URL",
        hide_env_values = true,
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Stop after this many messages.
    #[arg(long)]
    pub limit: Option<usize>,
    /// How to print each message.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How `tail` prints.
#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    /// One readable line per message.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where in the stream to start.
pub fn deliver_policy(from_start: bool, since: Option<&str>) -> Result<DeliverPolicy> {
    Ok(match (from_start, since) {
        (true, _) => DeliverPolicy::All,
        (false, None) => DeliverPolicy::New,
        (false, Some(since)) => {
            let ago = parse_duration(since)?;
            let start = time_ago(ago)?;
            DeliverPolicy::ByStartTime { start_time: start }
        }
    })
}

fn time_ago(ago: Duration) -> Result<async_nats::datetime::DateTime> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .saturating_sub(ago);
    async_nats::datetime::from_nanos(since_epoch.as_nanos() as i128)
        .map_err(|e| anyhow::anyhow!("--since: {e}"))
}

/// `30s`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("--since {text:?}: expected a number and s, m, h or d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("--since {text:?}: expected a number and s, m, h or d"),
    };
    Ok(Duration::from_secs(seconds))
}

/// Calls `print` for every message of `stream` matching `filter`, from `deliver`, until
/// `args.limit` messages were printed (or forever).
pub async fn tail(
    args: &TailArgs,
    stream: &str,
    filter: String,
    deliver: DeliverPolicy,
    mut print: impl FnMut(&jetstream::Message, u64) -> Result<()>,
) -> Result<()> {
    let (nats_url, limit) = (&args.nats_url, args.limit);
    let options = async_nats::ConnectOptions::new().name("wasmbed-cli");
    let client = wasmbed_local_nats::with_url_credentials(options, nats_url)
        .connect(nats_url)
        .await
        .with_context(|| format!("connecting to {nats_url}"))?;
    let mut stream = jetstream::new(client.clone())
        .get_stream(stream)
        .await
        .with_context(|| format!("opening the stream {stream} (is `wasmbed up` running?)"))?;
    // "New" pinned to a sequence: the ordered consumer is created lazily, and DeliverPolicy::New
    // would skip what arrives before that.
    let deliver = match deliver {
        DeliverPolicy::New => DeliverPolicy::ByStartSequence {
            start_sequence: stream
                .info()
                .await
                .context("reading the stream")?
                .state
                .last_sequence
                + 1,
        },
        other => other,
    };
    // Read live, and across a nats-server restart (resumed after the last message printed).
    let filters = if filter.is_empty() {
        Vec::new()
    } else {
        vec![filter]
    };
    let (mut messages, _) = LiveReader::start_at(&client, stream, filters, deliver)
        .await
        .context("reading the stream")?;
    let mut printed = 0;
    while limit.is_none_or(|l| printed < l) {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.context("reading the stream")?;
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        print(&message, sequence)?;
        printed += 1;
    }
    Ok(())
}
