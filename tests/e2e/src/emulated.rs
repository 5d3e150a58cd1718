//! Emulated boards in the fixture: the real firmware in QEMU, provisioned for this system.

use ed25519_dalek::SigningKey;
use wasmbed_renode_manager::firmware::{self, Board, GatewayLink};
use wasmbed_renode_manager::provision;
use wasmbed_renode_manager::qemu::{QemuConfig, QemuDevice};
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::permissions::Principal;
use wasmbed_schemas::provisioning::Provisioning;
use wasmbed_test_support::workspace_root;

use crate::System;

/// QEMU with the release image for `board` (every board's image built first, once per test
/// process).
pub fn qemu_config(board: Board) -> QemuConfig {
    images_built();
    QemuConfig {
        qemu: "qemu-system-arm".into(),
        board,
        image: firmware::image_path(&workspace_root(), board),
    }
}

/// The test limits within what `board` offers apps: the STM32s give one 64 KiB page.
pub fn limits_for(board: Board) -> Limits {
    let mut limits = crate::test_limits();
    if board.gateway_link() == GatewayLink::Serial {
        limits.max_memory_pages = 1;
    }
    limits
}

/// Builds every board's image (a no-op for cargo when they are up to date), the first time
/// a test of this process asks.
fn images_built() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        for board in Board::ALL {
            firmware::build(&workspace_root(), board).unwrap();
        }
    });
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

/// A renode-manager service running in the fixture.
pub struct Manager {
    /// The service.
    pub service: crate::Running,
    _keys: tempfile::TempDir,
}

impl System {
    /// Runs the renode-manager with `backend` and a quick restart policy.
    pub async fn start_manager(
        &self,
        backend: wasmbed_renode_manager::backend::Backend,
    ) -> Manager {
        use std::time::Duration;
        use wasmbed_renode_manager::{ManagerConfig, RestartPolicy};
        let keys = tempfile::tempdir().unwrap();
        let config = ManagerConfig {
            backend,
            catalogue: wasmbed_renode_manager::catalogue::Catalogue::bundled().unwrap(),
            key_dir: keys.path().to_path_buf(),
            server_name: "localhost".into(),
            restart: RestartPolicy {
                backoff_base: Duration::from_millis(200),
                ..RestartPolicy::default()
            },
            runtime: Default::default(),
        };
        let client = self.nats.client_as(Principal::RenodeManager).await.unwrap();
        let service = crate::Running::spawn(|stopped| async move {
            let _ = wasmbed_renode_manager::run(client, config, async move {
                let _ = stopped.await;
            })
            .await;
        });
        Manager {
            service,
            _keys: keys,
        }
    }
}

/// The QEMU backend over this checkout's firmware images (every board's image built first).
pub fn qemu_backend() -> wasmbed_renode_manager::backend::Backend {
    images_built();
    wasmbed_renode_manager::backend::Backend::Qemu(wasmbed_renode_manager::backend::QemuBackend {
        qemu: "qemu-system-arm".into(),
        images: workspace_root().join("firmware/target"),
    })
}

/// The simulator backend (no QEMU, no firmware: quick).
pub fn sim_backend() -> wasmbed_renode_manager::backend::Backend {
    wasmbed_renode_manager::backend::Backend::Sim
}
