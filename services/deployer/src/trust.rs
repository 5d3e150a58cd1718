//! The fleet's publisher keys: `trust_publisher` and `revoke_publisher`.
//!
//! Each accepted change is one event on the `trust` aggregate, appended expecting the
//! aggregate's version, so two changes cannot both take the same serial. After the first key,
//! every change carries a rotation signed by a key trusted before it: the deployer checks it
//! here, and every device checks it again before applying it.

use std::sync::Arc;

use wasmbed_device_core::is_full_order;
use wasmbed_device_core::release::verify_rotation;
use wasmbed_eventlog::{AppendError, ExpectedVersion};
use wasmbed_fleet::Publishers;
use wasmbed_schemas::AggregateId;
use wasmbed_schemas::command::{
    Accepted, CommandError, ErrorCode, RevokePublisher, TrustPublisher,
};
use wasmbed_schemas::event::{PublisherRevoked, PublisherTrusted};
use wasmbed_schemas::release::rotation::{MAX_TRUSTED_KEYS, SignedRotation, TrustChange};

use crate::Deployer;
use crate::handlers::refuse;

type State = Arc<Deployer>;

/// Whether `rotation` is the next change of `publishers`' chain, doing `change`, signed by a
/// key trusted now.
fn check_rotation(
    publishers: &Publishers,
    rotation: &SignedRotation,
    change: TrustChange,
) -> Result<(), CommandError> {
    let next = publishers.serial + 1;
    let r = &rotation.rotation;
    if r.change != change {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            format!("rotation.change: this command needs a {change:?} rotation"),
        ));
    }
    if r.serial != next {
        return Err(refuse(
            ErrorCode::Conflict,
            format!(
                "rotation.serial: the next change of the trust chain is {next}, not {} (make \
                 the rotation again)",
                r.serial
            ),
        ));
    }
    if !publishers.trusted().contains(&rotation.signer) {
        return Err(refuse(
            ErrorCode::Refused,
            format!(
                "rotation.signer: {} is not a trusted publisher key",
                rotation.signer
            ),
        ));
    }
    verify_rotation(rotation).map_err(|_| {
        refuse(
            ErrorCode::Refused,
            "rotation.signature: does not verify over the rotation",
        )
    })
}

fn trust_version(state: &Deployer) -> u64 {
    state.fleet().version(&AggregateId::Trust)
}

fn append_error(e: AppendError) -> CommandError {
    match e {
        AppendError::Conflict { .. } => refuse(
            ErrorCode::Conflict,
            "the trusted publishers changed concurrently; make the rotation again",
        ),
        other => refuse(ErrorCode::Unavailable, format!("event log: {other}")),
    }
}

pub(crate) async fn trust_publisher(
    state: State,
    c: TrustPublisher,
) -> Result<Accepted, CommandError> {
    state.catch_up(&AggregateId::Trust).await?;
    if !is_full_order(&c.public_key) {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "public_key is not a valid Ed25519 public key of full order",
        ));
    }
    if c.name.trim().is_empty() || c.name.len() > 128 {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            "name must be 1 to 128 bytes",
        ));
    }
    let (publishers, version) = {
        let fleet = state.fleet();
        (fleet.publishers.clone(), fleet.version(&AggregateId::Trust))
    };
    let trusted = publishers.trusted();
    if trusted.contains(&c.public_key) {
        return Ok(Accepted { sequence: version });
    }
    match &c.rotation {
        None if publishers.serial == 0 => {}
        None => {
            return Err(refuse(
                ErrorCode::Refused,
                "rotation: only the fleet's first publisher key is trusted without a rotation \
                 signed by a trusted key (wasmbed release rotate)",
            ));
        }
        Some(_) if publishers.serial == 0 => {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "rotation: the fleet's first publisher key is trusted without one",
            ));
        }
        Some(rotation) => {
            check_rotation(&publishers, rotation, TrustChange::Trust)?;
            if rotation.rotation.key != c.public_key {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    "rotation.key: the rotation trusts another key than public_key",
                ));
            }
        }
    }
    if trusted.len() >= MAX_TRUSTED_KEYS {
        return Err(refuse(
            ErrorCode::Refused,
            format!("a device trusts at most {MAX_TRUSTED_KEYS} publisher keys; revoke one"),
        ));
    }
    let event = PublisherTrusted {
        public_key: c.public_key,
        name: c.name,
        serial: publishers.serial + 1,
        rotation: c.rotation.map(Box::new),
    };
    let sequence = state
        .record(ExpectedVersion::Exactly(version), event.into())
        .await
        .map_err(append_error)?;
    Ok(Accepted { sequence })
}

pub(crate) async fn revoke_publisher(
    state: State,
    c: RevokePublisher,
) -> Result<Accepted, CommandError> {
    state.catch_up(&AggregateId::Trust).await?;
    let publishers = state.fleet().publishers.clone();
    let key = c.rotation.rotation.key;
    if publishers.is_revoked(&key) {
        return Ok(Accepted {
            sequence: trust_version(&state),
        });
    }
    let trusted = publishers.trusted();
    if !trusted.contains(&key) {
        return Err(refuse(
            ErrorCode::NotFound,
            format!("rotation.key: {key} is not a trusted publisher key"),
        ));
    }
    if trusted.len() == 1 {
        return Err(refuse(
            ErrorCode::Refused,
            "rotation.key: the last trusted publisher key cannot be revoked; trust its successor \
             first",
        ));
    }
    let version = trust_version(&state);
    check_rotation(&publishers, &c.rotation, TrustChange::Revoke)?;
    let event = PublisherRevoked {
        public_key: key,
        reason: c.reason,
        serial: publishers.serial + 1,
        rotation: Box::new(c.rotation),
    };
    let sequence = state
        .record(ExpectedVersion::Exactly(version), event.into())
        .await
        .map_err(append_error)?;
    Ok(Accepted { sequence })
}
