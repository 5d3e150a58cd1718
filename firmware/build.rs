//! Puts the board's memory map where the linker (through cortex-m-rt's `link.x`) finds it, as
//! `memory.x` (`memory/` holds one per board family; the linker would pick a `memory.x` in the
//! package root over the one copied here), and tells the code which family it is built for
//! (`cfg(board_family = "mps2" | "stm32f4")`).

use std::path::PathBuf;

fn main() {
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    let (family, map) = if feature("MPS2_AN505") {
        ("mps2", "memory/mps2-an505.x")
    } else if feature("STM32F405") {
        ("stm32f4", "memory/stm32f405.x")
    } else if feature("STM32F407") {
        ("stm32f4", "memory/stm32f407.x")
    } else {
        ("mps2", "memory/mps2.x")
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    if let Err(e) = std::fs::copy(map, out.join("memory.x")) {
        panic!("copying {map}: {e}");
    }
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rustc-check-cfg=cfg(board_family, values(\"mps2\", \"stm32f4\"))");
    println!("cargo::rustc-cfg=board_family=\"{family}\"");
    println!("cargo::rerun-if-changed=memory");
}
