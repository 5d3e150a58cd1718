//! How the device reaches a gateway, whatever carries the bytes: a [`Transport`] opens one
//! connection at a time to an [`Endpoint`], and [`Stream`] turns it into the blocking
//! `embedded_io` stream the TLS client reads and writes. Ethernet boards implement it over
//! smoltcp (`net`), serial boards over the serial link to a network co-processor (`serial`).

use alloc::string::String;
use core::cell::RefCell;

use crate::board::clock;

/// A read or write that makes no progress this long ends the connection.
pub const IO_TIMEOUT_MS: u64 = 30_000;

/// A gateway's IPv4 address and port, as the provisioning block names it (`a.b.c.d:port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The address.
    pub ip: [u8; 4],
    /// The TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `a.b.c.d:port`.
    pub fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        let mut ip = [0u8; 4];
        let mut parts = host.split('.');
        for octet in &mut ip {
            *octet = parts.next()?.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            ip,
            port: port.parse().ok()?,
        })
    }
}

impl core::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.ip;
        write!(f, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

/// Why a transport could not carry a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// Not ready for connections (no DHCP lease yet).
    #[cfg_attr(
        not(board_family = "mps2"),
        expect(dead_code, reason = "only DHCP waits")
    )]
    NotReady,
    /// The peer refused or reset the connection, or it closed.
    Closed,
    /// No progress within the timeout.
    TimedOut,
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TransportError::NotReady => "not ready yet",
            TransportError::Closed => "connection closed",
            TransportError::TimedOut => "timed out",
        })
    }
}

impl core::error::Error for TransportError {}

impl embedded_io::Error for TransportError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            TransportError::NotReady => embedded_io::ErrorKind::NotConnected,
            TransportError::Closed => embedded_io::ErrorKind::ConnectionReset,
            TransportError::TimedOut => embedded_io::ErrorKind::TimedOut,
        }
    }
}

/// One connection at a time to a gateway, polled (no OS, no threads).
pub trait Transport {
    /// Moves bytes in and out; returns whether anything happened.
    fn poll(&mut self) -> bool;
    /// Whether a connection can be opened now (an Ethernet board needs its DHCP lease).
    fn is_ready(&self) -> bool;
    /// Opens a connection to `endpoint`, waiting up to `timeout_ms` for it.
    fn connect(&mut self, endpoint: Endpoint, timeout_ms: u64) -> Result<(), TransportError>;
    /// Drops the connection (the session above it is already over).
    fn abort(&mut self);
    /// Bytes received and not yet read.
    fn pending(&mut self) -> usize;
    /// Copies the first received bytes into `buf` without taking them; returns how many.
    fn peek(&mut self, buf: &mut [u8]) -> usize;
    /// Whether the connection can still carry data.
    fn is_open(&mut self) -> bool;
    /// Reads what has arrived into `buf`: `Ok(0)` when nothing has yet.
    fn try_read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError>;
    /// Takes what fits of `buf` now: `Ok(0)` when nothing does yet.
    fn try_write(&mut self, buf: &[u8]) -> Result<usize, TransportError>;
    /// Counters for the log line after a connection ends.
    fn stats(&self) -> String;
}

/// Waits for the next interrupt (SysTick, at most a millisecond; a serial board's receiver).
pub fn idle() {
    cortex_m::asm::wfi();
}

/// The open connection as a blocking stream. It borrows the transport through a `RefCell` so
/// the main loop can still poll it and check for input between reads.
pub struct Stream<'t, T> {
    transport: &'t RefCell<T>,
}

impl<'t, T: Transport> Stream<'t, T> {
    /// The connection [`Transport::connect`] opened.
    pub fn new(transport: &'t RefCell<T>) -> Self {
        Self { transport }
    }
}

impl<T> embedded_io::ErrorType for Stream<'_, T> {
    type Error = TransportError;
}

impl<T: Transport> Stream<'_, T> {
    /// Calls `step` until it moves bytes (or there were none to move), polling and sleeping
    /// between tries, for at most [`IO_TIMEOUT_MS`].
    fn until_progress(
        &mut self,
        nothing_to_move: bool,
        mut step: impl FnMut(&mut T) -> Result<usize, TransportError>,
    ) -> Result<usize, TransportError> {
        let deadline = clock::now_ms() + IO_TIMEOUT_MS;
        loop {
            let n = step(&mut self.transport.borrow_mut())?;
            if n > 0 || nothing_to_move {
                return Ok(n);
            }
            if clock::now_ms() >= deadline {
                return Err(TransportError::TimedOut);
            }
            if !self.transport.borrow_mut().poll() {
                idle();
            }
        }
    }
}

impl<T: Transport> embedded_io::Read for Stream<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.until_progress(buf.is_empty(), |t| t.try_read(buf))
    }
}

impl<T: Transport> embedded_io::Write for Stream<'_, T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        self.until_progress(buf.is_empty(), |t| t.try_write(buf))
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        // The bytes are in the transport's buffer; the main loop's polls send them.
        self.transport.borrow_mut().poll();
        Ok(())
    }
}
