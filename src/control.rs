//! The control protocol between `bastionctl` clients (proxy, up, down, status) and the daemon, over a Unix socket.
//!
//! Framing: the client sends one JSON [`Request`] terminated by `\n` (at most [`MAX_LINE`] bytes). The daemon answers
//! with JSON [`Reply`] lines. For `connect`, after [`Reply::Ok`] the socket carries the raw tunnel bytes in both
//! directions; a write shutdown by either side is an EOF passed on to the other end.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

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
    /// Process id of the daemon that answered (to stop a background daemon: `kill PID`).
    pub pid: u32,
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
        let req = Request { v: VERSION, op: Op::Connect { host: "10.0.16.10".into(), port: 22 } };
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
}
