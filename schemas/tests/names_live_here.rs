//! Invariant: every NATS subject, stream, bucket and object-store name is spelled in
//! `schemas::subject` and nowhere else. Services, libraries and the firmware build names by calling
//! it, so a rename is one edit and a third-party client can read every name from one file.
//!
//! The check reads the sources of the other crates and fails on a string literal that spells a
//! name: `"wasmbed.<anything but io>`, the stream names, the bucket names, or a `$JS.`/`$KV.`/`$O.`
//! API subject. Comments are skipped. Integration tests under `tests/` may spell names: they check
//! the wire as an outside client sees it.

use std::fs;
use std::path::{Path, PathBuf};

use wasmbed_schemas::subject;

/// Literal beginnings that spell a name owned by `schemas::subject`: the subject prefix, the
/// JetStream API prefixes, and every stream, bucket and object store it names.
fn forbidden() -> Vec<String> {
    let mut names: Vec<String> = ["\"wasmbed.", "\"$JS.", "\"$KV.", "\"$O."]
        .map(String::from)
        .to_vec();
    names.extend(
        [
            subject::EVENTS_STREAM,
            subject::TELEMETRY_STREAM,
            subject::LIVENESS_BUCKET,
            subject::MODULES_OBJECT_STORE,
            subject::DEPLOYMENTS_BUCKET,
            subject::TELEMETRY_LATEST_BUCKET,
            subject::LEASES_BUCKET,
        ]
        .map(|name| format!("\"{name}\"")),
    );
    names
}

/// Literals that begin like a name but are not one.
const ALLOWED: &[&str] = &[
    // The Kubernetes API group of the projected resources.
    "\"wasmbed.io\"",
];

/// Source roots other than `schemas`, relative to the workspace root.
/// Only files under a `src` directory count.
const ROOTS: &[&str] = &["services", "firmware", "tests", "apps"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("schemas sits in the workspace root")
        .to_path_buf()
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "tests" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.components().any(|c| c.as_os_str() == "src")
        {
            out.push(path);
        }
    }
}

/// The offending literals of one source text, as `(line number, line)`.
fn spelled_names(text: &str) -> Vec<(usize, String)> {
    let forbidden = forbidden();
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = line.to_owned();
        for allowed in ALLOWED {
            rest = rest.replace(allowed, "");
        }
        if forbidden.iter().any(|f| rest.contains(f.as_str())) {
            found.push((number + 1, line.trim().to_owned()));
        }
    }
    found
}

#[test]
fn the_checker_sees_a_spelled_name() {
    let cases = [
        ("let s = \"wasmbed.events.v1.device.x\";", true),
        ("format!(\"wasmbed.cmd.v1.{}\", x)", true),
        ("js.get_stream(\"WASMBED_EVENTS\")", true),
        ("kv(\"wasmbed-liveness\")", true),
        ("\"$JS.API.INFO\"", true),
        ("group = \"wasmbed.io\",", false),
        ("// the subject \"wasmbed.events.v1.>\"", false),
        ("subject::device_downlink(&id)", false),
        ("env = \"WASMBED_TELEMETRY_HTTP_PORT\"", false),
    ];
    for (line, spelled) in cases {
        assert_eq!(!spelled_names(line).is_empty(), spelled, "{line}");
    }
}

#[test]
fn no_crate_but_schemas_spells_a_subject_stream_or_bucket() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_sources(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 50,
        "expected the workspace's sources, found {} files under {ROOTS:?}",
        files.len()
    );
    let mut offences = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("source is UTF-8");
        for (line, code) in spelled_names(&text) {
            let shown = file.strip_prefix(&root).unwrap_or(file).display();
            offences.push(format!("{shown}:{line}: {code}"));
        }
    }
    assert!(
        offences.is_empty(),
        "names belong in schemas::subject; build them from there instead:\n{}",
        offences.join("\n")
    );
}
