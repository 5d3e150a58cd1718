//! The emulated fleet.
//!
//! Today: the QEMU backend ([`qemu`]), which boots the device firmware on an mps2 board with
//! its provisioning block preloaded, and [`firmware`], which finds (and if need be builds)
//! the firmware images. The service around them (commands on the bus, lifecycle events, the
//! Renode-in-Docker backend, the MCU catalogue) is the renode-manager issue's.

pub mod firmware;
pub mod pem;
pub mod provision;
pub mod qemu;
