//! The proxy's stdin and stdout. ssh gives a ProxyCommand two pipes: those are made non-blocking and driven by the
//! reactor (tokio's pipe types), so a chunk costs one read or write system call and no hand-off to a blocking
//! thread (what `tokio::io::stdin()` / `stdout()` do for every call). Anything else (a terminal, a file, a socket)
//! falls back to tokio's stdin and stdout.

use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// Our stdin: a non-blocking pipe when it is one.
pub fn stdin() -> Box<dyn AsyncRead + Send + Unpin> {
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Receiver::from_file(std::fs::File::from(fd)));
    match pipe {
        Ok(p) => Box::new(p),
        Err(e) => {
            tracing::debug!("stdin is not a pipe ({e}); using blocking reads");
            Box::new(tokio::io::stdin())
        }
    }
}

/// Our stdout: a non-blocking pipe when it is one.
pub fn stdout() -> Box<dyn AsyncWrite + Send + Unpin> {
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Sender::from_file(std::fs::File::from(fd)));
    match pipe {
        Ok(p) => Box::new(p),
        Err(e) => {
            tracing::debug!("stdout is not a pipe ({e}); using blocking writes");
            Box::new(tokio::io::stdout())
        }
    }
}
