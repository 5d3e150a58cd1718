//! A cheap structural check of one MessagePack value, run before the allocating parse.
//!
//! It walks the markers without allocating or recursing and refuses any length or element count
//! that claims more bytes than the buffer holds. After a successful scan, decoding can allocate
//! at most as many bytes as the buffer is long for strings and binaries, so a 20-byte frame
//! cannot make the decoder reserve gigabytes.

/// How deep arrays and maps may nest. Frames need three levels; the rest is slack.
pub const MAX_DEPTH: usize = 8;

/// Why a buffer is not exactly one MessagePack value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The bytes end before the value does (a length or count claims more than is there).
    #[error("the value is cut short")]
    Truncated,
    /// Marker `0xc1`, which MessagePack never uses.
    #[error("reserved marker 0xc1")]
    ReservedMarker,
    /// Arrays or maps nest deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes follow the value.
    #[error("bytes follow the value")]
    TrailingBytes,
}

/// What one marker (with its length field) says: how many header bytes, how many payload bytes
/// follow, and how many child values a container holds.
struct Header {
    header_len: usize,
    payload_len: usize,
    children: u64,
}

fn be_len(buf: &[u8], at: usize, width: usize) -> Result<u64, ScanError> {
    let bytes = buf.get(at..at + width).ok_or(ScanError::Truncated)?;
    Ok(bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
}

fn header(buf: &[u8], pos: usize) -> Result<Header, ScanError> {
    let marker = *buf.get(pos).ok_or(ScanError::Truncated)?;
    let fixed = |payload_len| Header {
        header_len: 1,
        payload_len,
        children: 0,
    };
    // A length-prefixed string, binary or extension: `width` length bytes, then `extra` bytes
    // (the extension type), then the payload.
    let sized = |width: usize, extra: usize| -> Result<Header, ScanError> {
        let len = be_len(buf, pos + 1, width)?;
        Ok(Header {
            header_len: 1 + width + extra,
            payload_len: usize::try_from(len).map_err(|_| ScanError::Truncated)?,
            children: 0,
        })
    };
    let container = |width: usize, per_entry: u64| -> Result<Header, ScanError> {
        Ok(Header {
            header_len: 1 + width,
            payload_len: 0,
            children: be_len(buf, pos + 1, width)? * per_entry,
        })
    };
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => fixed(0),
        0x80..=0x8f => Header {
            header_len: 1,
            payload_len: 0,
            children: u64::from(marker & 0x0f) * 2,
        },
        0x90..=0x9f => Header {
            header_len: 1,
            payload_len: 0,
            children: u64::from(marker & 0x0f),
        },
        0xa0..=0xbf => fixed(usize::from(marker & 0x1f)),
        0xc1 => return Err(ScanError::ReservedMarker),
        0xc4 | 0xd9 => sized(1, 0)?,
        0xc5 | 0xda => sized(2, 0)?,
        0xc6 | 0xdb => sized(4, 0)?,
        0xc7 => sized(1, 1)?,
        0xc8 => sized(2, 1)?,
        0xc9 => sized(4, 1)?,
        0xcc | 0xd0 => fixed(1),
        0xcd | 0xd1 => fixed(2),
        0xca | 0xce | 0xd2 => fixed(4),
        0xcb | 0xcf | 0xd3 => fixed(8),
        // fixext 1, 2, 4, 8, 16: a type byte, then the data.
        0xd4 => fixed(2),
        0xd5 => fixed(3),
        0xd6 => fixed(5),
        0xd7 => fixed(9),
        0xd8 => fixed(17),
        0xdc => container(2, 1)?,
        0xdd => container(4, 1)?,
        0xde => container(2, 2)?,
        0xdf => container(4, 2)?,
    })
}

/// Checks that `buf` holds exactly one well-formed MessagePack value.
pub fn scan(buf: &[u8]) -> Result<(), ScanError> {
    // Remaining children of each open container; slot 0 is the single top-level value.
    let mut open = [0u64; MAX_DEPTH + 1];
    open[0] = 1;
    let mut depth = 1;
    let mut pos = 0usize;
    while depth > 0 {
        if open[depth - 1] == 0 {
            depth -= 1;
            continue;
        }
        open[depth - 1] -= 1;
        let h = header(buf, pos)?;
        pos = pos
            .checked_add(h.header_len)
            .and_then(|p| p.checked_add(h.payload_len))
            .filter(|p| *p <= buf.len())
            .ok_or(ScanError::Truncated)?;
        if h.children > 0 {
            // Every value takes at least one byte.
            if h.children > (buf.len() - pos) as u64 {
                return Err(ScanError::Truncated);
            }
            if depth > MAX_DEPTH {
                return Err(ScanError::TooDeep);
            }
            open[depth] = h.children;
            depth += 1;
        }
    }
    if pos == buf.len() {
        Ok(())
    } else {
        Err(ScanError::TrailingBytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: Result<(), ScanError>) {
        assert_eq!(scan(input), expected, "input {input:02x?}");
    }

    #[test]
    fn scan_table() {
        check(&[0x01], Ok(()));
        check(&[0x92, 0x01, 0xa1, b'x'], Ok(()));
        check(&[0x81, 0xa1, b'k', 0xc0], Ok(()));
        check(&[0xc4, 0x02, 1, 2], Ok(()));
        check(&[0xd4, 0x01, 0x00], Ok(()));
        check(&[], Err(ScanError::Truncated));
        check(&[0xc1], Err(ScanError::ReservedMarker));
        check(&[0x01, 0x02], Err(ScanError::TrailingBytes));
        // bin32 claiming 4 GiB in a 6-byte buffer.
        check(
            &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
            Err(ScanError::Truncated),
        );
        // array32 claiming 4 billion elements.
        check(
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x00],
            Err(ScanError::Truncated),
        );
        // map16 with one key and no value.
        check(&[0xde, 0x00, 0x01, 0x01], Err(ScanError::Truncated));
        check(&[0x91; MAX_DEPTH], Err(ScanError::Truncated));
        // MAX_DEPTH nested one-element arrays around a scalar are fine; one more is not.
        let mut ok = [0x91u8; MAX_DEPTH + 1];
        ok[MAX_DEPTH] = 0x01;
        check(&ok, Ok(()));
        let mut deep = [0x91u8; MAX_DEPTH + 2];
        deep[MAX_DEPTH + 1] = 0x01;
        check(&deep, Err(ScanError::TooDeep));
    }
}
