//! The device's transport on a board without Ethernet: the serial link of
//! `wasmbed_device_core::serial_link` over a UART to a network co-processor, which holds the
//! TCP connection. The device names the gateway endpoint in its `Open`; the co-processor
//! answers `Open` when connected or `Close` when not. TLS runs over the link end to end.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use wasmbed_device_core::serial_link::{Link, LinkEvent};

use crate::board::clock;
use crate::transport::{Endpoint, Transport, TransportError, idle};

/// A UART as the link needs it.
pub trait SerialPort {
    /// Sends every byte, blocking while the transmitter is busy.
    fn write_all(&mut self, bytes: &[u8]);
    /// Moves the bytes received so far into `out`; returns how many.
    fn read_available(&mut self, out: &mut [u8]) -> usize;
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection.
    Closed,
    /// `Open` sent, no answer yet.
    Opening,
    /// The co-processor answered: stream bytes flow.
    Open,
}

/// The link, its UART, and the connection's state.
pub struct SerialTransport<P> {
    port: P,
    link: Link,
    state: State,
    line: Vec<u8>,
    opened: u32,
    refused: u32,
}

impl<P: SerialPort> SerialTransport<P> {
    /// A transport with no connection.
    pub fn new(port: P) -> Self {
        Self {
            port,
            link: Link::new(),
            state: State::Closed,
            line: Vec::with_capacity(1024),
            opened: 0,
            refused: 0,
        }
    }

    fn events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.link.event() {
            any = true;
            self.state = match (event, self.state) {
                (LinkEvent::Opened, State::Opening) => {
                    self.opened += 1;
                    State::Open
                }
                (LinkEvent::Closed, State::Opening) => {
                    self.refused += 1;
                    State::Closed
                }
                // An answer nobody asked for, or the end of the stream.
                _ => State::Closed,
            };
        }
        any
    }
}

impl<P: SerialPort> Transport for SerialTransport<P> {
    fn poll(&mut self) -> bool {
        let now = clock::now_ms();
        let mut buf = [0u8; 256];
        let mut progressed = false;
        loop {
            let n = self.port.read_available(&mut buf);
            if n == 0 {
                break;
            }
            self.link.receive(&buf[..n], now);
            progressed = true;
        }
        progressed |= self.events();
        self.line.clear();
        self.link.transmit(now, &mut self.line);
        if !self.line.is_empty() {
            self.port.write_all(&self.line);
            progressed = true;
        }
        progressed
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn connect(&mut self, endpoint: Endpoint, timeout_ms: u64) -> Result<(), TransportError> {
        self.link.open_to(format!("{endpoint}").as_bytes());
        self.state = State::Opening;
        let deadline = clock::now_ms() + timeout_ms;
        loop {
            if !self.poll() {
                idle();
            }
            match self.state {
                State::Open => return Ok(()),
                State::Closed => return Err(TransportError::Closed),
                State::Opening if clock::now_ms() >= deadline => {
                    self.abort();
                    return Err(TransportError::TimedOut);
                }
                State::Opening => {}
            }
        }
    }

    fn abort(&mut self) {
        if self.state != State::Closed {
            self.link.close();
            self.state = State::Closed;
        }
        self.poll();
    }

    fn pending(&mut self) -> usize {
        self.link.readable()
    }

    fn peek(&mut self, buf: &mut [u8]) -> usize {
        self.link.peek(buf)
    }

    fn is_open(&mut self) -> bool {
        self.state == State::Open
    }

    fn try_read(&mut self, buf: &mut [u8]) -> Result<usize, TransportError> {
        self.poll();
        let n = self.link.read(buf);
        if n == 0 && self.state != State::Open {
            return Err(TransportError::Closed);
        }
        // Reading made room: the acknowledgement that reopens the window goes now.
        self.poll();
        Ok(n)
    }

    fn try_write(&mut self, buf: &[u8]) -> Result<usize, TransportError> {
        if self.state != State::Open {
            return Err(TransportError::Closed);
        }
        let n = self.link.write(buf);
        self.poll();
        Ok(n)
    }

    fn stats(&self) -> String {
        format!(
            "link streams opened {}, refused {}, damaged frames {}",
            self.opened,
            self.refused,
            self.link.damaged()
        )
    }
}
