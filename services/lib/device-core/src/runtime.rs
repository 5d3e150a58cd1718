//! Running applications: wasmi with fuel metering and memory limits, several apps at once.
//!
//! Each app has its own `Store` (so its own fuel, memory limit and host state); the engine and
//! the linker holding the `wasmbed` host API are shared. A trap or running out of fuel stops
//! only that app; its failure is reported and every other app keeps its schedule.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use wasmbed_schemas::frame::{AppState, AppStatus, Frame, Limits, Log, LogLevel, Telemetry};
use wasmbed_schemas::host_api::{
    self, ERR_BOUNDS, ERR_DENIED, ERR_INVALID, ERR_RATE, ERR_TOO_LARGE,
};
use wasmbed_schemas::release::Refusal;
use wasmbed_schemas::{AppId, Sha256};

use crate::release::Grants;
use wasmi::core::TrapCode;
use wasmi::{
    Caller, Config, Engine, Extern, Instance, Linker, Memory, Module, StackLimits, Store,
    StoreLimits, StoreLimitsBuilder, TypedFunc,
};

/// Bytes in one WebAssembly page.
pub const PAGE_BYTES: u32 = 64 * 1024;

/// The host side of one app: what its host calls can see and what they produced.
struct AppHost {
    app_id: AppId,
    device_id: String,
    config: Vec<u8>,
    now_ms: u64,
    telemetry_seq: u32,
    messages_this_call: usize,
    outbox: Vec<Frame>,
    limits: StoreLimits,
    /// The topics its release grants; `None`: any.
    topics: Option<BTreeSet<String>>,
    /// Publishes refused because the topic is not granted.
    denied_publishes: u32,
    /// Fuel put into the store so far (wasmi counts what was consumed, not what is left).
    fuel_added: u64,
}

struct App {
    version: u32,
    sha256: Sha256,
    limits: Limits,
    store: Store<AppHost>,
    tick: TypedFunc<(), ()>,
    memory: Memory,
    next_tick_ms: u64,
    fuel_used: u64,
}

/// What to start: an app version and the module bytes to run.
pub struct StartRequest<'a> {
    /// The application.
    pub app_id: AppId,
    /// Its version.
    pub version: u32,
    /// The verified digest of `module`.
    pub sha256: Sha256,
    /// The module.
    pub module: &'a [u8],
    /// Limits to enforce.
    pub limits: Limits,
    /// Configuration bytes the app reads.
    pub config: Vec<u8>,
    /// What its verified release grants; `None`: no restriction (an open device).
    pub grants: Option<Grants>,
}

/// Why an app did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// For people.
    pub detail: String,
    /// Set when the module asks for more than its release grants.
    pub refusal: Option<Refusal>,
}

impl From<String> for StartFailure {
    fn from(detail: String) -> Self {
        Self {
            detail,
            refusal: None,
        }
    }
}

/// The apps running on this device.
pub struct Runtime {
    engine: Engine,
    linker: Linker<AppHost>,
    apps: BTreeMap<AppId, App>,
    device_id: String,
    memory_budget: u64,
}

impl Runtime {
    /// A runtime with no apps for a device that gives apps `memory_budget` bytes of linear memory together
    /// (an app whose limit would take the sum past it does not start) and lets one call's wasm
    /// value stack take at most `value_stack_bytes` of its heap (deeper calls trap with a stack
    /// overflow instead of running the device out of memory).
    pub fn with_budget(memory_budget: u64, value_stack_bytes: usize) -> Self {
        let entries = (value_stack_bytes / 8).max(64);
        let limits = StackLimits::new(
            entries.min(128),
            entries,
            (value_stack_bytes / 64).clamp(16, 1024),
        );
        let mut config = Config::default();
        if let Ok(limits) = limits {
            config.set_stack_limits(limits);
        }
        config.consume_fuel(true);
        let engine = Engine::new(&config);
        let linker = host_linker(&engine);
        Self {
            engine,
            linker,
            apps: BTreeMap::new(),
            device_id: String::new(),
            memory_budget,
        }
    }

    /// Sets the id apps read through `device_id` (from the gateway's welcome).
    pub fn set_device_id(&mut self, device_id: &str) {
        self.device_id = String::from(device_id);
    }

