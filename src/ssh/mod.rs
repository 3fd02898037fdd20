//! The russh client side: everything between "the bastion has an address" and "a forwarded stream is open".
//!
//! [`SshDialer`] implements [`crate::tunnel::Dialer`]: it waits for sshd's `SSH-2.0-` banner ([`wait_for_banner`]),
//! runs the handshake on that connection with keepalives on, verifies the host key ([`crate::hostkeys::check`]:
//! `known_hosts`, pins by instance id, first trust), and logs in with identity files or ssh-agent ([`auth`]). The resulting [`RusshSession`]
//! implements [`crate::tunnel::Session`] and opens one `direct-tcpip` channel per forwarded connection. Failures are
//! [`SshError`]s that say what to do ([`SshError::hint`]).

pub mod askpass;
pub mod auth;
pub mod ciphers;
mod dialer;
mod error;
mod identity;
mod fetch_key;
mod session;

pub use auth::AUTH_STEP_TIMEOUT;
pub use dialer::{Banner, HANDSHAKE_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_MAX, SshDialer, SshSettings, wait_for_banner};
pub use error::SshError;
pub use fetch_key::fetch_host_key;
pub use session::{CHANNEL_OPEN_TIMEOUT, RusshSession};
