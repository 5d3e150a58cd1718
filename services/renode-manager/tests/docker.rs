#![allow(clippy::unwrap_used)]
//! The container backend against a scripted Docker Engine API server: bollard's real client
//! over a Unix socket, answered with the Engine API's shapes (create, start, multiplexed log
//! stream, wait, stop, remove, and its error bodies). No Docker engine runs on these machines.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::watch;
use wasmbed_renode_manager::backend::Launch;
use wasmbed_renode_manager::catalogue::Catalogue;
use wasmbed_renode_manager::docker::{ContainerBackend, ContainerConfig, ContainerError};
use wasmbed_renode_manager::resc;
use wasmbed_schemas::DeviceId;
use wasmbed_schemas::provisioning::Provisioning;

const ID: &str = "4f1c2a9be3d04c5e8f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a";

/// What the scripted engine saw and how its container ends.
#[derive(Default)]
struct Engine {
    requests: Mutex<Vec<String>>,
    created: Mutex<Option<serde_json::Value>>,
    /// The files uploaded into the container (path, bytes), from the tar archive.
    uploaded: Mutex<Vec<(String, Vec<u8>)>>,
    /// Set to the exit code when the container ends (stopped, or crashed by the test).
    ended: Mutex<Option<watch::Sender<Option<i64>>>>,
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// One frame of Docker's multiplexed stream: stream 1 (stdout), big-endian length.
fn frame(text: &str) -> Bytes {
    let mut out = vec![1, 0, 0, 0];
    out.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

async fn answer(engine: Arc<Engine>, method: Method, uri: Uri, body: Bytes) -> Response {
    // Paths may carry an API version (/v1.xx/containers/...); the engine answers both.
    let path = uri.path().trim_start_matches('/');
    let path = match path.split_once('/') {
        Some((version, rest)) if version.starts_with("v1.") => rest,
        _ => path,
    }
    .to_owned();
    engine
        .requests
        .lock()
        .unwrap()
        .push(format!("{method} /{path}"));
    let ended = engine
        .ended
        .lock()
        .unwrap()
        .get_or_insert_with(|| watch::channel(None).0)
        .clone();
    let parts: Vec<&str> = path.split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        // Debian's dockerd 20.10 (API 1.41): the client negotiates down to it.
        ("GET", ["version"]) => json(
            StatusCode::OK,
            serde_json::json!({
                "Version": "20.10.24+dfsg1", "ApiVersion": "1.41", "MinAPIVersion": "1.12",
                "Os": "linux", "Arch": "amd64", "GitCommit": "5d6db84"
            }),
        ),
        ("DELETE", ["containers", name]) if *name != ID => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "message": format!("No such container: {name}") }),
        ),
        ("DELETE", ["containers", _]) => StatusCode::NO_CONTENT.into_response(),
        ("POST", ["containers", "create"]) => {
            let created: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if created["Image"] == "missing:latest" {
                return json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "message": "No such image: missing:latest" }),
                );
            }
            *engine.created.lock().unwrap() = Some(created);
            json(
                StatusCode::CREATED,
                serde_json::json!({ "Id": ID, "Warnings": [] }),
            )
        }
        ("PUT", ["containers", id, "archive"]) if *id == ID => {
            assert_eq!(uri.query(), Some("path=%2F"), "uploaded to /");
            let mut archive = tar::Archive::new(body.as_ref());
            let mut files = Vec::new();
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().display().to_string();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                files.push((path, bytes));
            }
            *engine.uploaded.lock().unwrap() = files;
            StatusCode::OK.into_response()
        }
        ("POST", ["containers", _, "start"]) => StatusCode::NO_CONTENT.into_response(),
        ("POST", ["containers", _, "stop"]) => {
            ended.send_replace(Some(143));
            StatusCode::NO_CONTENT.into_response()
        }
        ("GET", ["containers", _, "logs"]) => {
            // A line split over two frames, then two lines in one, then silence until the end.
            let mut until_end = ended.subscribe();
            let chunks = futures::stream::iter(vec![
                Ok::<_, std::io::Error>(frame("boot: wasmbed fir")),
                Ok(frame("mware\r\nenrolled: board-1\ndhcp: lease 10.0.2.15\n")),
            ])
            .chain(futures::stream::once(async move {
                let _ = until_end.wait_for(Option::is_some).await;
                Ok(frame("app stopped\n"))
            }));
            Response::builder()
                .header("content-type", "application/vnd.docker.multiplexed-stream")
                .body(Body::from_stream(chunks))
                .unwrap()
        }
        ("POST", ["containers", _, "wait"]) => {
            let mut until_end = ended.subscribe();
            let code = *until_end.wait_for(Option::is_some).await.unwrap();
            json(
                StatusCode::OK,
                serde_json::json!({ "StatusCode": code.unwrap(), "Error": null }),
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "message": format!("page not found: {method} /{path}") }),
        ),
    }
}

