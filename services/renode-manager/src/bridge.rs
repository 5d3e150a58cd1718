//! The network co-processor of a board without Ethernet: the other end of the firmware's
//! serial link (`wasmbed_device_core::serial_link`), bridging it to TCP connections to the
//! gateways.
//!
//! The board names the gateway endpoint in its `Open`; the bridge connects only to the
//! endpoints the board was provisioned with (a board cannot make the manager dial anything
//! else), answers `Open` once connected or `Close` if not, and then copies bytes both ways. It
//! sees only TLS ciphertext: the session is between the firmware and the gateway. Endpoints
//! are in the guest's view, as on QEMU's user network: `10.0.2.2` is this host's loopback.
//! When the gateway closes the connection the bridge sends `Close`, and the board reconnects.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmbed_device_core::serial_link::{Link, LinkEvent};

use crate::qemu::HOST_FROM_GUEST;
use crate::uart::UartLog;

/// How long a connection to a gateway may take before the board is told `Close`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the bridge connects for a board asking for `target`, if the board may ask for it:
/// only `allowed` endpoints, and the guest's name for the host is the host's loopback.
pub fn resolve(target: &str, allowed: &[String]) -> Option<SocketAddr> {
    if !allowed.iter().any(|a| a == target) {
        return None;
    }
    let mut addr: SocketAddr = target.parse().ok()?;
    if addr.ip().to_string() == HOST_FROM_GUEST {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Some(addr)
}

/// Bridges the board's serial link on `uart` until the UART closes (the emulator ended).
/// What happens is logged to `log` as `bridge: …` lines, beside the board's console.
pub async fn run<U>(uart: U, allowed: Vec<String>, log: Arc<UartLog>)
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut uart_in, mut uart_out) = tokio::io::split(uart);
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut link = Link::new();
    let mut gateway: Option<TcpStream> = None;
    let mut from_uart = [0u8; 1024];
    let mut from_gateway = vec![0u8; 4096];
    let mut to_gateway = vec![0u8; 4096];
    let mut line = Vec::new();
    // Bytes of the current stream: to the gateway, from it.
    let (mut sent, mut received) = (0usize, 0usize);
    loop {
        while let Some(event) = link.event() {
            gateway = None;
            match event {
                LinkEvent::Opened => {
                    (sent, received) = (0, 0);
                    let target = String::from_utf8_lossy(link.target()).into_owned();
                    gateway = connect(&target, &allowed, &log).await;
                    if gateway.is_some() {
                        link.open();
                    } else {
                        link.close();
                    }
                }
                LinkEvent::Closed => log.push(format!(
                    "bridge: the board closed the connection ({sent} bytes to the gateway, {received} from it)"
                )),
            }
        }
        if let Some(stream) = gateway.as_mut() {
            while link.readable() > 0 {
                let n = link.read(&mut to_gateway);
                sent += n;
                if let Err(e) = stream.write_all(&to_gateway[..n]).await {
                    log.push(format!("bridge: writing to the gateway: {e}"));
                    gateway = None;
                    link.close();
                    break;
                }
            }
        }
        line.clear();
        link.transmit(now_ms(), &mut line);
        if !line.is_empty() && uart_out.write_all(&line).await.is_err() {
            return;
        }
        let wake = link.next_wake().map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis(at.saturating_sub(now_ms()))
        });
        let room = link.room().min(from_gateway.len());
        tokio::select! {
            read = uart_in.read(&mut from_uart) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => link.receive(&from_uart[..n], now_ms()),
            },
            read = read_gateway(&mut gateway, &mut from_gateway[..room]), if room > 0 => {
                match read {
                    Ok(0) | Err(_) => {
                        log.push(format!(
                            "bridge: the gateway closed the connection ({sent} bytes to it, {received} from it, {} damaged frames from the board)",
                            link.damaged()
                        ));
                        gateway = None;
                        link.close();
                    }
                    Ok(n) => {
                        received += n;
                        link.write(&from_gateway[..n]);
                    }
                }
            }
            () = tokio::time::sleep(wake) => {}
        }
    }
}

async fn connect(target: &str, allowed: &[String], log: &UartLog) -> Option<TcpStream> {
    let Some(addr) = resolve(target, allowed) else {
        log.push(format!(
            "bridge: refused {target:?}: not a gateway the board was provisioned with"
        ));
        return None;
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            log.push(format!("bridge: connected to {target} ({addr})"));
            Some(stream)
        }
        Ok(Err(e)) => {
            log.push(format!("bridge: connecting to {target} ({addr}): {e}"));
            None
        }
        Err(_) => {
            log.push(format!(
                "bridge: connecting to {target} ({addr}): timed out"
            ));
            None
        }
    }
}

/// Reads from the gateway connection, or waits forever when there is none.
async fn read_gateway(gateway: &mut Option<TcpStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match gateway {
        Some(stream) => stream.read(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
