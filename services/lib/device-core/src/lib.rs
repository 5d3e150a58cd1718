//! The device side of the Wasmbed protocol, without I/O.
//!
//! A [`Session`] takes the bytes read from the TLS stream and the current time (milliseconds on
//! any monotonic clock) and hands back bytes to write, events for the application and the next
//! time it wants to be woken. It never reads a clock or a socket, so the host simulator (tokio +
//! rustls) and the firmware (smoltcp + embedded-tls) drive the same code, and tests drive it in
//! memory.
//!
//! [`Backoff`] is the reconnect policy: exponential, capped, with jitter.
//!
//! [`serial_link`] carries a byte stream (the TLS stream) over a UART to a network
//! co-processor: framing, error detection, flow control and retransmission.
//!
//! [`Agent`] is what runs applications: it receives modules ([`transfer`]), verifies them, and
//! runs them in wasmi under fuel and memory limits ([`runtime`]), with the `wasmbed` host API
//! of [`wasmbed_schemas::host_api`].

#![no_std]

extern crate alloc;

mod agent;
mod backoff;
pub mod release;
pub mod runtime;
pub mod serial_link;
mod session;
mod signer;
pub mod transfer;

pub use agent::{Agent, AgentConfig};
pub use backoff::Backoff;
pub use session::{CloseReason, SendError, Session, SessionConfig, SessionEvent};
pub use signer::{Signer, is_full_order};
