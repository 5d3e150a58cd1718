//! The application agent driven in memory: module transfer, the runtime, the host API.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use sha2::Digest;
use wasmbed_device_core::{Agent, AgentConfig};
use wasmbed_example_apps::{COUNTER, SENSOR, SPIN};
use wasmbed_schemas::bytes::Blob;
use wasmbed_schemas::frame::*;
use wasmbed_schemas::host_api::{self, ValType};
use wasmbed_schemas::{AppId, DeviceId, Sha256};

fn agent_config() -> AgentConfig {
    AgentConfig {
        mcu: "Sim".into(),
        firmware: "test".into(),
        app_ram_bytes: 256 * 1024,
        max_module_len: 256 * 1024,
        value_stack_bytes: 1024 * 1024,
        status_interval_ms: 60_000,
        publishers: Vec::new(),
        trust_serial: 0,
    }
}

fn agent() -> Agent {
    let mut agent = Agent::new(agent_config());
    agent.on_established(&DeviceId::new("dev-1").unwrap());
    agent
}

fn app(name: &str) -> AppId {
    AppId::new(name).unwrap()
}

fn sha(bytes: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(bytes).into())
}

fn limits() -> Limits {
    Limits {
        fuel_per_invocation: 200_000,
        max_memory_pages: 2,
        tick_interval_ms: 100,
    }
}

/// Sends a whole module in chunks of `chunk` bytes, then commits; returns the agent's replies.
fn transfer(agent: &mut Agent, id: &AppId, module: &[u8], chunk: usize) -> Vec<Frame> {
    agent.handle_frame(
        Frame::ModuleBegin(ModuleBegin {
            app_id: id.clone(),
            version: 1,
            sha256: sha(module),
            total_len: module.len() as u32,
            offset: 0,
        }),
        0,
    );
    for (i, piece) in module.chunks(chunk).enumerate() {
        agent.handle_frame(
            Frame::ModuleChunk(ModuleChunk {
                app_id: id.clone(),
                offset: (i * chunk) as u32,
                data: piece.to_vec(),
            }),
            0,
        );
    }
    agent.handle_frame(
        Frame::ModuleCommit(ModuleCommit {
            app_id: id.clone(),
            sha256: sha(module),
        }),
        0,
    );
    agent.take_frames()
}

fn deploy(agent: &mut Agent, id: &AppId, module: &[u8], config: &[u8], now: u64) -> Vec<Frame> {
    agent.handle_frame(
        Frame::Deploy(Deploy {
            app_id: id.clone(),
            version: 1,
            sha256: sha(module),
            limits: limits(),
            config: Blob(config.to_vec()),
            release: None,
        }),
        now,
    );
    agent.take_frames()
}

fn install(agent: &mut Agent, name: &str, module: &[u8]) -> Vec<Frame> {
    let id = app(name);
    let acks = transfer(agent, &id, module, 1024);
    assert!(
        matches!(
            acks.last(),
            Some(Frame::ModuleAck(ModuleAck { verified: true, .. }))
        ),
        "{acks:?}"
    );
    deploy(agent, &id, module, b"kitchen", 0)
}

fn telemetry(frames: &[Frame]) -> Vec<&Telemetry> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Telemetry(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn status_of<'a>(frames: &'a [Frame], id: &AppId) -> Option<&'a AppStatus> {
    frames.iter().rev().find_map(|f| match f {
        Frame::AppStatus(s) if s.app_id == *id => Some(s),
        _ => None,
    })
}

#[test]
fn established_reports_what_the_device_is() {
    let mut agent = agent();
    let frames = agent.take_frames();
    assert!(matches!(
        &frames[..],
        [Frame::DeviceInfo(DeviceInfo {
            app_ram_bytes: 262_144,
            host_api_version: host_api::VERSION,
            ..
        })]
    ));
}

