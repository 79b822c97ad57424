//! The attach protocol spoken on the monitor's unix stream socket.
//!
//! Every message, in both directions, is a frame with Docker's 8-byte header:
//!
//! ```text
//! [stream: u8][0][0][0][length: u32 big-endian][payload: length bytes]
//! ```
//!
//! Monitor → client: stream [`STDOUT`] (1) and [`STDERR`] (2) frames carry the container's
//! output. In tty mode there is a single stream and it is sent raw, without headers, exactly
//! as Docker's attach endpoint sends a tty container's output, so the daemon can copy either
//! form to its client unchanged. Output produced while no client is connected is only in the
//! log file.
//!
//! Client → monitor: [`STDIN`] (0) payload is written to the container's stdin;
//! [`RESIZE`] (3) carries `rows: u16 BE, cols: u16 BE` and resizes the terminal;
//! [`CLOSE_STDIN`] (4, empty payload) closes the container's stdin (EOF), as `docker attach`
//! does when its input ends. [`SYNC`] (5, empty payload) asks the monitor to copy everything
//! the container has already written into the log; the monitor answers by closing the
//! connection once it has (so a reader of the log file right after sees that output, whatever
//! the mode). A client may connect and disconnect at any time.

/// Client → monitor: bytes for the container's stdin.
pub const STDIN: u8 = 0;
/// Monitor → client: container stdout (and everything in tty mode).
pub const STDOUT: u8 = 1;
/// Monitor → client: container stderr.
pub const STDERR: u8 = 2;
/// Client → monitor: terminal resize, payload `rows u16 BE` + `cols u16 BE`.
pub const RESIZE: u8 = 3;
/// Client → monitor: close the container's stdin.
pub const CLOSE_STDIN: u8 = 4;

/// Client → monitor: copy pending output to the log, then hang up (see the module comment).
pub const SYNC: u8 = 5;

/// Largest payload accepted from a client.
pub const MAX_FRAME: usize = 1 << 20;

/// Encodes one frame.
pub fn encode(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Incremental decoder of client frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

/// Why a client's byte stream cannot be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("attach frame of {0} bytes exceeds the limit")]
pub struct FrameTooLarge(pub usize);

impl Decoder {
    /// Feeds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameTooLarge> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameTooLarge(len));
        }
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let stream = self.buf[0];
        let payload = self.buf[8..8 + len].to_vec();
        self.buf.drain(..8 + len);
        Ok(Some((stream, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_in_pieces() {
        let mut bytes = encode(STDIN, b"hello");
        bytes.extend(encode(RESIZE, &[0, 24, 0, 80]));
        let mut d = Decoder::default();
        d.push(&bytes[..3]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(&bytes[3..]);
        assert_eq!(d.next_frame().unwrap(), Some((STDIN, b"hello".to_vec())));
        assert_eq!(d.next_frame().unwrap(), Some((RESIZE, vec![0, 24, 0, 80])));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn rejects_huge_frames() {
        let mut d = Decoder::default();
        d.push(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }
}
