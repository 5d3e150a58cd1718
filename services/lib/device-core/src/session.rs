//! One authenticated session, from `Hello` to close.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use wasmbed_schemas::frame::codec::{self, DecodeError};
use wasmbed_schemas::frame::{Auth, Frame, GoAway, Heartbeat, Hello, Rejected, auth_transcript};
use wasmbed_schemas::{DeviceId, Nonce, Sha256};

use crate::Signer;

/// How a device behaves in a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Firmware name and version, sent in `Hello`.
    pub firmware: String,
    /// Pairing token for enrolling during a pairing window.
    pub enrollment_token: Option<String>,
    /// Give up if the gateway has not welcomed the device this long after `Hello`.
    pub auth_timeout_ms: u64,
    /// Consider the gateway gone after this many heartbeat intervals without a frame from it.
    pub missed_heartbeats: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            firmware: String::from(concat!("wasmbed-device-core ", env!("CARGO_PKG_VERSION"))),
            enrollment_token: None,
            auth_timeout_ms: 10_000,
            missed_heartbeats: 3,
        }
    }
}

/// What the session tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Authenticated: the gateway knows the device by `device_id`.
    Established {
        /// The device's id.
        device_id: DeviceId,
    },
    /// A frame for the application (deploy, module transfer, stop, errors).
    Frame(Frame),
    /// The session is over; reconnect after a back-off unless the reason says otherwise.
    Closed(CloseReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The gateway refused authentication.
    Rejected(Rejected),
    /// The gateway is shutting down; reconnect after the given delay.
    GoAway(GoAway),
    /// No welcome within the auth timeout.
    AuthTimeout,
    /// The gateway fell silent.
    HeartbeatTimeout,
    /// The gateway sent bytes that are not a frame, or a frame out of place.
    ProtocolError(String),
}

/// Why a frame could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Not authenticated yet, or already closed.
    NotEstablished,
    /// The frame does not fit in `wasmbed_schemas::frame::MAX_FRAME_LEN` bytes.
    TooLarge,
}

#[derive(Debug)]
enum State {
    AwaitingChallenge,
    AwaitingWelcome,
    Established,
    Closed,
}

/// The device side of one session. See the crate docs for how to drive it.
pub struct Session<S> {
    config: SessionConfig,
    signer: S,
    device_nonce: Nonce,
    certificate_fingerprint: Sha256,
    state: State,
    started_ms: u64,
    received: Vec<u8>,
    outbound: Vec<u8>,
    events: VecDeque<SessionEvent>,
    heartbeat_interval_ms: u64,
    next_heartbeat_ms: u64,
    heartbeat_seq: u32,
    last_heard_ms: u64,
}

impl<S: Signer> Session<S> {
    /// Starts a session on a fresh TLS connection: queues `Hello`.
    ///
    /// `device_nonce` must be fresh random bytes; `certificate_fingerprint` is the SHA-256 of
    /// the certificate the gateway presented in this TLS handshake (after the device verified
    /// it), which the signature binds to.
    pub fn new(
        config: SessionConfig,
        signer: S,
        device_nonce: Nonce,
        certificate_fingerprint: Sha256,
        now_ms: u64,
    ) -> Self {
        let mut session = Self {
            config,
            signer,
            device_nonce,
            certificate_fingerprint,
            state: State::AwaitingChallenge,
            started_ms: now_ms,
            received: Vec::new(),
            outbound: Vec::new(),
            events: VecDeque::new(),
            heartbeat_interval_ms: 0,
            next_heartbeat_ms: 0,
            heartbeat_seq: 0,
            last_heard_ms: now_ms,
        };
        let hello = Frame::Hello(Hello {
            public_key: session.signer.public_key(),
            nonce: session.device_nonce,
            firmware: session.config.firmware.clone(),
            enrollment_token: session.config.enrollment_token.clone(),
        });
        session.queue(&hello);
        session
    }

    /// Feeds bytes read from the connection.
    pub fn handle_input(&mut self, bytes: &[u8], now_ms: u64) {
        if matches!(self.state, State::Closed) {
            return;
        }
        // Exactly what is needed, not double: a small device holds one large frame (an 8 KiB
        // module chunk) here, and the spare half of a doubled buffer is RAM it does not have.
        self.received.reserve_exact(bytes.len());
        self.received.extend_from_slice(bytes);
        loop {
            match codec::decode(&self.received) {
                Ok((frame, used)) => {
                    self.received.drain(..used);
                    self.last_heard_ms = now_ms;
                    self.handle_frame(frame, now_ms);
                    if matches!(self.state, State::Closed) {
                        return;
                    }
                }
                Err(DecodeError::Incomplete { .. }) => return,
                Err(e) => {
                    self.close(CloseReason::ProtocolError(alloc::format!("{e}")));
                    return;
                }
            }
        }
    }

