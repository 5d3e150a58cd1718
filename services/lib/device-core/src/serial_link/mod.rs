//! A byte stream over a serial line, for boards whose only way out is a UART to a network
//! co-processor (the renode-manager's bridge plays that part in emulation). The TLS stream
//! runs over it end to end; the link sees only ciphertext.
//!
//! The line: COBS-framed [`frame`]s, each checked by a CRC-16, each delimited by `0x00`, so a
//! lost or changed byte costs one frame, never the framing. Flow control and recovery:
//! go-back-N with a window of [`WINDOW`] data frames; every frame carries a cumulative
//! acknowledgement (the next data frame expected); unacknowledged frames are sent again after
//! [`RETRANSMIT_MS`], and each time again without progress the wait doubles, up to
//! [`MAX_RETRANSMIT_MS`] (a slow line is not flooded with copies of what it still carries;
//! an acknowledgement that moves the window starts over). A receiver whose buffer is full takes no more frames, so the sender's
//! window closes: no byte is dropped for lack of room. `Open` starts a stream (both sides from
//! 0), `Close` ends it.
//!
//! Connecting, as a device asks its network co-processor: the device sends `Open` carrying
//! the gateway endpoint it wants (`host:port`, [`Link::open_to`]) and waits; the bridge answers
//! with its own `Open` once its TCP connection is up, or `Close` if it will not or cannot
//! connect. Only then does either side send stream bytes, so nothing of an earlier stream
//! can be mistaken for the new one.
//!
//! Sans-IO like the rest of this crate: bytes from the UART go to [`Link::receive`], bytes for
//! the UART come from [`Link::transmit`], and the clock is the caller's.

pub mod frame;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use frame::{Frame, Kind};

/// Data frames in flight before an acknowledgement.
pub const WINDOW: usize = 4;
/// How long an unacknowledged frame waits before the window is sent again.
pub const RETRANSMIT_MS: u64 = 200;
/// The longest wait between two sendings of the window while nothing is acknowledged.
pub const MAX_RETRANSMIT_MS: u64 = 3_200;
/// Bytes written and not yet framed, and bytes received and not yet read: the link's memory,
/// bounded (a 192 KiB board pays it once). Above one whole TLS record from the gateway (2 KiB
/// of plaintext and its overhead), so a device can wait for a record to be complete before it
/// reads it, instead of blocking in the read while the rest trickles in.
pub const BUFFER: usize = 4 * 1024;

/// What happened to the stream, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// The other side began a stream.
    Opened,
    /// The other side ended it.
    Closed,
}

/// One end of the link.
#[derive(Debug, Default)]
pub struct Link {
    pending: VecDeque<u8>,
    unacked: VecDeque<(u8, Vec<u8>)>,
    next_seq: u8,
    window_sent_ms: u64,
    /// Sendings of the window again since the last progress (each doubles the wait).
    fruitless: u32,
    expected: u8,
    received: VecDeque<u8>,
    ack_due: bool,
    control: VecDeque<(Kind, Vec<u8>)>,
    target: Vec<u8>,
    inbox: Vec<u8>,
    events: VecDeque<LinkEvent>,
    damaged: u32,
}

impl Link {
    /// A link with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins a new stream: forgets everything in flight and tells the other side.
    pub fn open(&mut self) {
        self.open_to(&[]);
    }

    /// Begins a new stream to `target` (at most [`frame::MAX_PAYLOAD`] bytes are sent).
    pub fn open_to(&mut self, target: &[u8]) {
        self.reset();
        let target = &target[..target.len().min(frame::MAX_PAYLOAD)];
        self.control.push_back((Kind::Open, target.to_vec()));
    }

    /// What the other side's last `Open` asked to be connected to (empty: an answer).
    pub fn target(&self) -> &[u8] {
        &self.target
    }

    /// Ends the stream (after what was written so far has been framed).
    pub fn close(&mut self) {
        self.control.push_back((Kind::Close, Vec::new()));
    }

