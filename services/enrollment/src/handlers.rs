//! One handler per enrollment command.

use std::sync::Arc;
use wasmbed_device_core::is_full_order;

use chrono::Utc;
use tracing::{info, warn};
use wasmbed_bus::Router;

use wasmbed_eventlog::{AppendError, ExpectedVersion, StoredEvent};
use wasmbed_schemas::AggregateId;
use wasmbed_schemas::command::*;
use wasmbed_schemas::device_message::SessionRevoked;
use wasmbed_schemas::event::{
    DeviceDecommissioned, DeviceEnrolled, DeviceKeyClaimed, DeviceRegistered, EnrollmentPath,
    EnrollmentRefused, Event, EventEnvelope, PairingWindowOpened,
};
use wasmbed_schemas::frame::RejectReason;
use wasmbed_schemas::{DeviceId, PublicKey, subject};

use crate::Enrollment;
use crate::registry::DeviceRecord;

type State = Arc<Enrollment>;

pub(crate) fn router() -> Router<Enrollment> {
    Router::new(crate::SERVICE)
        .route(register_device)
        .route(decommission_device)
        .route(open_pairing_window)
        .route(authorize_device)
        .route(issue_gateway_certificate)
        .route(get_ca_certificate)
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> CommandError {
    CommandError {
        code,
        message: message.into(),
    }
}

fn internal(e: impl std::fmt::Display) -> CommandError {
    refuse(ErrorCode::Unavailable, format!("event log: {e}"))
}

/// Appends `event` and applies it to the registry at once, so this service's next decision
/// sees it even before the follower does.
async fn record(
    state: &Enrollment,
    expected: ExpectedVersion,
    event: Event,
) -> Result<u64, AppendError> {
    let envelope = EventEnvelope::new(event);
    let appended = state.log.append(expected, &envelope).await?;
    state.registry().apply(&StoredEvent {
        sequence: appended.sequence,
        envelope,
        trace: wasmbed_bus::trace::current_traceparent(),
    });
    Ok(appended.sequence)
}
/// Claims `key` for `device` on the key's own subject, appended only while that subject is
/// empty: of two registrations of one key racing (in one instance or two), one claim lands and
/// the other finds it. A retry by the same device finds its own claim and goes on.
async fn claim_key(
    state: &Enrollment,
    key: PublicKey,
    device: &DeviceId,
) -> Result<(), CommandError> {
    let claim = EventEnvelope::new(
        DeviceKeyClaimed {
            public_key: key,
            device_id: device.clone(),
        }
        .into(),
    );
    match state.log.append(ExpectedVersion::NONE, &claim).await {
        Ok(_) => Ok(()),
        Err(AppendError::Conflict { .. }) => match key_owner(state, key).await? {
            Some(owner) if owner == *device => Ok(()),
            Some(owner) => Err(refuse(
                ErrorCode::AlreadyExists,
                format!("public_key is already registered to {owner}"),
            )),
            None => Err(refuse(
                ErrorCode::Conflict,
                "public_key changed concurrently; retry",
            )),
        },
        Err(e) => Err(internal(e)),
    }
}

/// The device that claimed `key`, by the log.
async fn key_owner(state: &Enrollment, key: PublicKey) -> Result<Option<DeviceId>, CommandError> {
    let claims = state
        .log
        .read(&AggregateId::DeviceKey(key))
        .await
        .map_err(internal)?;
    Ok(claims
        .iter()
        .find_map(|stored| match &stored.envelope.event {
            Event::DeviceKeyClaimed(c) => Some(c.device_id.clone()),
            _ => None,
        }))
}

/// What this instance may not have applied yet about `key`: another instance registered it a
/// moment ago, and the claim and the registration are in the log before this instance's
/// follower brings them. The device that claimed the key is read and folded in.
async fn catch_up_on_key(
    state: &Enrollment,
    key: PublicKey,
) -> Result<Option<DeviceRecord>, CommandError> {
    let Some(owner) = key_owner(state, key).await? else {
        return Ok(None);
    };
    let events = state
        .log
        .read(&AggregateId::Device(owner))
        .await
        .map_err(internal)?;
    let mut registry = state.registry();
    for stored in &events {
        registry.apply(stored);
    }
    Ok(registry.by_key(&key).cloned())
}

/// Pairing windows another instance opened a moment ago, folded in.
async fn catch_up_on_pairing(state: &Enrollment) -> Result<(), CommandError> {
    let events = state
        .log
        .read(&AggregateId::Pairing)
        .await
        .map_err(internal)?;
    let mut windows = state.pairing();
    for stored in &events {
        crate::pairing_window(&mut windows, &stored.envelope.event);
    }
    Ok(())
}

async fn register_device(state: State, c: RegisterDevice) -> Result<Accepted, CommandError> {
    if !is_full_order(&c.public_key) {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "public_key is not a valid Ed25519 public key of full order",
        ));
    }
    {
        let registry = state.registry();
        if let Some(owner) = registry.by_key(&c.public_key) {
            if owner.device_id != c.device_id {
                return Err(refuse(
                    ErrorCode::AlreadyExists,
                    format!("public_key is already registered to {}", owner.device_id),
                ));
            }
        }
        if let Some(existing) = registry.get(&c.device_id) {
            return if existing.decommissioned {
                Err(refuse(
                    ErrorCode::AlreadyExists,
                    format!(
                        "device_id {} was decommissioned; an id is not used again",
                        c.device_id
                    ),
                ))
            } else if existing.public_key == c.public_key {
                // A retry of the same registration.
                Ok(Accepted {
                    sequence: existing.version,
                })
            } else {
                Err(refuse(
                    ErrorCode::AlreadyExists,
                    format!("device_id {} is registered with another key", c.device_id),
                ))
            };
        }
    }
    claim_key(&state, c.public_key, &c.device_id).await?;
    let event = DeviceRegistered {
        device_id: c.device_id.clone(),
        public_key: c.public_key,
        mcu: c.mcu,
        labels: c.labels,
    };
    match record(&state, ExpectedVersion::NONE, event.into()).await {
        Ok(sequence) => {
            info!(device = %c.device_id, "device registered");
            Ok(Accepted { sequence })
        }
        Err(AppendError::Conflict { .. }) => Err(refuse(
            ErrorCode::AlreadyExists,
            format!("device_id {} was registered concurrently", c.device_id),
        )),
        Err(e) => Err(internal(e)),
    }
}

