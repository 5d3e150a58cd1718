//! What an event is about: the aggregate whose history it extends.

use alloc::format;
use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::bytes::PublicKey;
use crate::ids::{AppId, DeviceId, GatewayId};

/// The kinds of aggregates in the event log. Each is one subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AggregateKind {
    /// A device: identity, enrollment, connection, liveness.
    Device,
    /// An application: module, target, limits.
    Application,
    /// One application on one device.
    Deployment,
    /// A gateway instance.
    Gateway,
    /// The emulator of one device.
    Emulator,
    /// One staged rollout of an application.
    Rollout,
    /// The fleet's trusted publisher keys (one aggregate, id `fleet`).
    Trust,
    /// A device public key: which device it belongs to (id: the key in hex).
    DeviceKey,
    /// Pairing windows (one aggregate, id `fleet`).
    Pairing,
}

impl AggregateKind {
    /// The subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Application => "application",
            Self::Deployment => "deployment",
            Self::Gateway => "gateway",
            Self::Emulator => "emulator",
            Self::Rollout => "rollout",
            Self::Trust => "trust",
            Self::DeviceKey => "device_key",
            Self::Pairing => "pairing",
        }
    }
}

/// One aggregate. Its events live on one subject (see [`crate::subject::event`]), which is what
/// makes per-aggregate optimistic concurrency possible.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "std", derive(schemars::JsonSchema))]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AggregateId {
    /// A device.
    Device(DeviceId),
    /// An application.
    Application(AppId),
    /// One application on one device.
    Deployment {
        /// The application.
        app: AppId,
        /// The device.
        device: DeviceId,
    },
    /// A gateway.
    Gateway(GatewayId),
    /// The emulator of a device.
    Emulator(DeviceId),
    /// One rollout of an application.
    Rollout {
        /// The application.
        app: AppId,
        /// Its rollouts are numbered from 1.
        number: u32,
    },
    /// The fleet's trusted publisher keys: its version is the serial of the last rotation.
    Trust,
    /// A device public key, claimed once by the device it belongs to.
    DeviceKey(PublicKey),
    /// The pairing windows.
    Pairing,
}

impl AggregateId {
    /// The kind.
    pub fn kind(&self) -> AggregateKind {
        match self {
            Self::Device(_) => AggregateKind::Device,
            Self::Application(_) => AggregateKind::Application,
            Self::Deployment { .. } => AggregateKind::Deployment,
            Self::Gateway(_) => AggregateKind::Gateway,
            Self::Emulator(_) => AggregateKind::Emulator,
            Self::Rollout { .. } => AggregateKind::Rollout,
            Self::Trust => AggregateKind::Trust,
            Self::DeviceKey(_) => AggregateKind::DeviceKey,
            Self::Pairing => AggregateKind::Pairing,
        }
    }

    /// The id tokens of the subject: one token, `app.device` for a deployment, `app.number`
    /// for a rollout.
    pub fn subject_tail(&self) -> String {
        match self {
            Self::Device(id) | Self::Emulator(id) => String::from(id.as_str()),
            Self::Application(id) => String::from(id.as_str()),
            Self::Gateway(id) => String::from(id.as_str()),
            Self::Deployment { app, device } => format!("{app}.{device}"),
            Self::Rollout { app, number } => format!("{app}.{number}"),
            Self::Trust | Self::Pairing => String::from("fleet"),
            Self::DeviceKey(key) => alloc::format!("{key}"),
        }
    }
}
