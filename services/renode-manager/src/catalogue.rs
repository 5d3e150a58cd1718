//! The MCU catalogue (`renode/catalogue.toml`): every board type a device can be and how it is
//! emulated. The file is compiled in; a deployment may load its own with [`Catalogue::load`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::firmware::{Board, GatewayLink};

/// The catalogue shipped with this build.
pub const BUNDLED: &str = include_str!("../../../renode/catalogue.toml");

/// RAM the firmware needs: one 64 KiB application page, the TLS record buffers, the link's or
/// the network's buffers, the interpreter's state and a 64 KiB stack (measured on the STM32F405
/// by `cargo bench -p wasmbed-e2e --bench firmware`).
pub const MIN_RAM_KIB: u32 = 192;

/// The `.resc` template families that exist in `renode/templates/`.
pub const RENODE_FAMILIES: &[&str] = &["stm32", "kinetis", "nrf52"];

/// CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Arm Cortex-M (the firmware's architecture).
    CortexM,
    /// Cadence Xtensa (ESP32).
    Xtensa,
}

/// What the emulated board reaches the gateway over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Wired Ethernet (the only kind the firmware drives).
    Ethernet,
    /// Wi-Fi.
    Wifi,
    /// Bluetooth Low Energy only: no IP network to a gateway.
    Ble,
    /// No network peripheral.
    None,
}

/// One MCU type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mcu {
    /// Its name in commands and events (e.g. `Mps2An385`).
    pub name: String,
    /// The board it is.
    pub board: String,
    /// The CPU core.
    pub cpu: String,
    /// The CPU architecture.
    pub arch: Arch,
    /// Core clock.
    pub clock_mhz: u32,
    /// RAM.
    pub ram_kib: u32,
    /// Flash (MPS2: the code SSRAM).
    pub flash_kib: u32,
    /// Network reach.
    pub network: Network,
    /// Renode platform description, when Renode has one.
    pub renode_platform: Option<String>,
    /// The `.resc` template family.
    pub renode_family: Option<String>,
    /// The firmware's UART, as Renode names it.
    pub uart: String,
    /// The Ethernet peripheral, as Renode names it.
    pub ethernet: Option<String>,
    /// The UART of the serial link to the network co-processor, as Renode names it.
    pub link_uart: Option<String>,
    /// The QEMU machine, when QEMU models the board.
    pub qemu_machine: Option<String>,
    /// The Rust target of its firmware.
    pub firmware_target: Option<String>,
    /// The firmware's board module, when there is one.
    pub firmware_board: Option<String>,
}

/// Why a board cannot run the device firmware, or not with the emulator asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsupported {
    /// No such MCU type in the catalogue.
    #[error("{0:?} is not in the MCU catalogue")]
    Unknown(String),
    /// The CPU is not a Cortex-M.
    #[error("{mcu}: its CPU ({cpu}) is not a Cortex-M; the firmware is built for Cortex-M only")]
    NotCortexM {
        /// The MCU type.
        mcu: String,
        /// Its CPU.
        cpu: String,
    },
    /// Too little RAM for the firmware.
    #[error(
        "{mcu}: {ram_kib} KiB of RAM; the firmware needs {MIN_RAM_KIB} KiB (an app page, TLS buffers, its stack)"
    )]
    TooLittleRam {
        /// The MCU type.
        mcu: String,
        /// What it has.
        ram_kib: u32,
    },
    /// No Ethernet in the emulated board, and no serial-link board module either.
    #[error(
        "{mcu}: the emulated board has no Ethernet (network: {network}) and the firmware has no serial-link board module for it, so it cannot reach a gateway"
    )]
    NoNetwork {
        /// The MCU type.
        mcu: String,
        /// What it has.
        network: String,
    },
    /// The firmware has no board module for it.
    #[error("{mcu}: the firmware has no board module for the {board} yet")]
    NoFirmware {
        /// The MCU type.
        mcu: String,
        /// The board.
        board: String,
    },
    /// The board's image is laid out for another emulator's model of the part.
    #[error("{mcu}: the firmware's {image} image is laid out for {built_for}'s model of the part")]
    ImageFor {
        /// The MCU type.
        mcu: String,
        /// The image (its cargo feature).
        image: &'static str,
        /// The emulator it is for.
        built_for: &'static str,
    },
    /// The chosen emulator does not model the board.
    #[error("{mcu}: {emulator} has no model of the {board}")]
    NotEmulated {
        /// The MCU type.
        mcu: String,
        /// The board.
        board: String,
        /// `QEMU` or `Renode`.
        emulator: &'static str,
    },
}

