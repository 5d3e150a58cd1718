//! Who may publish and subscribe to what on NATS: one user per service, each allowed only the
//! subjects it needs.
//!
//! `nats/permissions.conf` is [`authorization_conf`]'s output (a test holds the file to it), so
//! the table below is the one place the permissions are written. Passwords are not in it: each
//! user's password is the environment variable [`Principal::password_variable`] of the
//! nats-server process, and the service is given the same value as `WASMBED_NATS_PASSWORD`.
//!
//! What the table grants, per service:
//! - the event kinds it records (`wasmbed.events.v1.<kind>.>`), nothing else in the log;
//! - the command subjects it serves (with replies to their callers) or calls;
//! - the device, telemetry and UART subjects of its side of the bridge;
//! - the JetStream API of the streams it reads or writes, and the KV buckets and object store
//!   it uses (never deleting or purging a stream, apart from the deployer removing modules);
//! - replies on its own inbox prefix ([`Principal::inbox_prefix`]), so no service reads another
//!   one's replies.
//!
//! `operator` is the user for people and tools (the `wasmbed` CLI, tests): no restriction.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use crate::aggregate::AggregateKind;
use crate::subject::{self, Service};

/// A NATS user of Wasmbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Principal {
    /// Device identities and the CA.
    Enrollment,
    /// The device bridge.
    Gateway,
    /// Applications and deployments.
    Deployer,
    /// Liveness and telemetry history.
    Telemetry,
    /// Emulated devices.
    RenodeManager,
    /// The REST facade and dashboard.
    Api,
    /// The Kubernetes view.
    Projector,
    /// People and tools: everything.
    Operator,
}

/// What one user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to (wildcards allowed).
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may reply to the requests it receives (the services that answer commands).
    pub allow_responses: bool,
}

impl Principal {
    /// Every user, in the order of the configuration file.
    pub const ALL: [Self; 8] = [
        Self::Enrollment,
        Self::Gateway,
        Self::Deployer,
        Self::Telemetry,
        Self::RenodeManager,
        Self::Api,
        Self::Projector,
        Self::Operator,
    ];

