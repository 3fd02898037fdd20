//! Progress lines of a bastion start (`starting i-0abc (stopped → pending)`, `waiting for sshd at …`), fanned out to
//! every client waiting on the same start; the proxy prints them on stderr.

use tokio::sync::broadcast;

/// Fan-out of progress messages to every client waiting on the same bastion start; each is also logged.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: broadcast::Sender<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { tx: broadcast::channel(64).0 }
    }
}

impl Progress {
    /// Sends `msg` to every subscriber and logs it at info level.
    pub fn say(&self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::info!("{msg}");
        let _ = self.tx.send(msg);
    }

    /// A receiver for messages said from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}
