#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod aggregate;
pub mod bytes;
pub mod frame;
pub mod host_api;
pub mod ids;
pub mod permissions;
pub mod provisioning;
pub mod release;
pub mod subject;

#[cfg(feature = "std")]
pub mod command;
#[cfg(feature = "std")]
pub mod device_message;
#[cfg(feature = "std")]
pub mod event;
#[cfg(feature = "std")]
pub mod json_schema;
#[cfg(feature = "std")]
pub mod rest;
#[cfg(feature = "std")]
pub mod rollout;

pub use aggregate::{AggregateId, AggregateKind};
pub use bytes::{Nonce, PublicKey, Sha256, Signature};
pub use ids::{AppId, DeviceId, GatewayId, IdError};
