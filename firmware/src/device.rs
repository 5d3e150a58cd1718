//! The device: find a gateway, verify it, prove the identity, and run what it deploys.
//!
//! The protocol itself is `wasmbed-device-core`'s ([`Session`], [`Agent`]), shared with the
//! host simulator; this module only moves its bytes over the board's transport and
//! embedded-tls, and logs what happens.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use ed25519_dalek::SigningKey;
use embedded_io::Write as _;
use embedded_tls::blocking::TlsConnection;
use embedded_tls::{TlsConfig, TlsContext};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use wasmbed_device_core::{
    Agent, AgentConfig, Backoff, CloseReason, Session, SessionConfig, SessionEvent,
};
use wasmbed_schemas::frame::{AppState, Frame};
use wasmbed_schemas::provisioning::Provisioning;
use wasmbed_schemas::{Nonce, PublicKey, Sha256};

use crate::board::clock;
use crate::board::this::{self, BoardTransport};
use crate::tls::{self, GatewayVerifier, Provider, READ_BUFFER, Suite, WRITE_BUFFER};
use crate::transport::{Endpoint, Stream, Transport, idle};
use crate::{HEAP, log};

/// What the firmware calls itself in `Hello` and `DeviceInfo`.
pub const FIRMWARE: &str = concat!("wasmbed-firmware ", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Runs the device forever.
pub fn run(provisioning: Provisioning) -> ! {
    clock::set_unix_base(provisioning.provisioned_at);
    let mut seed = provisioning.entropy;
    for (byte, extra) in seed.iter_mut().zip(clock::jitter().to_le_bytes()) {
        *byte ^= extra;
    }
    let mut rng = ChaCha20Rng::from_seed(seed);
    let key = SigningKey::from_bytes(&provisioning.device_secret);
    log!(
        "identity: device {} public key {}",
        if provisioning.device_id.is_empty() {
            "(unnamed)"
        } else {
            &provisioning.device_id
        },
        PublicKey(key.verifying_key().to_bytes())
    );
    let gateways = gateway_addresses(&provisioning.endpoints);
    if gateways.is_empty() {
        log!("provisioning: no usable gateway endpoint (IPv4 host:port needed); halting");
        halt();
    }
    let net = match this::transport(rng.next_u64()) {
        Ok(transport) => RefCell::new(transport),
        Err(e) => {
            log!("net: {e}; halting");
            halt();
        }
    };
    let mut agent = Agent::new(AgentConfig {
        mcu: String::from(this::INFO.mcu),
        firmware: String::from(FIRMWARE),
        app_ram_bytes: this::INFO.app_ram_bytes,
        max_module_len: this::INFO.max_module_len,
        value_stack_bytes: this::INFO.value_stack_bytes,
        status_interval_ms: 5_000,
        publishers: provisioning.publishers.clone(),
        trust_serial: provisioning.trust_serial,
    });
    log!(
        "trust: {} publisher key(s) at serial {}{}",
        provisioning.publishers.len(),
        provisioning.trust_serial,
        if provisioning.publishers.is_empty() {
            " (runs unsigned modules)"
        } else {
            " (runs only signed releases)"
        }
    );
    let session_config = SessionConfig {
        firmware: String::from(FIRMWARE),
        enrollment_token: provisioning.enrollment_token.clone(),
        ..SessionConfig::default()
    };
    let mut read_buffer = vec![0u8; READ_BUFFER];
    let mut write_buffer = vec![0u8; WRITE_BUFFER];
    let mut backoff = Backoff::new(200, 10_000);
    let mut reporter = Reporter::default();
    for attempt in 0usize.. {
        wait_for_address(&net);
        let gateway = gateways[attempt % gateways.len()];
        let connection = Connection {
            net: &net,
            ca_der: &provisioning.ca_der,
            server_name: &provisioning.server_name,
            session_config: &session_config,
            key: &key,
        };
        let ended = connection.run(
            gateway,
            &mut rng,
            &mut agent,
            &mut backoff,
            &mut reporter,
            (&mut read_buffer, &mut write_buffer),
        );
        net.borrow_mut().abort();
        let delay = match ended {
            Some(asked) => asked,
            None => backoff.next_delay_ms(rng.next_u32()),
        };
        log!(
            "gateway: reconnecting in {delay} ms ({})",
            net.borrow().stats()
        );
        sleep(&net, delay);
    }
    halt()
}

fn gateway_addresses(endpoints: &[String]) -> Vec<Endpoint> {
    endpoints
        .iter()
        .filter_map(|endpoint| {
            let parsed = Endpoint::parse(endpoint);
            if parsed.is_none() {
                log!("provisioning: endpoint {endpoint:?} is not ipv4:port; skipped");
            }
            parsed
        })
        .collect()
}

fn wait_for_address(net: &RefCell<BoardTransport>) {
    while !net.borrow().is_ready() {
        if !net.borrow_mut().poll() {
            idle();
        }
    }
}

fn sleep(net: &RefCell<BoardTransport>, ms: u64) {
    let until = clock::now_ms() + ms;
    while clock::now_ms() < until {
        if !net.borrow_mut().poll() {
            idle();
        }
    }
}

fn halt() -> ! {
    loop {
        idle();
    }
}

/// Logs app state changes once each, and the heap's high-water mark with them.
#[derive(Default)]
struct Reporter {
    last: Vec<(String, u32, AppState)>,
}

impl Reporter {
    fn frame(&mut self, frame: &Frame) {
        let Frame::AppStatus(status) = frame else {
            return;
        };
        let key = (
            String::from(status.app_id.as_str()),
            status.version,
            status.state,
        );
        if self.last.contains(&key) {
            return;
        }
        self.last
            .retain(|(app, _, _)| app != status.app_id.as_str());
        self.last.push(key);
        let state = match status.state {
            AppState::Running => "started",
            AppState::Failed if status.refusal.is_some() => "refused",
            AppState::Failed => "trapped",
            AppState::Stopped => "stopped",
            _ => "changed",
        };
        log!(
            "app: {} v{} {} ({} pages, fuel {}){}{} | heap used {} peak {}, stack peak {}",
            status.app_id,
            status.version,
            state,
            status.memory_pages,
            status.fuel_used,
            if status.detail.is_some() { ": " } else { "" },
            status.detail.as_deref().unwrap_or(""),
            HEAP.used(),
            HEAP.peak(),
            crate::stack::high_water()
        );
    }
}

/// One connection to one gateway.
struct Connection<'a> {
    net: &'a RefCell<BoardTransport>,
    ca_der: &'a [u8],
    server_name: &'a str,
    session_config: &'a SessionConfig,
    key: &'a SigningKey,
}

