//! Pre-deploy validation: a module must be valid WebAssembly, import only the device runtime's
//! host API with the documented signatures, export what the runtime calls, and fit the memory
//! limits. Nothing is sent to a device before this passes.

use std::collections::BTreeSet;

use wasmbed_schemas::frame::Limits;
use wasmbed_schemas::host_api::{self, ValType};
use wasmparser::types::EntityType;
use wasmparser::{ValType as WasmValType, Validator, WasmFeatures};

/// What the deployer needs to know about a valid module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFacts {
    /// Pages of linear memory it starts with.
    pub min_pages: u64,
    /// Pages it declares as its maximum, if any.
    pub max_pages: Option<u64>,
    /// The `wasmbed` host functions it imports.
    pub imports: BTreeSet<String>,
}

fn same_type(ours: ValType, theirs: WasmValType) -> bool {
    matches!(
        (ours, theirs),
        (ValType::I32, WasmValType::I32) | (ValType::I64, WasmValType::I64)
    )
}

fn describe(types: &[WasmValType]) -> String {
    let names: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    format!("({})", names.join(", "))
}

/// Checks `bytes` against the host API and `limits`; the error says what is wrong, for people.
pub fn validate(bytes: &[u8], limits: &Limits) -> Result<ModuleFacts, String> {
    // The features wasmi (0.31, on host and device) runs: WebAssembly 2.0 without SIMD;
    // anything else would load here and fail on the device.
    let mut features = WasmFeatures::WASM2;
    features.remove(WasmFeatures::SIMD);
    let mut validator = Validator::new_with_features(features);
    let types = validator
        .validate_all(bytes)
        .map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
    let types = types.as_ref();

    let mut imports: Vec<(&str, &str, EntityType)> =
        types.core_imports().into_iter().flatten().collect();
    imports.sort_by_key(|(m, n, _)| (*m, *n));
    let names = imports.iter().map(|(_, n, _)| (*n).to_owned()).collect();
    for (module, name, entity) in imports {
        if module != host_api::MODULE {
            return Err(format!(
                "imports {module}.{name}, but the device runtime offers only module `{}`",
                host_api::MODULE
            ));
        }
        let Some(host) = host_api::function(name) else {
            return Err(format!(
                "imports {module}.{name}, which the device runtime does not offer (it offers: {})",
                host_api::FUNCTIONS
                    .iter()
                    .map(|f| f.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let EntityType::Func(id) = entity else {
            return Err(format!("imports {module}.{name} as a non-function"));
        };
        let func = types[id].unwrap_func();
        let params_ok = func.params().len() == host.params.len()
            && host
                .params
                .iter()
                .zip(func.params())
                .all(|(a, b)| same_type(*a, *b));
        let results_ok = func.results().len() == host.results.len()
            && host
                .results
                .iter()
                .zip(func.results())
                .all(|(a, b)| same_type(*a, *b));
        if !params_ok || !results_ok {
            return Err(format!(
                "imports {module}.{name} with type {} -> {}, but the host API defines it as: {}",
                describe(func.params()),
                describe(func.results()),
                host.doc
            ));
        }
    }

    let exports: Vec<(&str, EntityType)> = types.core_exports().into_iter().flatten().collect();
    let tick = exports.iter().find(|(n, _)| *n == host_api::EXPORT_TICK);
    match tick {
        Some((_, EntityType::Func(id)))
            if types[*id].unwrap_func().params().is_empty()
                && types[*id].unwrap_func().results().is_empty() => {}
        _ => return Err("the module must export `tick: () -> ()`".to_owned()),
    }
    if let Some((_, entity)) = exports.iter().find(|(n, _)| *n == host_api::EXPORT_INIT) {
        let ok = matches!(entity, EntityType::Func(id)
            if types[*id].unwrap_func().params().is_empty() && types[*id].unwrap_func().results().is_empty());
        if !ok {
            return Err("the `init` export must be `() -> ()`".to_owned());
        }
    }
    let memory = match exports.iter().find(|(n, _)| *n == host_api::EXPORT_MEMORY) {
        Some((_, EntityType::Memory(memory))) => *memory,
        _ => return Err("the module must export its linear memory as `memory`".to_owned()),
    };
    if memory.initial > u64::from(limits.max_memory_pages) {
        return Err(format!(
            "the module needs {} pages ({} KiB) of memory at start, more than \
             limits.max_memory_pages = {}",
            memory.initial,
            memory.initial * 64,
            limits.max_memory_pages
        ));
    }
    Ok(ModuleFacts {
        min_pages: memory.initial,
        max_pages: memory.maximum,
        imports: names,
    })
}
