use super::*;
use alloc::vec;

/// A line that damages bytes at random (a fixed-seed generator, so runs repeat): flips one
/// in `flip_every` on average, drops one in `drop_every` (0: never). Line noise has no period;
/// a damaged byte every exactly N bytes, N near the window's length, would hit the same frame
/// of every resent window.
struct Line {
    flip_every: u64,
    drop_every: u64,
    state: u64,
}

impl Line {
    fn clean() -> Self {
        Self::noisy(0, 0)
    }

    fn noisy(flip_every: u64, drop_every: u64) -> Self {
        Self {
            flip_every,
            drop_every,
            state: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// One in `every`, at random (never when `every` is 0).
    fn one_in(&mut self, every: u64) -> bool {
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        every != 0 && self.state % every == 0
    }

    fn carry(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            if self.one_in(self.drop_every) {
                continue;
            }
            if self.one_in(self.flip_every) {
                out.push(b ^ 0x20);
            } else {
                out.push(b);
            }
        }
        out
    }
}

/// Sends `data` from `a` to `b` over `line`, reading at most `read_per_round` bytes a round on
/// `b`'s side; returns what `b` read, after at most `rounds` rounds of 10 ms.
fn transfer(data: &[u8], line: &mut Line, read_per_round: usize, rounds: u64) -> (Vec<u8>, Link) {
    let (mut a, mut b) = (Link::new(), Link::new());
    let mut back = Line::clean();
    let mut written = 0;
    let mut got = Vec::new();
    for round in 0..rounds {
        let now = round * 10;
        written += a.write(&data[written..]);
        let mut wire = Vec::new();
        a.transmit(now, &mut wire);
        b.receive(&line.carry(&wire), now);
        let mut buf = vec![0; read_per_round];
        let n = b.read(&mut buf);
        got.extend_from_slice(&buf[..n]);
        let mut wire = Vec::new();
        b.transmit(now, &mut wire);
        a.receive(&back.carry(&wire), now);
        if got.len() == data.len() && a.is_idle() {
            break;
        }
    }
    (got, b)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn a_clean_line_carries_the_stream_in_order() {
    let sent = data(100_000);
    let (got, b) = transfer(&sent, &mut Line::clean(), 4096, 10_000);
    assert_eq!(got, sent);
    assert_eq!(b.damaged(), 0);
}

#[test]
fn a_noisy_line_loses_frames_not_bytes() {
    let sent = data(50_000);
    for (flip, drop) in [(997, 0), (0, 1301), (2003, 1709)] {
        let mut line = Line::noisy(flip, drop);
        let (got, b) = transfer(&sent, &mut line, 4096, 100_000);
        assert_eq!(got.len(), sent.len(), "flip {flip} drop {drop}");
        assert!(got == sent, "flip {flip} drop {drop}: bytes differ");
        assert!(
            b.damaged() > 0,
            "flip {flip} drop {drop}: nothing was damaged"
        );
    }
}

#[test]
fn a_reader_that_falls_behind_closes_the_window_and_loses_nothing() {
    let sent = data(30_000);
    let (mut a, mut b) = (Link::new(), Link::new());
    let mut written = 0;
    for round in 0..200 {
        written += a.write(&sent[written..]);
        let mut wire = Vec::new();
        a.transmit(round * 10, &mut wire);
        b.receive(&wire, round * 10);
        let mut wire = Vec::new();
        b.transmit(round * 10, &mut wire);
        a.receive(&wire, round * 10);
        // Nobody reads on b's side: it holds no more than its buffer.
        assert!(b.readable() <= BUFFER);
    }
    assert!(written < sent.len(), "the writer was never held back");
    let mut got = vec![0; BUFFER];
    let n = b.read(&mut got);
    assert_eq!(&got[..n], &sent[..n]);
}

#[test]
fn open_and_close_reach_the_other_side_and_open_starts_from_zero() {
    let (mut a, mut b) = (Link::new(), Link::new());
    a.write(b"first");
    let mut wire = Vec::new();
    a.transmit(0, &mut wire);
    b.receive(&wire, 0);
    // A new stream: what was in flight is forgotten on both sides.
    a.open();
    a.write(b"second");
    let mut wire = Vec::new();
    a.transmit(10, &mut wire);
    b.receive(&wire, 10);
    assert_eq!(b.event(), Some(LinkEvent::Opened));
    let mut buf = [0; 16];
    let n = b.read(&mut buf);
    assert_eq!(&buf[..n], b"second");
    a.close();
    let mut wire = Vec::new();
    a.transmit(20, &mut wire);
    b.receive(&wire, 20);
    assert_eq!(b.event(), Some(LinkEvent::Closed));
    assert_eq!(b.event(), None);
}

#[test]
fn acknowledgements_cover_what_they_say_and_no_more() {
    // (frames in flight, the ack received, what stays in flight)
    let cases: [(&[u8], u8, &[u8]); 5] = [
        (&[0, 1, 2, 3], 0, &[0, 1, 2, 3]),
        (&[0, 1, 2, 3], 2, &[2, 3]),
        (&[0, 1, 2, 3], 4, &[]),
        (&[254, 255, 0, 1], 0, &[0, 1]),
        // An ack from before the window (a late duplicate) covers nothing.
        (&[10, 11, 12, 13], 9, &[10, 11, 12, 13]),
    ];
    for (in_flight, ack, left) in cases {
        let mut link = Link::new();
        link.unacked = in_flight.iter().map(|&s| (s, vec![s])).collect();
        link.acknowledge(ack, 0);
        let seqs: Vec<u8> = link.unacked.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, left, "in flight {in_flight:?}, ack {ack}");
    }
}

#[test]
fn unacknowledged_frames_are_sent_again_after_the_timeout_only() {
    let mut a = Link::new();
    a.write(b"hello");
    let mut first = Vec::new();
    a.transmit(0, &mut first);
    assert!(!first.is_empty());
    let mut early = Vec::new();
    a.transmit(RETRANSMIT_MS - 1, &mut early);
    assert!(early.is_empty());
    assert_eq!(a.next_wake(), Some(RETRANSMIT_MS));
    let mut again = Vec::new();
    a.transmit(RETRANSMIT_MS, &mut again);
    assert_eq!(again, first);
    // Still nothing back: each wait is twice the last, up to the cap — a slow line is not
    // flooded with copies of what it still carries.
    let mut at = RETRANSMIT_MS;
    let mut waits = Vec::new();
    for _ in 0..7 {
        let next = a.next_wake().unwrap();
        waits.push(next - at);
        let mut wire = Vec::new();
        a.transmit(next - 1, &mut wire);
        assert!(wire.is_empty(), "sent early at {}", next - 1);
        a.transmit(next, &mut wire);
        assert_eq!(wire, first);
        at = next;
    }
    assert_eq!(waits, [400, 800, 1600, 3200, 3200, 3200, 3200]);
    // An acknowledgement that moves the window starts over.
    let mut b = Link::new();
    b.receive(&first, at);
    let mut ack = Vec::new();
    b.transmit(at, &mut ack);
    a.receive(&ack, at + 5);
    a.write(b"more");
    let mut wire = Vec::new();
    a.transmit(at + 5, &mut wire);
    assert_eq!(a.next_wake(), Some(at + 5 + RETRANSMIT_MS));
}

#[test]
fn a_device_asks_for_a_gateway_and_streams_only_after_the_answer() {
    let mut device = Link::new();
    let mut bridge = Link::new();
    // Something of an old stream is still in the bridge's buffer.
    bridge.write(b"stale");
    device.open_to(b"10.0.2.2:4423");
    let mut wire = Vec::new();
    device.transmit(0, &mut wire);
    bridge.receive(&wire, 0);
    assert_eq!(bridge.event(), Some(LinkEvent::Opened));
    assert_eq!(bridge.target(), b"10.0.2.2:4423");
    // The device's Open reset the bridge: nothing stale is sent.
    let mut wire = Vec::new();
    bridge.transmit(1, &mut wire);
    assert!(
        wire.is_empty(),
        "the bridge sent {wire:?} before connecting"
    );
    // Connected: the answer carries no target, and the stream starts from 0 on both sides.
    bridge.open();
    bridge.write(b"server hello");
    let mut wire = Vec::new();
    bridge.transmit(2, &mut wire);
    device.receive(&wire, 2);
    assert_eq!(device.event(), Some(LinkEvent::Opened));
    assert_eq!(device.target(), b"");
    // Peeking leaves the bytes where they are (a device looks at a record's header first).
    let mut header = [0; 6];
    assert_eq!(device.peek(&mut header), 6);
    assert_eq!(&header, b"server");
    assert_eq!(device.readable(), 12);
    let mut buf = [0; 32];
    let n = device.read(&mut buf);
    assert_eq!(&buf[..n], b"server hello");
    // A target longer than a frame is cut, never a broken frame.
    let mut long = Link::new();
    long.open_to(&[b'x'; 400]);
    let mut wire = Vec::new();
    long.transmit(0, &mut wire);
    bridge.receive(&wire, 3);
    assert_eq!(bridge.event(), Some(LinkEvent::Opened));
    assert_eq!(bridge.target().len(), frame::MAX_PAYLOAD);
}
