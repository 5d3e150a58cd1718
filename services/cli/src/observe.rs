//! Logs, and traces when asked for: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, every span is
//! exported over OTLP/HTTP (protobuf) under the standard variables (`OTEL_SERVICE_NAME`,
//! `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_EXPORTER_OTLP_HEADERS`, …); without it nothing is recorded
//! beyond the log. `wasmbed up --trace` prints each span as it ends (with its trace id), for
//! one-machine debugging.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What the spans of a traced process are filtered by (`WASMBED_TRACE`, default `info`).
const TRACE_FILTER: &str = "WASMBED_TRACE";

/// Flushes the exported spans when dropped.
pub struct Tracing(Option<SdkTracerProvider>);

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // The exporter's blocking HTTP client must not be dropped on a runtime thread.
            let flushed = std::thread::spawn(move || provider.shutdown()).join();
            if let Ok(Err(e)) = flushed {
                eprintln!("wasmbed: traces not all exported: {e}");
            }
        }
    }
}

/// Installs the log (`WASMBED_LOG`, default `warn`, on stderr), the OTLP export when configured,
/// and span printing when `print_spans`. `service` names the process in traces unless
/// `OTEL_SERVICE_NAME` does.
pub fn init(service: &str, print_spans: bool) -> Tracing {
    let log_filter =
        EnvFilter::try_from_env("WASMBED_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(log_filter);
    let provider = provider(service, exporting(), print_spans);
    let traced = provider.as_ref().map(|provider| {
        // Busy/idle times would take the clock at every enter and exit: a device session's
        // span is entered on every poll of its loop, tens of thousands of times a second.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("wasmbed"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(
                EnvFilter::try_from_env(TRACE_FILTER).unwrap_or_else(|_| EnvFilter::new("info")),
            )
    });
    tracing_subscriber::registry().with(log).with(traced).init();
    Tracing(provider)
}

/// Prints each span as it ends, one line on stderr: its trace, name, duration and fields. The
/// traces are the ones the services carry over the bus, so one deploy shows as one trace id.
#[derive(Debug)]
struct Printer;

impl SpanExporter for Printer {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        for span in batch {
            let took = span
                .end_time
                .duration_since(span.start_time)
                .unwrap_or_default();
            let fields: Vec<String> = span
                .attributes
                .iter()
                .filter(|kv| !is_bookkeeping(kv.key.as_str()))
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            eprintln!(
                "trace {} span {:<16} {:>9.3} ms  {}",
                span.span_context.trace_id(),
                span.name,
                took.as_secs_f64() * 1e3,
                fields.join(" ")
            );
        }
        Ok(())
    }
}

/// Attributes the bridge adds to every span (source location, thread, timings).
fn is_bookkeeping(key: &str) -> bool {
    ["code.", "thread.", "otel.", "busy_ns", "idle_ns", "target"]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

fn exporting() -> bool {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_ok_and(|v| !v.trim().is_empty())
}

/// The tracer provider: a batching OTLP/HTTP exporter when `export`, the span printer when
/// `print`, `None` when neither. Built on a thread of its own (the exporter's blocking HTTP
/// client may not be made on a runtime thread). An unusable OTLP configuration is said on
/// stderr and left out: the service runs untraced rather than not at all.
fn provider(service: &str, export: bool, print: bool) -> Option<SdkTracerProvider> {
    if !export && !print {
        return None;
    }
    let service = service.to_owned();
    let built = std::thread::spawn(move || {
        let mut builder = SdkTracerProvider::builder();
        if export {
            match opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
            {
                Ok(exporter) => builder = builder.with_batch_exporter(exporter),
                Err(e) => eprintln!("wasmbed: OTLP export not set up, running untraced: {e}"),
            }
        }
        if print {
            builder = builder.with_simple_exporter(Printer);
        }
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service);
        }
        builder.with_resource(resource.build()).build()
    })
    .join();
    match built {
        Ok(provider) => Some(provider),
        Err(_) => {
            eprintln!("wasmbed: tracing not set up, running untraced");
            None
        }
    }
}
