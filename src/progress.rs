//! Progress lines of a bastion start (`starting i-0abc (stopped → pending)`, `waiting for sshd at …`), fanned out to
//! every client waiting on the same start; the proxy prints them on stderr.

use tokio::sync::broadcast;

/// One progress message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sentence, e.g. `waiting for sshd at 203.0.113.10:22`.
    pub text: String,
    /// The outcome of the start or stop (`bastion prod ready at … in 4.2 s`, `stopping i-0abc`) rather than a phase
    /// on the way. A command with a result of its own (`up`, `down`, `trust`) says it there, once, and does not relay
    /// these; the proxy, whose stdout is the tunnel, relays them as its last progress line.
    pub outcome: bool,
}

/// Fan-out of progress messages to every client waiting on the same bastion start; each is also logged.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: broadcast::Sender<Message>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress { tx: broadcast::channel(64).0 }
    }
}

impl Progress {
    /// Sends `msg`, a phase, to every subscriber and logs it at info level.
    pub fn say(&self, msg: impl Into<String>) {
        self.send(msg.into(), false, true);
    }

    /// Sends `msg`, a phase, to every subscriber without logging it (for messages the caller has logged already).
    pub fn tell(&self, msg: impl Into<String>) {
        self.send(msg.into(), false, false);
    }

    /// Sends `msg`, the outcome of the start or stop (see [`Message::outcome`]), and logs it at info level.
    pub fn conclude(&self, msg: impl Into<String>) {
        self.send(msg.into(), true, true);
    }

    /// A receiver for messages said from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.tx.subscribe()
    }

    fn send(&self, text: String, outcome: bool, log: bool) {
        if log {
            tracing::info!("{text}");
        }
        let _ = self.tx.send(Message { text, outcome });
    }
}
