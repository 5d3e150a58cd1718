//! Pre-deploy validation against the host API table.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use wasmbed_deployer::validate;
use wasmbed_example_apps::ALL;
use wasmbed_schemas::frame::Limits;

fn limits(pages: u32) -> Limits {
    Limits {
        fuel_per_invocation: 1000,
        max_memory_pages: pages,
        tick_interval_ms: 100,
    }
}

fn check(wat: &str) -> Result<wasmbed_deployer::ModuleFacts, String> {
    validate(&wat::parse_str(wat).unwrap(), &limits(2))
}

#[test]
fn every_example_app_passes() {
    for (name, module) in ALL {
        let facts = validate(module, &limits(2)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            facts.min_pages <= 2,
            "{name} needs {} pages",
            facts.min_pages
        );
    }
}

#[test]
fn imports_outside_the_host_api_are_refused_by_name() {
    let other_module = check(
        r#"(module (import "env" "abort" (func)) (memory (export "memory") 1) (func (export "tick")))"#,
    )
    .unwrap_err();
    assert!(other_module.contains("env.abort"), "{other_module}");
    let unknown = check(
        r#"(module (import "wasmbed" "fork" (func)) (memory (export "memory") 1) (func (export "tick")))"#,
    )
    .unwrap_err();
    assert!(
        unknown.contains("wasmbed.fork") && unknown.contains("publish"),
        "{unknown}"
    );
    let wrong_type = check(
        r#"(module (import "wasmbed" "now_ms" (func (result i32))) (memory (export "memory") 1) (func (export "tick")))"#,
    )
    .unwrap_err();
    assert!(
        wrong_type.contains("wasmbed.now_ms") && wrong_type.contains("i32"),
        "{wrong_type}"
    );
    let imported_memory =
        check(r#"(module (import "wasmbed" "memory" (memory 1)) (func (export "tick")))"#)
            .unwrap_err();
    assert!(
        imported_memory.contains("wasmbed.memory"),
        "{imported_memory}"
    );
}

#[test]
fn the_runtime_contract_is_checked() {
    let no_tick = check(r#"(module (memory (export "memory") 1))"#).unwrap_err();
    assert!(no_tick.contains("tick"), "{no_tick}");
    let bad_tick =
        check(r#"(module (memory (export "memory") 1) (func (export "tick") (param i32)))"#)
            .unwrap_err();
    assert!(bad_tick.contains("tick"), "{bad_tick}");
    let no_memory = check(r#"(module (memory 1) (func (export "tick")))"#).unwrap_err();
    assert!(no_memory.contains("memory"), "{no_memory}");
    let too_big =
        check(r#"(module (memory (export "memory") 3) (func (export "tick")))"#).unwrap_err();
    assert!(
        too_big.contains("3 pages") && too_big.contains("max_memory_pages = 2"),
        "{too_big}"
    );
}

#[test]
fn garbage_is_not_webassembly() {
    let e = validate(b"\0asm\x01\0\0\0garbage", &limits(2)).unwrap_err();
    assert!(e.starts_with("not a valid WebAssembly module"), "{e}");
    assert!(validate(b"", &limits(2)).is_err());
}