/// The kinds of emulator backend, as `wasmbed serve renode-manager --backend` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// QEMU processes on this host.
    Qemu,
    /// QEMU in containers on a Docker engine.
    QemuDocker,
    /// Renode in containers on a Docker engine.
    RenodeDocker,
    /// The host simulator (device-core over real TLS, no firmware).
    Sim,
}

impl BackendKind {
    /// Every kind, in the order a table lists them.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Qemu,
        BackendKind::QemuDocker,
        BackendKind::RenodeDocker,
        BackendKind::Sim,
    ];

    /// Its name in commands, configuration and events.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::QemuDocker => "qemu-docker",
            BackendKind::RenodeDocker => "renode-docker",
            BackendKind::Sim => "sim",
        }
    }
}

impl Mcu {
    /// Whether a backend of `kind` can run this MCU type, or why not: the emulators run the
    /// firmware, so they need its board module and a model of the board; the simulator runs
    /// any type.
    pub fn runs_on(&self, kind: BackendKind) -> Result<(), Unsupported> {
        match kind {
            BackendKind::Sim => Ok(()),
            BackendKind::Qemu | BackendKind::QemuDocker => {
                self.firmware()?;
                self.qemu().map(drop)
            }
            BackendKind::RenodeDocker => {
                let board = self.firmware()?;
                self.renode()?;
                if board.laid_out_for_qemu_only() {
                    return Err(Unsupported::ImageFor {
                        mcu: self.name.clone(),
                        image: board.feature(),
                        built_for: "QEMU",
                    });
                }
                Ok(())
            }
        }
    }

    /// The firmware board this MCU runs, or why it runs none.
    pub fn firmware(&self) -> Result<Board, Unsupported> {
        if self.arch != Arch::CortexM {
            return Err(Unsupported::NotCortexM {
                mcu: self.name.clone(),
                cpu: self.cpu.clone(),
            });
        }
        if self.ram_kib < MIN_RAM_KIB {
            return Err(Unsupported::TooLittleRam {
                mcu: self.name.clone(),
                ram_kib: self.ram_kib,
            });
        }
        let board = self.firmware_board.as_deref().and_then(Board::from_feature);
        match (self.network, board) {
            (Network::Ethernet, Some(board)) => Ok(board),
            (Network::None, Some(board)) if board.gateway_link() == GatewayLink::Serial => {
                Ok(board)
            }
            (Network::Ethernet, None) => Err(Unsupported::NoFirmware {
                mcu: self.name.clone(),
                board: self.board.clone(),
            }),
            (network, _) => Err(Unsupported::NoNetwork {
                mcu: self.name.clone(),
                network: format!("{network:?}").to_lowercase(),
            }),
        }
    }

    /// The QEMU machine, or why there is none.
    pub fn qemu(&self) -> Result<&str, Unsupported> {
        self.qemu_machine
            .as_deref()
            .ok_or_else(|| self.not_emulated("QEMU"))
    }

    /// The Renode platform and template family, or why there are none.
    pub fn renode(&self) -> Result<(&str, &str), Unsupported> {
        match (&self.renode_platform, &self.renode_family) {
            (Some(platform), Some(family)) => Ok((platform, family)),
            _ => Err(self.not_emulated("Renode")),
        }
    }

    fn not_emulated(&self, emulator: &'static str) -> Unsupported {
        Unsupported::NotEmulated {
            mcu: self.name.clone(),
            board: self.board.clone(),
            emulator,
        }
    }
}

/// Why a catalogue file is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogueError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid catalogue TOML.
    #[error("the MCU catalogue: {0}")]
    Parse(#[from] toml::de::Error),
    /// Valid TOML, inconsistent content.
    #[error("the MCU catalogue: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default: String,
    mcu: Vec<Mcu>,
}