    /// The connection carried bytes from the gateway at `now_ms`, though no whole frame yet
    /// (a large frame trickling in over a slow link): the gateway is alive, so its silence
    /// counts from here.
    pub fn note_activity(&mut self, now_ms: u64) {
        self.last_heard_ms = self.last_heard_ms.max(now_ms);
    }

    /// Lets time pass: sends heartbeats, notices timeouts.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        match self.state {
            State::AwaitingChallenge | State::AwaitingWelcome => {
                if now_ms >= self.started_ms + self.config.auth_timeout_ms {
                    self.close(CloseReason::AuthTimeout);
                }
            }
            State::Established => {
                let silence = self.heartbeat_interval_ms * u64::from(self.config.missed_heartbeats);
                if now_ms >= self.last_heard_ms + silence {
                    self.close(CloseReason::HeartbeatTimeout);
                } else if now_ms >= self.next_heartbeat_ms {
                    self.heartbeat_seq = self.heartbeat_seq.wrapping_add(1);
                    let beat = Frame::Heartbeat(Heartbeat {
                        seq: self.heartbeat_seq,
                        uptime_ms: now_ms,
                    });
                    self.queue(&beat);
                    self.next_heartbeat_ms = now_ms + self.heartbeat_interval_ms;
                }
            }
            State::Closed => {}
        }
    }

    /// When to call [`Session::handle_timeout`] next (`None` once closed).
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::AwaitingChallenge | State::AwaitingWelcome => {
                Some(self.started_ms + self.config.auth_timeout_ms)
            }
            State::Established => {
                let silence = self.heartbeat_interval_ms * u64::from(self.config.missed_heartbeats);
                Some(self.next_heartbeat_ms.min(self.last_heard_ms + silence))
            }
            State::Closed => None,
        }
    }

    /// Bytes to write to the connection (empty when there is nothing to send).
    pub fn take_outbound(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.outbound)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Queues a frame from the application (telemetry, logs, app status, module acks).
    pub fn send(&mut self, frame: &Frame) -> Result<(), SendError> {
        if !matches!(self.state, State::Established) {
            return Err(SendError::NotEstablished);
        }
        codec::encode(frame, &mut self.outbound).map_err(|_| SendError::TooLarge)
    }

    /// Whether the session is authenticated and open.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    fn handle_frame(&mut self, frame: Frame, now_ms: u64) {
        match (&self.state, frame) {
            (State::AwaitingChallenge, Frame::Challenge(challenge)) => {
                let transcript = auth_transcript(
                    &self.device_nonce,
                    &challenge.nonce,
                    &self.certificate_fingerprint,
                    &challenge.gateway_id,
                );
                let auth = Frame::Auth(Auth {
                    signature: self.signer.sign(&transcript),
                });
                self.queue(&auth);
                self.state = State::AwaitingWelcome;
            }
            (State::AwaitingWelcome, Frame::Welcome(welcome)) => {
                self.state = State::Established;
                self.heartbeat_interval_ms = u64::from(welcome.heartbeat_interval_ms.max(100));
                self.next_heartbeat_ms = now_ms + self.heartbeat_interval_ms;
                self.events.push_back(SessionEvent::Established {
                    device_id: welcome.device_id,
                });
            }
            (_, Frame::Rejected(rejected)) => self.close(CloseReason::Rejected(rejected)),
            (_, Frame::GoAway(go_away)) => self.close(CloseReason::GoAway(go_away)),
            (State::Established, Frame::HeartbeatAck(_)) => {}
            (State::Established, frame) => self.events.push_back(SessionEvent::Frame(frame)),
            (state, frame) => {
                let detail = alloc::format!("unexpected {frame:?} while {state:?}");
                self.close(CloseReason::ProtocolError(detail));
            }
        }
    }

    fn queue(&mut self, frame: &Frame) {
        // Protocol frames the session builds itself are far below the limit.
        if codec::encode(frame, &mut self.outbound).is_err() {
            self.close(CloseReason::ProtocolError(String::from(
                "could not encode a protocol frame",
            )));
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if !matches!(self.state, State::Closed) {
            self.state = State::Closed;
            self.events.push_back(SessionEvent::Closed(reason));
        }
    }
}
