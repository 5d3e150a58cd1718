//! Reading whole frames from a byte stream.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use wasmbed_schemas::frame::Frame;
use wasmbed_schemas::frame::codec::{self, DecodeError};

/// Why no frame could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadFrameError {
    /// The connection failed or ended inside a frame.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a frame.
    #[error("{0}")]
    Decode(DecodeError),
}

/// Buffers a stream and cuts it into frames. The buffer never holds more than one frame's
/// worth: a length prefix over the limit is refused before its body is read.
#[derive(Default)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    last_len: usize,
}

impl FrameReader {
    /// The encoded length of the frame `next` returned last.
    pub(crate) fn last_len(&self) -> usize {
        self.last_len
    }

    /// The next frame; `None` when the peer closed cleanly between frames. Cancel-safe: no
    /// bytes are lost if the future is dropped.
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Option<Frame>, ReadFrameError> {
        loop {
            match codec::decode(&self.buf) {
                Ok((frame, used)) => {
                    self.buf.advance(used);
                    self.last_len = used;
                    return Ok(Some(frame));
                }
                Err(DecodeError::Incomplete { needed }) => {
                    self.buf.reserve(needed);
                    if reader.read_buf(&mut self.buf).await? == 0 {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into())
                        };
                    }
                }
                Err(e) => return Err(ReadFrameError::Decode(e)),
            }
        }
    }
}
