//! [`FrameDecoder`]: the daemon-to-client frames of a framed tunnel ([`super::Frame`]) decoded in place from large
//! reads, so a copy loop hands each payload slice straight to its writer: one read and one write per chunk, no
//! per-frame allocation or second copy.

use super::{ErrorReply, FRAME_DATA, FRAME_END, FRAME_ERROR, FrameError, MAX_FRAME};

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
    use super::super::{data_frame_head, error_frame};
    use super::*;

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
