//! Signed releases in the fixture: publisher keys, trusting them, signed applications, devices
//! provisioned with the fleet's keys, and what an attacker with the operator's NATS account can
//! put straight onto a device's downlink.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use sha2::Digest;
use wasmbed_bus::{CallError, call};
use wasmbed_device_core::release::{manifest_for, sign_release, sign_rotation};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::command::{RevokePublisher, TrustPublisher};
use wasmbed_schemas::event::Target;
use wasmbed_schemas::frame::codec::{decode, encode_to_vec};
use wasmbed_schemas::frame::{
    AppStatus, Deploy, Frame, Limits, MODULE_CHUNK_LEN, ModuleBegin, ModuleChunk, ModuleCommit,
};
use wasmbed_schemas::release::rotation::{TrustChange, TrustRotation};
use wasmbed_schemas::release::{Capabilities, SignedRelease};
use wasmbed_schemas::{AppId, DeviceId, PublicKey, Sha256, subject};
use wasmbed_sim::{SimConfig, SimDevice};

use crate::{System, T};

/// A publisher key made from `n` (tests want to name their keys).
pub fn publisher(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// Its public half.
pub fn public(key: &SigningKey) -> PublicKey {
    PublicKey(key.verifying_key().to_bytes())
}

/// What the example apps import.
pub const ALL_IMPORTS: &[&str] = &["config", "device_id", "log", "now_ms", "publish"];

/// Capabilities granting `imports`, `topics`, and the memory and fuel of `limits`.
pub fn grants(imports: &[&str], topics: &[&str], limits: &Limits) -> Capabilities {
    Capabilities {
        imports: imports.iter().map(|s| (*s).to_owned()).collect(),
        topics: topics.iter().map(|s| (*s).to_owned()).collect(),
        max_memory_pages: limits.max_memory_pages,
        max_fuel_per_tick: limits.fuel_per_invocation,
    }
}

/// `module` as `version` of `app`, granted `caps`, signed by `key`.
pub fn signed(
    app: &AppId,
    version: u32,
    module: &[u8],
    caps: Capabilities,
    key: &SigningKey,
) -> SignedRelease {
    sign_release(
        manifest_for(app.clone(), version, module, caps, 1_800_000_000),
        key,
    )
    .unwrap()
}

/// A rotation `serial` that trusts or revokes `subject`, signed by `by`.
fn rotation(
    serial: u32,
    change: TrustChange,
    subject: &SigningKey,
    by: &SigningKey,
) -> wasmbed_schemas::release::rotation::SignedRotation {
    sign_rotation(
        TrustRotation {
            serial,
            change,
            key: public(subject),
            issued_at: 1_800_000_000,
        },
        by,
    )
}

impl System {
    /// Trusts `key`: as the fleet's first key when `by` is `None`, else by a rotation with
    /// serial `serial` signed by `by`.
    pub async fn trust(
        &self,
        key: &SigningKey,
        by: Option<(&SigningKey, u32)>,
    ) -> Result<(), CallError> {
        let command = TrustPublisher {
            public_key: public(key),
            name: format!("key {}", public(key)),
            rotation: by.map(|(signer, serial)| rotation(serial, TrustChange::Trust, key, signer)),
        };
        call(&self.client, &command, T).await.map(drop)
    }

    /// Revokes `key` by rotation `serial` signed by `by`.
    pub async fn revoke(
        &self,
        key: &SigningKey,
        by: &SigningKey,
        serial: u32,
    ) -> Result<(), CallError> {
        let command = RevokePublisher {
            rotation: rotation(serial, TrustChange::Revoke, key, by),
            reason: "test".into(),
        };
        call(&self.client, &command, T).await.map(drop)
    }

    /// Uploads `module` and creates application `app` for `target` with `release`.
    pub async fn create_signed_app(
        &self,
        app: &AppId,
        module: &[u8],
        target: Target,
        limits: Limits,
        release: Option<SignedRelease>,
    ) -> Result<(), CallError> {
        crate::apps::create_application(
            &self.client,
            &self.log,
            app,
            module,
            target,
            limits,
            release,
        )
        .await
    }

    /// A simulated device with `key` provisioned to trust `publishers` as of `serial`,
    /// reporting its apps' statuses every half second.
    pub fn trusting_sim(
        &self,
        key: SigningKey,
        publishers: &[PublicKey],
        serial: u32,
    ) -> SimDevice {
        let mut config = SimConfig::new(vec![self.gateway_addr]);
        config.backoff_base = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        config.agent.publishers = publishers.to_vec();
        config.agent.trust_serial = serial;
        config.agent.status_interval_ms = 500;
        SimDevice::spawn(self.connector(), Arc::new(config), key)
    }

    /// Puts `module` and a `Deploy` of it as `version` of `app` with `release` straight onto
    /// `device`'s downlink, as anyone allowed to publish there could (the operator user here),
    /// bypassing the deployer.
    pub async fn inject(
        &self,
        device: &DeviceId,
        app: &AppId,
        version: u32,
        module: &[u8],
        release: Option<SignedRelease>,
        limits: Limits,
    ) {
        let sha256 = Sha256(sha2::Sha256::digest(module).into());
        let mut frames = vec![Frame::ModuleBegin(ModuleBegin {
            app_id: app.clone(),
            version,
            sha256,
            total_len: module.len() as u32,
            offset: 0,
        })];
        frames.extend(
            module
                .chunks(MODULE_CHUNK_LEN)
                .enumerate()
                .map(|(i, data)| {
                    Frame::ModuleChunk(ModuleChunk {
                        app_id: app.clone(),
                        offset: (i * MODULE_CHUNK_LEN) as u32,
                        data: data.to_vec(),
                    })
                }),
        );
        frames.push(Frame::ModuleCommit(ModuleCommit {
            app_id: app.clone(),
            sha256,
        }));
        frames.push(Frame::Deploy(Deploy {
            app_id: app.clone(),
            version,
            sha256,
            limits,
            config: Blob::default(),
            release: release.map(Box::new),
        }));
        let downlink = subject::device_downlink(device);
        for frame in frames {
            let bytes = encode_to_vec(&frame).unwrap();
            self.client
                .publish(downlink.clone(), bytes.into())
                .await
                .unwrap();
        }
        self.client.flush().await.unwrap();
    }
}

/// What a device says on its uplink about its apps, read as the deployer reads it.
pub struct Uplink {
    sub: async_nats::Subscriber,
}

impl Uplink {
    /// Listens to `device`'s uplink.
    pub async fn of(system: &System, device: &DeviceId) -> Self {
        let sub = system
            .client
            .subscribe(subject::device_uplink(device))
            .await
            .unwrap();
        Self { sub }
    }

    /// The next status of `app` that satisfies `condition`.
    pub async fn status(
        &mut self,
        app: &AppId,
        condition: impl Fn(&AppStatus) -> bool,
    ) -> AppStatus {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let message = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("no status of {app} matched"))
                .unwrap();
            if let Ok((Frame::AppStatus(status), _)) = decode(&message.payload)
                && status.app_id == *app
                && condition(&status)
            {
                return status;
            }
        }
    }
}
