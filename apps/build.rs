//! Builds the example apps in `wasm/` for `wasm32-unknown-unknown` with the same cargo, into
//! this crate's `OUT_DIR`, so `include_bytes!` can embed them. `scripts/setup` installs the
//! target; without it this build stops with a message saying so.

use std::path::PathBuf;
use std::process::Command;

const APPS: &[&str] = &["sensor", "counter", "spin"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let wasm_dir = manifest_dir.join("wasm");
    println!("cargo::rerun-if-changed={}", wasm_dir.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out_dir.join("target");
    let status = Command::new(cargo)
        // The wasm workspace's own `.cargo/config.toml` (target, stack size) is found from the
        // working directory.
        .current_dir(&wasm_dir)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the wasm build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the example apps failed ({s}); is the wasm32-unknown-unknown target \
             installed? (scripts/setup adds it)"
        ),
        Err(e) => panic!("could not run cargo for the example apps: {e}"),
    }
    for app in APPS {
        let built = target_dir
            .join("wasm32-unknown-unknown/release")
            .join(format!("{app}.wasm"));
        let dest = out_dir.join(format!("{app}.wasm"));
        if let Err(e) = std::fs::copy(&built, &dest) {
            panic!("copying {}: {e}", built.display());
        }
    }
}