#[test]
fn the_sensor_app_logs_and_publishes_with_its_device_id_and_config() {
    let mut agent = agent();
    agent.take_frames();
    let started = install(&mut agent, "sensor", SENSOR);
    assert!(started.iter().any(
        |f| matches!(f, Frame::Log(Log { message, app_id: Some(a), .. }) if message == "sensor started" && a.as_str() == "sensor")
    ));
    assert_eq!(
        status_of(&started, &app("sensor")).unwrap().state,
        AppState::Running
    );

    let mut sent = Vec::new();
    for now in [0, 100, 200] {
        agent.poll(now);
        sent.extend(agent.take_frames());
    }
    let readings = telemetry(&sent);
    assert_eq!(readings.len(), 3, "one reading per tick: {sent:?}");
    assert_eq!(
        readings.iter().map(|t| t.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let json: serde_json::Value = serde_json::from_slice(&readings[0].payload).unwrap();
    assert_eq!(readings[0].topic, "temperature");
    assert_eq!(json["device"], "dev-1");
    assert_eq!(json["room"], "kitchen");
    assert_eq!(json["n"], 1);
    let celsius = json["millicelsius"].as_u64().unwrap();
    assert!((20_000..24_000).contains(&celsius), "{celsius}");
}

#[test]
fn an_infinite_loop_is_stopped_by_fuel_and_the_other_app_keeps_running() {
    let mut agent = agent();
    agent.take_frames();
    install(&mut agent, "counter", COUNTER);
    let spin_start = install(&mut agent, "spin", SPIN);
    assert_eq!(
        status_of(&spin_start, &app("spin")).unwrap().state,
        AppState::Running
    );

    agent.poll(0);
    let first = agent.take_frames();
    let failed = status_of(&first, &app("spin")).unwrap();
    assert_eq!(failed.state, AppState::Failed);
    let detail = failed.detail.clone().unwrap();
    assert!(detail.contains("fuel exhausted"), "{detail}");
    assert!(
        failed.fuel_used >= limits().fuel_per_invocation,
        "init and the whole tick budget"
    );
    assert!(!agent.is_running(&app("spin")));

    for now in [100, 200, 300] {
        agent.poll(now);
    }
    let later = agent.take_frames();
    let counts: Vec<_> = telemetry(&later)
        .iter()
        .map(|t| t.payload.clone())
        .collect();
    assert_eq!(counts, [b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]);
    assert!(agent.is_running(&app("counter")));
}

#[test]
fn a_transfer_cut_midway_resumes_from_the_bytes_held() {
    let mut agent = agent();
    agent.take_frames();
    let id = app("sensor");
    let begin = |offset| {
        Frame::ModuleBegin(ModuleBegin {
            app_id: id.clone(),
            version: 1,
            sha256: sha(SENSOR),
            total_len: SENSOR.len() as u32,
            offset,
        })
    };
    agent.handle_frame(begin(0), 0);
    agent.handle_frame(
        Frame::ModuleChunk(ModuleChunk {
            app_id: id.clone(),
            offset: 0,
            data: SENSOR[..1000].to_vec(),
        }),
        0,
    );
    agent.take_frames();
    // The connection drops; the sender starts over with a new Begin.
    agent.handle_frame(begin(0), 0);
    let replies = agent.take_frames();
    assert!(matches!(
        &replies[..],
        [Frame::ModuleAck(ModuleAck {
            next_offset: 1000,
            verified: false,
            ..
        })]
    ));
    agent.handle_frame(
        Frame::ModuleChunk(ModuleChunk {
            app_id: id.clone(),
            offset: 1000,
            data: SENSOR[1000..].to_vec(),
        }),
        0,
    );
    agent.handle_frame(
        Frame::ModuleCommit(ModuleCommit {
            app_id: id.clone(),
            sha256: sha(SENSOR),
        }),
        0,
    );
    let done = agent.take_frames();
    assert!(matches!(
        done.last(),
        Some(Frame::ModuleAck(ModuleAck { verified: true, .. }))
    ));
    let started = deploy(&mut agent, &id, SENSOR, b"", 0);
    assert_eq!(status_of(&started, &id).unwrap().state, AppState::Running);
}

#[test]
fn a_corrupted_chunk_is_detected_and_the_module_never_runs() {
    let mut agent = agent();
    agent.take_frames();
    let id = app("sensor");
    let mut corrupted = SENSOR.to_vec();
    corrupted[100] ^= 0xff;
    // The digest announced is the real module's; one byte arrives flipped.
    agent.handle_frame(
        Frame::ModuleBegin(ModuleBegin {
            app_id: id.clone(),
            version: 1,
            sha256: sha(SENSOR),
            total_len: SENSOR.len() as u32,
            offset: 0,
        }),
        0,
    );
    agent.handle_frame(
        Frame::ModuleChunk(ModuleChunk {
            app_id: id.clone(),
            offset: 0,
            data: corrupted,
        }),
        0,
    );
    agent.handle_frame(
        Frame::ModuleCommit(ModuleCommit {
            app_id: id.clone(),
            sha256: sha(SENSOR),
        }),
        0,
    );
    let replies = agent.take_frames();
    assert!(
        replies.iter().any(|f| matches!(
            f,
            Frame::Error(ErrorFrame {
                code: FrameErrorCode::DigestMismatch,
                ..
            })
        )),
        "{replies:?}"
    );
    assert!(matches!(
        replies.last(),
        Some(Frame::ModuleAck(ModuleAck {
            next_offset: 0,
            verified: false,
            ..
        }))
    ));
    let deployed = deploy(&mut agent, &id, SENSOR, b"", 0);
    assert!(
        matches!(
            &deployed[..],
            [Frame::Error(ErrorFrame {
                code: FrameErrorCode::UnknownApp,
                ..
            })]
        ),
        "{deployed:?}"
    );
    assert!(!agent.is_running(&id));
}

#[test]
fn deploy_is_idempotent_and_stop_stops() {
    let mut agent = agent();
    agent.take_frames();
    install(&mut agent, "counter", COUNTER);
    agent.poll(0);
    agent.take_frames();
    let again = deploy(&mut agent, &app("counter"), COUNTER, b"", 50);
    assert_eq!(again.len(), 1, "only a status, no restart: {again:?}");
    agent.poll(100);
    let counts: Vec<_> = telemetry(&agent.take_frames())
        .iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(counts, [2], "the counter kept its state");

    agent.handle_frame(
        Frame::Stop(Stop {
            app_id: app("counter"),
        }),
        150,
    );
    let stopped = agent.take_frames();
    assert_eq!(
        status_of(&stopped, &app("counter")).unwrap().state,
        AppState::Stopped
    );
    agent.poll(1000);
    assert!(telemetry(&agent.take_frames()).is_empty());
}

fn wat_type(t: ValType) -> &'static str {
    match t {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
    }
}

/// A module importing every documented host function with its documented signature.
fn module_importing_the_whole_host_api() -> Vec<u8> {
    let mut imports = String::new();
    for f in host_api::FUNCTIONS {
        let params: Vec<_> = f.params.iter().map(|t| wat_type(*t)).collect();
        let results: Vec<_> = f.results.iter().map(|t| wat_type(*t)).collect();
        imports.push_str(&format!(
            "(import \"{}\" \"{}\" (func (param {}) (result {})))\n",
            host_api::MODULE,
            f.name,
            params.join(" "),
            results.join(" ")
        ));
    }
    wat::parse_str(format!(
        "(module {imports} (memory (export \"memory\") 1) (func (export \"tick\")))"
    ))
    .unwrap()
}

fn start_module(module: &[u8]) -> Vec<Frame> {
    let mut agent = agent();
    agent.take_frames();
    let id = app("probe");
    transfer(&mut agent, &id, module, 4096);
    deploy(&mut agent, &id, module, b"", 0)
}

#[test]
fn the_runtime_links_exactly_the_documented_host_api() {
    let started = start_module(&module_importing_the_whole_host_api());
    assert_eq!(
        status_of(&started, &app("probe")).unwrap().state,
        AppState::Running,
        "{started:?}"
    );

    let unknown = wat::parse_str(
        r#"(module (import "wasmbed" "fork" (func)) (memory (export "memory") 1) (func (export "tick")))"#,
    )
    .unwrap();
    let refused = start_module(&unknown);
    let status = status_of(&refused, &app("probe")).unwrap();
    assert_eq!(status.state, AppState::Failed);
    assert!(
        status.detail.as_deref().unwrap().contains("fork"),
        "{status:?}"
    );
}

#[test]
fn memory_beyond_the_limit_is_refused_or_not_granted() {
    let too_big =
        wat::parse_str(r#"(module (memory (export "memory") 4) (func (export "tick")))"#).unwrap();
    let refused = start_module(&too_big);
    assert_eq!(
        status_of(&refused, &app("probe")).unwrap().state,
        AppState::Failed
    );

    // Growing past the limit fails inside the app (memory.grow gives -1); it is not a trap.
    let grower = wat::parse_str(
        r#"(module
            (import "wasmbed" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "grow")
            (func (export "tick")
              (i32.store (i32.const 8) (memory.grow (i32.const 8)))
              (drop (call $publish (i32.const 0) (i32.const 4) (i32.const 8) (i32.const 4)))))"#,
    )
    .unwrap();
    let mut agent = agent();
    agent.take_frames();
    let id = app("probe");
    transfer(&mut agent, &id, &grower, 4096);
    deploy(&mut agent, &id, &grower, b"", 0);
    agent.poll(0);
    let frames = agent.take_frames();
    let t = telemetry(&frames);
    assert_eq!(t[0].payload, (-1i32).to_le_bytes(), "grow refused");
    assert!(agent.is_running(&id));
}

#[test]
fn bad_pointers_get_error_codes_not_traps() {
    let bad = wat::parse_str(
        r#"(module
            (import "wasmbed" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
            (import "wasmbed" "log" (func $log (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "tick")
              (i32.store (i32.const 0) (call $publish (i32.const 65530) (i32.const 64) (i32.const 0) (i32.const 0)))
              (i32.store (i32.const 4) (call $log (i32.const 2) (i32.const 0) (i32.const 100000)))
              (drop (call $publish (i32.const 16) (i32.const 0) (i32.const 0) (i32.const 8)))))"#,
    )
    .unwrap();
    let mut agent = agent();
    agent.take_frames();
    let id = app("probe");
    transfer(&mut agent, &id, &bad, 4096);
    deploy(&mut agent, &id, &bad, b"", 0);
    agent.poll(0);
    let frames = agent.take_frames();
    let t = telemetry(&frames);
    assert_eq!(t.len(), 1, "{frames:?}");
    let mut codes = t[0].payload.clone();
    let log_code = codes.split_off(4);
    assert_eq!(
        i32::from_le_bytes(codes.try_into().unwrap()),
        host_api::ERR_BOUNDS
    );
    assert_eq!(
        i32::from_le_bytes(log_code.try_into().unwrap()),
        host_api::ERR_TOO_LARGE
    );
    assert!(agent.is_running(&id));
}

#[test]
fn a_topic_with_a_line_break_is_refused_on_the_device() {
    let bad = wat::parse_str(
        r#"(module
            (import "wasmbed" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "temp\r\nNats-Msg-Id: x")
            (data (i32.const 200) "ok")
            (func (export "tick")
              (i32.store (i32.const 0) (call $publish (i32.const 100) (i32.const 21) (i32.const 0) (i32.const 0)))
              (i32.store (i32.const 4) (call $publish (i32.const 200) (i32.const 2) (i32.const 0) (i32.const 0)))
              (drop (call $publish (i32.const 200) (i32.const 2) (i32.const 0) (i32.const 8)))))"#,
    )
    .unwrap();
    let mut agent = agent();
    agent.take_frames();
    let id = app("probe");
    transfer(&mut agent, &id, &bad, 4096);
    deploy(&mut agent, &id, &bad, b"", 0);
    agent.poll(0);
    let frames = agent.take_frames();
    let t = telemetry(&frames);
    // Only the two publishes with a valid topic left the device.
    assert_eq!(t.len(), 2, "{frames:?}");
    assert!(t.iter().all(|t| t.topic == "ok"), "{t:?}");
    let codes = &t[1].payload;
    assert_eq!(
        i32::from_le_bytes(codes[..4].try_into().unwrap()),
        host_api::ERR_INVALID
    );
    assert_eq!(i32::from_le_bytes(codes[4..].try_into().unwrap()), 0);
    assert!(agent.is_running(&id));
}

#[test]
fn late_chunks_of_a_finished_transfer_are_dropped_quietly() {
    let mut agent = agent();
    agent.take_frames();
    let id = app("counter");
    transfer(&mut agent, &id, COUNTER, 1024);
    agent.handle_frame(
        Frame::ModuleChunk(ModuleChunk {
            app_id: id.clone(),
            offset: 1024,
            data: COUNTER[1024..2048].to_vec(),
        }),
        0,
    );
    assert!(agent.take_frames().is_empty());
    let started = deploy(&mut agent, &id, COUNTER, b"", 0);
    assert_eq!(status_of(&started, &id).unwrap().state, AppState::Running);
}

/// A `ModuleBegin` of version `version` of `module`; returns the agent's answer.
fn begin(agent: &mut Agent, id: &AppId, module: &[u8], version: u32) -> Vec<Frame> {
    agent.handle_frame(
        Frame::ModuleBegin(ModuleBegin {
            app_id: id.clone(),
            version,
            sha256: sha(module),
            total_len: module.len() as u32,
            offset: 0,
        }),
        0,
    );
    agent.take_frames()
}

fn deploy_version(agent: &mut Agent, id: &AppId, module: &[u8], version: u32) -> Vec<Frame> {
    agent.handle_frame(
        Frame::Deploy(Deploy {
            app_id: id.clone(),
            version,
            sha256: sha(module),
            limits: limits(),
            config: Blob(b"kitchen".to_vec()),
            release: None,
        }),
        0,
    );
    agent.take_frames()
}

#[test]
fn going_back_to_the_previous_module_is_a_swap_not_a_transfer() {
    let mut agent = agent();
    let id = app("blink");
    install(&mut agent, "blink", COUNTER);
    // Version 2 (another module) arrives and runs.
    let acks = transfer(&mut agent, &id, SENSOR, 1024);
    assert!(matches!(
        acks.last(),
        Some(Frame::ModuleAck(ModuleAck { verified: true, .. }))
    ));
    let started = deploy_version(&mut agent, &id, SENSOR, 2);
    assert_eq!(status_of(&started, &id).map(|s| s.version), Some(2));

    // Back to version 1: the device says it holds it, whole and verified, and runs it at once.
    let answer = begin(&mut agent, &id, COUNTER, 1);
    assert_eq!(
        answer,
        [Frame::ModuleAck(ModuleAck {
            app_id: id.clone(),
            next_offset: COUNTER.len() as u32,
            verified: true,
        })]
    );
    let back = deploy_version(&mut agent, &id, COUNTER, 1);
    let status = status_of(&back, &id).unwrap();
    assert_eq!(
        (status.version, status.state),
        (1, AppState::Running),
        "{back:?}"
    );
    // And forward again is a swap too: version 2 is now the one kept.
    let answer = begin(&mut agent, &id, SENSOR, 2);
    assert!(matches!(
        answer.as_slice(),
        [Frame::ModuleAck(ModuleAck { verified: true, .. })]
    ));
}

#[test]
fn a_previous_module_that_does_not_fit_beside_the_current_is_sent_again() {
    // Room for one module only a little bigger than the larger of the two.
    let room = COUNTER.len().max(SENSOR.len()) + 16;
    let mut agent = Agent::new(AgentConfig {
        mcu: "Sim".into(),
        firmware: "test".into(),
        app_ram_bytes: 256 * 1024,
        max_module_len: room as u32,
        value_stack_bytes: 1024 * 1024,
        status_interval_ms: 60_000,
        publishers: Vec::new(),
        trust_serial: 0,
    });
    agent.on_established(&DeviceId::new("dev-1").unwrap());
    agent.take_frames();
    let id = app("blink");
    install(&mut agent, "blink", COUNTER);
    transfer(&mut agent, &id, SENSOR, 1024);
    deploy_version(&mut agent, &id, SENSOR, 2);
    // Version 1 was dropped: the device holds none of it and asks for all of it.
    let answer = begin(&mut agent, &id, COUNTER, 1);
    assert_eq!(
        answer,
        [Frame::ModuleAck(ModuleAck {
            app_id: id.clone(),
            next_offset: 0,
            verified: false,
        })]
    );
    // Sent again, it runs.
    let acks = transfer(&mut agent, &id, COUNTER, 1024);
    assert!(matches!(
        acks.last(),
        Some(Frame::ModuleAck(ModuleAck { verified: true, .. }))
    ));
    let back = deploy_version(&mut agent, &id, COUNTER, 1);
    assert_eq!(
        status_of(&back, &id).map(|s| s.state),
        Some(AppState::Running)
    );
}

#[test]
fn a_stop_forgets_the_previous_module_too() {
    let mut agent = agent();
    let id = app("blink");
    install(&mut agent, "blink", COUNTER);
    transfer(&mut agent, &id, SENSOR, 1024);
    deploy_version(&mut agent, &id, SENSOR, 2);
    agent.handle_frame(Frame::Stop(Stop { app_id: id.clone() }), 0);
    agent.take_frames();
    for (module, version) in [(COUNTER, 1), (SENSOR, 2)] {
        let answer = begin(&mut agent, &id, module, version);
        assert!(
            matches!(
                answer.as_slice(),
                [Frame::ModuleAck(ModuleAck {
                    next_offset: 0,
                    verified: false,
                    ..
                })]
            ),
            "version {version}: {answer:?}"
        );
    }
}

#[test]
fn apps_whose_memory_limits_exceed_the_app_ram_together_do_not_start() {
    // 256 KiB of app RAM; every app here may grow to 2 pages (128 KiB).
    let mut agent = agent();
    for name in ["counter", "sensor"] {
        let module = if name == "counter" { COUNTER } else { SENSOR };
        let frames = install(&mut agent, name, module);
        let status = status_of(&frames, &app(name)).unwrap();
        assert_eq!(status.state, AppState::Running, "{name}: {status:?}");
    }
    let frames = install(&mut agent, "spin", SPIN);
    let status = status_of(&frames, &app("spin")).unwrap();
    assert_eq!(status.state, AppState::Failed, "{status:?}");
    let detail = status.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("does not fit the device's app RAM: 256 KiB, 256 KiB of it held"),
        "{detail}"
    );
    // Replacing a running app counts its own memory once, not twice.
    let frames = deploy(&mut agent, &app("sensor"), SENSOR, b"hall", 10);
    let status = status_of(&frames, &app("sensor")).unwrap();
    assert_eq!(status.state, AppState::Running, "{status:?}");
}