    /// Takes as many of `bytes` as there is room for; returns how many.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.pending.extend(&bytes[..n]);
        n
    }

    /// How many more bytes [`Link::write`] takes now.
    pub fn room(&self) -> usize {
        BUFFER - self.pending.len()
    }

    /// Moves received stream bytes into `buf`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.received.len());
        for (slot, byte) in buf.iter_mut().zip(self.received.drain(..n)) {
            *slot = byte;
        }
        n
    }

    /// Copies the first received bytes into `buf` without taking them; returns how many.
    pub fn peek(&self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.received.len());
        for (slot, byte) in buf.iter_mut().zip(self.received.iter()) {
            *slot = *byte;
        }
        n
    }

    /// Bytes received and not yet read.
    pub fn readable(&self) -> usize {
        self.received.len()
    }

    /// Whether everything written has been acknowledged.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.unacked.is_empty()
    }

    /// The next event, if any.
    pub fn event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Frames dropped as damaged so far.
    pub fn damaged(&self) -> u32 {
        self.damaged
    }

    /// Bytes read from the line, at `now_ms`.
    pub fn receive(&mut self, bytes: &[u8], now_ms: u64) {
        for &byte in bytes {
            if byte != 0 {
                // A run longer than any frame is noise; keep only its end.
                if self.inbox.len() >= frame::MAX_ENCODED {
                    self.inbox.clear();
                    self.damaged = self.damaged.saturating_add(1);
                }
                self.inbox.push(byte);
                continue;
            }
            if self.inbox.is_empty() {
                continue;
            }
            let decoded = frame::decode(&self.inbox);
            self.inbox.clear();
            match decoded {
                Ok(frame) => self.handle(frame, now_ms),
                Err(_) => self.damaged = self.damaged.saturating_add(1),
            }
        }
    }

    fn handle(&mut self, frame: Frame, now_ms: u64) {
        match frame.kind {
            Kind::Open => {
                self.reset();
                self.target = frame.payload;
                self.events.push_back(LinkEvent::Opened);
                return;
            }
            Kind::Close => self.events.push_back(LinkEvent::Closed),
            Kind::Data => {
                let fits = self.received.len() + frame.payload.len() <= BUFFER;
                if frame.seq == self.expected && fits {
                    self.received.extend(&frame.payload);
                    self.expected = self.expected.wrapping_add(1);
                }
                // In order or not, the other side learns what is expected next.
                self.ack_due = true;
            }
            Kind::Ack => {}
        }
        self.acknowledge(frame.ack, now_ms);
    }

    /// Drops the frames `ack` (the next one the other side expects) covers.
    fn acknowledge(&mut self, ack: u8, now_ms: u64) {
        let mut progressed = false;
        while let Some((seq, _)) = self.unacked.front() {
            let covered = usize::from(ack.wrapping_sub(*seq));
            if covered == 0 || covered > WINDOW {
                break;
            }
            self.unacked.pop_front();
            progressed = true;
        }
        if progressed {
            self.window_sent_ms = now_ms;
            self.fruitless = 0;
        }
    }

    /// How long the window waits for an acknowledgement before it goes again.
    fn retransmit_wait(&self) -> u64 {
        RETRANSMIT_MS
            .saturating_mul(1 << self.fruitless.min(16))
            .min(MAX_RETRANSMIT_MS)
    }

    /// Appends what should go on the line now to `out`: control frames, the window again when
    /// its time is up, new data frames while the window has room, an acknowledgement if one is
    /// owed and no data frame carried it.
    pub fn transmit(&mut self, now_ms: u64, out: &mut Vec<u8>) {
        while let Some((kind, payload)) = self.control.pop_front() {
            self.frame(kind, 0, payload, out);
        }
        if !self.unacked.is_empty() && now_ms >= self.window_sent_ms + self.retransmit_wait() {
            let window: Vec<(u8, Vec<u8>)> = self.unacked.iter().cloned().collect();
            for (seq, payload) in window {
                self.frame(Kind::Data, seq, payload, out);
            }
            self.window_sent_ms = now_ms;
            self.fruitless = self.fruitless.saturating_add(1);
        }
        while self.unacked.len() < WINDOW && !self.pending.is_empty() {
            let n = self.pending.len().min(frame::MAX_PAYLOAD);
            let payload: Vec<u8> = self.pending.drain(..n).collect();
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            if self.unacked.is_empty() {
                self.window_sent_ms = now_ms;
            }
            self.unacked.push_back((seq, payload.clone()));
            self.frame(Kind::Data, seq, payload, out);
        }
        if self.ack_due {
            self.frame(Kind::Ack, 0, Vec::new(), out);
        }
    }

    /// When [`Link::transmit`] has something to send again without new input (a retransmit).
    pub fn next_wake(&self) -> Option<u64> {
        (!self.unacked.is_empty()).then_some(self.window_sent_ms + self.retransmit_wait())
    }

    fn frame(&mut self, kind: Kind, seq: u8, payload: Vec<u8>, out: &mut Vec<u8>) {
        let frame = Frame {
            kind,
            seq,
            ack: self.expected,
            payload,
        };
        frame::encode(&frame, out);
        self.ack_due = false;
    }

    fn reset(&mut self) {
        let damaged = self.damaged;
        *self = Self {
            damaged,
            ..Self::default()
        };
    }
}

#[cfg(test)]
mod tests;
