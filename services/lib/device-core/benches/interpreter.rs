//! Interpreter speed on the host: the wasmi the runtime uses (0.31) beside wasmi 2, the one it
//! replaced, in the same run, on the same module.
//!
//! `cargo bench -p wasmbed-device-core --bench interpreter` (`WASMBED_BENCH_LOOPS=N`, default
//! 20,000,000 iterations; `WASMBED_BENCH_ROUNDS=N`, default 3, best round kept). The module is
//! a counted loop of loads, adds and stores (the kind of work a sensor app does), metered with
//! fuel as on a device. Fuel is not comparable between the two (each version prices
//! instructions its own way); loop iterations per second are.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: failing is failing

use std::time::Instant;

const MODULE: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "run") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store (i32.const 16)
          (i32.add (i32.load (i32.const 16)) (local.get $i)))
        (local.set $acc (i32.xor (local.get $acc) (i32.load (i32.const 16))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $acc)))
"#;

const FUEL: u64 = u64::MAX / 2;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One run under wasmi 0.31: (seconds, fuel consumed, result).
fn wasmi_031(wasm: &[u8], loops: i32) -> (f64, u64, i32) {
    let mut config = wasmi::Config::default();
    config.consume_fuel(true);
    let engine = wasmi::Engine::new(&config);
    let module = wasmi::Module::new(&engine, wasm).unwrap();
    let mut store = wasmi::Store::new(&engine, ());
    store.add_fuel(FUEL).unwrap();
    let linker = wasmi::Linker::<()>::new(&engine);
    let instance = linker
        .instantiate(&mut store, &module)
        .unwrap()
        .start(&mut store)
        .unwrap();
    let run = instance.get_typed_func::<i32, i32>(&store, "run").unwrap();
    let started = Instant::now();
    let result = run.call(&mut store, loops).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    (seconds, store.fuel_consumed().unwrap(), result)
}

/// One run under wasmi 2: (seconds, fuel consumed, result).
fn wasmi_2(wasm: &[u8], loops: i32) -> (f64, u64, i32) {
    let mut config = wasmi_2::Config::default();
    config.consume_fuel(true);
    let engine = wasmi_2::Engine::new(&config);
    let module = wasmi_2::Module::new(&engine, wasm).unwrap();
    let mut store = wasmi_2::Store::new(&engine, ());
    store.set_fuel(FUEL).unwrap();
    let linker = wasmi_2::Linker::<()>::new(&engine);
    let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
    let run = instance.get_typed_func::<i32, i32>(&store, "run").unwrap();
    let started = Instant::now();
    let result = run.call(&mut store, loops).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    (seconds, FUEL - store.get_fuel().unwrap(), result)
}

fn main() {
    let loops = i32::try_from(setting("WASMBED_BENCH_LOOPS", 20_000_000)).unwrap();
    let rounds = setting("WASMBED_BENCH_ROUNDS", 3);
    let wasm = wat::parse_str(MODULE).unwrap();
    let mut best_031 = f64::MAX;
    let mut best_2 = f64::MAX;
    let (mut fuel_031, mut fuel_2) = (0, 0);
    for _ in 0..rounds {
        // Alternate, so that neither gets the quieter half of the run.
        let (s, fuel, a) = wasmi_031(&wasm, loops);
        best_031 = best_031.min(s);
        fuel_031 = fuel;
        let (s, fuel, b) = wasmi_2(&wasm, loops);
        best_2 = best_2.min(s);
        fuel_2 = fuel;
        assert_eq!(a, b, "the two interpreters disagree");
    }
    let n = f64::from(loops);
    for (name, seconds, fuel) in [
        ("wasmi 0.31 (the runtime's)", best_031, fuel_031),
        ("wasmi 2 (replaced)", best_2, fuel_2),
    ] {
        println!(
            "{name}: {loops} iterations in {:.3} s: {:.1} M iterations/s, {:.1} M fuel/s ({:.1} fuel per iteration)",
            seconds,
            n / seconds / 1e6,
            fuel as f64 / seconds / 1e6,
            fuel as f64 / n
        );
    }
    println!(
        "wasmi 0.31 runs the loop at {:.2} of wasmi 2's speed",
        best_2 / best_031
    );
}