impl Connection<'_> {
    /// Runs a session; returns the delay the gateway asked for, if it did.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        gateway: Endpoint,
        rng: &mut ChaCha20Rng,
        agent: &mut Agent,
        backoff: &mut Backoff,
        reporter: &mut Reporter,
        (read_buffer, write_buffer): (&mut [u8], &mut [u8]),
    ) -> Option<u64> {
        let started = clock::now_ms();
        log!("gateway: connecting to {gateway}");
        if let Err(e) = self.net.borrow_mut().connect(gateway, CONNECT_TIMEOUT_MS) {
            log!("gateway: tcp connect failed: {e:?}");
            return None;
        }
        let mut tls: TlsConnection<'_, Stream<'_, BoardTransport>, Suite> =
            TlsConnection::new(Stream::new(self.net), read_buffer, write_buffer);
        let mut verifier = GatewayVerifier::new(self.ca_der);
        let config = TlsConfig::new().with_server_name(self.server_name);
        let opened = tls.open(TlsContext::new(
            &config,
            Provider {
                rng: &mut *rng,
                verifier: &mut verifier,
            },
        ));
        let fingerprint = match (opened, verifier.fingerprint()) {
            (Ok(()), Some(fingerprint)) => fingerprint,
            (Err(e), _) => {
                log!("tls: handshake failed, gateway not trusted or unreachable: {e:?}");
                return None;
            }
            (Ok(()), None) => {
                log!("tls: handshake completed without a verified certificate; refused");
                return None;
            }
        };
        log!(
            "tls: gateway verified ({}) in {} ms",
            self.server_name,
            clock::now_ms() - started
        );
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let mut session = Session::new(
            self.session_config.clone(),
            self.key.clone(),
            Nonce(nonce),
            Sha256(fingerprint),
            clock::now_ms(),
        );
        // Received bytes not yet read, as of the last look.
        let mut waiting = 0;
        loop {
            let now = clock::now_ms();
            for frame in agent.take_frames() {
                reporter.frame(&frame);
                // Dropped while not established, as on a lost link.
                let _ = session.send(&frame);
            }
            let out = session.take_outbound();
            if !out.is_empty() && (tls.write_all(&out).is_err() || tls.flush().is_err()) {
                log!("gateway: connection lost while writing");
                return None;
            }
            while let Some(event) = session.poll_event() {
                match event {
                    SessionEvent::Established { device_id } => {
                        backoff.reset();
                        log!(
                            "enrolled: session established as {device_id} in {} ms since boot | heap used {} peak {}, stack peak {}",
                            now,
                            HEAP.used(),
                            HEAP.peak(),
                            crate::stack::high_water()
                        );
                        agent.on_established(&device_id);
                    }
                    SessionEvent::Frame(frame) => agent.handle_frame(frame, now),
                    SessionEvent::Closed(reason) => {
                        log!("gateway: session closed: {reason:?}");
                        return match reason {
                            CloseReason::GoAway(go_away) => {
                                Some(u64::from(go_away.reconnect_after_ms))
                            }
                            _ => None,
                        };
                    }
                }
            }
            if agent.has_frames() && session.is_established() {
                continue;
            }
            // Bytes still arriving mean a live gateway, even before they make a whole frame.
            let pending = self.net.borrow_mut().pending();
            if pending > waiting {
                session.note_activity(now);
            }
            waiting = pending;
            let mut header = [0u8; tls::RECORD_HEADER];
            let peeked = self.net.borrow_mut().peek(&mut header);
            if tls::whole_record(&header[..peeked], pending) {
                // A whole record has arrived: reading it does not block.
                match tls.read_buffered() {
                    Ok(mut record) => session.handle_input(record.pop_all(), clock::now_ms()),
                    Err(e) => {
                        log!("gateway: connection lost while reading: {e:?}");
                        return None;
                    }
                }
                waiting = self.net.borrow_mut().pending();
                continue;
            }
            if !self.net.borrow_mut().is_open() {
                log!("gateway: connection closed by the gateway");
                return None;
            }
            session.handle_timeout(now);
            if session.is_established() {
                agent.poll(now);
            }
            if !self.net.borrow_mut().poll() && !agent.has_frames() {
                idle();
            }
        }
    }
}
