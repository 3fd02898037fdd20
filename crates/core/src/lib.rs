//! bastionctl's core: everything that parses untrusted input or decides policy, with no AWS SDK, russh or hyper in
//! its dependency tree, so the fuzzers and property tests build it in a minute or two.
//!
//! - [`config`]: the TOML config, with file/line/key errors;
//! - [`control`]: the control-socket protocol between `bastionctl proxy`/the CLI and the daemon;
//! - [`policy`]: target host names from clients, checked (IP literal or RFC 1123 name) and normalised, and which
//!   targets a bastion may reach;
//! - [`known_hosts`] + [`pattern`]: `known_hosts` files read with OpenSSH's semantics;
//! - [`console`]: the host key fingerprints cloud-init prints to an instance's console;
//! - [`paths`]: per-user file locations (XDG);
//! - [`text`]: secrets redacted and values shell-quoted in what is printed and logged;
//! - [`escape`]: control characters from outside escaped before they reach a log line, an error or `status`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod console;
pub mod control;
pub mod escape;
#[doc(hidden)]
pub mod fuzzing;
pub mod known_hosts;
pub mod paths;
pub mod pattern;
pub mod policy;
pub mod text;