    /// Compiles, instantiates and initialises an app, replacing a running version of it.
    /// Frames it sent from `init` go to `out`. On failure nothing runs and the reason is
    /// returned.
    pub fn start(
        &mut self,
        request: StartRequest<'_>,
        now_ms: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), StartFailure> {
        self.apps.remove(&request.app_id);
        let others: u64 = self
            .apps
            .values()
            .map(|app| u64::from(app.limits.max_memory_pages) * u64::from(PAGE_BYTES))
            .sum();
        let wanted = u64::from(request.limits.max_memory_pages) * u64::from(PAGE_BYTES);
        if others.saturating_add(wanted) > self.memory_budget {
            return Err(format!(
                "its memory limit ({} KiB) does not fit the device's app RAM: {} KiB, {} KiB of it \
                 held by running apps",
                wanted / 1024,
                self.memory_budget / 1024,
                others / 1024
            )
            .into());
        }
        let module = Module::new(&self.engine, request.module)
            .map_err(|e| format!("module does not load: {e}"))?;
        if let Some(grants) = &request.grants
            && let Some(name) = module
                .imports()
                .map(|import| (import.module(), import.name()))
                .find(|(m, name)| *m != host_api::MODULE || !grants.imports.contains(*name))
                .map(|(m, name)| format!("{m}.{name}"))
        {
            return Err(StartFailure {
                detail: format!("the module imports {name}, which its release does not grant"),
                refusal: Some(Refusal::Capability),
            });
        }
        let memory_limit =
            (request.limits.max_memory_pages as usize).saturating_mul(PAGE_BYTES as usize);
        let host = AppHost {
            app_id: request.app_id.clone(),
            device_id: self.device_id.clone(),
            config: request.config,
            now_ms,
            telemetry_seq: 0,
            messages_this_call: 0,
            outbox: Vec::new(),
            topics: request.grants.map(|g| g.topics),
            denied_publishes: 0,
            fuel_added: 0,
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_limit)
                .memories(1)
                .tables(4)
                .instances(1)
                .build(),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| &mut host.limits);
        set_fuel(&mut store, request.limits.fuel_per_invocation)?;
        let instance = self
            .linker
            .instantiate(&mut store, &module)
            .and_then(|pre| pre.start(&mut store))
            .map_err(|e| describe_failure(&e, error_trap(&e), "instantiation", &request.limits))?;
        let memory = instance
            .get_export(&store, host_api::EXPORT_MEMORY)
            .and_then(Extern::into_memory)
            .ok_or_else(|| String::from("the module does not export its memory as `memory`"))?;
        let tick = instance
            .get_typed_func::<(), ()>(&store, host_api::EXPORT_TICK)
            .map_err(|e| format!("the module has no `tick: () -> ()` export: {e}"))?;
        let mut app = App {
            version: request.version,
            sha256: request.sha256,
            limits: request.limits,
            store,
            tick,
            memory,
            next_tick_ms: now_ms,
            fuel_used: 0,
        };
        let init = init_export(&instance, &app.store);
        if let Some(init) = init {
            let result = call(&mut app, init, now_ms);
            out.append(&mut app.store.data_mut().outbox);
            result.map_err(StartFailure::from)?;
        }
        self.apps.insert(request.app_id, app);
        Ok(())
    }

    /// Stops an app; `true` if it was running.
    pub fn stop(&mut self, app: &AppId) -> bool {
        self.apps.remove(app).is_some()
    }

    /// Whether `app` runs `sha256` at `version` now.
    pub fn is_running(&self, app: &AppId, version: u32, sha256: &Sha256) -> bool {
        self.apps
            .get(app)
            .is_some_and(|a| a.version == version && a.sha256 == *sha256)
    }

    /// Calls `tick` of every app that is due. Frames the apps sent go to `out`, followed by
    /// a failed `AppStatus` for each app that trapped or ran out of fuel (which is stopped).
    pub fn run_due(&mut self, now_ms: u64, out: &mut Vec<Frame>) {
        let mut failed = Vec::new();
        for (id, app) in self.apps.iter_mut() {
            if app.next_tick_ms > now_ms {
                continue;
            }
            let tick = app.tick;
            let result = call(app, tick, now_ms);
            out.append(&mut app.store.data_mut().outbox);
            match result {
                Ok(()) => {
                    let interval = u64::from(app.limits.tick_interval_ms.max(1));
                    // Skip ticks missed while busy rather than running them back to back.
                    app.next_tick_ms = (app.next_tick_ms + interval).max(now_ms + 1);
                }
                Err(reason) => failed.push((id.clone(), reason)),
            }
        }
        for (id, reason) in failed {
            if let Some(app) = self.apps.remove(&id) {
                out.push(Frame::AppStatus(AppStatus {
                    app_id: id,
                    version: app.version,
                    state: AppState::Failed,
                    fuel_used: app.fuel_used,
                    memory_pages: pages(&app),
                    detail: Some(reason),
                    refusal: None,
                    denied_publishes: app.store.data().denied_publishes,
                }));
            }
        }
    }

    /// When the next tick is due (`None` with no apps).
    pub fn next_due(&self) -> Option<u64> {
        self.apps.values().map(|a| a.next_tick_ms).min()
    }

    /// The status of a running app.
    pub fn status(&self, app: &AppId) -> Option<AppStatus> {
        self.apps.get(app).map(|a| AppStatus {
            app_id: app.clone(),
            version: a.version,
            state: AppState::Running,
            fuel_used: a.fuel_used,
            memory_pages: pages(a),
            detail: None,
            refusal: None,
            denied_publishes: a.store.data().denied_publishes,
        })
    }

    /// The status of every running app.
    pub fn statuses(&self) -> Vec<AppStatus> {
        self.apps.keys().filter_map(|id| self.status(id)).collect()
    }
}

