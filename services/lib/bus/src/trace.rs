//! W3C Trace Context over NATS headers (`traceparent`, `tracestate`): a message carries the
//! trace of the span that sent it, and the span that handles it continues that trace. With no
//! trace being recorded (no exporter configured) nothing is written and nothing is read.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wasmbed_schemas::subject::header;

struct Writing<'a>(&'a mut HeaderMap);

impl Injector for Writing<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct Reading<'a>(&'a HeaderMap);

impl Extractor for Reading<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        [header::TRACEPARENT, header::TRACESTATE]
            .into_iter()
            .filter(|k| self.0.get(*k).is_some())
            .collect()
    }
}

/// Writes the trace context of `span` into `headers`, if it is being recorded.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut Writing(headers));
    }
}

/// Writes the current span's trace context into `headers`, if it is being recorded.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current(), headers);
}

/// Headers holding the current span's trace context, or `None` when no trace is being recorded
/// (so untraced messages carry no header block at all).
pub fn current_headers() -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    inject_current(&mut headers);
    headers
        .get(header::TRACEPARENT)
        .is_some()
        .then_some(headers)
}

/// The current span's `traceparent`, when a trace is being recorded: what an event appended
/// now is stored with.
pub fn current_traceparent() -> Option<String> {
    traceparent(current_headers().as_ref())
}

/// The current span's trace id (hex), when a trace is being recorded: the exemplar of what is
/// observed now.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Links `span` to the current span (a device session, say) when both are recorded: a span
/// of one trace that happened inside another's work.
pub fn link_current(span: &tracing::Span) {
    let context = tracing::Span::current().context();
    let current = context.span().span_context().clone();
    if current.is_valid() {
        span.add_link(current);
    }
}

/// Makes `span` continue the trace that `headers` carry, if they carry one.
pub fn continue_from(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers.filter(|h| h.get(header::TRACEPARENT).is_some()) else {
        return;
    };
    let context = TraceContextPropagator::new().extract(&Reading(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The `traceparent` that `headers` carry, to keep beside what they came with (an event).
pub fn traceparent(headers: Option<&HeaderMap>) -> Option<String> {
    headers?
        .get(header::TRACEPARENT)
        .map(|v| v.as_str().to_owned())
}

/// Makes `span` continue the trace of a kept `traceparent` (see [`traceparent`]).
pub fn continue_traceparent(span: &tracing::Span, traceparent: &str) {
    let mut headers = HeaderMap::new();
    headers.insert(header::TRACEPARENT, traceparent);
    continue_from(span, Some(&headers));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_propagator_uses_the_header_names_of_the_schemas() {
        let fields = TraceContextPropagator::new();
        let names: Vec<&str> = fields.fields().collect();
        assert_eq!(names, [header::TRACEPARENT, header::TRACESTATE]);
    }

    #[test]
    fn no_trace_is_written_without_a_recorded_span_and_a_bad_one_is_not_followed() {
        let mut headers = HeaderMap::new();
        inject_current(&mut headers);
        assert!(headers.get(header::TRACEPARENT).is_none());
        // Garbage in a header: no parent, no panic.
        headers.insert(header::TRACEPARENT, "00-zz-yy-01");
        continue_from(&tracing::Span::current(), Some(&headers));
        assert_eq!(traceparent(Some(&headers)).as_deref(), Some("00-zz-yy-01"));
    }
}