/// All MCU types, by name.
#[derive(Debug, Clone)]
pub struct Catalogue {
    default: String,
    mcus: BTreeMap<String, Mcu>,
}

impl Catalogue {
    /// The catalogue compiled into this build.
    pub fn bundled() -> Result<Self, CatalogueError> {
        Self::parse(BUNDLED)
    }

    /// A catalogue file.
    pub fn load(path: &Path) -> Result<Self, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Catalogue TOML.
    pub fn parse(text: &str) -> Result<Self, CatalogueError> {
        let file: File = toml::from_str(text)?;
        let mut mcus = BTreeMap::new();
        for mcu in file.mcu {
            if let Some(family) = &mcu.renode_family
                && !RENODE_FAMILIES.contains(&family.as_str())
            {
                return Err(CatalogueError::Invalid(format!(
                    "{}: no template for Renode family {family:?}",
                    mcu.name
                )));
            }
            if mcu.network == Network::Ethernet
                && mcu.renode_platform.is_some()
                && mcu.ethernet.is_none()
            {
                return Err(CatalogueError::Invalid(format!(
                    "{}: an Ethernet board under Renode needs `ethernet`",
                    mcu.name
                )));
            }
            if let Some(board) = &mcu.firmware_board
                && Board::from_feature(board).is_none()
            {
                return Err(CatalogueError::Invalid(format!(
                    "{}: the firmware has no board {board:?}",
                    mcu.name
                )));
            }
            let name = mcu.name.clone();
            if mcus.insert(name.clone(), mcu).is_some() {
                return Err(CatalogueError::Invalid(format!("{name} is listed twice")));
            }
        }
        if !mcus.contains_key(&file.default) {
            return Err(CatalogueError::Invalid(format!(
                "the default {:?} is not listed",
                file.default
            )));
        }
        Ok(Self {
            default: file.default,
            mcus,
        })
    }

    /// The MCU type named `name`.
    pub fn get(&self, name: &str) -> Result<&Mcu, Unsupported> {
        self.mcus
            .get(name)
            .ok_or_else(|| Unsupported::Unknown(name.to_owned()))
    }

    /// The MCU type devices get when none is named.
    pub fn default_mcu(&self) -> &Mcu {
        // `parse` checked that the default is listed.
        &self.mcus[&self.default]
    }

    /// Every MCU type, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Mcu> {
        self.mcus.values()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bundled_catalogue_lists_the_thirteen_seed_types() {
        let catalogue = Catalogue::bundled().unwrap();
        let names: Vec<&str> = catalogue.iter().map(|m| m.name.as_str()).collect();
        for name in [
            "Stm32F746gDisco",
            "FrdmK64f",
            "Esp32DevkitC",
            "Nrf52840DK",
            "Stm32F4Disco",
            "RenodeArduinoNano33Ble",
            "RenodeStm32F4Discovery",
            "Mps2An385",
            "Mps2An386",
            "Mps2An500",
            "Mps2An505",
            "Stm32Vldiscovery",
            "OlimexStm32H405",
        ] {
            assert!(names.contains(&name), "{name} missing");
        }
        assert_eq!(names.len(), 13);
        assert_eq!(catalogue.default_mcu().name, "Stm32F746gDisco");
    }