fn pages(app: &App) -> u32 {
    u32::from(app.memory.current_pages(&app.store))
}

/// Leaves exactly `budget` fuel in `store`.
fn set_fuel(store: &mut Store<AppHost>, budget: u64) -> Result<(), String> {
    let left = fuel_left(store);
    if left < budget {
        store
            .add_fuel(budget - left)
            .map_err(|e| format!("fuel: {e}"))?;
        let host = store.data_mut();
        host.fuel_added = host.fuel_added.saturating_add(budget - left);
    } else if left > budget {
        store
            .consume_fuel(left - budget)
            .map_err(|e| format!("fuel: {e}"))?;
    }
    Ok(())
}

fn fuel_left(store: &Store<AppHost>) -> u64 {
    let consumed = store.fuel_consumed().unwrap_or(0);
    store.data().fuel_added.saturating_sub(consumed)
}

fn error_trap(e: &wasmi::Error) -> Option<TrapCode> {
    match e {
        wasmi::Error::Trap(trap) => trap.trap_code(),
        _ => None,
    }
}

fn init_export(instance: &Instance, store: &Store<AppHost>) -> Option<TypedFunc<(), ()>> {
    instance
        .get_typed_func::<(), ()>(store, host_api::EXPORT_INIT)
        .ok()
}

/// One call of an export with a fresh fuel budget.
fn call(app: &mut App, func: TypedFunc<(), ()>, now_ms: u64) -> Result<(), String> {
    let budget = app.limits.fuel_per_invocation;
    {
        let host = app.store.data_mut();
        host.now_ms = now_ms;
        host.messages_this_call = 0;
    }
    set_fuel(&mut app.store, budget)?;
    let result = func.call(&mut app.store, ());
    let left = fuel_left(&app.store);
    app.fuel_used = app.fuel_used.saturating_add(budget.saturating_sub(left));
    result.map_err(|e| describe_failure(&e, e.trap_code(), "call", &app.limits))
}

fn describe_failure(
    e: &dyn core::fmt::Display,
    code: Option<TrapCode>,
    during: &str,
    limits: &Limits,
) -> String {
    match code {
        Some(TrapCode::OutOfFuel) => format!(
            "fuel exhausted: {during} used all {} fuel of one invocation",
            limits.fuel_per_invocation
        ),
        Some(code) => format!("trap during {during}: {code}"),
        None => format!("{during} failed: {e}"),
    }
}

/// Reads `len` bytes at `ptr` of the caller's memory.
fn read(caller: &Caller<'_, AppHost>, ptr: i32, len: i32, max: usize) -> Result<Vec<u8>, i32> {
    let (Ok(ptr), Ok(len)) = (usize::try_from(ptr), usize::try_from(len)) else {
        return Err(ERR_BOUNDS);
    };
    if len > max {
        return Err(ERR_TOO_LARGE);
    }
    let memory = memory_of(caller).ok_or(ERR_BOUNDS)?;
    let mut buf = vec![0u8; len];
    memory.read(caller, ptr, &mut buf).map_err(|_| ERR_BOUNDS)?;
    Ok(buf)
}

