//! Framing: `u32` big-endian body length, then the body: one protocol-version byte and one
//! MessagePack value (rmp-serde's compact form: structs as arrays, enum variants by name),
//! written and read by [`super::msgpack`], the same code on the host and on the device.
//!
//! [`decode`] separates "need more bytes" ([`DecodeError::Incomplete`], not a failure) from the
//! ways a frame can be bad, each its own variant, and never panics. The length prefix is checked
//! against [`MAX_FRAME_LEN`] before anything else, and the body is [`scan`]ned before the
//! allocating parse, so no frame can make the decoder allocate more than its own size.

use alloc::vec::Vec;

use super::msgpack;
use super::scan::{ScanError, scan};
use super::{Frame, MAX_FRAME_LEN, PROTOCOL_VERSION};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why bytes could not be read as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a failure: the buffer holds only part of a frame; read at least `needed` more bytes.
    #[error("incomplete frame: {needed} more bytes needed")]
    Incomplete {
        /// Bytes still missing.
        needed: usize,
    },
    /// The length prefix announces a body over [`MAX_FRAME_LEN`].
    #[error("frame body of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    Oversized {
        /// The announced body length.
        len: usize,
    },
    /// The version byte is not one this side speaks.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The body ends before its MessagePack value does (or is empty).
    #[error("frame body is truncated")]
    Truncated,
    /// The body is not a well-formed frame.
    #[error("malformed frame: {0}")]
    Malformed(Malformation),
}

/// Ways a complete body can still be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformation {
    /// MessagePack that no encoder writes (a reserved marker).
    #[error("reserved MessagePack marker")]
    ReservedMarker,
    /// Nesting deeper than any frame needs.
    #[error("nesting too deep")]
    TooDeep,
    /// Bytes after the value.
    #[error("trailing bytes after the frame")]
    TrailingBytes,
    /// Well-formed MessagePack that is not any frame (unknown variant, wrong field types, invalid
    /// id or UTF-8).
    #[error("not a valid frame")]
    NotAFrame,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded body would exceed [`MAX_FRAME_LEN`].
    #[error("frame body of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    Oversized {
        /// The encoded body length.
        len: usize,
    },
    /// The serializer refused the value.
    #[error("frame could not be serialized")]
    Unserializable,
}

/// Appends `frame`, with its length prefix, to `out`. On error `out` is left as it was.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(PROTOCOL_VERSION);
    if msgpack::to_vec(frame, out).is_err() {
        out.truncate(start);
        return Err(EncodeError::Unserializable);
    }
    let len = out.len() - start - LEN_PREFIX;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::Oversized { len });
    }
    // len <= MAX_FRAME_LEN, which fits a u32.
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// `frame` with its length prefix, as a new buffer.
pub fn encode_to_vec(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    encode(frame, &mut out)?;
    Ok(out)
}

/// The total length (prefix and body) of the frame at the start of `buf`, once all of it is
/// there; cheap, for a reader deciding whether to read more.
pub fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Err(DecodeError::Incomplete {
            needed: LEN_PREFIX - buf.len(),
        });
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::Oversized { len });
    }
    let total = LEN_PREFIX + len;
    if buf.len() < total {
        return Err(DecodeError::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok(total)
}

/// Decodes the frame at the start of `buf`; returns it and how many bytes it took.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    let total = frame_len(buf)?;
    let body = &buf[LEN_PREFIX..total];
    let (&version, value) = body.split_first().ok_or(DecodeError::Truncated)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    scan(value).map_err(|e| match e {
        ScanError::Truncated => DecodeError::Truncated,
        ScanError::ReservedMarker => DecodeError::Malformed(Malformation::ReservedMarker),
        ScanError::TooDeep => DecodeError::Malformed(Malformation::TooDeep),
        ScanError::TrailingBytes => DecodeError::Malformed(Malformation::TrailingBytes),
    })?;
    let frame = msgpack::from_scanned(value)
        .map_err(|_| DecodeError::Malformed(Malformation::NotAFrame))?;
    Ok((frame, total))
}