async fn decommission_device(
    state: State,
    c: DecommissionDevice,
) -> Result<Accepted, CommandError> {
    let known = state.registry().get(&c.device_id).cloned();
    match known {
        None => {
            return Err(refuse(
                ErrorCode::NotFound,
                format!("no device {}", c.device_id),
            ));
        }
        Some(d) if d.decommissioned => {
            // A retry: the session may still be open if the first revocation was missed.
            revoke_session(&state, &c.device_id, &c.reason).await;
            return Ok(Accepted {
                sequence: d.version,
            });
        }
        Some(_) => {}
    }
    let event = DeviceDecommissioned {
        device_id: c.device_id.clone(),
        reason: c.reason.clone(),
    };
    // Other services append to the device too (connections, liveness), so the device's
    // version is not this service's to expect; a decommission commutes with those, and a
    // second one changes nothing.
    match record(&state, ExpectedVersion::Any, event.into()).await {
        Ok(sequence) => {
            revoke_session(&state, &c.device_id, &c.reason).await;
            Ok(Accepted { sequence })
        }
        Err(AppendError::Conflict { .. }) => Err(refuse(
            ErrorCode::Conflict,
            format!("device {} changed concurrently; retry", c.device_id),
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Tells the gateways to end the device's session, if one holds it (its next connection is
/// refused in any case: the registry says decommissioned).
async fn revoke_session(state: &Enrollment, device: &DeviceId, reason: &str) {
    let revoked = SessionRevoked {
        device_id: device.clone(),
        reason: reason.to_owned(),
    };
    let sent = match serde_json::to_vec(&revoked) {
        Ok(body) => state
            .client
            .publish(subject::device_revoked(device), body.into())
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        warn!(%device, error = %e, "session revocation not sent; the next connection is refused");
    }
}

async fn open_pairing_window(
    state: State,
    c: OpenPairingWindow,
) -> Result<PairingWindow, CommandError> {
    let max = state.config.max_pairing_window.as_secs();
    if c.duration_secs == 0 || u64::from(c.duration_secs) > max {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            format!("duration_secs must be between 1 and {max}"),
        ));
    }
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).map_err(|e| refuse(ErrorCode::Internal, e.to_string()))?;
    let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let expires_at = Utc::now() + chrono::Duration::seconds(i64::from(c.duration_secs));
    let opened = PairingWindowOpened {
        token_sha256: wasmbed_schemas::Sha256(crate::pairing::digest(&token)),
        expires_at,
    };
    // Recorded first: every instance learns the window from the log.
    state
        .log
        .append(ExpectedVersion::Any, &EventEnvelope::new(opened.into()))
        .await
        .map_err(internal)?;
    state.pairing().open(&token, expires_at);
    info!(%expires_at, "pairing window opened");
    Ok(PairingWindow { token, expires_at })
}

/// The id a device enrolled through pairing gets: derived from its key, so the same device
/// always gets the same id.
fn paired_device_id(key: &PublicKey) -> Option<DeviceId> {
    let hex: String = key.0[..6].iter().map(|b| format!("{b:02x}")).collect();
    DeviceId::new(format!("dev-{hex}")).ok()
}

async fn authorize_device(state: State, c: AuthorizeDevice) -> Result<Authorization, CommandError> {
    // Gateways verify strictly; a weak key reaching here is refused all the same.
    if !is_full_order(&c.public_key) {
        return refused(
            &state,
            &c,
            RejectReason::BadSignature,
            "public key is of small order or not a point",
        )
        .await;
    }
    let known = state.registry().by_key(&c.public_key).cloned();
    let known = match known {
        Some(known) => Some(known),
        None => catch_up_on_key(&state, c.public_key).await?,
    };
    match known {
        Some(d) if d.decommissioned => {
            refused(
                &state,
                &c,
                RejectReason::Decommissioned,
                "device is decommissioned",
            )
            .await
        }
        Some(d) if d.enrolled => Ok(Authorization::Allowed {
            device_id: d.device_id,
        }),
        Some(d) => {
            let event = DeviceEnrolled {
                device_id: d.device_id.clone(),
                public_key: c.public_key,
                gateway_id: c.gateway_id.clone(),
                path: EnrollmentPath::Registered,
            };
            match record(&state, ExpectedVersion::Exactly(d.version), event.into()).await {
                // A concurrent authorization of the same device enrolled it first.
                Ok(_) | Err(AppendError::Conflict { .. }) => {
                    info!(device = %d.device_id, "device enrolled");
                    Ok(Authorization::Allowed {
                        device_id: d.device_id,
                    })
                }
                Err(e) => Err(internal(e)),
            }
        }
        None => {
            let accepted = |state: &Enrollment| {
                c.enrollment_token
                    .as_deref()
                    .is_some_and(|token| state.pairing().accepts(token, Utc::now()))
            };
            let mut token_ok = accepted(&state);
            if !token_ok && c.enrollment_token.is_some() {
                catch_up_on_pairing(&state).await?;
                token_ok = accepted(&state);
            }
            if !token_ok {
                let message = if c.enrollment_token.is_some() {
                    "unknown key and no open pairing window accepts its token"
                } else {
                    "unknown key; register it or open a pairing window"
                };
                return refused(&state, &c, RejectReason::UnknownDevice, message).await;
            }
            let Some(device_id) = paired_device_id(&c.public_key) else {
                return Err(refuse(ErrorCode::Internal, "could not derive a device id"));
            };
            if claim_key(&state, c.public_key, &device_id).await.is_err() {
                return refused(
                    &state,
                    &c,
                    RejectReason::Unavailable,
                    "the key was registered concurrently; try again",
                )
                .await;
            }
            let event = DeviceEnrolled {
                device_id: device_id.clone(),
                public_key: c.public_key,
                gateway_id: c.gateway_id.clone(),
                path: EnrollmentPath::Pairing,
            };
            match record(&state, ExpectedVersion::NONE, event.into()).await {
                Ok(_) => {
                    info!(device = %device_id, "device enrolled through pairing");
                    Ok(Authorization::Allowed { device_id })
                }
                Err(AppendError::Conflict { .. }) => {
                    refused(&state, &c, RejectReason::UnknownDevice, "device id taken").await
                }
                Err(e) => Err(internal(e)),
            }
        }
    }
}

/// Records a refusal on the gateway's aggregate (an audit trail) and answers with it.
async fn refused(
    state: &Enrollment,
    c: &AuthorizeDevice,
    reason: RejectReason,
    message: &str,
) -> Result<Authorization, CommandError> {
    let refusal = EnrollmentRefused {
        gateway_id: c.gateway_id.clone(),
        public_key: Some(c.public_key),
        reason,
        message: message.to_owned(),
        remote_addr: c.remote_addr.clone(),
    };
    state.refusals.record(&state.log, refusal).await;
    Ok(Authorization::Refused {
        reason,
        message: message.to_owned(),
    })
}

async fn issue_gateway_certificate(
    state: State,
    c: IssueGatewayCertificate,
) -> Result<GatewayCertificate, CommandError> {
    let issued = state
        .ca
        .issue_server_certificate(&c.csr_pem, state.config.gateway_certificate_validity)
        .map_err(|e| refuse(ErrorCode::InvalidRequest, format!("csr_pem: {e}")))?;
    let not_after = chrono::DateTime::from_timestamp(issued.not_after.unix_timestamp(), 0)
        .unwrap_or_else(Utc::now);
    info!(gateway = %c.gateway_id, %not_after, "gateway certificate issued");
    Ok(GatewayCertificate {
        certificate_pem: issued.pem,
        ca_certificate_pem: state.ca.certificate_pem().to_owned(),
        not_after,
    })
}

async fn get_ca_certificate(
    state: State,
    _: GetCaCertificate,
) -> Result<CaCertificate, CommandError> {
    Ok(CaCertificate {
        certificate_pem: state.ca.certificate_pem().to_owned(),
    })
}
