//! The control protocol between `bastionctl` clients (proxy, up, down, status) and the daemon, over a Unix socket.
//!
//! Framing: the client sends one JSON [`Request`] terminated by `\n` (at most [`MAX_LINE`] bytes). The daemon answers
//! with JSON [`Reply`] lines. For `connect`, after [`Reply::Ok`] the socket carries the tunnel in both directions; a
//! write shutdown by either side is an EOF passed on to the other end.
//!
//! Client to daemon, the tunnel bytes are raw. Daemon to client they are raw too, unless the client asked for
//! framing (`"framed": true` in `connect`) and the daemon agreed (`"framed": true` in its `ok`): then they come as
//! [`Frame`]s, so that the end of the stream says whether the target closed it ([`Frame::End`]) or the tunnel broke
//! ([`Frame::Error`], e.g. the SSH session to the bastion died). A daemon or client that predates framing leaves the
//! field out, and both sides fall back to raw bytes. `bastionctl proxy --fdpass` asks for raw bytes too: it hands
//! the socket to ssh (OpenSSH's ProxyUseFdpass), which speaks SSH on it directly.

mod decoder;
pub use decoder::{FrameDecoder, Piece};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol version carried in every request as `v`.
pub const VERSION: u32 = 1;
/// Longest accepted JSON line, in bytes (including the newline).
pub const MAX_LINE: usize = 64 * 1024;

/// A client's request, e.g. `{"v":1,"op":"connect","host":"10.0.16.10","port":22}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version; must equal [`VERSION`].
    pub v: u32,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations the daemon serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Open a direct-tcpip channel to `host:port` through the bastion whose targets allow it, then splice.
    Connect {
        /// Target host as the user's ssh gave it (`%h`): an IP literal or a host name resolved by the bastion.
        host: String,
        /// Target TCP port (`%p`).
        port: u16,
        /// Ask for daemon-to-client [`Frame`]s after `ok` (absent = raw bytes, as before framing existed).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        framed: bool,
    },
    /// Start the bastion (default: the first configured) and wait until its sshd answers and a session is up.
    Up {
        /// Bastion name from the config; `None` = the first.
        bastion: Option<String>,
    },
    /// Stop the bastion now.
    Down {
        /// Bastion name from the config; `None` = the first.
        bastion: Option<String>,
        /// Stop even while channels are open (they are closed).
        force: bool,
    },
    /// Report the state of every bastion.
    Status,
}

/// One line from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A progress message for the user's stderr, e.g. `starting i-0abc (stopped → pending)`.
    Progress(String),
    /// Success. For `connect` the raw stream follows; for `up` and `down` a summary.
    Ok(OkReply),
    /// The status report.
    Status(Vec<BastionStatus>),
    /// Failure: the request is over.
    Error(ErrorReply),
}

/// Details of a successful request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OkReply {
    /// Human summary, e.g. `bastion prod (i-0abc) ready at 127.0.2.1:22 in 4.2 s`.
    #[serde(default)]
    pub message: String,
    /// The bastion address (`ip:port`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// For `connect`: the daemon-to-client bytes that follow are [`Frame`]s (only when the request asked for them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub framed: bool,
}

