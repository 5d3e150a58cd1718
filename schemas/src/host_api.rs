//! The host API a device runtime offers to WebAssembly applications: import module `wasmbed`.
//!
//! The device runtime links exactly these functions, and the deployer refuses, before any byte
//! is sent, a module that imports anything else. Both read this table, so they cannot drift.
//!
//! Pointers and lengths are `i32` offsets into the app's exported `memory`. A negative return
//! value is an error code ([`ERR_BOUNDS`], [`ERR_TOO_LARGE`], [`ERR_RATE`], [`ERR_INVALID`],
//! [`ERR_DENIED`]).
//!
//! An application exports `memory`, `tick: () -> ()` (called every `tick_interval_ms`) and
//! optionally `init: () -> ()` (called once, after instantiation). Each call gets
//! `fuel_per_invocation` fuel; running out stops the app and reports it as failed.

/// The import module name.
pub const MODULE: &str = "wasmbed";

/// Version of this API; a device reports the version it offers in `DeviceInfo`.
pub const VERSION: u16 = 1;

/// A pointer or length pointed outside the app's memory.
pub const ERR_BOUNDS: i32 = -1;
/// A topic, payload or message is longer than the limits below.
pub const ERR_TOO_LARGE: i32 = -2;
/// The app sent more messages in this call than [`MAX_MESSAGES_PER_CALL`].
pub const ERR_RATE: i32 = -3;
/// A topic is not a valid topic (see [`is_valid_topic`]).
pub const ERR_INVALID: i32 = -4;
/// The app's signed release does not grant this topic; nothing was sent.
pub const ERR_DENIED: i32 = -5;

/// Longest telemetry topic, bytes.
pub const MAX_TOPIC_LEN: usize = 64;
/// Whether `topic` may name telemetry: at most [`MAX_TOPIC_LEN`] bytes and no control
/// characters (CR and LF among them). A topic travels in a NATS header value, where a line
/// break would end the header; the gateway ends the session of a device that sends another.
pub fn is_valid_topic(topic: &str) -> bool {
    topic.len() <= MAX_TOPIC_LEN && !topic.chars().any(char::is_control)
}

/// Longest telemetry payload, bytes.
pub const MAX_PAYLOAD_LEN: usize = 4096;
/// Longest log message, bytes.
pub const MAX_LOG_LEN: usize = 512;
/// Telemetry messages and log lines an app may send in one call of an export.
pub const MAX_MESSAGES_PER_CALL: usize = 16;

/// The export called on every tick.
pub const EXPORT_TICK: &str = "tick";
/// The export called once after instantiation, if present.
pub const EXPORT_INIT: &str = "init";
/// The exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";

/// A WebAssembly value type used by the host API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
}

/// One host function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFunction {
    /// The import name.
    pub name: &'static str,
    /// Parameter types.
    pub params: &'static [ValType],
    /// Result types.
    pub results: &'static [ValType],
    /// What it does.
    pub doc: &'static str,
    /// The host API version that introduced it.
    pub since: u16,
}

use ValType::{I32, I64};

/// Every function of import module [`MODULE`].
pub const FUNCTIONS: &[HostFunction] = &[
    HostFunction {
        name: "log",
        params: &[I32, I32, I32],
        results: &[I32],
        doc: "log(level, ptr, len): a UTF-8 log line; level 0 error, 1 warn, 2 info, 3 debug. \
              Returns 0 or an error code.",
        since: 1,
    },
    HostFunction {
        name: "publish",
        params: &[I32, I32, I32, I32],
        results: &[I32],
        doc: "publish(topic_ptr, topic_len, payload_ptr, payload_len): telemetry on the app's \
              subject, the topic in a header. Returns 0, or an error code ([`ERR_DENIED`] \
              when the app's signed release does not grant the topic).",
        since: 1,
    },
    HostFunction {
        name: "now_ms",
        params: &[],
        results: &[I64],
        doc: "now_ms(): milliseconds on the device's monotonic clock.",
        since: 1,
    },
    HostFunction {
        name: "device_id",
        params: &[I32, I32],
        results: &[I32],
        doc: "device_id(ptr, cap): writes the device id; returns its length (written only when \
              it fits in cap) or an error code.",
        since: 1,
    },
    HostFunction {
        name: "config",
        params: &[I32, I32],
        results: &[I32],
        doc: "config(ptr, cap): writes the app's configuration bytes; returns their length \
              (written only when it fits in cap) or an error code.",
        since: 1,
    },
];

/// The host function named `name`, if there is one.
pub fn function(name: &str) -> Option<&'static HostFunction> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The host API version a device must offer to link every function in `names`; names this
/// table does not know need a version newer than [`VERSION`].
pub fn version_needed<'a>(names: impl IntoIterator<Item = &'a alloc::string::String>) -> u16 {
    names
        .into_iter()
        .map(|name| function(name).map_or(VERSION + 1, |f| f.since))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_printable_and_short() {
        let long = "t".repeat(MAX_TOPIC_LEN + 1);
        for (topic, valid) in [
            ("temperature", true),
            ("", true),
            ("room 1/temp °C", true),
            (&long[1..], true),
            (&long[..], false),
            ("temp\r\nNats-Msg-Id: x", false),
            ("temp\n", false),
            ("temp\0", false),
            ("temp\u{7f}", false),
            ("temp\u{85}", false),
        ] {
            assert_eq!(is_valid_topic(topic), valid, "{topic:?}");
        }
    }
}
