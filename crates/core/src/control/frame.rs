//! The framed tunnel end, daemon to client: data frames, then an end frame (the target closed its side) or an error
//! frame (the tunnel broke), so a broken tunnel fails loudly instead of looking like a clean EOF.

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
}
