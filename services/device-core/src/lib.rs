//! The device side of the Wasmbed protocol, without I/O.
//!
//! A [`Session`] takes the bytes read from the TLS stream and the current time (milliseconds on
//! any monotonic clock) and hands back bytes to write, events for the application and the next
//! time it wants to be woken. It never reads a clock or a socket, so the host simulator (tokio +
//! rustls) and the firmware (smoltcp + embedded-tls) drive the same code, and tests drive it in
//! memory.
//!
//! [`Backoff`] is the reconnect policy: exponential, capped, with jitter.

#![no_std]

extern crate alloc;

mod backoff;
mod session;
mod signer;

pub use backoff::Backoff;
pub use session::{CloseReason, SendError, Session, SessionConfig, SessionEvent};
pub use signer::Signer;
