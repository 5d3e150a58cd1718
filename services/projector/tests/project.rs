#![allow(clippy::unwrap_used)]
//! The projector against a real system (real nats-server and services, simulated devices) and a
//! scripted Kubernetes API server that answers server-side apply, status and delete requests
//! with the real API's shapes. No Kubernetes cluster runs on these machines.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use wasmbed_e2e::{System, T, test_limits};
use wasmbed_projector::ProjectorConfig;
use wasmbed_schemas::AppId;
use wasmbed_schemas::command::{AbortRollout, DecommissionDevice, StartRollout};
use wasmbed_schemas::event::Target;
use wasmbed_schemas::rollout::{MaxFailures, WaveSize};

const BASE: &str = "/apis/wasmbed.io/v1alpha1/namespaces/wasmbed/";

/// One request as the scripted server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
}

#[derive(Default)]
struct ApiServer {
    /// `<plural>/<name>` → the object.
    objects: Mutex<BTreeMap<String, Value>>,
    requests: Mutex<Vec<Seen>>,
    /// Status codes to answer the next requests with, before any real answer.
    failures: Mutex<VecDeque<u16>>,
    version: Mutex<u64>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn answer(
    server: Arc<ApiServer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    server.requests.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    });
    if let Some(code) = server.failures.lock().unwrap().pop_front() {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            _ => "InternalError",
        };
        return status(code, reason, "scripted failure");
    }
    let Some(rest) = path.strip_prefix(BASE) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (key, subresource) = match parts.as_slice() {
        [plural, name] => (format!("{plural}/{name}"), None),
        [plural, name, "status"] => (format!("{plural}/{name}"), Some("status")),
        _ => return status(404, "NotFound", "no such path"),
    };
    let mut objects = server.objects.lock().unwrap();
    match method.as_str() {
        "PATCH" => {
            let patch: Value = serde_json::from_slice(&body).unwrap();
            let mut version = server.version.lock().unwrap();
            *version += 1;
            let object = objects.entry(key).or_insert_with(|| {
                json!({ "apiVersion": patch["apiVersion"], "kind": patch["kind"],
                        "metadata": { "name": patch["metadata"]["name"], "namespace": "wasmbed", "uid": format!("uid-{version}") } })
            });
            if subresource == Some("status") {
                object["status"] = patch["status"].clone();
            } else {
                object["spec"] = patch["spec"].clone();
                object["metadata"]["labels"] = patch["metadata"]["labels"].clone();
            }
            object["metadata"]["resourceVersion"] = json!(version.to_string());
            (StatusCode::OK, [("content-type", "application/json")], object.to_string()).into_response()
        }
        "DELETE" => match objects.remove(&key) {
            Some(_) => (StatusCode::OK, [("content-type", "application/json")],
                        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":200}).to_string())
                .into_response(),
            None => status(404, "NotFound", &format!("{key} not found")),
        },
        _ => status(405, "MethodNotAllowed", "scripted server"),
    }
}

async fn api_server() -> (Arc<ApiServer>, kube::Client) {
    let server = Arc::new(ApiServer::default());
    let client = server_client(&server).await;
    (server, client)
}

/// Starts the projector; the sender stops it.
fn projector(
    system: &System,
    kube: kube::Client,
    consumer: &str,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ProjectorConfig {
        consumer: consumer.into(),
        ..ProjectorConfig::default()
    };
    let nats = system.client.clone();
    let task = tokio::spawn(async move {
        wasmbed_projector::run(nats, kube, config, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, task)
}

/// Spec and status of every object (what the projection decides; versions aside).
fn state(server: &ApiServer) -> BTreeMap<String, Value> {
    server
        .objects
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!({ "spec": v["spec"], "status": v["status"] }),
            )
        })
        .collect()
}

