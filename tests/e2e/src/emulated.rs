//! Emulated boards in the fixture: the real firmware in QEMU, provisioned for this system.

use ed25519_dalek::SigningKey;
use wasmbed_renode_manager::firmware::{self, Board};
use wasmbed_renode_manager::provision;
use wasmbed_renode_manager::qemu::{QemuConfig, QemuDevice};
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
        let mut block = provision::for_local_gateway(
            self.gateway_addr,
            key.to_bytes(),
            device.as_str(),
            &self.ca_pem,
        )
        .unwrap();
        if let Some(ca_der) = ca_der {
            block.ca_der = ca_der;
        }
        block
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
