//! Host certificates (`ssh-keygen -s ca -h -n NAMES`): what it takes for one signed by a trusted CA to be accepted.

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, HashAlg};

/// Checks `cert` for `principal` at `now` (Unix seconds): a host certificate, `principal` among its principals,
/// inside its validity window, no critical options (none are defined for host certificates, so OpenSSH refuses
/// any), and a signature that verifies with its signing key. Whether that signing key is a trusted CA is the
/// caller's business. Stricter than OpenSSH in one point: an empty principal list is refused rather than taken as
/// "any host". Errors: why it is refused, for the log.
pub fn check_host_cert(cert: &Certificate, principal: &str, now: u64) -> Result<(), String> {
    if cert.cert_type() != CertType::Host {
        return Err("it is a user certificate, not a host certificate".into());
    }
    if !cert.valid_principals().iter().any(|p| p == principal) {
        return Err(format!("`{principal}` is not among its principals {:?}", cert.valid_principals()));
    }
    if now < cert.valid_after() {
        return Err(format!("it is not valid before {} (Unix time; now {now})", cert.valid_after()));
    }
    if now >= cert.valid_before() {
        return Err(format!("it expired at {} (Unix time; now {now})", cert.valid_before()));
    }
    if !cert.critical_options().is_empty() {
        return Err("it carries critical options, which host certificates do not support".into());
    }
    let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
    cert.validate_at(now, [&ca]).map_err(|e| format!("its signature does not verify: {e}"))
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