async fn scripted_engine(dir: &Path) -> (String, Arc<Engine>) {
    let socket = dir.join("docker.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let engine = Arc::new(Engine::default());
    let app = axum::Router::new().fallback({
        let engine = engine.clone();
        move |method: Method, uri: Uri, body: Bytes| answer(engine.clone(), method, uri, body)
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("unix://{}", socket.display()), engine)
}

/// A firmware directory with a stand-in image for the AN385.
fn firmware_dir(dir: &Path) -> std::path::PathBuf {
    let firmware = dir.join("firmware");
    let boards = firmware.join("boards");
    std::fs::create_dir_all(&boards).unwrap();
    std::fs::write(boards.join("mps2-an385.elf"), b"\x7fELF stand-in").unwrap();
    firmware
}

/// The uploaded file at `path`.
fn uploaded(engine: &Engine, path: &str) -> Option<Vec<u8>> {
    let files = engine.uploaded.lock().unwrap();
    files
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, b)| b.clone())
}

/// A catalogue in which the MPS2 board (an Ethernet board) also has a Renode platform, so the
/// Renode path of an Ethernet board runs end to end against the scripted engine (the bundled
/// catalogue's Renode boards with firmware are the serial STM32F4 Discovery ones).
fn catalogue() -> Catalogue {
    let bundled = Catalogue::bundled().unwrap();
    assert!(bundled.get("Mps2An385").unwrap().renode().is_err());
    let toml = wasmbed_renode_manager::catalogue::BUNDLED.replace(
        "qemu_machine = \"mps2-an385\"",
        "qemu_machine = \"mps2-an385\"\nrenode_platform = \"platforms/boards/mps2-an385.repl\"\nrenode_family = \"stm32\"\nethernet = \"sysbus.ethernet\"",
    );
    Catalogue::parse(&toml).unwrap()
}

const CA: &str = "-----BEGIN CERTIFICATE-----\nMAoGCCqGSM49BAMC\n-----END CERTIFICATE-----\n";

fn launch<'a>(
    device: &'a DeviceId,
    catalogue: &'a Catalogue,
    gateways: &'a [String],
) -> Launch<'a> {
    Launch {
        device,
        mcu: catalogue.get("Mps2An385").unwrap(),
        secret: [5; 32],
        gateways,
        ca_pem: CA,
        server_name: "localhost",
        publishers: &[],
        trust_serial: 0,
    }
}