    /// The user name (also the service's name in `wasmbed serve`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Enrollment => "enrollment",
            Self::Gateway => "gateway",
            Self::Deployer => "deployer",
            Self::Telemetry => "telemetry",
            Self::RenodeManager => "renode-manager",
            Self::Api => "api",
            Self::Projector => "projector",
            Self::Operator => "operator",
        }
    }

    /// The user named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The nats-server environment variable holding this user's password.
    pub fn password_variable(self) -> String {
        format!(
            "WASMBED_NATS_PASSWORD_{}",
            self.name().replace('-', "_").to_uppercase()
        )
    }

    /// The prefix of this user's reply subjects (`async_nats::ConnectOptions::custom_inbox_prefix`).
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.name().replace('-', "_"))
    }

    /// What this user may do; `None` for the operator, who may do anything.
    pub fn permissions(self) -> Option<Permissions> {
        // The JetStream account info, once; then each stream's own API below.
        let mut publish = vec!["$JS.API.INFO".to_string()];
        let mut subscribe = vec![format!("{}.>", self.inbox_prefix())];
        // Every service opens the event log, which makes sure the log's streams and the module
        // store exist (`wasmbed_eventlog::definitions`).
        // Readers of the log follow its streams' leader elections (`LiveReader`).
        for stream in [subject::EVENTS_STREAM, subject::TELEMETRY_STREAM] {
            publish.extend(jetstream_stream(stream));
            subscribe.push(subject::stream_leader_elected(stream));
        }
        publish.extend(jetstream_stream(&object_store_stream(
            subject::MODULES_OBJECT_STORE,
        )));
        let events = |kind| subject::events_of_kind(kind);
        let calls = |service| subject::commands_of(service);
        let allow_responses = matches!(
            self,
            Self::Enrollment | Self::Deployer | Self::RenodeManager
        );
        match self {
            Self::Enrollment => {
                publish.extend([
                    events(AggregateKind::Device),
                    events(AggregateKind::DeviceKey),
                    events(AggregateKind::Pairing),
                    events(AggregateKind::Gateway),
                    subject::DEVICE_REVOKED_ALL.to_string(),
                ]);
                publish.extend(snapshot(self.name()));
                subscribe.push(calls(Service::Enrollment));
            }
            Self::Gateway => {
                publish.extend([
                    events(AggregateKind::Device),
                    events(AggregateKind::Gateway),
                    calls(Service::Enrollment),
                    subject::TELEMETRY_ALL.to_string(),
                    subject::DEVICE_UPLINK_ALL.to_string(),
                    subject::DEVICE_HEARTBEAT_ALL.to_string(),
                    subject::DEVICE_LOG_ALL.to_string(),
                ]);
                subscribe.extend([
                    subject::DEVICE_DOWNLINK_ALL.to_string(),
                    subject::DEVICE_REVOKED_ALL.to_string(),
                ]);
            }
            Self::Deployer => {
                publish.extend([
                    events(AggregateKind::Application),
                    events(AggregateKind::Deployment),
                    events(AggregateKind::Device),
                    events(AggregateKind::Rollout),
                    events(AggregateKind::Trust),
                    subject::DEVICE_DOWNLINK_ALL.to_string(),
                    // A rollout's rehearsal starts simulated copies and removes them.
                    calls(Service::RenodeManager),
                    calls(Service::Enrollment),
                    // Modules no live application uses are removed.
                    format!(
                        "$JS.API.STREAM.PURGE.{}",
                        object_store_stream(subject::MODULES_OBJECT_STORE)
                    ),
                    format!("$O.{}.>", subject::MODULES_OBJECT_STORE),
                ]);
                publish.extend(key_value(subject::DEPLOYMENTS_BUCKET));
                publish.extend(snapshot(self.name()));
                // One reconciler at a time: the deployer's lease.
                publish.extend(lease(self.name()));
                subscribe.extend([
                    calls(Service::Deployer),
                    subject::DEVICE_UPLINK_ALL.to_string(),
                ]);
            }
            Self::Telemetry => {
                publish.push(events(AggregateKind::Device));
                publish.extend(key_value(subject::LIVENESS_BUCKET));
                publish.extend(key_value(subject::TELEMETRY_LATEST_BUCKET));
                publish.extend(snapshot(self.name()));
                subscribe.push(subject::DEVICE_HEARTBEAT_ALL.to_string());
            }
            Self::RenodeManager => {
                publish.extend([
                    events(AggregateKind::Emulator),
                    calls(Service::Enrollment),
                    subject::EMULATOR_UART_ALL.to_string(),
                ]);
                // One owner of the emulators at a time: the manager's lease.
                publish.extend(lease(self.name()));
                subscribe.push(calls(Service::RenodeManager));
            }
            Self::Api => {
                publish.extend([
                    calls(Service::Enrollment),
                    calls(Service::Deployer),
                    calls(Service::RenodeManager),
                    // Uploads modules before `CreateApplication`.
                    format!("$O.{}.>", subject::MODULES_OBJECT_STORE),
                ]);
                // The read models, read only.
                for bucket in [
                    subject::LIVENESS_BUCKET,
                    subject::TELEMETRY_LATEST_BUCKET,
                    subject::DEPLOYMENTS_BUCKET,
                ] {
                    publish.extend(jetstream_stream(&key_value_stream(bucket)));
                }
                publish.extend(snapshot(self.name()));
                subscribe.extend([
                    subject::TELEMETRY_ALL.to_string(),
                    subject::EMULATOR_UART_ALL.to_string(),
                    subject::DEVICE_LOG_ALL.to_string(),
                ]);
            }
            // One applier at a time: the projector's lease.
            Self::Projector => publish.extend(lease(self.name())),
            Self::Operator => return None,
        }
        Some(Permissions {
            publish,
            subscribe,
            allow_responses,
        })
    }
}

