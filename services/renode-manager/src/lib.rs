//! The emulated fleet: starts, watches and stops emulated devices on command from the bus.
//!
//! - [`catalogue`]: the MCU types (`renode/catalogue.toml`) and which of them can run the
//!   firmware under which emulator.
//! - [`qemu`]: one `qemu-system-arm` per device, the provisioning block preloaded.
//! - [`resc`]: Renode scripts from the family templates in `renode/templates/`.
//! - [`firmware`], [`pem`], [`provision`]: the images and the provisioning block.

pub mod backend;
pub mod bridge;
pub mod catalogue;
pub mod docker;
pub mod emulator;
pub mod firmware;
pub mod keys;
pub mod pem;
pub mod provision;
pub mod qemu;
pub mod resc;
mod service;
mod supervisor;
pub mod uart;

pub use service::{ManagerConfig, ManagerError, RestartMode, RestartPolicy, SERVICE, run};
