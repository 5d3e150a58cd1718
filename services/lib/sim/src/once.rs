//! One connection and authentication, without the reconnect loop: for tests that then speak
//! raw bytes, and for benchmarks that count handshakes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use wasmbed_device_core::{CloseReason, Session, SessionConfig, SessionEvent};
use wasmbed_schemas::{DeviceId, Nonce, Sha256};

use crate::{ConnectError, Connector};

/// An authenticated connection.
pub struct Authenticated {
    /// The TLS stream, positioned after `Welcome`.
    pub stream: TlsStream<TcpStream>,
    /// The id the gateway welcomed the device with.
    pub device_id: DeviceId,
    /// The session, for callers that keep speaking the protocol.
    pub session: Session<SigningKey>,
    /// SHA-256 of the gateway's certificate (the channel binding the device signed).
    pub fingerprint: Sha256,
}

/// Why authentication did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthenticateError {
    /// No TLS connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection failed during authentication.
    #[error("during authentication: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway refused or the session closed.
    #[error("session closed: {0:?}")]
    Closed(CloseReason),
    /// The gateway closed the connection without a word.
    #[error("the gateway closed the connection")]
    Eof,
    /// No welcome within the timeout.
    #[error("no welcome within {0:?}")]
    Timeout(Duration),
}

/// Connects to `addr` and authenticates with `key`.
pub async fn authenticate(
    connector: &Connector,
    addr: SocketAddr,
    source: Option<IpAddr>,
    key: SigningKey,
    config: SessionConfig,
    timeout: Duration,
) -> Result<Authenticated, AuthenticateError> {
    let (mut stream, fingerprint) = connector.connect(addr, source, timeout).await?;
    let mut session = Session::new(
        config,
        key,
        Nonce(crate::device::random_bytes()),
        fingerprint,
        0,
    );
    let handshake = async {
        let mut buf = [0u8; 2048];
        if let Some(n) = crate::device::already_received(&mut stream, &mut buf) {
            session.handle_input(&buf[..n], 0);
        }
        loop {
            let out = session.take_outbound();
            if !out.is_empty() {
                stream.write_all(&out).await?;
                stream.flush().await?;
            }
            match session.poll_event() {
                Some(SessionEvent::Established { device_id }) => return Ok(device_id),
                Some(SessionEvent::Closed(reason)) => {
                    return Err(AuthenticateError::Closed(reason));
                }
                Some(SessionEvent::Frame(_)) | None => {}
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(AuthenticateError::Eof);
            }
            session.handle_input(&buf[..n], 0);
        }
    };
    let device_id = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| AuthenticateError::Timeout(timeout))??;
    Ok(Authenticated {
        stream,
        device_id,
        session,
        fingerprint,
    })
}
