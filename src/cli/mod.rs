//! Command-line interface: clap definitions and dispatch. `main.rs` only calls [`main`].

/// `print!` for a command's results, through [`write_stdout`]: never a panic on a closed or full stdout.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_stdout(format!($($t)*).as_bytes()) };
}

/// `println!` for a command's results, through [`write_stdout`].
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::write_stdout(format!("{}\n", format_args!($($t)*)).as_bytes()) };
}

mod commands;
mod doctor;
mod exit;
mod logging;
mod ssh_config;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Start a stopped AWS bastion on demand, forward SSH through it, stop it when idle.
#[derive(Debug, Parser)]
#[command(name = "bastionctl", version, about, long_about = None)]
pub struct Args {
    /// Config file [default: ~/.config/bastionctl/config.toml]. An empty BASTIONCTL_CONFIG counts as unset.
    #[arg(short, long, global = true, env = "BASTIONCTL_CONFIG", value_name = "PATH", value_parser = config_path)]
    pub config: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress lines on stderr (errors still show). BASTIONCTL_QUIET=1 does the same for a ProxyCommand line
    /// you do not want to edit: ssh's own -q does not reach a ProxyCommand.
    #[arg(short, long, global = true, env = "BASTIONCTL_QUIET", value_parser = clap::builder::FalseyValueParser::new())]
    pub quiet: bool,
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
        /// Target port (%p), 1 to 65535.
        #[arg(value_parser = clap::value_parser!(u16).range(1..))]
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
    /// Listen on local ports and forward each connection through the bastion, like `ssh -L` without an SSH-capable
    /// host (e.g. `bastionctl forward 5432:mydb.abc123.eu-west-1.rds.amazonaws.com:5432`, then
    /// `psql -h 127.0.0.1`). Runs in the foreground until Ctrl-C; prints one line per listener on stdout. An idle
    /// listener does not keep the bastion running; an open connection does.
    Forward {
        /// Local address to listen on (ssh -L's bind_address).
        #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
        bind: std::net::IpAddr,
        /// What to forward: `[BIND:]LOCAL_PORT:HOST:PORT` (ssh -L's form; HOST may be `[IPv6]`; LOCAL_PORT 0
        /// picks a free port). HOST:PORT must be allowed by a bastion's `targets` and `target_ports`.
        #[arg(required = true, value_name = "LOCAL_PORT:HOST:PORT")]
        specs: Vec<crate::forward::ForwardSpec>,
    },
    /// Print ssh_config `Host` blocks for the configured targets with `ProxyCommand <this bastionctl> proxy --fdpass
    /// %h %p` and `ProxyUseFdpass yes`, to paste into ~/.ssh/config or pull in with `Include`. Sets no option you own
    /// (User, IdentityFile, ...).
    SshConfig,
    /// Print a shell completion script: `bastionctl completions bash > ~/.local/share/bash-completion/completions/bastionctl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `bastionctl man > ~/.local/share/man/man1/bastionctl.1`.
    Man,
}

/// Parses the command line, sets up logging, runs the command, and maps errors to a message on stderr and an exit
/// status from sysexits(3) where one fits (see [`exit`]).
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        // `--config ""` / `BASTIONCTL_CONFIG=`: not given, as an empty variable is for OpenSSH and the AWS CLI.
        Ok(mut args) => {
            args.config = args.config.filter(|p| !p.as_os_str().is_empty());
            args
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(exit::for_clap(&e));
        }
    };
    init_logging(&args);
    // The proxy is two copy loops on non-blocking pipes and a socket: one thread does it with no cross-thread wake-ups.
    let mut builder = match args.command {
        Command::Proxy { .. } | Command::Daemon => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastionctl: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    let code = match runtime.block_on(commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<StdoutError>().is_some_and(StdoutError::reader_gone) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors may quote outside text (a daemon's or EC2's message): no control character reaches the terminal.
            eprintln!("bastionctl: error: {}", crate::escape::escape_keep_newlines(&format!("{e:#}")));
            ExitCode::from(exit::for_error(&e))
        }
    };
    // A pending stdin read (proxy) would block runtime shutdown; nothing else is left to finish.
    runtime.shutdown_background();
    code
}

/// Writes a command's output (text, completions, the man page) to stdout. A reader that went away (`bastionctl
/// status | head -1`) ends the process quietly with success, as SIGPIPE's default action does for C tools; any other
/// write error (a full disk) is reported on stderr with exit 74 (EX_IOERR). Never a panic, unlike `println!`.
pub(crate) fn write_stdout(bytes: &[u8]) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        let e = StdoutError(e);
        if !e.reader_gone() {
            eprintln!("bastionctl: error: {e}");
        }
        std::process::exit(exit::for_stdout(&e).into());
    }
}

/// A command's output could not be written to stdout (the proxy's tunnel bytes, or [`write_stdout`]'s text): exit 74
/// (EX_IOERR) with this message, or a quiet success when the reader went away ([`StdoutError::reader_gone`]).
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
pub(crate) struct StdoutError(pub std::io::Error);

impl StdoutError {
    /// The reader closed its end (`status | head -1`, ssh gone): not an error, as SIGPIPE's default action has it.
    pub(crate) fn reader_gone(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// `--config`'s parser: any path, and the empty string (clap's own path parser refuses it), which [`main`] drops.
fn config_path(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

fn init_logging(args: &Args) {
    let default = match (&args.command, args.verbose) {
        (Command::Daemon, 0) => "bastionctl=info",
        (_, 0) => "bastionctl=warn",
        (_, 1) => "bastionctl=info",
        (_, 2) => "bastionctl=debug,russh=info",
        _ => "trace",
    };
    logging::init(default);
}
