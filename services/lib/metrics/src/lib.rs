//! The process's metrics: one [prometheus-client] registry that every service in the process
//! adds its families to, as every Prometheus client library keeps one per process. `/metrics` of
//! each service encodes all of it, in the OpenMetrics text format (which Prometheus scrapes).
//!
//! A family is registered the first time its `LazyLock` is touched, so it appears once its
//! service has used it. A service instance's own counters (two gateways in one test process
//! must not add up) and figures computed when scraped (a read model's counts) live in a registry
//! of their own that [`encode_with`] adds.
//!
//! [prometheus-client]: https://docs.rs/prometheus-client

use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

pub use prometheus_client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("wasmbed")));

/// The trace an observation was made in, written beside it as an OpenMetrics exemplar: from a
/// latency on a dashboard to the trace that shows why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Trace {
    /// The W3C trace id, hex.
    pub trace_id: String,
}

/// A histogram whose observations may name their trace.
pub type TracedHistogram = HistogramWithExemplars<Trace>;

/// Histograms of one name, one per label set.
pub type Histograms<L> = Family<L, TracedHistogram, fn() -> TracedHistogram>;

/// Counters of one name, one per label set.
pub type Counters<L> = Family<L, Counter>;

/// Gauges of one name, one per label set.
pub type Gauges<L> = Family<L, Gauge>;

/// Adds `metric` to the process's registry as `wasmbed_<name>` and hands it back (a handle: the
/// registry keeps a clone that sees every change). A counter's samples get `_total`.
pub fn register<M: Metric + Clone>(name: &str, help: &str, metric: M) -> M {
    registry().register(name, help, metric.clone());
    metric
}

/// The same with a unit, which becomes the name's suffix (`wasmbed_<name>_seconds`).
pub fn register_with_unit<M: Metric + Clone>(name: &str, help: &str, unit: Unit, metric: M) -> M {
    registry().register_with_unit(name, help, unit, metric.clone());
    metric
}

/// A family of histograms of a duration in seconds (`wasmbed_<name>_seconds`), with `buckets`.
pub fn durations<L>(name: &str, help: &str, buckets: fn() -> TracedHistogram) -> Histograms<L>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    register_with_unit(
        name,
        help,
        Unit::Seconds,
        Histograms::<L>::new_with_constructor(buckets),
    )
}

/// Bucket bounds for a request over the bus or a disk write: 0.25 ms to ~8 s, doubling.
fn request_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 16)
}

/// Bucket bounds for what a device does (a session set up, a module installed): 1 ms to ~9 min.
fn device_bounds() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 20)
}

/// A histogram of request latencies.
pub fn request_buckets() -> Histogram {
    Histogram::new(request_bounds())
}

/// A histogram of device-side durations.
pub fn device_buckets() -> Histogram {
    Histogram::new(device_bounds())
}

/// A histogram of request latencies whose observations may name their trace.
pub fn traced_request_buckets() -> TracedHistogram {
    TracedHistogram::new(request_bounds())
}

/// A histogram of device-side durations whose observations may name their trace.
pub fn traced_device_buckets() -> TracedHistogram {
    TracedHistogram::new(device_bounds())
}

/// Seconds of `elapsed`, as observed.
pub fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// Observes `took` in `histogram`, with the trace it was made in (if one is being recorded) as
/// the exemplar.
pub fn observe(histogram: &TracedHistogram, took: Duration, trace_id: Option<String>) {
    histogram.observe(
        seconds(took),
        trace_id.map(|trace_id| Trace { trace_id }),
        None,
    );
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything registered in this process, in the OpenMetrics text format.
pub fn encode() -> String {
    encode_with(&[])
}

/// The same followed by `own`: a registry of one service instance (counters several instances
/// in one process must not share) or of figures computed for this scrape. Make it with
/// [`instance_registry`].
pub fn encode_with(own: &[&Registry]) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; a family that cannot be encoded is left out.
    let _ = encode_registry(&mut out, &registry());
    for registry in own {
        let _ = encode_registry(&mut out, registry);
    }
    let _ = encode_eof(&mut out);
    out
}

/// A registry of one instance's own families, named like the process's (`wasmbed_…`).
pub fn instance_registry() -> Registry {
    Registry::with_prefix("wasmbed")
}
