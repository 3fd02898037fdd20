//! bastionctl: make a private AWS network reachable over SSH without keeping a bastion running.
//!
//! A local daemon starts the stopped bastion EC2 instance on demand, forwards each SSH connection through one shared
//! russh session to it as a `direct-tcpip` channel, and stops the instance again when no channel has been open for the
//! configured idle time. The user's own `ssh` authenticates end to end to the private host; no key ever lands on the
//! bastion.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod daemon;
pub mod ec2;
pub mod error;
pub mod forward;
pub mod hostkeys;
pub mod lifecycle;
pub mod lockfile;
pub mod progress;
pub mod progress_ui;
pub mod proxy;
pub mod ssh;
pub mod tunnel;

pub use bastionctl_core::{config, control, escape, paths, policy};