/// A failure, with a hint that says what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Machine-readable class, e.g. `not_allowed`, `aws`, `host_key`, `timeout`, `bad_request`.
    pub kind: String,
    /// One sentence saying what went wrong.
    pub message: String,
    /// What the user should do about it, if anything can be said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// One bastion's state for `bastionctl status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BastionStatus {
    /// Bastion name from the config.
    pub name: String,
    /// Instance id (resolved from the Name tag if configured that way), if known.
    pub instance_id: Option<String>,
    /// EC2 instance state from DescribeInstances (`pending`, `running`, `stopping`, `stopped`, ...), or
    /// `unknown (<error>)` if the call failed.
    pub state: String,
    /// Address the daemon connects to (`ip:port`), if known.
    pub address: Option<String>,
    /// Whether an SSH session to the bastion is open.
    pub session: bool,
    /// Open forwarded channels.
    pub channels: usize,
    /// Seconds until the idle stop, if the idle clock is running.
    pub idle_stop_in_secs: Option<u64>,
    /// StartInstances calls this daemon has made for this bastion since it started.
    pub start_calls: u64,
    /// StopInstances calls this daemon has made for this bastion since it started.
    pub stop_calls: u64,
    /// Process id of the daemon that answered (to stop a background daemon: `kill PID`); `None` (JSON `null`) when
    /// no daemon runs and `status` asked EC2 itself.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// A framing error.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the socket before a full line.
    #[error("connection closed")]
    Closed,
    /// The line exceeded [`MAX_LINE`].
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    /// The line is not valid JSON of the expected shape.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// A tunnel frame announced more than [`MAX_FRAME`] bytes.
    #[error("tunnel frame of {0} bytes exceeds {MAX_FRAME}")]
    FrameTooLong(u32),
    /// A tunnel frame started with an unknown tag byte (or was an empty data frame).
    #[error("garbled tunnel frame (tag byte {0:#04x})")]
    BadTag(u8),
    /// Socket I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one newline-terminated JSON value of at most [`MAX_LINE`] bytes, without reading past the newline.
pub async fn read_line<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncBufRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let mut buf = Vec::new();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Err(FrameError::Closed);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > MAX_LINE {
            return Err(FrameError::TooLong);
        }
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            return Ok(serde_json::from_slice(&buf)?);
        }
    }
}

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

/// Writes `msg` as one JSON line and flushes.
pub async fn write_line<W, T>(w: &mut W, msg: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn request_round_trip_and_wire_shape() {
        let req = Request { v: VERSION, op: Op::Connect { host: "10.0.16.10".into(), port: 22, framed: false } };
        let (a, b) = tokio::io::duplex(1024);
        let (_, mut w) = tokio::io::split(a);
        write_line(&mut w, &req).await.unwrap();
        let mut r = BufReader::new(b);
        let got: Request = read_line(&mut r).await.unwrap();
        assert_eq!(got, req);
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"v":1,"op":"connect","host":"10.0.16.10","port":22}"#);
    }

    #[tokio::test]
    async fn bytes_after_the_line_stay_in_the_reader() {
        let data = b"{\"v\":1,\"op\":\"status\"}\nRAW-TUNNEL-BYTES".to_vec();
        let mut r = BufReader::new(&data[..]);
        let got: Request = read_line(&mut r).await.unwrap();
        assert_eq!(got.op, Op::Status);
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut rest).await.unwrap();
        assert_eq!(rest, b"RAW-TUNNEL-BYTES");
    }

    #[tokio::test]
    async fn oversized_and_malformed_lines_are_errors() {
        let long = vec![b'a'; MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(matches!(read_line::<_, Request>(&mut r).await, Err(FrameError::TooLong)));
        let mut r = BufReader::new(&b"{not json}\n"[..]);
        assert!(matches!(read_line::<_, Request>(&mut r).await, Err(FrameError::Json(_))));
        let mut r = BufReader::new(&b"{\"v\":1"[..]);
        assert!(matches!(read_line::<_, Request>(&mut r).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn framing_is_opt_in_both_ways() {
        // An old client (no `framed`) parses as raw; a new client's request still reads on an old daemon's schema.
        let old: Request = serde_json::from_str(r#"{"v":1,"op":"connect","host":"h","port":22}"#).unwrap();
        assert_eq!(old.op, Op::Connect { host: "h".into(), port: 22, framed: false });
        let new = Request { v: VERSION, op: Op::Connect { host: "h".into(), port: 22, framed: true } };
        assert_eq!(serde_json::to_string(&new).unwrap(), r#"{"v":1,"op":"connect","host":"h","port":22,"framed":true}"#);
        // An old daemon's `ok` has no `framed`: the client then reads raw bytes.
        let ok: Reply = serde_json::from_str(r#"{"ok":{"message":""}}"#).unwrap();
        assert_eq!(ok, Reply::Ok(OkReply::default()));
    }

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