/// The stream behind an object store.
fn object_store_stream(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

/// Using one stream through the JetStream API: look it up, create or update it (to its
/// definition), read it with consumers (ordered, ephemeral or durable) and direct gets, and
/// acknowledge. Not: delete or purge it, or delete its messages.
fn jetstream_stream(stream: &str) -> Vec<String> {
    [
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
        format!("$JS.ACK.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
    .into()
}

/// The stream behind a KV bucket.
fn key_value_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Taking and renewing the lease `name` (and creating the leases bucket), no other key.
fn lease(name: &str) -> Vec<String> {
    let mut subjects = jetstream_stream(&key_value_stream(subject::LEASES_BUCKET));
    subjects.push(format!("$KV.{}.{name}", subject::LEASES_BUCKET));
    subjects
}

/// Reading every snapshot and writing the one named `name` (its metadata subject; chunks
/// are written under random names and an old snapshot's chunks purged when it is replaced).
fn snapshot(name: &str) -> Vec<String> {
    let stream = object_store_stream(subject::SNAPSHOTS_OBJECT_STORE);
    let mut subjects = jetstream_stream(&stream);
    subjects.extend([
        format!("$JS.API.STREAM.PURGE.{stream}"),
        format!("$O.{}.C.>", subject::SNAPSHOTS_OBJECT_STORE),
        format!(
            "$O.{}.M.{}",
            subject::SNAPSHOTS_OBJECT_STORE,
            base64_url(name.as_bytes())
        ),
    ]);
    subjects
}

/// URL-safe base64 with padding: how the object store names an object's metadata subject.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reading and writing one KV bucket (its stream and its keys).
fn key_value(bucket: &str) -> Vec<String> {
    let mut subjects = jetstream_stream(&key_value_stream(bucket));
    subjects.push(format!("$KV.{bucket}.>"));
    subjects
}

/// `nats/permissions.conf`: the `authorization` block of every Wasmbed nats-server.
pub fn authorization_conf() -> String {
    let mut out = String::from(
        "# Generated by `wasmbed nats-permissions` from `schemas/src/permissions.rs`; do not edit.\n\
         # One user per service, allowed only the subjects it needs. Each password is an\n\
         # environment variable of the nats-server process (WASMBED_NATS_PASSWORD_<USER>).\n\
         authorization {\n  users = [\n",
    );
    for principal in Principal::ALL {
        out.push_str(&format!(
            "    {{\n      user: \"{}\"\n      password: ${}\n",
            principal.name(),
            principal.password_variable()
        ));
        if let Some(permissions) = principal.permissions() {
            out.push_str("      permissions: {\n");
            out.push_str(&list("publish", &permissions.publish));
            out.push_str(&list("subscribe", &permissions.subscribe));
            if permissions.allow_responses {
                out.push_str("        allow_responses: true\n");
            }
            out.push_str("      }\n");
        }
        out.push_str("    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

fn list(name: &str, subjects: &[String]) -> String {
    let mut out = format!("        {name}: {{ allow: [\n");
    for subject in subjects {
        out.push_str(&format!("          \"{subject}\"\n"));
    }
    out.push_str("        ] }\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_encoded_as_the_object_store_does() {
        // RFC 4648 test vectors, URL-safe alphabet, padded.
        for (name, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("api", "YXBp"),
            ("deployer", "ZGVwbG95ZXI="),
            ("\u{fb}\u{ff}", "w7vDvw=="),
        ] {
            assert_eq!(base64_url(name.as_bytes()), encoded, "{name:?}");
        }
    }

    #[test]
    fn no_service_may_write_another_services_events_or_answer_its_commands() {
        let gateway = Principal::Gateway.permissions().unwrap();
        assert!(
            gateway
                .publish
                .contains(&"wasmbed.events.v1.device.>".into())
        );
        assert!(!gateway.publish.iter().any(|s| s.contains("application")));
        assert!(
            !gateway
                .subscribe
                .iter()
                .any(|s| s.starts_with("wasmbed.cmd"))
        );
        // The api reads the read models but cannot write them.
        let api = Principal::Api.permissions().unwrap();
        assert!(!api.publish.iter().any(|s| s.starts_with("$KV.")));
        assert!(
            api.publish
                .contains(&"$JS.API.DIRECT.GET.KV_wasmbed-liveness.>".into())
        );
        let projector = Principal::Projector.permissions().unwrap();
        assert!(!projector.publish.iter().any(|s| s.starts_with("wasmbed.")));
        for principal in Principal::ALL {
            let Some(p) = principal.permissions() else {
                continue;
            };
            assert!(
                !p.publish
                    .iter()
                    .any(|s| s.contains("STREAM.DELETE") || s == ">"),
                "{principal:?}"
            );
            assert_eq!(Principal::from_name(principal.name()), Some(principal));
        }
        assert_eq!(
            Principal::RenodeManager.password_variable(),
            "WASMBED_NATS_PASSWORD_RENODE_MANAGER"
        );
    }
}
