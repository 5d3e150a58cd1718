//! The firmware images (`firmware/` is a cargo workspace of its own, built for Cortex-M).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use wasmbed_schemas::provisioning;

/// A board the firmware is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// Arm MPS2 AN385, Cortex-M3.
    Mps2An385,
    /// Arm MPS2 AN386, Cortex-M4F.
    Mps2An386,
    /// Arm MPS2 AN500, Cortex-M7.
    Mps2An500,
    /// Arm MPS2 AN505, Cortex-M33 (SSE-200, TrustZone; the firmware runs secure).
    Mps2An505,
    /// STM32F405, Cortex-M4F, no Ethernet: QEMU's netduinoplus2 (the Olimex STM32-H405's MCU).
    Stm32F405,
    /// STM32F407, Cortex-M4F, no Ethernet: Renode's STM32F4 Discovery boards.
    Stm32F407,
}

/// How a board's firmware reaches a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayLink {
    /// Its own Ethernet and TCP/IP stack, on the emulator's network.
    Ethernet,
    /// A serial link (its second UART) to a network co-processor: [`crate::bridge`].
    Serial,
}

impl Board {
    /// Every board, in catalogue order.
    pub const ALL: [Board; 6] = [
        Board::Mps2An385,
        Board::Mps2An386,
        Board::Mps2An500,
        Board::Mps2An505,
        Board::Stm32F405,
        Board::Stm32F407,
    ];

    /// The QEMU machine that models the board, if QEMU has one.
    pub fn qemu_machine(self) -> Option<&'static str> {
        match self {
            Board::Mps2An385 => Some("mps2-an385"),
            Board::Mps2An386 => Some("mps2-an386"),
            Board::Mps2An500 => Some("mps2-an500"),
            Board::Mps2An505 => Some("mps2-an505"),
            Board::Stm32F405 => Some("netduinoplus2"),
            Board::Stm32F407 => None,
        }
    }

    /// The Rust target the image is built for.
    pub fn target(self) -> &'static str {
        match self {
            Board::Mps2An385 => "thumbv7m-none-eabi",
            Board::Mps2An386 | Board::Mps2An500 | Board::Stm32F405 | Board::Stm32F407 => {
                "thumbv7em-none-eabihf"
            }
            Board::Mps2An505 => "thumbv8m.main-none-eabihf",
        }
    }

    /// The firmware's cargo feature for the board.
    pub fn feature(self) -> &'static str {
        match self {
            Board::Mps2An385 => "mps2-an385",
            Board::Mps2An386 => "mps2-an386",
            Board::Mps2An500 => "mps2-an500",
            Board::Mps2An505 => "mps2-an505",
            Board::Stm32F405 => "stm32f405",
            Board::Stm32F407 => "stm32f407",
        }
    }

    /// Whether the image's memory map is QEMU's model of the part rather than the part
    /// itself (QEMU maps the STM32F405's RAM as one block and has no CCM), so that no other
    /// emulator may run it.
    pub fn laid_out_for_qemu_only(self) -> bool {
        self == Board::Stm32F405
    }

    /// How its firmware reaches a gateway.
    pub fn gateway_link(self) -> GatewayLink {
        match self {
            Board::Stm32F405 | Board::Stm32F407 => GatewayLink::Serial,
            _ => GatewayLink::Ethernet,
        }
    }

    /// Where in guest memory the board's firmware looks for its provisioning block (its
    /// `firmware/memory/` map reserves the region): the seeds' address; on the AN505 the same
    /// offset in the secure alias of its data RAM; on the STM32s the last 4 KiB of flash.
    pub fn provisioning_address(self) -> u32 {
        match self {
            Board::Mps2An505 => 0x3800_1000,
            Board::Stm32F405 | Board::Stm32F407 => 0x080f_f000,
            _ => provisioning::ADDRESS,
        }
    }

    /// The board whose firmware feature is `feature`.
    pub fn from_feature(feature: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.feature() == feature)
    }

    /// The image's path inside an images directory: one file per board, because two boards
    /// can share a target (and so cargo's output path).
    pub fn image_name(self) -> String {
        format!("boards/{}.elf", self.feature())
    }
}

