//! Simulated devices for tests, demos and benchmarks.
//!
//! Each [`SimDevice`] is one tokio task running the same [`wasmbed_device_core::Session`] the
//! firmware runs, over a real TLS 1.3 connection that verifies the gateway against the CA. It
//! reconnects by itself with exponential back-off and jitter, and honours `GoAway`.

mod connector;
mod device;
mod once;

pub use connector::{ConnectError, Connector};
pub use device::{DeviceStatus, SimConfig, SimDevice, default_agent_config, random_key};
pub use once::{AuthenticateError, Authenticated, authenticate};
