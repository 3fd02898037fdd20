//! The framed tunnel end, daemon to client: data frames, then an end frame (the target closed its side) or an error
//! frame (the tunnel broke), so a broken tunnel fails loudly instead of looking like a clean EOF.
//!
//! The writer's side is [`data_frame_head`] and [`error_frame`]. There are two readers: [`read_frame`] reads one
//! frame head from a buffered reader; [`FrameDecoder`] decodes frames in place from large reads, so a copy loop
//! hands each payload slice straight to its writer: one read and one write per chunk, no per-frame allocation or
//! second copy.

use tokio::io::{AsyncBufRead, AsyncReadExt};

use super::{ErrorReply, FrameError};

/// Tag byte of a data frame: `D`, a big-endian `u32` length (1..=[`MAX_FRAME`]), then that many tunnel bytes.
pub const FRAME_DATA: u8 = b'D';
/// Tag byte of the end frame: the target sent EOF; nothing follows.
pub const FRAME_END: u8 = b'E';
/// Tag byte of the error frame: `X`, a big-endian `u32` length, then an [`ErrorReply`] as JSON; nothing follows.
pub const FRAME_ERROR: u8 = b'X';
/// Largest frame payload a client accepts, in bytes (the daemon sends at most 64 KiB).
pub const MAX_FRAME: usize = 1 << 20;

/// The head of one daemon-to-client frame in a framed tunnel.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// This many tunnel bytes follow (1..=[`MAX_FRAME`]); the reader copies exactly that many.
    Data(u32),
    /// The target closed its side cleanly: the tunnel is over.
    End,
    /// The tunnel broke (the SSH session to the bastion ended, the channel failed); the message says why.
    Error(ErrorReply),
}

/// The 5-byte head of a data frame carrying `len` bytes.
pub fn data_frame_head(len: usize) -> [u8; 5] {
    let n = u32::try_from(len).expect("frames are at most MAX_FRAME bytes").to_be_bytes();
    [FRAME_DATA, n[0], n[1], n[2], n[3]]
}

/// The bytes of an error frame for `e`.
pub fn error_frame(e: &ErrorReply) -> Vec<u8> {
    let json = serde_json::to_vec(e).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(json.len() + 5);
    out.push(FRAME_ERROR);
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// Reads the head of the next frame. For [`Frame::Data`] the payload is left in `r` for the caller to copy.
/// Errors: [`FrameError::Closed`] when the socket ends without an end or error frame (the daemon died),
/// [`FrameError::FrameTooLong`] for a length over [`MAX_FRAME`], [`FrameError::BadTag`] for anything else.
pub async fn read_frame<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Frame, FrameError> {
    let mut tag = [0u8; 1];
    if r.read(&mut tag).await? == 0 {
        return Err(FrameError::Closed);
    }
    match tag[0] {
        FRAME_DATA => match frame_len(r).await? {
            0 => Err(FrameError::BadTag(FRAME_DATA)),
            n => Ok(Frame::Data(n)),
        },
        FRAME_END => Ok(Frame::End),
        FRAME_ERROR => {
            let n = frame_len(r).await?;
            let mut json = vec![0u8; n as usize];
            r.read_exact(&mut json).await.map_err(|_| FrameError::Closed)?;
            Ok(Frame::Error(serde_json::from_slice(&json)?))
        }
        other => Err(FrameError::BadTag(other)),
    }
}

async fn frame_len<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<u32, FrameError> {
    let mut n = [0u8; 4];
    r.read_exact(&mut n).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    })?;
    let n = u32::from_be_bytes(n);
    if n as usize > MAX_FRAME { Err(FrameError::FrameTooLong(n)) } else { Ok(n) }
}

// ---- decoding in place ----

/// Where the decoder is in the stream.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Reading a frame head: the tag and, for `D` and `X`, a 4-byte length (`have` bytes of `head` so far).
    Head { head: [u8; 5], have: usize },
    /// Inside a data frame: this many payload bytes to come.
    Data(u32),
    /// Inside an error frame: the JSON so far and how long it is.
    Error { json: Vec<u8>, len: usize },
    /// An end or error frame was seen: nothing may follow.
    Done,
}

/// One decoded piece of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece<'a> {
    /// Tunnel bytes (part or all of a data frame's payload).
    Data(&'a [u8]),
    /// The target closed its side cleanly: the tunnel is over.
    End,
    /// The tunnel broke; the daemon says why.
    Error(ErrorReply),
}

/// Incremental decoder of the daemon-to-client frames.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameDecoder {
    state: State,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder { state: State::Head { head: [0; 5], have: 0 } }
    }
}

