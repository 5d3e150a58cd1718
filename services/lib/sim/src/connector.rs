//! TLS connections to a gateway, verified against the Wasmbed CA.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256 as Sha256Hasher};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use wasmbed_schemas::Sha256;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The CA certificate does not parse.
    #[error("CA certificate: {0}")]
    Ca(String),
    /// The server name is not a valid DNS name or IP address.
    #[error("server name {0:?} is invalid")]
    ServerName(String),
    /// TCP or TLS failed (including a gateway certificate the CA did not sign).
    #[error("connecting to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    /// No connection within the timeout.
    #[error("connecting to {0}: timed out")]
    Timeout(SocketAddr),
}

/// Makes TLS 1.3 connections that trust only the given CA.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
}

impl Connector {
    /// Trusts `ca_pem` and expects the gateway's certificate to name `server_name`.
    pub fn new(ca_pem: &str, server_name: &str) -> Result<Self, ConnectError> {
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| ConnectError::Ca(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca).map_err(|e| ConnectError::Ca(e.to_string()))?;
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| ConnectError::Ca(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Like the firmware: every connection is a full handshake.
        config.resumption = rustls::client::Resumption::disabled();
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ConnectError::ServerName(server_name.to_owned()))?;
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The rustls settings every connection uses (for measuring TLS on its own).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.tls.config().clone()
    }

    /// Connects and completes the handshake; returns the stream and the SHA-256 of the
    /// certificate the gateway presented (what the device's signature binds to).
    ///
    /// `source` binds the local end to that address first (several 127.0.0.x sources give a
    /// large fleet more than one address's worth of ephemeral ports).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<(TlsStream<TcpStream>, Sha256), ConnectError> {
        let connect = async {
            let tcp = match source {
                None => TcpStream::connect(addr).await?,
                Some(ip) => {
                    let socket = if ip.is_ipv4() {
                        TcpSocket::new_v4()?
                    } else {
                        TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await?
                }
            };
            tcp.set_nodelay(true)?;
            self.tls.connect(self.server_name.clone(), tcp).await
        };
        let tls = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|e| ConnectError::Io(addr, e))?;
        let fingerprint = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| Sha256(Sha256Hasher::digest(cert).into()))
            .ok_or_else(|| {
                ConnectError::Io(addr, std::io::Error::other("gateway sent no certificate"))
            })?;
        Ok((tls, fingerprint))
    }
}
