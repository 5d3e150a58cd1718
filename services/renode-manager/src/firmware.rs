//! The firmware images (`firmware/` is a cargo workspace of its own, built for Cortex-M).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A board the firmware is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// Arm MPS2 AN385, Cortex-M3.
    Mps2An385,
    /// Arm MPS2 AN386, Cortex-M4F.
    Mps2An386,
}

impl Board {
    /// The QEMU machine that models the board.
    pub fn qemu_machine(self) -> &'static str {
        match self {
            Board::Mps2An385 => "mps2-an385",
            Board::Mps2An386 => "mps2-an386",
        }
    }

    /// The Rust target the image is built for.
    pub fn target(self) -> &'static str {
        match self {
            Board::Mps2An385 => "thumbv7m-none-eabi",
            Board::Mps2An386 => "thumbv7em-none-eabihf",
        }
    }

    /// The firmware's cargo feature for the board.
    pub fn feature(self) -> &'static str {
        self.qemu_machine()
    }

    /// The board whose firmware feature is `feature`.
    pub fn from_feature(feature: &str) -> Option<Self> {
        [Board::Mps2An385, Board::Mps2An386]
            .into_iter()
            .find(|b| b.feature() == feature)
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
}

/// Where the release image for `board` is, under the repository at `root`.
pub fn image_path(root: &Path, board: Board) -> PathBuf {
    image_in(&root.join("firmware/target"), board)
}

/// Where the release image for `board` is in the images directory `images` (the firmware
/// workspace's `target/`).
pub fn image_in(images: &Path, board: Board) -> PathBuf {
    images.join(board.target()).join("release/wasmbed-firmware")
}

/// Builds the release image for `board` (a no-op when it is up to date) and returns its path.
pub fn build(root: &Path, board: Board) -> Result<PathBuf, FirmwareError> {
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
    Ok(image_path(root, board))
}
