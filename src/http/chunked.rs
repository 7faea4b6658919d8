//! Incremental, in-place decoder for `Transfer-Encoding: chunked` request bodies
//! (RFC 9112 §7.1). Pure: it consumes raw bytes from a buffer region and writes decoded bytes
//! to an earlier region of the same buffer, so a body needs no second buffer. Strict: CRLF
//! only, hex sizes of at most 16 digits, bounded extensions and trailers, and the decoded size
//! capped at the same body limit as `Content-Length`.

use super::error::Error;

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_SIZE_LINE: usize = 1024;
/// Largest trailer section accepted (fields are read and ignored).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { digits: u8 },
    /// Inside chunk extensions, up to the CR.
    Extension,
    /// Saw CR after the size line; expect LF.
    SizeLf,
    /// Copying chunk data.
    Data { remaining: u64 },
    /// Expect CR after chunk data.
    DataCr,
    /// Expect LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Saw CR at the end of a trailer line.
    TrailerLf { empty: bool },
    /// The body is complete.
    Done,
}

/// Decoder state carried across reads.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    line_len: usize,
    trailer_len: usize,
    decoded: u64,
    max_body: u64,
}

impl ChunkedDecoder {
    pub fn new(max_body: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            line_len: 0,
            trailer_len: 0,
            decoded: 0,
            max_body,
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes raw bytes `buf[*read..end]`, writing decoded bytes at `buf[*write..]`
    /// (`*write <= *read` always holds, so the copy is safe in place). Stops right after the
    /// body ends, leaving any following bytes (a pipelined request) at `buf[*read..end]`.
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        read: &mut usize,
        write: &mut usize,
        end: usize,
    ) -> Result<(), Error> {
        let end = end.min(buf.len());
        while *read < end && self.state != State::Done {
            if let State::Data { remaining } = self.state {
                let available = (end - *read) as u64;
                let n = remaining.min(available) as usize;
                buf.copy_within(*read..*read + n, *write);
                *read += n;
                *write += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                continue;
            }
            let b = buf[*read];
            *read += 1;
            self.step(b)?;
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::BadRequest(format!("malformed chunked body: {what}")));
        self.state = match self.state {
            State::Size { digits } => {
                self.line_len += 1;
                if let Some(v) = hex_value(b) {
                    if digits >= 16 {
                        return bad("chunk size too long");
                    }
                    self.size = (self.size << 4) | u64::from(v);
                    State::Size { digits: digits + 1 }
                } else if digits == 0 {
                    return bad("missing chunk size");
                } else if b == b'\r' {
                    State::SizeLf
                } else if b == b';' || b == b' ' || b == b'\t' {
                    State::Extension
                } else {
                    return bad("invalid chunk size");
                }
            }
            State::Extension => {
                self.line_len += 1;
                if self.line_len > MAX_SIZE_LINE {
                    return bad("chunk extension too long");
                }
                match b {
                    b'\r' => State::SizeLf,
                    b'\t' => State::Extension,
                    0..=0x1f | 0x7f => return bad("control byte in chunk extension"),
                    _ => State::Extension,
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return bad("expected LF after chunk size");
                }
                self.line_len = 0;
                let size = std::mem::take(&mut self.size);
                if size == 0 {
                    State::TrailerStart
                } else {
                    self.decoded = self.decoded.saturating_add(size);
                    if self.decoded > self.max_body {
                        return Err(Error::PayloadTooLarge);
                    }
                    State::Data { remaining: size }
                }
            }
            State::Data { .. } => return bad("internal state"),
            State::DataCr => {
                if b != b'\r' {
                    return bad("chunk data longer than its size");
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return bad("expected LF after chunk data");
                }
                State::Size { digits: 0 }
            }
            State::TrailerStart | State::TrailerLine => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILER_BYTES {
                    return Err(Error::HeadTooLarge);
                }
                let empty = self.state == State::TrailerStart;
                match b {
                    b'\r' => State::TrailerLf { empty },
                    b'\t' => State::TrailerLine,
                    0..=0x1f | 0x7f => return bad("control byte in trailer"),
                    _ => State::TrailerLine,
                }
            }
            State::TrailerLf { empty } => {
                if b != b'\n' {
                    return bad("expected LF in trailer");
                }
                if empty {
                    State::Done
                } else {
                    State::TrailerStart
                }
            }
            State::Done => State::Done,
        };
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(raw: &[u8], max: u64) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let mut buf = raw.to_vec();
        let mut dec = ChunkedDecoder::new(max);
        let (mut read, mut write) = (0, 0);
        dec.decode(&mut buf, &mut read, &mut write, raw.len())?;
        if !dec.is_done() {
            return Err(Error::BadRequest("incomplete".into()));
        }
        Ok((buf[..write].to_vec(), buf[read..].to_vec()))
    }

    /// Feeds one byte at a time, the worst case for state carried across reads.
    fn decode_bytewise(raw: &[u8], max: u64) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; raw.len()];
        let mut dec = ChunkedDecoder::new(max);
        let mut write = 0usize;
        let mut fed = 0;
        while !dec.is_done() {
            if fed == raw.len() {
                return Err(Error::BadRequest("incomplete".into()));
            }
            // Collapse: raw is always fully consumed, so the next raw byte goes at `write`.
            let mut read = write;
            let end = write + 1;
            buf[write] = raw[fed];
            fed += 1;
            dec.decode(&mut buf, &mut read, &mut write, end)?;
        }
        Ok(buf[..write].to_vec())
    }

    #[test]
    fn decodes_and_keeps_pipelined_leftover() {
        let raw = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: v\r\n\r\nGET / HTTP/1.1\r\n";
        let (body, rest) = decode_all(raw, 1024).unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        assert_eq!(decode_bytewise(raw, 1024).unwrap(), b"Wikipedia");
    }

    #[test]
    fn rejects_bad_framing() {
        for raw in [
            &b"g\r\nx\r\n0\r\n\r\n"[..],
            b"\r\n",
            b"1\nx\r\n0\r\n\r\n",
            b"2\r\nxyz\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"1\r\nx\r\n0\r\nX: \0\r\n\r\n",
        ] {
            assert!(
                decode_all(raw, 1 << 20).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn enforces_body_cap_before_reading_data() {
        let err = decode_all(b"10001\r\n", 65_536).unwrap_err();
        assert_eq!(err.status(), 413);
        let err = decode_all(b"ffffffffffffffff\r\n", 65_536).unwrap_err();
        assert_eq!(err.status(), 413);
    }
}