#[tokio::test]
async fn renode_in_a_container_is_created_started_streamed_stopped_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (host, engine) = scripted_engine(dir.path()).await;
    let backend = ContainerBackend::new(ContainerConfig::renode(
        host,
        "wasmbed/renode:test".into(),
        firmware_dir(dir.path()),
    ));
    assert_eq!(backend.name(), "renode-docker");
    let (catalogue, device) = (catalogue(), DeviceId::new("board-1").unwrap());
    let gateways = ["127.0.0.1:8081".to_owned()];
    let mut emulator = backend
        .start(&launch(&device, &catalogue, &gateways))
        .await
        .unwrap();
    assert_eq!(emulator.instance(), format!("container {}", &ID[..12]));

    // The create request: image, command running the generated script, nothing bind-mounted
    // (the engine may be on another host).
    let created = engine.created.lock().unwrap().clone().unwrap();
    assert_eq!(created["Image"], "wasmbed/renode:test");
    assert_eq!(
        created["Cmd"],
        serde_json::json!([
            "renode",
            "--disable-xwt",
            "--console",
            "-e",
            "include @/wasmbed/device/device.resc"
        ])
    );
    assert!(created["HostConfig"]["Binds"].is_null(), "{created}");
    assert_eq!(created["HostConfig"]["NetworkMode"], "host");
    assert_eq!(created["Labels"]["io.wasmbed.device"], "board-1");

    // Uploaded into the container before it started: the firmware image, and the generated
    // script loading it, whose words at 0x20001000 decode to the guest's view of the gateway.
    assert_eq!(
        uploaded(&engine, "wasmbed/firmware/boards/mps2-an385.elf").unwrap(),
        b"\x7fELF stand-in"
    );
    let script =
        String::from_utf8(uploaded(&engine, "wasmbed/device/device.resc").unwrap()).unwrap();
    assert!(script.contains("sysbus LoadELF @/wasmbed/firmware/boards/mps2-an385.elf"));
    assert!(script.contains("machine LoadPlatformDescription @platforms/boards/mps2-an385.repl"));
    let block = Provisioning::decode(&resc::written_block(&script)).unwrap();
    assert_eq!(block.endpoints, ["10.0.2.2:8081"]);
    assert_eq!(block.device_id, "board-1");
    let raw = uploaded(&engine, "wasmbed/device/provisioning.bin").unwrap();
    assert_eq!(
        Provisioning::decode(&raw).unwrap().endpoints,
        block.endpoints
    );

    // The log stream arrives as UART lines, reassembled across frames.
    let uart = emulator.uart().clone();
    uart.wait_for_nth_line("enrolled: board-1", 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        uart.lines()[..3],
        [
            "boot: wasmbed firmware",
            "enrolled: board-1",
            "dhcp: lease 10.0.2.15"
        ]
    );

    let exit = emulator.stop().await;
    assert!(exit.requested && exit.code == Some(143), "{exit:?}");
    assert!(uart.lines().contains(&"app stopped".to_owned()));
    let requests = engine.requests.lock().unwrap().clone();
    let expected = [
        "DELETE /containers/wasmbed-emulator-board-1".to_owned(),
        "POST /containers/create".to_owned(),
        format!("PUT /containers/{ID}/archive"),
        format!("POST /containers/{ID}/start"),
        format!("POST /containers/{ID}/stop"),
        format!("DELETE /containers/{ID}"),
    ];
    let mut at = 0;
    for request in &requests {
        if at < expected.len() && *request == expected[at] {
            at += 1;
        }
    }
    assert_eq!(
        at,
        expected.len(),
        "in order: {expected:#?}\nsaw: {requests:#?}"
    );
}

#[tokio::test]
async fn a_container_that_dies_is_reported_failed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (host, engine) = scripted_engine(dir.path()).await;
    let backend = ContainerBackend::new(ContainerConfig::qemu(
        host,
        "wasmbed/qemu:test".into(),
        firmware_dir(dir.path()),
    ));
    assert_eq!(backend.name(), "qemu-docker");
    let (catalogue, device) = (
        Catalogue::bundled().unwrap(),
        DeviceId::new("board-2").unwrap(),
    );
    let gateways = ["127.0.0.1:8081".to_owned()];
    let mut emulator = backend
        .start(&launch(&device, &catalogue, &gateways))
        .await
        .unwrap();
    let created = engine.created.lock().unwrap().clone().unwrap();
    let command: Vec<String> = serde_json::from_value(created["Cmd"].clone()).unwrap();
    assert!(
        command.windows(2).any(|w| w == ["-M", "mps2-an385"]),
        "{command:?}"
    );
    assert!(command.contains(&"/wasmbed/firmware/boards/mps2-an385.elf".to_owned()));
    assert!(command.contains(
        &"loader,file=/wasmbed/device/provisioning.bin,addr=0x20001000,force-raw=on".to_owned()
    ));
    assert!(uploaded(&engine, "wasmbed/device/device.resc").is_none());
    assert!(uploaded(&engine, "wasmbed/device/provisioning.bin").is_some());

    // The container dies by itself (segfault): a failed exit, and the container removed.
    let ended = engine.ended.lock().unwrap().clone().unwrap();
    ended.send_replace(Some(139));
    let exit = tokio::time::timeout(Duration::from_secs(5), emulator.exited())
        .await
        .unwrap();
    assert_eq!(exit.code, Some(139));
    assert!(exit.failed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        engine
            .requests
            .lock()
            .unwrap()
            .contains(&format!("DELETE /containers/{ID}"))
    );
}

