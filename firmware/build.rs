//! Puts the board's memory map where the linker (through cortex-m-rt's `link.x`) finds it, as
//! `memory.x`: `memory/mps2-an505.x` for the AN505 (its RAM is elsewhere), `memory/mps2.x` for
//! the other boards. (The maps live in `memory/` because the linker would pick a `memory.x`
//! in the package root over the one copied here.)

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let source = if std::env::var_os("CARGO_FEATURE_MPS2_AN505").is_some() {
        "memory/mps2-an505.x"
    } else {
        "memory/mps2.x"
    };
    if let Err(e) = std::fs::copy(source, out.join("memory.x")) {
        panic!("copying {source}: {e}");
    }
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=memory");
}
