//! Command-line interface: clap definitions and dispatch. `main.rs` only calls [`main`].

mod commands;
mod doctor;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Start a stopped AWS bastion on demand, forward SSH through it, stop it when idle.
#[derive(Debug, Parser)]
#[command(name = "bastionctl", version, about, long_about = None)]
pub struct Args {
    /// Config file [default: ~/.config/bastionctl/config.toml].
    #[arg(short, long, global = true, env = "BASTIONCTL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// ProxyCommand for ssh: `ssh -o ProxyCommand='bastionctl proxy %h %p' HOST`.
    Proxy {
        /// Target host as ssh passes it (%h): an address or a name the bastion resolves.
        host: String,
        /// Target port (%p).
        port: u16,
        /// Pass the connected socket to ssh and exit (needs `ProxyUseFdpass yes` in ssh_config): the proxy process
        /// then stays out of the data path.
        #[arg(long)]
        fdpass: bool,
    },
    /// Run the daemon in the foreground (what the systemd user unit runs).
    Daemon,
    /// Start the bastion and wait until its sshd answers; print its address and the time taken.
    Up {
        /// Bastion name from the config [default: the first].
        bastion: Option<String>,
    },
    /// Stop the bastion now.
    Down {
        /// Bastion name from the config [default: the first].
        bastion: Option<String>,
        /// Stop even while SSH connections are open through it (they are cut).
        #[arg(long)]
        force: bool,
    },
    /// Show the bastion's host key beside the fingerprints in its console output, and pin it by instance id
    /// after confirmation (starts a stopped bastion to see its key).
    Trust {
        /// Bastion name from the config [default: the first].
        bastion: Option<String>,
        /// Pin without asking (for scripts); refused when the console output lists other fingerprints.
        #[arg(long)]
        yes: bool,
        /// Replace a different key pinned for the instance (after a rebuild).
        #[arg(long)]
        replace: bool,
    },
    /// Check the config, AWS credentials, IAM permissions (EC2 DryRun), the bastion, SSH keys, the host key pin and
    /// the socket directory; print PASS/FAIL with the fix for each; exit 1 if any fails.
    Doctor {
        /// Bastion name from the config [default: every bastion].
        bastion: Option<String>,
    },
    /// Show each bastion's instance id, EC2 state, address, open channels and time until the idle stop; exit 1 when
    /// a bastion's EC2 state is unknown (the errors follow the table).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line, sets up logging, runs the command, and maps errors to a message on stderr and exit 1.
pub fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args);
    // The proxy is two copy loops on non-blocking pipes and a socket: one thread does it with no cross-thread wake-ups.
    let mut builder = match args.command {
        Command::Proxy { .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastionctl: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors may quote outside text (a daemon's or EC2's message): no control character reaches the terminal.
            eprintln!("bastionctl: error: {}", crate::escape::escape_keep_newlines(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    };
    // A pending stdin read (proxy) would block runtime shutdown; nothing else is left to finish.
    runtime.shutdown_background();
    code
}

fn init_logging(args: &Args) {
    use tracing_subscriber::EnvFilter;
    let default = match (&args.command, args.verbose) {
        (Command::Daemon, 0) => "bastionctl=info",
        (_, 0) => "bastionctl=warn",
        (_, 1) => "bastionctl=info",
        (_, 2) => "bastionctl=debug,russh=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter).with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
