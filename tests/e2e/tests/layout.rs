//! Invariant: services share nothing but the bus. No service crate depends on another service
//! crate (tests may start one beside it); only the `wasmbed` binary links them together.

use std::fs;
use std::path::{Path, PathBuf};

fn services_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../services")
}

/// The service crates: directories directly under `services/` other than `lib` and the CLI.
fn service_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(services_dir())
        .expect("services/ is readable")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "cli")
        .collect();
    names.sort();
    names
}

/// The crate names in a manifest's `[dependencies]` table (not dev- or build-dependencies).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_table = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == "[dependencies]";
            continue;
        }
        if in_table && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                found.push(name.to_owned());
            }
        }
    }
    found
}

#[test]
fn dependencies_are_read_from_the_dependencies_table_only() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nwasmbed-bus.workspace = true\n\
                    serde = { version = \"1\" }\n[dev-dependencies]\nwasmbed-enrollment.workspace = true\n";
    assert_eq!(dependencies(manifest), ["wasmbed-bus", "serde"]);
}

#[test]
fn no_service_depends_on_another_service() {
    let names = service_names();
    assert!(names.len() >= 7, "expected the services, found {names:?}");
    let crates: Vec<String> = names.iter().map(|n| format!("wasmbed-{n}")).collect();
    // The check sees real dependencies: the binary does link every service.
    let cli = fs::read_to_string(services_dir().join("cli/Cargo.toml")).expect("CLI manifest");
    let linked = dependencies(&cli);
    assert!(crates.iter().all(|c| linked.contains(c)), "{linked:?}");
    let mut offences = Vec::new();
    for name in &names {
        let manifest = fs::read_to_string(services_dir().join(name).join("Cargo.toml"))
            .expect("manifest is readable");
        for dep in dependencies(&manifest) {
            if crates.contains(&dep) {
                offences.push(format!("services/{name} depends on {dep}"));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "services talk only through the bus:\n{}",
        offences.join("\n")
    );
}