/// Writes `bytes` at `ptr` if they fit in `cap`; returns their length either way.
fn write(caller: &mut Caller<'_, AppHost>, ptr: i32, cap: i32, bytes: &[u8]) -> i32 {
    let Ok(len) = i32::try_from(bytes.len()) else {
        return ERR_TOO_LARGE;
    };
    if len > cap {
        return len;
    }
    let (Ok(ptr), Some(memory)) = (usize::try_from(ptr), memory_of(caller)) else {
        return ERR_BOUNDS;
    };
    match memory.write(caller, ptr, bytes) {
        Ok(()) => len,
        Err(_) => ERR_BOUNDS,
    }
}

fn memory_of(caller: &Caller<'_, AppHost>) -> Option<Memory> {
    caller
        .get_export(host_api::EXPORT_MEMORY)
        .and_then(Extern::into_memory)
}

/// Counts a message against the per-call limit.
fn take_message_slot(host: &mut AppHost) -> bool {
    if host.messages_this_call >= host_api::MAX_MESSAGES_PER_CALL {
        return false;
    }
    host.messages_this_call += 1;
    true
}

fn level(code: i32) -> LogLevel {
    match code {
        0 => LogLevel::Error,
        1 => LogLevel::Warn,
        3 => LogLevel::Debug,
        _ => LogLevel::Info,
    }
}

/// The `wasmbed` import module. Every function of [`host_api::FUNCTIONS`] is defined here
/// (a test holds the two together).
fn host_linker(engine: &Engine) -> Linker<AppHost> {
    let mut linker = Linker::new(engine);
    let m = host_api::MODULE;
    // Defining a name twice is the only way these fail; the names are distinct constants.
    let _ = linker.func_wrap(
        m,
        "log",
        |mut caller: Caller<'_, AppHost>, lvl: i32, ptr: i32, len: i32| -> i32 {
            let bytes = match read(&caller, ptr, len, host_api::MAX_LOG_LEN) {
                Ok(bytes) => bytes,
                Err(code) => return code,
            };
            let host = caller.data_mut();
            if !take_message_slot(host) {
                return ERR_RATE;
            }
            let message = String::from_utf8_lossy(&bytes).to_string();
            let frame = Frame::Log(Log {
                level: level(lvl),
                app_id: Some(host.app_id.clone()),
                message,
            });
            host.outbox.push(frame);
            0
        },
    );
    let _ = linker.func_wrap(
        m,
        "publish",
        |mut caller: Caller<'_, AppHost>, tp: i32, tl: i32, pp: i32, pl: i32| -> i32 {
            let topic = match read(&caller, tp, tl, host_api::MAX_TOPIC_LEN) {
                Ok(bytes) => bytes,
                Err(code) => return code,
            };
            // The gateway ends the session of a device that sends a topic it cannot carry.
            let topic = match String::from_utf8(topic) {
                Ok(topic) if host_api::is_valid_topic(&topic) => topic,
                _ => return ERR_INVALID,
            };
            let payload = match read(&caller, pp, pl, host_api::MAX_PAYLOAD_LEN) {
                Ok(bytes) => bytes,
                Err(code) => return code,
            };
            let host = caller.data_mut();
            if host.topics.as_ref().is_some_and(|t| !t.contains(&topic)) {
                host.denied_publishes = host.denied_publishes.saturating_add(1);
                return ERR_DENIED;
            }
            if !take_message_slot(host) {
                return ERR_RATE;
            }
            host.telemetry_seq = host.telemetry_seq.wrapping_add(1);
            let frame = Frame::Telemetry(Telemetry {
                app_id: host.app_id.clone(),
                seq: host.telemetry_seq,
                topic,
                payload,
            });
            host.outbox.push(frame);
            0
        },
    );
    let _ = linker.func_wrap(m, "now_ms", |caller: Caller<'_, AppHost>| -> i64 {
        i64::try_from(caller.data().now_ms).unwrap_or(i64::MAX)
    });
    let _ = linker.func_wrap(
        m,
        "device_id",
        |mut caller: Caller<'_, AppHost>, ptr: i32, cap: i32| -> i32 {
            let id = caller.data().device_id.clone();
            write(&mut caller, ptr, cap, id.as_bytes())
        },
    );
    let _ = linker.func_wrap(
        m,
        "config",
        |mut caller: Caller<'_, AppHost>, ptr: i32, cap: i32| -> i32 {
            let config = caller.data().config.clone();
            write(&mut caller, ptr, cap, &config)
        },
    );
    linker
}
