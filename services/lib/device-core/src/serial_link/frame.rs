//! One frame on the serial line: `kind`, `seq`, `ack`, up to [`MAX_PAYLOAD`] bytes, and a
//! CRC-16/CCITT-FALSE (big-endian) over all of them; COBS-encoded so that `0x00` never occurs
//! inside, and ended by one `0x00`.

use alloc::vec::Vec;

/// The most stream bytes one frame carries.
pub const MAX_PAYLOAD: usize = 240;
/// The longest encoded frame, delimiter included: header 3 + payload + CRC 2, COBS overhead 2.
pub const MAX_ENCODED: usize = 3 + MAX_PAYLOAD + 2 + 2 + 1;

/// What a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stream bytes, numbered by `seq`.
    Data,
    /// Nothing but the acknowledgement in `ack`.
    Ack,
    /// Begin a new stream (the bridge opens its TCP connection); both sides start from 0.
    Open,
    /// The stream ended (the TCP connection closed, or the device hangs up).
    Close,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Data => 1,
            Kind::Ack => 2,
            Kind::Open => 3,
            Kind::Close => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Data),
            2 => Some(Kind::Ack),
            3 => Some(Kind::Open),
            4 => Some(Kind::Close),
            _ => None,
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is for.
    pub kind: Kind,
    /// Its number (data frames; 0 otherwise).
    pub seq: u8,
    /// The next data frame the sender expects from the other side.
    pub ack: u8,
    /// Stream bytes (data frames only).
    pub payload: Vec<u8>,
}

/// Why bytes between two delimiters are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The COBS encoding is broken (a code byte points past the end, or a stray zero).
    Encoding,
    /// Shorter than a header and a CRC, or a payload over [`MAX_PAYLOAD`].
    Length,
    /// The CRC does not match: a byte was lost or changed on the line.
    Checksum,
    /// A kind this side does not know.
    Kind(u8),
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xffff, no reflection, no final xor).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Appends `frame`, encoded and delimited, to `out`. A payload over [`MAX_PAYLOAD`] is cut.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let payload = &frame.payload[..frame.payload.len().min(MAX_PAYLOAD)];
    let mut body = Vec::with_capacity(5 + payload.len());
    body.extend_from_slice(&[frame.kind.byte(), frame.seq, frame.ack]);
    body.extend_from_slice(payload);
    let crc = crc16(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    cobs_encode(&body, out);
    out.push(0);
}

/// Decodes the bytes between two delimiters (without them).
pub fn decode(encoded: &[u8]) -> Result<Frame, FrameError> {
    let body = cobs_decode(encoded)?;
    if body.len() < 5 || body.len() > 5 + MAX_PAYLOAD {
        return Err(FrameError::Length);
    }
    let (content, crc) = body.split_at(body.len() - 2);
    if crc16(content) != u16::from_be_bytes([crc[0], crc[1]]) {
        return Err(FrameError::Checksum);
    }
    let kind = Kind::from_byte(content[0]).ok_or(FrameError::Kind(content[0]))?;
    Ok(Frame {
        kind,
        seq: content[1],
        ack: content[2],
        payload: content[3..].to_vec(),
    })
}

fn cobs_encode(bytes: &[u8], out: &mut Vec<u8>) {
    let mut code_at = out.len();
    out.push(0);
    let mut code: u8 = 1;
    for &b in bytes {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xff {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
}

fn cobs_decode(encoded: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut at = 0;
    while at < encoded.len() {
        let code = usize::from(encoded[at]);
        if code == 0 || at + code > encoded.len() {
            return Err(FrameError::Encoding);
        }
        let run = &encoded[at + 1..at + code];
        if run.contains(&0) {
            return Err(FrameError::Encoding);
        }
        out.extend_from_slice(run);
        at += code;
        if code < 0xff && at < encoded.len() {
            out.push(0);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn the_crc_is_ccitt_false() {
        // The check value of CRC-16/CCITT-FALSE.
        assert_eq!(crc16(b"123456789"), 0x29b1);
    }

    #[test]
    fn frames_round_trip_with_zeros_and_long_runs_and_never_contain_a_zero() {
        for payload in [
            vec![],
            vec![0],
            vec![0, 0, 0],
            vec![0x11; MAX_PAYLOAD],
            (0..=239u8).collect(),
        ] {
            let frame = Frame {
                kind: Kind::Data,
                seq: 7,
                ack: 0,
                payload,
            };
            let mut out = Vec::new();
            encode(&frame, &mut out);
            assert!(out.len() <= MAX_ENCODED, "{}", out.len());
            assert_eq!(out.last(), Some(&0));
            assert!(!out[..out.len() - 1].contains(&0));
            assert_eq!(decode(&out[..out.len() - 1]), Ok(frame));
        }
    }

    #[test]
    fn cobs_round_trips_runs_longer_than_one_block() {
        for bytes in [vec![7u8; 253], vec![7u8; 254], vec![7u8; 600], vec![0u8; 5]] {
            let mut out = Vec::new();
            cobs_encode(&bytes, &mut out);
            assert!(!out.contains(&0));
            assert_eq!(cobs_decode(&out), Ok(bytes));
        }
    }

    #[test]
    fn damaged_frames_are_refused_by_kind() {
        let frame = Frame {
            kind: Kind::Ack,
            seq: 0,
            ack: 3,
            payload: vec![],
        };
        let mut good = Vec::new();
        encode(&frame, &mut good);
        good.pop();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let mut unknown = Vec::new();
        let mut body = vec![9, 0, 0];
        let crc = crc16(&body);
        body.extend_from_slice(&crc.to_be_bytes());
        cobs_encode(&body, &mut unknown);
        let cases: [(&[u8], FrameError); 5] = [
            (&flipped, FrameError::Checksum),
            (&good[..good.len() - 1], FrameError::Encoding),
            (&[0x02, 0x01], FrameError::Length),
            (&[0x05, 1, 0], FrameError::Encoding),
            (&unknown, FrameError::Kind(9)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode(bytes), Err(expected), "{bytes:?}");
        }
    }
}
