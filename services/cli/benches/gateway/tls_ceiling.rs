//! The ceiling under the session figure: TLS 1.3 alone, on the same two cores.
//!
//! A bare rustls server with the gateway's own TLS settings (`tls_server_config`: ring, TLS 1.3
//! only, no tickets) and a P-256 certificate issued by a P-256 CA, as enrollment issues them; the
//! client is the simulator's `Connector`, exactly as the devices connect. Each connection is a
//! full handshake over loopback TCP, one application byte from the server, and a close. No
//! challenge, no Ed25519, no NATS: whatever the full path does costs more than this.
//!
//! A second ceiling adds the protocol's own signatures to the same handshakes: the server
//! sends a 32-byte nonce, the client signs it with an Ed25519 key and sends key and signature,
//! the server verifies strictly (as the gateway does) and answers one byte. What the full path
//! does beyond that is enrollment's decision, the downlink subscription and the session event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use wasmbed_sim::Connector;

/// What the ceiling run measured.
pub struct Ceiling {
    /// Full handshakes over loopback per second, client and server in this process.
    pub over_tcp: f64,
    /// The same with a nonce signed by the client and verified by the server.
    pub with_signatures: f64,
    /// Handshakes per second on one core with both ends in memory (no I/O at all).
    pub in_memory_pair: f64,
    /// Of those, the server's side alone, per core.
    pub in_memory_server: f64,
}

struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .expect("names")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        &provider,
    )
    .expect("certificate and key");
    let server = wasmbed_gateway::tls_server_config(Arc::new(
        rustls::sign::SingleCertAndKey::from(certified),
    ))
    .expect("the gateway's TLS settings");
    Pki {
        ca_pem,
        server: Arc::new(server),
    }
}

/// Measures `sessions` handshakes over TCP (`concurrency` in flight, each its own task) and a
/// few thousand in memory.
pub async fn measure(sessions: usize, concurrency: usize) -> Ceiling {
    let pki = pki();
    let connector = Connector::new(&pki.ca_pem, "localhost").expect("connector");
    let (in_memory_pair, in_memory_server) = in_memory(&pki, &connector, 2000);
    let bare = over_tcp(&pki, &connector, sessions, concurrency, false).await;
    let with_signatures = over_tcp(&pki, &connector, sessions, concurrency, true).await;
    Ceiling {
        over_tcp: bare,
        with_signatures,
        in_memory_pair,
        in_memory_server,
    }
}

/// A bare TLS server on loopback and `sessions` handshakes against it; with `signed`, each
/// session also carries the challenge's signature.
async fn over_tcp(
    pki: &Pki,
    connector: &Connector,
    sessions: usize,
    concurrency: usize,
    signed: bool,
) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    if signed {
                        let nonce = [0x5a_u8; 32];
                        let _ = tls.write_all(&nonce).await;
                        let _ = tls.flush().await;
                        let mut answer = [0u8; 96];
                        if tls.read_exact(&mut answer).await.is_err() {
                            return;
                        }
                        let key: [u8; 32] = answer[..32].try_into().expect("32 bytes");
                        let signature =
                            ed25519_dalek::Signature::from_slice(&answer[32..]).expect("64 bytes");
                        let verified = ed25519_dalek::VerifyingKey::from_bytes(&key)
                            .is_ok_and(|key| key.verify_strict(&nonce, &signature).is_ok());
                        assert!(verified, "the client's signature verifies");
                    }
                    let _ = tls.write_all(b"x").await;
                    let _ = tls.flush().await;
                    let mut byte = [0u8; 1];
                    let _ = tls.read(&mut byte).await;
                }
            });
        }
    });
    let rate = handshakes_over_tcp(connector, addr, sessions, concurrency, signed).await;
    server.abort();
    rate
}

async fn handshakes_over_tcp(
    connector: &Connector,
    addr: SocketAddr,
    sessions: usize,
    concurrency: usize,
    signed: bool,
) -> f64 {
    let device = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..sessions {
        let slot = slots.clone().acquire_owned().await.expect("semaphore open");
        let connector = connector.clone();
        let device = device.clone();
        tasks.spawn(async move {
            let (mut tls, _) = connector
                .connect(addr, None, Duration::from_secs(30))
                .await
                .expect("handshake");
            if signed {
                use ed25519_dalek::Signer;
                let mut nonce = [0u8; 32];
                tls.read_exact(&mut nonce)
                    .await
                    .expect("the server's nonce");
                let mut answer = device.verifying_key().to_bytes().to_vec();
                answer.extend_from_slice(&device.sign(&nonce).to_bytes());
                tls.write_all(&answer).await.expect("the signature sent");
                tls.flush().await.expect("flushed");
            }
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.expect("the server's byte");
            drop(slot);
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("handshake task");
    }
    sessions as f64 / started.elapsed().as_secs_f64()
}

/// Both ends in memory on this thread: (pairs per second, server side alone per second).
fn in_memory(pki: &Pki, connector: &Connector, count: usize) -> (f64, f64) {
    let client_config = connector.client_config();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut server_time = Duration::ZERO;
    let started = Instant::now();
    for _ in 0..count {
        let mut client = rustls::ClientConnection::new(client_config.clone(), name.clone())
            .expect("client connection");
        let timed = Instant::now();
        let mut server = rustls::ServerConnection::new(pki.server.clone()).expect("server");
        server_time += timed.elapsed();
        let mut wire = Vec::new();
        while client.is_handshaking() || server.is_handshaking() {
            wire.clear();
            while client.wants_write() {
                client.write_tls(&mut wire).expect("client writes");
            }
            let timed = Instant::now();
            if !wire.is_empty() {
                server.read_tls(&mut &wire[..]).expect("server reads");
                server.process_new_packets().expect("server handshake");
            }
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).expect("server writes");
            }
            server_time += timed.elapsed();
            if !wire.is_empty() {
                client.read_tls(&mut &wire[..]).expect("client reads");
                client.process_new_packets().expect("client handshake");
            }
        }
    }
    (
        count as f64 / started.elapsed().as_secs_f64(),
        count as f64 / server_time.as_secs_f64(),
    )
}