#[tokio::test]
async fn engine_errors_are_clear_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _engine) = scripted_engine(dir.path()).await;
    let catalogue = Catalogue::bundled().unwrap();
    let device = DeviceId::new("board-3").unwrap();
    let gateways = ["127.0.0.1:8081".to_owned()];
    let firmware = firmware_dir(dir.path());
    let missing_image = ContainerBackend::new(ContainerConfig::qemu(
        host,
        "missing:latest".into(),
        firmware.clone(),
    ));
    let Err(error) = missing_image
        .start(&launch(&device, &catalogue, &gateways))
        .await
    else {
        panic!("a missing image started");
    };
    assert!(matches!(error, ContainerError::Engine { .. }));
    assert!(
        error.to_string().contains("No such image: missing:latest"),
        "{error}"
    );

    let no_engine = ContainerBackend::new(ContainerConfig::qemu(
        format!("unix://{}", dir.path().join("absent.sock").display()),
        "wasmbed/qemu:test".into(),
        firmware.clone(),
    ));
    let Err(error) = no_engine
        .start(&launch(&device, &catalogue, &gateways))
        .await
    else {
        panic!("started without an engine");
    };
    assert!(error.to_string().contains("absent.sock"), "{error}");
    // The Renode flavour refuses boards Renode does not model, before any engine call.
    // No firmware image for the board: said before any engine call.
    let no_image = ContainerBackend::new(ContainerConfig::qemu(
        format!("unix://{}", dir.path().join("absent.sock").display()),
        "wasmbed/qemu:test".into(),
        dir.path().join("empty"),
    ));
    let Err(error) = no_image
        .start(&launch(&device, &catalogue, &gateways))
        .await
    else {
        panic!("started without a firmware image");
    };
    assert!(matches!(error, ContainerError::Files { .. }), "{error}");
    assert!(
        error.to_string().contains("boards/mps2-an385.elf"),
        "{error}"
    );
    let renode = ContainerBackend::new(ContainerConfig::renode(
        "unix:///nowhere".into(),
        "r".into(),
        dir.path().into(),
    ));
    let reason = renode
        .check(catalogue.get("Mps2An385").unwrap())
        .unwrap_err();
    assert!(
        reason.to_string().contains("Renode has no model"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_serial_board_in_renode_gets_its_link_bridged_to_its_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wasmbed_device_core::serial_link::{Link, LinkEvent};

    let dir = tempfile::tempdir().unwrap();
    let (host, engine) = scripted_engine(dir.path()).await;
    let firmware = firmware_dir(dir.path());
    std::fs::write(firmware.join("boards/stm32f407.elf"), b"\x7fELF f407").unwrap();
    let backend = ContainerBackend::new(ContainerConfig::renode(
        host,
        "wasmbed/renode:test".into(),
        firmware,
    ));
    let gateway = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateways = [gateway.local_addr().unwrap().to_string()];
    let catalogue = Catalogue::bundled().unwrap();
    let device = DeviceId::new("disco-1").unwrap();
    let launch = Launch {
        mcu: catalogue.get("Stm32F4Disco").unwrap(),
        ..launch(&device, &catalogue, &gateways)
    };
    let mut emulator = backend.start(&launch).await.unwrap();

    // The script loads the board's own image, writes the block in flash, and puts the link
    // UART on a socket terminal.
    let script =
        String::from_utf8(uploaded(&engine, "wasmbed/device/device.resc").unwrap()).unwrap();
    assert!(script.contains("sysbus LoadELF @/wasmbed/firmware/boards/stm32f407.elf"));
    assert!(script.contains("sysbus WriteDoubleWord 0x080ff000 "));
    let block = Provisioning::decode(&resc::written_block(&script)).unwrap();
    let port: u16 = script
        .lines()
        .find_map(|l| l.strip_prefix("emulation CreateServerSocketTerminal "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();

    // Renode's socket terminal, played here: the manager dials it once it listens.
    let terminal = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut uart, _) = tokio::time::timeout(Duration::from_secs(10), terminal.accept())
        .await
        .unwrap()
        .unwrap();
    // The board asks for its provisioned gateway; the bridge connects and answers Open.
    let mut link = Link::new();
    link.open_to(block.endpoints[0].as_bytes());
    let mut line = Vec::new();
    link.transmit(0, &mut line);
    uart.write_all(&line).await.unwrap();
    let (mut server, _) = tokio::time::timeout(Duration::from_secs(10), gateway.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 512];
    let answer = loop {
        if let Some(event) = link.event() {
            break event;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), uart.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the bridge hung up");
        link.receive(&buf[..n], 1);
    };
    assert_eq!(answer, LinkEvent::Opened);
    // Stream bytes reach the gateway.
    link.write(b"client hello");
    let mut line = Vec::new();
    link.transmit(2, &mut line);
    uart.write_all(&line).await.unwrap();
    let mut got = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), server.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"client hello");
    assert!(
        emulator
            .uart()
            .lines()
            .iter()
            .any(|l| l.starts_with("bridge: connected to 10.0.2.2:")),
        "{:?}",
        emulator.uart().lines()
    );
    emulator.stop().await;
}