impl FrameDecoder {
    /// Decodes the next piece from the front of `buf`, advancing it past what was used. `Ok(None)`: `buf` is used
    /// up (read more). Errors: [`FrameError::BadTag`] (also for an empty data frame, or bytes after the end),
    /// [`FrameError::FrameTooLong`], [`FrameError::Json`] for an error frame that is not an [`ErrorReply`].
    pub fn next<'a>(&mut self, buf: &mut &'a [u8]) -> Result<Option<Piece<'a>>, FrameError> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            match &mut self.state {
                State::Done => return Err(FrameError::BadTag(buf[0])),
                State::Data(left) => {
                    let n = (*left as usize).min(buf.len());
                    let (data, rest) = buf.split_at(n);
                    *buf = rest;
                    *left -= n as u32;
                    if *left == 0 {
                        self.state = State::Head { head: [0; 5], have: 0 };
                    }
                    return Ok(Some(Piece::Data(data)));
                }
                State::Error { json, len } => {
                    let n = (*len - json.len()).min(buf.len());
                    json.extend_from_slice(&buf[..n]);
                    *buf = &buf[n..];
                    if json.len() == *len {
                        let e = serde_json::from_slice(json)?;
                        self.state = State::Done;
                        return Ok(Some(Piece::Error(e)));
                    }
                }
                State::Head { head, have } => {
                    if *have == 0 {
                        match buf[0] {
                            FRAME_END => {
                                *buf = &buf[1..];
                                self.state = State::Done;
                                return Ok(Some(Piece::End));
                            }
                            FRAME_DATA | FRAME_ERROR => {}
                            other => return Err(FrameError::BadTag(other)),
                        }
                    }
                    let n = (5 - *have).min(buf.len());
                    head[*have..*have + n].copy_from_slice(&buf[..n]);
                    *have += n;
                    *buf = &buf[n..];
                    if *have == 5 {
                        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
                        if len as usize > MAX_FRAME {
                            return Err(FrameError::FrameTooLong(len));
                        }
                        self.state = match (head[0], len) {
                            (FRAME_DATA, 0) => return Err(FrameError::BadTag(FRAME_DATA)),
                            (FRAME_DATA, n) => State::Data(n),
                            (_, n) => State::Error { json: Vec::with_capacity(n as usize), len: n as usize },
                        };
                        if let State::Error { len: 0, .. } = self.state {
                            let e = serde_json::from_slice(b"")?;
                            return Ok(Some(Piece::Error(e)));
                        }
                    }
                }
            }
        }
    }

    /// Whether the stream may end here: after an end or error frame. Anywhere else the tunnel was cut.
    pub fn finished(&self) -> bool {
        self.state == State::Done
    }

    /// Whether a frame is half read (the cut came inside a frame rather than between frames).
    pub fn mid_frame(&self) -> bool {
        !matches!(self.state, State::Head { have: 0, .. } | State::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn frames_round_trip_and_a_cut_stream_is_an_error() {
        let err = ErrorReply { kind: "ssh".into(), message: "session ended".into(), hint: None };
        let mut wire = data_frame_head(3).to_vec();
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&error_frame(&err));
        wire.push(FRAME_END);
        let mut r = BufReader::new(&wire[..]);
        assert_eq!(read_frame(&mut r).await.unwrap(), Frame::Data(3));
        let mut payload = [0u8; 3];
        r.read_exact(&mut payload).await.unwrap();
        assert_eq!(&payload, b"abc");
        assert_eq!(read_frame(&mut r).await.unwrap(), Frame::Error(err));
        assert_eq!(read_frame(&mut r).await.unwrap(), Frame::End);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Closed)));
        let mut r = BufReader::new(&b"D\x00\x00"[..]);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Closed)));
        let mut r = BufReader::new(&b"D\xff\xff\xff\xff"[..]);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::FrameTooLong(u32::MAX))));
        let mut r = BufReader::new(&b"Q"[..]);
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::BadTag(b'Q'))));
    }

    // ---- FrameDecoder ----

    /// Decodes `wire` fed in chunks of `step` bytes; returns the data and the last non-data piece.
    fn decode(wire: &[u8], step: usize) -> (Vec<u8>, Result<Option<Piece<'static>>, String>, bool) {
        let mut d = FrameDecoder::default();
        let mut data = Vec::new();
        for chunk in wire.chunks(step) {
            let mut buf = chunk;
            loop {
                match d.next(&mut buf) {
                    Ok(Some(Piece::Data(x))) => data.extend_from_slice(x),
                    Ok(Some(Piece::End)) => return (data, Ok(Some(Piece::End)), d.finished()),
                    Ok(Some(Piece::Error(e))) => return (data, Ok(Some(Piece::Error(e))), d.finished()),
                    Ok(None) => break,
                    Err(e) => return (data, Err(e.to_string()), d.finished()),
                }
            }
        }
        (data, Ok(None), d.finished())
    }

    #[test]
    fn every_split_of_the_stream_decodes_the_same() {
        let err = ErrorReply { kind: "tunnel_broken".into(), message: "the session ended".into(), hint: None };
        let mut wire = data_frame_head(3).to_vec();
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&data_frame_head(4));
        wire.extend_from_slice(b"defg");
        let mut ended = wire.clone();
        ended.push(FRAME_END);
        let mut broken = wire.clone();
        broken.extend_from_slice(&error_frame(&err));
        for step in 1..=broken.len() {
            assert_eq!(decode(&ended, step), (b"abcdefg".to_vec(), Ok(Some(Piece::End)), true), "step {step}");
            assert_eq!(decode(&broken, step), (b"abcdefg".to_vec(), Ok(Some(Piece::Error(err.clone()))), true));
            // Cut before the end: not finished, so the caller reports a cut tunnel.
            let (data, last, finished) = decode(&wire, step);
            assert_eq!((data, last, finished), (b"abcdefg".to_vec(), Ok(None), false));
        }
    }

    #[test]
    fn garbage_is_an_error_and_a_cut_frame_is_mid_frame() {
        assert!(decode(b"Q", 1).1.is_err());
        assert!(decode(b"D\0\0\0\0", 5).1.is_err(), "empty data frame");
        assert!(decode(b"D\xff\xff\xff\xff", 5).1.unwrap_err().contains("exceeds"));
        assert!(decode(b"Ejunk", 5).1.is_ok(), "the end frame is returned before the junk is looked at");
        let mut d = FrameDecoder::default();
        let mut buf: &[u8] = b"D\0\0\0\x05ab";
        while let Ok(Some(_)) = d.next(&mut buf) {}
        assert!(d.mid_frame() && !d.finished());
        let mut d = FrameDecoder::default();
        let mut buf: &[u8] = b"E";
        assert_eq!(d.next(&mut buf).unwrap(), Some(Piece::End));
        let mut more: &[u8] = b"D";
        assert!(d.next(&mut more).is_err(), "nothing may follow the end frame");
    }
}
