//! Authentication of one TLS connection: Hello, Challenge, Auth, and enrollment's decision.

use ed25519_dalek::{Signature, VerifyingKey};
use tokio::io::AsyncRead;
use wasmbed_bus::call;
use wasmbed_schemas::command::{Authorization, AuthorizeDevice};
use wasmbed_schemas::frame::codec::encode_to_vec;
use wasmbed_schemas::frame::{Challenge, Frame, RejectReason, auth_transcript};
use wasmbed_schemas::{DeviceId, GatewayId, Nonce, PublicKey, Sha256};

use crate::Gateway;
use crate::frames::FrameReader;

/// Why a connection was not let in.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub reason: RejectReason,
    pub message: String,
    pub public_key: Option<PublicKey>,
    /// Whether this gateway must record it (enrollment records its own decisions).
    pub audit: bool,
}

impl Refusal {
    fn new(reason: RejectReason, message: impl Into<String>, key: Option<PublicKey>) -> Self {
        Self {
            reason,
            message: message.into(),
            public_key: key,
            audit: true,
        }
    }
}

/// A fresh Challenge for one connection: its nonce, and the encoded frame.
///
/// The frame goes out in the TLS server's first flight (half-RTT data, right after its
/// Finished), before the device has said anything: the nonce depends on nothing the device
/// sends, and the device, holding it by the time its handshake completes, sends Hello and Auth
/// in one flight. One round trip per session less than Hello, then Challenge.
pub(crate) fn new_challenge(gateway_id: &GatewayId) -> Result<(Nonce, Vec<u8>), String> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a challenge: {e}"))?;
    let nonce = Nonce(nonce);
    let frame = Frame::Challenge(Challenge {
        gateway_id: gateway_id.clone(),
        nonce,
    });
    let bytes = encode_to_vec(&frame).map_err(|e| format!("encoding the challenge: {e}"))?;
    Ok((nonce, bytes))
}

/// Reads Hello and Auth, checks the signature over this connection's transcript (`nonce` is
/// the challenge it was sent) and asks enrollment. `fingerprints` are the certificate this
/// connection's handshake used and, during a renewal, the one before it.
pub(crate) async fn authenticate<R>(
    gw: &Gateway,
    frames: &mut FrameReader,
    reader: &mut R,
    nonce: Nonce,
    remote_addr: &str,
    fingerprints: (Sha256, Option<Sha256>),
) -> Result<DeviceId, Refusal>
where
    R: AsyncRead + Unpin,
{
    let hello = expect(frames, reader, None, "Hello", |frame| match frame {
        Frame::Hello(hello) => Ok(hello),
        other => Err(other),
    })
    .await?;
    let key = Some(hello.public_key);
    let auth = expect(frames, reader, key, "Auth", |frame| match frame {
        Frame::Auth(auth) => Ok(auth),
        other => Err(other),
    })
    .await?;
    let Some(verifying) = full_order_key(&hello.public_key) else {
        let message = "public key is not a valid Ed25519 point of full order";
        return Err(Refusal::new(RejectReason::BadSignature, message, key));
    };
    let signature = Signature::from_bytes(&auth.signature.0);
    let (current, previous) = fingerprints;
    // Strict: a small-order R, or a non-canonical one, is refused too (plain `verify` accepts
    // the identity key with R = identity and s = 0 for any message).
    let verified = [Some(current), previous].into_iter().flatten().any(|fp| {
        let transcript = auth_transcript(&hello.nonce, &nonce, &fp, &gw.config.gateway_id);
        verifying.verify_strict(&transcript, &signature).is_ok()
    });
    if !verified {
        let message = "signature does not verify over this session's transcript";
        return Err(Refusal::new(RejectReason::BadSignature, message, key));
    }

    let decision = call(
        &gw.client,
        &AuthorizeDevice {
            gateway_id: gw.config.gateway_id.clone(),
            public_key: hello.public_key,
            enrollment_token: hello.enrollment_token,
            remote_addr: remote_addr.to_owned(),
        },
        gw.config.request_timeout,
    )
    .await;
    match decision {
        Ok(Authorization::Allowed { device_id }) => Ok(device_id),
        Ok(Authorization::Refused { reason, message }) => Err(Refusal {
            audit: false,
            ..Refusal::new(reason, message, key)
        }),
        Err(e) => Err(Refusal {
            audit: false,
            ..Refusal::new(RejectReason::Unavailable, format!("enrollment: {e}"), key)
        }),
    }
}

/// The key, if it is the canonical encoding of an Ed25519 point outside the small-order
/// subgroup. A small-order key signs nothing: every signature by it can be forged.
pub(crate) fn full_order_key(key: &PublicKey) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&key.0)
        .ok()
        .filter(|point| !point.is_weak() && point.to_edwards().compress().to_bytes() == key.0)
}

/// Reads the next frame, which must be the `expected` kind (`pick` says whether it is).
async fn expect<R: AsyncRead + Unpin, T>(
    frames: &mut FrameReader,
    reader: &mut R,
    key: Option<PublicKey>,
    expected: &str,
    pick: impl FnOnce(Frame) -> Result<T, Frame>,
) -> Result<T, Refusal> {
    let message = match frames.next(reader).await {
        Ok(Some(frame)) => match pick(frame) {
            Ok(wanted) => return Ok(wanted),
            Err(other) => format!("expected {expected}, got {}", other.name()),
        },
        Ok(None) => format!("closed before {expected}"),
        Err(e) => format!("{expected} unreadable: {e}"),
    };
    Err(Refusal::new(RejectReason::ProtocolViolation, message, key))
}
