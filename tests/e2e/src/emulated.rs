//! Emulated boards in the fixture: the real firmware in QEMU, provisioned for this system.

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use wasmbed_renode_manager::firmware::{self, Board};
use wasmbed_renode_manager::pem;
use wasmbed_renode_manager::qemu::{QemuConfig, QemuDevice, guest_endpoint};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::provisioning::Provisioning;
use wasmbed_test_support::workspace_root;

use crate::System;

/// QEMU with the release image for `board` (built first if it is not up to date).
pub fn qemu_config(board: Board) -> QemuConfig {
    QemuConfig {
        qemu: "qemu-system-arm".into(),
        board,
        image: firmware::build(&workspace_root(), board).unwrap(),
    }
}

impl System {
    /// The block for a board with `key`, dialling this system's gateway and trusting `ca_der`
    /// (this system's CA when `None`).
    pub fn provisioning(
        &self,
        key: &SigningKey,
        device: &DeviceId,
        ca_der: Option<Vec<u8>>,
    ) -> Provisioning {
        let mut entropy = [0u8; 32];
        getrandom::fill(&mut entropy).unwrap();
        Provisioning {
            endpoints: vec![guest_endpoint(self.gateway_addr)],
            device_secret: key.to_bytes(),
            entropy,
            provisioned_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            server_name: "localhost".into(),
            device_id: device.to_string(),
            ca_der: ca_der.unwrap_or_else(|| pem::certificate_der(&self.ca_pem).unwrap()),
            enrollment_token: None,
        }
    }

    /// Registers `name` and boots its board in QEMU (not yet waiting for anything).
    pub async fn start_qemu(&self, board: Board, name: &str) -> (DeviceId, QemuDevice) {
        let (device, key) = self.register(name, &[]).await;
        let config = qemu_config(board);
        let qemu = QemuDevice::start(&config, &self.provisioning(&key, &device, None))
            .await
            .unwrap();
        (device, qemu)
    }
}
