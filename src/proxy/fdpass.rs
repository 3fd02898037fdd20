//! `bastionctl proxy --fdpass`: hand the negotiated control socket to ssh over stdout (OpenSSH's
//! `ProxyUseFdpass yes`): one byte with the descriptor attached as `SCM_RIGHTS`, as OpenSSH's `mm_receive_fd`
//! expects. ssh then speaks SSH on the socket itself, and the proxy process exits: it is out of the data path.

use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};

/// Refuses a stdout that is not a socket (a usage error: `--fdpass` without ssh's `ProxyUseFdpass yes`), so that
/// no daemon, bastion start or channel is set up for a socket nobody can receive.
pub fn check_stdout() -> Result<(), crate::client::DaemonError> {
    use nix::sys::stat::{SFlag, fstat};
    match fstat(std::io::stdout()) {
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK => Ok(()),
        _ => Err(crate::client::DaemonError { kind: "usage".into(), message: NOT_A_SOCKET.into(), hint: None }),
    }
}

const NOT_A_SOCKET: &str = "stdout is not a socket: `bastionctl proxy --fdpass` works only as ssh's ProxyCommand \
                            with `ProxyUseFdpass yes`; without it use `bastionctl proxy %h %p`";

/// Sends `sock` to the process at the other end of our stdout.
pub fn send_to_stdout(sock: UnixStream) -> anyhow::Result<()> {
    // ssh gets the socket as a connect() would give it: blocking (ours was non-blocking for tokio).
    sock.set_nonblocking(false).context("cannot make the tunnel socket blocking")?;
    let fds = [sock.as_raw_fd()];
    let iov = [IoSlice::new(&[0u8])];
    let stdout = std::io::stdout();
    loop {
        match sendmsg::<UnixAddr>(stdout.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOTSOCK) => bail!(NOT_A_SOCKET),
            Err(e) => return Err(e).context("cannot pass the tunnel socket to ssh over stdout"),
        }
    }
}
