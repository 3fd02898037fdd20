//! Reading a bastion's host key without logging in (for `bastionctl trust`). Checking a key is
//! [`crate::hostkeys::check`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::PublicKeyOrCertificate;

use super::SshError;

/// The host key `addr` offers, without logging in: a handshake that records the key and then declines it.
/// Errors: [`SshError::Connect`], [`SshError::Timeout`] (after `within`), [`SshError::Protocol`].
pub async fn fetch_host_key(
    addr: SocketAddr,
    within: Duration,
) -> Result<PublicKeyOrCertificate, SshError> {
    struct Capture(Arc<Mutex<Option<PublicKeyOrCertificate>>>);
    impl russh::client::Handler for Capture {
        type Error = russh::Error;
        async fn check_server_key(
            &mut self,
            key: &PublicKeyOrCertificate,
        ) -> Result<bool, russh::Error> {
            let copy = match key {
                PublicKeyOrCertificate::PublicKey { key, hash_alg } => {
                    PublicKeyOrCertificate::PublicKey {
                        key: key.clone(),
                        hash_alg: *hash_alg,
                    }
                }
                PublicKeyOrCertificate::Certificate(c) => {
                    PublicKeyOrCertificate::Certificate(c.clone())
                }
            };
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(copy);
            Ok(false)
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let config = Arc::new(russh::client::Config::default());
    let timeout = || SshError::Timeout {
        what: format!("the host key of {addr}"),
        after: within,
    };
    let tcp = tokio::time::timeout(within, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timeout())?
        .map_err(|source| SshError::Connect { addr, source })?;
    let res = tokio::time::timeout(
        within,
        russh::client::connect_stream(config, tcp, Capture(seen.clone())),
    )
    .await;
    if let Some(key) = seen.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Ok(key);
    }
    match res {
        Err(_) => Err(timeout()),
        Ok(Err(e)) => Err(SshError::from(e)),
        Ok(Ok(_)) => Err(SshError::Protocol(format!(
            "{addr} completed a handshake without showing a host key"
        ))),
    }
}
