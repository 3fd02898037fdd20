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

mod frame;
mod status;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

pub use frame::{
    FRAME_DATA, FRAME_END, FRAME_ERROR, Frame, FrameDecoder, MAX_FRAME, Piece, data_frame_head, error_frame, read_frame,
};
pub use status::{BastionStatus, LeaseStatus};

/// Newest protocol version, carried in every request as `v`. Version 2 changed the `status` reply: `state` is the
/// EC2 state or `null`, with an optional `error` beside it (version 1: `state` is `unknown (<message>)` on error).
/// Requests send the lowest version that has what they need ([`MIN_VERSION`] for everything but `status`), so a
/// newer client still works with an older running daemon.
pub const VERSION: u32 = 2;
/// Oldest protocol version the daemon still serves.
pub const MIN_VERSION: u32 = 1;
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
    /// Start the bastion (default: the first configured) and wait until EC2 says `running` and its address is
    /// known, without an SSH session: for `bastionctl trust`, which must see a host key nothing vouches for yet.
    /// The daemon's idle clock then runs for it as for any bastion it started.
    Start {
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
    /// The bastion's instance id (for `up` and `start`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
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
        let req = Request { v: MIN_VERSION, op: Op::Connect { host: "10.0.16.10".into(), port: 22, framed: false } };
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
        let new = Request { v: MIN_VERSION, op: Op::Connect { host: "h".into(), port: 22, framed: true } };
        assert_eq!(serde_json::to_string(&new).unwrap(), r#"{"v":1,"op":"connect","host":"h","port":22,"framed":true}"#);
        // An old daemon's `ok` has no `framed`: the client then reads raw bytes.
        let ok: Reply = serde_json::from_str(r#"{"ok":{"message":""}}"#).unwrap();
        assert_eq!(ok, Reply::Ok(OkReply::default()));
    }
}