async fn wait_until(
    server: &ApiServer,
    what: &str,
    ok: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = state(server);
        if ok(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never held: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fleet with history: a device running the sensor app on a gateway, a device registered and
/// decommissioned.
async fn fleet() -> (System, wasmbed_sim::SimDevice) {
    let system = System::start().await;
    // Retired before the app exists, so no deployment ever targets it.
    let (dev2, _) = system.register("dev-2", &[]).await;
    wasmbed_bus::call(
        &system.client,
        &DecommissionDevice {
            device_id: dev2,
            reason: "retired".into(),
        },
        T,
    )
    .await
    .unwrap();
    let (dev1, sim) = system.device("dev-1", &[("zone", "a")]).await;
    let app = AppId::new("sensor").unwrap();
    system
        .create_app(
            &app,
            wasmbed_example_apps::SENSOR,
            Target::All,
            test_limits(),
        )
        .await;
    system.deploy_app(&app).await;
    system
        .wait_events(&wasmbed_e2e::deployment(&app, &dev1), |e| {
            wasmbed_e2e::names(e).last() == Some(&"DeploymentRunning")
        })
        .await;
    (system, sim)
}

fn projected(state: &BTreeMap<String, Value>) -> bool {
    state.get("devices/dev-1").is_some_and(|d| {
        d["status"]["phase"] == "online" && d["status"]["apps"]["sensor"] == "running"
    }) && state.get("applications/sensor").is_some_and(|a| {
        a["status"]["running"] == 1
            && a["status"]["targets"] == 1
            && a["status"]["phase"] == "running"
    }) && state
        .get("gateways/gw-e2e")
        .is_some_and(|g| g["status"]["devices"] == 1 && g["status"]["phase"] == "running")
        && !state.contains_key("devices/dev-2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_projected_by_server_side_apply_and_a_replay_converges_to_the_same_objects() {
    let (system, _sim) = fleet().await;
    let (server, kube) = api_server().await;
    let (stop, task) = projector(&system, kube, "projector-a");
    let first = wait_until(&server, "the fleet projected", projected).await;

    let device = &first["devices/dev-1"];
    assert_eq!(device["spec"]["mcu"], "Simulated");
    assert_eq!(device["spec"]["labels"]["zone"], "a");
    assert_eq!(device["status"]["gateway"], "gw-e2e");
    assert_eq!(device["status"]["appsSummary"], "sensor=running");
    assert_eq!(first["applications/sensor"]["spec"]["target"], "all");
    assert_eq!(first["applications/sensor"]["spec"]["version"], 1);
    assert_eq!(first.len(), 3, "{first:#?}");

    // Every write is a server-side apply by the projector, forced; dev-2 was deleted.
    let requests = server.requests.lock().unwrap().clone();
    for r in requests.iter().filter(|r| r.method == "PATCH") {
        assert_eq!(r.content_type, "application/apply-patch+yaml", "{r:?}");
        assert!(
            r.query.contains("fieldManager=wasmbed-projector") && r.query.contains("force=true"),
            "{r:?}"
        );
    }
    // Exactly these requests (each maybe several times, one per event that touched it).
    let distinct: std::collections::BTreeSet<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.trim_start_matches(BASE)))
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        "PATCH devices/dev-2",
        "PATCH devices/dev-2/status",
        "DELETE devices/dev-2",
        "PATCH devices/dev-1",
        "PATCH devices/dev-1/status",
        "PATCH gateways/gw-e2e",
        "PATCH gateways/gw-e2e/status",
        "PATCH applications/sensor",
        "PATCH applications/sensor/status",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(distinct, expected);
    // The decommissioned device was applied, then deleted, and never applied again.
    let dev2: Vec<&str> = requests
        .iter()
        .filter(|r| r.path.ends_with("/devices/dev-2"))
        .map(|r| r.method.as_str())
        .collect();
    assert_eq!(dev2, ["PATCH", "DELETE"]);
    let _ = stop.send(());
    task.await.unwrap();

    // Replaying the whole log (a new consumer) onto the same objects changes nothing, and
    // onto an empty server builds the same objects.
    let (stop, task) = projector(&system, server_client(&server).await, "projector-b");
    let applies_before = server.requests.lock().unwrap().len();
    wait_until(&server, "the replay onto the same objects", |_| {
        server.requests.lock().unwrap().len() > applies_before + 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    task.await.unwrap();
    assert_eq!(state(&server), first, "a replay changed the objects");
    let (fresh, kube) = api_server().await;
    let (stop, task) = projector(&system, kube, "projector-c");
    let replayed = wait_until(&fresh, "the replay", |s| *s == first).await;
    assert_eq!(replayed, first);
    let _ = stop.send(());
    task.await.unwrap();
}

/// Serves `server`'s state on a new port; a client for it (a second projector on the same
/// objects gets its own).
async fn server_client(server: &Arc<ApiServer>) -> kube::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback({
        let server = server.clone();
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            answer(server.clone(), method, uri, headers, body)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_throttling_are_retried_and_a_restart_resumes_without_gaps() {
    let (system, _sim) = fleet().await;
    let (server, kube) = api_server().await;
    server.failures.lock().unwrap().extend([409, 429, 503]);
    let (stop, task) = projector(&system, kube.clone(), "projector");
    let before = wait_until(&server, "the fleet projected despite failures", projected).await;
    let requests = server.requests.lock().unwrap().clone();
    // The first request was refused three times and sent again each time.
    assert!(requests.len() > 3);
    assert_eq!(requests[0].path, requests[1].path);
    assert_eq!(requests[1].path, requests[2].path);
    assert_eq!(requests[2].path, requests[3].path);
    let _ = stop.send(());
    task.await.unwrap();

    // While it is down, more happens; after the restart only the new events are applied.
    let seen_before = server.requests.lock().unwrap().len();
    system.register("dev-3", &[]).await;
    let (stop, task) = projector(&system, kube, "projector");
    let after = wait_until(&server, "dev-3 projected after the restart", |s| {
        s.contains_key("devices/dev-3")
    })
    .await;
    // Only what the new events touched: dev-3, and the sensor app, which targets every device
    // and so is now requested on dev-3 too. Nothing from before the restart is applied again.
    let new: Vec<Seen> = server.requests.lock().unwrap()[seen_before..].to_vec();
    assert!(
        new.iter()
            .all(|r| r.path.contains("/devices/dev-3") || r.path.contains("/applications/sensor")),
        "{new:#?}"
    );
    assert!(!new.is_empty());
    assert_eq!(after["devices/dev-3"]["status"]["phase"], "registered");
    for key in ["devices/dev-1", "gateways/gw-e2e"] {
        assert_eq!(
            after.get(key),
            before.get(key),
            "{key} changed across the restart"
        );
    }
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_rollout_phase_and_wave_are_in_its_status() {
    let (system, _sim) = fleet().await;
    let (server, kube) = api_server().await;
    let (stop, task) = projector(&system, kube, "projector-rollout");
    wait_until(&server, "the fleet projected", projected).await;

    let app = AppId::new("sensor").unwrap();
    let sha = wasmbed_eventlog::modules::upload_module(
        system.log.jetstream(),
        wasmbed_example_apps::COUNTER,
    )
    .await
    .unwrap();
    let start = StartRollout {
        app_id: app.clone(),
        module_sha256: sha,
        waves: vec![WaveSize::Rest],
        soak_ms: 60_000,
        deadline_ms: None,
        max_failures: MaxFailures::Count(0),
        approve_each: false,
        rehearse: false,
        limits: None,
        config: None,
        release: None,
    };
    wasmbed_bus::call(&system.client, &start, T).await.unwrap();
    let judging = wait_until(&server, "the rollout judged", |s| {
        s.get("applications/sensor")
            .is_some_and(|a| a["status"]["rollout"]["phase"] == "judging")
    })
    .await;
    let rollout = &judging["applications/sensor"]["status"]["rollout"];
    assert_eq!(
        (&rollout["number"], &rollout["wave"], &rollout["toVersion"]),
        (&json!(1), &json!("1/1"), &json!(2))
    );
    let abort = AbortRollout {
        app_id: app,
        reason: Some("projector test".into()),
    };
    wasmbed_bus::call(&system.client, &abort, T).await.unwrap();
    let rolled_back = wait_until(&server, "the rollback projected", |s| {
        s.get("applications/sensor")
            .is_some_and(|a| a["status"]["rollout"]["phase"] == "rolled_back")
    })
    .await;
    let halted = rolled_back["applications/sensor"]["status"]["rollout"]["halted"].clone();
    assert!(
        halted
            .as_str()
            .is_some_and(|h| h.contains("projector test")),
        "{halted}"
    );
    let _ = stop.send(());
    task.await.unwrap();
}

/// Two projectors on one durable consumer: the lease holder alone applies, so nothing is
/// applied twice; the holder killed, the other resumes from the consumer's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_apply_each_event_once_and_the_survivor_resumes() {
    let (system, _sim) = fleet().await;
    let (server, kube) = api_server().await;
    let (_stop_a, task_a) = projector(&system, kube.clone(), "projector");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (stop_b, task_b) = projector(&system, kube, "projector");
    wait_until(&server, "the fleet projected", projected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let once = server.requests.lock().unwrap().len();
    // The first took the lease (it started first): killed, nothing released.
    task_a.abort();
    let _ = task_a.await;
    let killed = std::time::Instant::now();
    system.register("dev-4", &[]).await;
    wait_until(&server, "dev-4 projected by the survivor", |s| {
        s.contains_key("devices/dev-4")
    })
    .await;
    eprintln!(
        "projector: the survivor applied the next event {:?} after the holder was killed \
         (lease TTL {:?})",
        killed.elapsed(),
        wasmbed_service::LEASE_TTL
    );
    // Nothing applied before the kill was applied again by the survivor.
    let requests = server.requests.lock().unwrap().clone();
    let again: Vec<&Seen> = requests[once..]
        .iter()
        .filter(|r| !r.path.contains("/devices/dev-4") && !r.path.contains("/applications/sensor"))
        .collect();
    assert!(again.is_empty(), "{again:#?}");
    let _ = stop_b.send(());
    task_b.await.unwrap();
}