    #[test]
    fn boards_the_firmware_cannot_run_say_why() {
        let catalogue = Catalogue::bundled().unwrap();
        let reason = |name: &str| {
            catalogue
                .get(name)
                .unwrap()
                .firmware()
                .unwrap_err()
                .to_string()
        };
        assert!(reason("Esp32DevkitC").contains("not a Cortex-M"));
        assert!(reason("Nrf52840DK").contains("no Ethernet (network: ble)"));
        assert!(reason("Stm32Vldiscovery").contains("8 KiB of RAM; the firmware needs 192 KiB"));
        assert!(reason("Stm32F746gDisco").contains("no board module"));
        assert_eq!(
            catalogue.get("OlimexStm32H405").unwrap().firmware(),
            Ok(Board::Stm32F405)
        );
        for name in ["Stm32F4Disco", "RenodeStm32F4Discovery"] {
            assert_eq!(
                catalogue.get(name).unwrap().firmware(),
                Ok(Board::Stm32F407)
            );
        }
        assert_eq!(
            catalogue.get("Mps2An385").unwrap().firmware(),
            Ok(Board::Mps2An385)
        );
        for board in Board::ALL
            .into_iter()
            .filter(|b| b.qemu_machine().is_some())
        {
            let name = catalogue
                .iter()
                .find(|mcu| mcu.qemu_machine.as_deref() == board.qemu_machine())
                .map(|mcu| mcu.name.clone())
                .unwrap();
            assert_eq!(
                catalogue.get(&name).unwrap().firmware(),
                Ok(board),
                "{name}"
            );
        }
        assert!(matches!(
            catalogue.get("Nope"),
            Err(Unsupported::Unknown(_))
        ));
        let mps2 = catalogue.get("Mps2An385").unwrap();
        assert_eq!(mps2.qemu(), Ok("mps2-an385"));
        assert!(
            mps2.renode()
                .unwrap_err()
                .to_string()
                .contains("Renode has no model")
        );
    }

    #[test]
    fn every_type_says_which_backends_run_it_and_why_not() {
        let catalogue = Catalogue::bundled().unwrap();
        assert_eq!(catalogue.iter().count(), 13);
        // (type, runs on qemu and qemu-docker, renode-docker's reason when it cannot: "" when
        // it can)
        let cases = [
            ("Mps2An385", true, "Renode has no model"),
            ("Mps2An386", true, "Renode has no model"),
            ("Mps2An500", true, "Renode has no model"),
            ("Mps2An505", true, "Renode has no model"),
            ("Stm32F746gDisco", false, "no board module"),
            ("FrdmK64f", false, "no board module"),
            ("Esp32DevkitC", false, "not a Cortex-M"),
            ("Nrf52840DK", false, "no Ethernet (network: ble)"),
            (
                "RenodeArduinoNano33Ble",
                false,
                "no Ethernet (network: ble)",
            ),
            ("Stm32F4Disco", false, ""),
            ("RenodeStm32F4Discovery", false, ""),
            (
                "OlimexStm32H405",
                true,
                "stm32f405 image is laid out for QEMU's model",
            ),
            ("Stm32Vldiscovery", false, "8 KiB of RAM"),
        ];
        for (name, on_qemu, renode_reason) in cases {
            let mcu = catalogue.get(name).unwrap();
            for kind in [BackendKind::Qemu, BackendKind::QemuDocker] {
                assert_eq!(mcu.runs_on(kind).is_ok(), on_qemu, "{name} on {kind:?}");
            }
            match mcu.runs_on(BackendKind::RenodeDocker) {
                Ok(()) => assert_eq!(renode_reason, "", "{name} runs on renode-docker"),
                Err(renode) => assert!(
                    !renode_reason.is_empty() && renode.to_string().contains(renode_reason),
                    "{name}: {renode}"
                ),
            }
            assert_eq!(mcu.runs_on(BackendKind::Sim), Ok(()), "{name}");
        }
    }

    #[test]
    fn inconsistent_catalogues_are_refused() {
        let one = |extra: &str| {
            format!(
                "default = \"A\"\n[[mcu]]\nname = \"A\"\nboard = \"a\"\ncpu = \"Cortex-M3\"\narch = \"cortex-m\"\nclock_mhz = 1\nram_kib = 1\nflash_kib = 1\nnetwork = \"none\"\nuart = \"u\"\n{extra}"
            )
        };
        assert!(Catalogue::parse(&one("")).is_ok());
        let bad_family = Catalogue::parse(&one("renode_family = \"x\"\nrenode_platform = \"p\""));
        assert!(bad_family.unwrap_err().to_string().contains("no template"));
        let bad_board = Catalogue::parse(&one("firmware_board = \"pdp11\""));
        assert!(bad_board.unwrap_err().to_string().contains("no board"));
        let bad_default = Catalogue::parse(&one("").replace("default = \"A\"", "default = \"B\""));
        assert!(bad_default.unwrap_err().to_string().contains("not listed"));
        assert!(Catalogue::parse(&one("colour = \"red\"")).is_err());
    }
}
