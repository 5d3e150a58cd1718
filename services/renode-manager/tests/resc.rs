#![allow(clippy::unwrap_used)]
//! Golden tests: the generated `.resc` of every Renode-capable board, byte for byte against
//! `renode/golden/<MCU>.resc`. `WASMBED_BLESS=1 cargo test -p wasmbed-renode-manager
//! --test resc` rewrites them after a deliberate change (review the diff).

use std::path::PathBuf;

use wasmbed_renode_manager::catalogue::Catalogue;
use wasmbed_renode_manager::resc;
use wasmbed_schemas::provisioning::Provisioning;

fn block() -> Provisioning {
    Provisioning {
        endpoints: vec!["gateway.wasmbed.svc:8081".into(), "10.0.2.2:8081".into()],
        device_secret: [7; 32],
        entropy: [9; 32],
        provisioned_at: 1_795_000_000,
        server_name: "gateway.wasmbed.svc".into(),
        device_id: "board-1".into(),
        ca_der: vec![0x30, 0x82, 0x01, 0x0a, 0xde, 0xad, 0xbe, 0xef],
        enrollment_token: None,
        publishers: vec![wasmbed_schemas::PublicKey([3; 32])],
        trust_serial: 2,
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../renode/golden")
}

#[test]
fn every_renode_board_renders_its_golden_script() {
    let catalogue = Catalogue::bundled().unwrap();
    let update = std::env::var_os("WASMBED_BLESS").is_some();
    let mut rendered = 0;
    for mcu in catalogue.iter() {
        if mcu.renode().is_err() {
            continue;
        }
        // The ELF of the board's firmware where it has one (as the container backend uploads it).
        let firmware = mcu.firmware().map_or_else(
            |_| "/wasmbed/firmware/wasmbed-firmware".to_owned(),
            |board| format!("/wasmbed/firmware/{}", board.image_name()),
        );
        let script = resc::render(mcu, "board-1", &firmware, &block(), 3456).unwrap();
        let path = golden_dir().join(format!("{}.resc", mcu.name));
        if update {
            std::fs::write(&path, &script).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (WASMBED_BLESS=1 writes it)", path.display()));
        assert_eq!(
            script, golden,
            "{} drifted from its golden script",
            mcu.name
        );
        rendered += 1;
    }
    // Every board with a Renode platform in the catalogue: STM32F7/F4 (x2)/F103/F405, K64F,
    // nRF52840 DK and Nano 33 BLE.
    assert_eq!(rendered, 8);
}

#[test]
fn the_words_a_script_writes_decode_back_to_the_block() {
    let catalogue = Catalogue::bundled().unwrap();
    let mcu = catalogue.get("Stm32F746gDisco").unwrap();
    let script = resc::render(mcu, "board-1", "/fw.elf", &block(), 3456).unwrap();
    let bytes = resc::written_block(&script);
    assert_eq!(bytes.len() % 4, 0);
    let decoded = Provisioning::decode(&bytes).unwrap();
    assert_eq!(decoded, block());
    assert_eq!(decoded.endpoints[0], "gateway.wasmbed.svc:8081");
    // The seeds' contract: a u32 length first, then the endpoint text.
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(
        &bytes[4..4 + len],
        b"gateway.wasmbed.svc:8081,10.0.2.2:8081"
    );
    assert!(script.contains("sysbus WriteDoubleWord 0x20001000 0x00000026"));
    assert!(script.contains("connector Connect sysbus.ethernet lan"));
    assert!(script.contains("showAnalyzer sysbus.usart1"));
    assert!(script.contains("sysbus LoadELF @/fw.elf"));
}

#[test]
fn boards_renode_does_not_model_get_no_script() {
    let catalogue = Catalogue::bundled().unwrap();
    let err = resc::render(
        catalogue.get("Mps2An385").unwrap(),
        "d",
        "/fw",
        &block(),
        3456,
    )
    .unwrap_err();
    assert!(err.to_string().contains("Renode has no model"), "{err}");
}

#[test]
fn a_serial_board_gets_its_link_on_a_socket_its_image_and_its_block_in_flash() {
    let catalogue = Catalogue::bundled().unwrap();
    for name in ["Stm32F4Disco", "RenodeStm32F4Discovery"] {
        let mcu = catalogue.get(name).unwrap();
        let script = resc::render(
            mcu,
            "board-1",
            "/wasmbed/firmware/boards/stm32f407.elf",
            &block(),
            40123,
        )
        .unwrap();
        for expected in [
            "showAnalyzer sysbus.usart1",
            "emulation CreateServerSocketTerminal 40123 \"link\" false",
            "connector Connect sysbus.usart2 link",
            "nvic Frequency 168000000",
            "sysbus LoadELF @/wasmbed/firmware/boards/stm32f407.elf",
            "sysbus WriteDoubleWord 0x080ff000 ",
        ] {
            assert!(
                script.contains(expected),
                "{name}: no {expected:?} in\n{script}"
            );
        }
        assert!(
            !script.contains("0x20001000"),
            "{name}: block in RAM\n{script}"
        );
        let decoded = Provisioning::decode(&resc::written_block(&script)).unwrap();
        assert_eq!(decoded, block());
    }
}