#[test]
fn deep_recursion_traps_within_the_devices_value_stack() {
    // Every frame of $deep holds 200 locals: the value stack, not the call depth, runs out.
    let locals = "i64 ".repeat(200);
    let deep = wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (func $deep (param i32) (result i32) (local {locals})
              (call $deep (i32.add (local.get 0) (i32.const 1))))
            (func (export "tick") (drop (call $deep (i32.const 0)))))"#
    ))
    .unwrap();
    let run = |value_stack_bytes: u32| {
        let mut agent = Agent::new(AgentConfig {
            value_stack_bytes,
            ..agent_config()
        });
        agent.on_established(&DeviceId::new("dev-1").unwrap());
        let id = app("deep");
        transfer(&mut agent, &id, &deep, 4096);
        deploy(&mut agent, &id, &deep, b"", 0);
        agent.poll(1_000);
        let frames = agent.take_frames();
        status_of(&frames, &id).unwrap().clone()
    };
    let small = run(16 * 1024);
    let roomy = run(1024 * 1024);
    for status in [&small, &roomy] {
        assert_eq!(status.state, AppState::Failed, "{status:?}");
    }
    let detail = small.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("stack"), "{detail}");
    // 16 KiB holds about ten such frames; 1 MiB hundreds: the small device stops far sooner.
    assert!(
        small.fuel_used * 10 < roomy.fuel_used,
        "{} vs {}",
        small.fuel_used,
        roomy.fuel_used
    );
}