/// Why an image could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirmwareError {
    /// cargo could not be run.
    #[error("running cargo for the firmware: {0}")]
    Cargo(#[source] std::io::Error),
    /// The build failed (its output went to stderr).
    #[error("building the firmware for {0:?} failed")]
    Build(Board),
    /// The built image could not be copied to the board's path.
    #[error("copying the firmware image to {0}: {1}")]
    Copy(String, #[source] std::io::Error),
}

/// Where the release image for `board` is, under the repository at `root`.
pub fn image_path(root: &Path, board: Board) -> PathBuf {
    image_in(&root.join("firmware/target"), board)
}

/// Where the release image for `board` is in the images directory `images` (the firmware
/// workspace's `target/`).
pub fn image_in(images: &Path, board: Board) -> PathBuf {
    images.join(board.image_name())
}

/// Builds the release image for `board` (cargo's part is a no-op when it is up to date),
/// copies it to the board's own path and returns that path.
///
/// cargo leaves the image of every board of one target at the same path, so a build and its
/// copy hold a lock that other builds in this process wait for (`scripts/firmware` does the
/// same copy for builds outside it).
pub fn build(root: &Path, board: Board) -> Result<PathBuf, FirmwareError> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root.join("firmware"))
        .args(["build", "--release", "--locked", "--no-default-features"])
        .args(["--features", board.feature(), "--target", board.target()])
        // Flags meant for the host build must not leak into the firmware build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(FirmwareError::Cargo)?;
    if !status.success() {
        return Err(FirmwareError::Build(board));
    }
    let built = root
        .join("firmware/target")
        .join(board.target())
        .join("release/wasmbed-firmware");
    let image = image_path(root, board);
    copy_image(&built, &image).map_err(|e| FirmwareError::Copy(image.display().to_string(), e))?;
    Ok(image)
}

/// Copies `from` to `to` through a temporary file beside it, so that a reader never sees half
/// an image.
fn copy_image(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let partial = to.with_extension("elf.partial");
    std::fs::copy(from, &partial)?;
    std::fs::rename(&partial, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_board_has_its_own_image_and_its_memory_maps_block() {
        for (board, target, address) in [
            (Board::Mps2An385, "thumbv7m-none-eabi", 0x2000_1000),
            (Board::Mps2An386, "thumbv7em-none-eabihf", 0x2000_1000),
            (Board::Mps2An500, "thumbv7em-none-eabihf", 0x2000_1000),
            (Board::Mps2An505, "thumbv8m.main-none-eabihf", 0x3800_1000),
            (Board::Stm32F405, "thumbv7em-none-eabihf", 0x080f_f000),
            (Board::Stm32F407, "thumbv7em-none-eabihf", 0x080f_f000),
        ] {
            assert_eq!(board.target(), target, "{board:?}");
            assert_eq!(board.provisioning_address(), address, "{board:?}");
            assert_eq!(Board::from_feature(board.feature()), Some(board));
        }
        // Boards sharing a target never share an image.
        let images: std::collections::BTreeSet<String> =
            Board::ALL.iter().map(|b| b.image_name()).collect();
        assert_eq!(images.len(), Board::ALL.len());
        assert_eq!(Board::from_feature("mps2-an511"), None);
    }

    #[test]
    fn the_memory_maps_reserve_the_block_where_the_manager_writes_it() {
        let firmware = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../firmware/memory");
        for (board, map) in [
            (Board::Mps2An385, "mps2.x"),
            (Board::Mps2An505, "mps2-an505.x"),
            (Board::Stm32F405, "stm32f405.x"),
            (Board::Stm32F407, "stm32f407.x"),
        ] {
            let text = std::fs::read_to_string(firmware.join(map)).unwrap_or_default();
            let origin = format!(
                "PROVISIONING : ORIGIN = {:#010x}",
                board.provisioning_address()
            );
            assert!(text.contains(&origin), "{map} lacks {origin:?}");
        }
    }
}
