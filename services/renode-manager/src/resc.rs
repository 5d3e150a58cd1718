//! Renode scripts (`.resc`) for a device, from the family templates in `renode/templates/`.
//!
//! The script adds the machine, includes the board's platform description, attaches the UART
//! analyzer, connects an Ethernet board to a host TAP through a switch, or a serial-link
//! board's link UART to a TCP server socket (the manager's [`crate::bridge`] dials it), loads
//! the firmware ELF and writes the provisioning block word by word where the board's firmware
//! reads it before `start`.

use wasmbed_schemas::provisioning::{self, Provisioning, ProvisioningError};

use crate::catalogue::{Mcu, Network, Unsupported};

const STM32: &str = include_str!("../../../renode/templates/stm32.resc");
const KINETIS: &str = include_str!("../../../renode/templates/kinetis.resc");
const NRF52: &str = include_str!("../../../renode/templates/nrf52.resc");

/// The host TAP interface an Ethernet board is bridged to inside the Renode container.
pub const TAP: &str = "renode-tap0";

/// Why no script could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RescError {
    /// Renode does not model the board.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// The provisioning block does not encode.
    #[error(transparent)]
    Provisioning(#[from] ProvisioningError),
}

/// The script for `device` of type `mcu`, loading the ELF at `firmware` (a path inside the
/// emulator's file system); a serial-link board's link UART listens on TCP `link_port`.
pub fn render(
    mcu: &Mcu,
    device: &str,
    firmware: &str,
    block: &Provisioning,
    link_port: u16,
) -> Result<String, RescError> {
    let (platform, family) = mcu.renode()?;
    let template = match family {
        "kinetis" => KINETIS,
        "nrf52" => NRF52,
        _ => STM32,
    };
    let network = match (&mcu.network, &mcu.ethernet, &mcu.link_uart) {
        (Network::Ethernet, Some(ethernet), _) => format!(
            "emulation CreateSwitch \"lan\"\nconnector Connect {ethernet} lan\n\
             emulation CreateTap \"{TAP}\" \"tap\"\nconnector Connect host.tap lan"
        ),
        (_, _, Some(link)) => format!(
            "# The serial link to the network co-processor: the manager's bridge dials this port.\n\
             emulation CreateServerSocketTerminal {link_port} \"link\" false\n\
             connector Connect {link} link\n\
             # SysTick at the core clock the firmware counts on.\n\
             nvic Frequency {}",
            u64::from(mcu.clock_mhz) * 1_000_000
        ),
        _ => format!("# {}: no Ethernet to connect", mcu.name),
    };
    let address = mcu
        .firmware()
        .map_or(provisioning::ADDRESS, |board| board.provisioning_address());
    let words = block.words()?;
    let provisioning: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            format!(
                "sysbus WriteDoubleWord {:#010x} {word:#010x}",
                address as usize + 4 * i
            )
        })
        .collect();
    Ok(template
        .replace("{{device}}", device)
        .replace("{{mcu}}", &mcu.name)
        .replace("{{board}}", &mcu.board)
        .replace("{{platform}}", platform)
        .replace("{{uart}}", &mcu.uart)
        .replace("{{address}}", &format!("{address:#010x}"))
        .replace("{{network}}", &network)
        .replace("{{firmware}}", firmware)
        .replace("{{provisioning}}", &provisioning.join("\n")))
}

/// The bytes a script writes for the provisioning block (what the board will find there).
pub fn written_block(script: &str) -> Vec<u8> {
    script
        .lines()
        .filter_map(|line| line.strip_prefix("sysbus WriteDoubleWord "))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .filter_map(|word| u32::from_str_radix(word.trim_start_matches("0x"), 16).ok())
        .flat_map(u32::to_le_bytes)
        .collect()
}
