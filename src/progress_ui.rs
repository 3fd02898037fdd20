//! How the client commands show progress (the lines of [`crate::progress::Progress`] relayed by the daemon) (`proxy`, `up`, `forward`) on stderr, never on stdout (a ProxyCommand's
//! stdout carries only tunnel bytes):
//!
//! - quiet (`-q`, `BASTIONCTL_QUIET=1`): nothing;
//! - stderr is a terminal: one spinner line with the current phase and the time since the first one (indicatif),
//!   cleared when the command's real output starts;
//! - otherwise (a pipe, a file, scp's or git's captured stderr): one plain `bastionctl: <phase>` line per phase.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the spinner redraws (its elapsed time counts up in between phases).
const TICK: Duration = Duration::from_millis(120);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Not at all.
    Quiet,
    /// A line per phase.
    Lines,
    /// A spinner on a terminal.
    Spinner,
}

impl Mode {
    /// The mode for this process: [`Mode::Quiet`] when asked, [`Mode::Spinner`] when stderr is a terminal and
    /// `TERM` is not `dumb`, else [`Mode::Lines`].
    pub fn detect(quiet: bool) -> Mode {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        match (quiet, std::io::stderr().is_terminal() && !dumb) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Spinner,
            (false, false) => Mode::Lines,
        }
    }
}

/// The progress reporter of one command. Dropping it clears a spinner.
#[derive(Debug)]
pub struct ProgressUi {
    mode: Mode,
    prefix: String,
    bar: Option<ProgressBar>,
}

impl ProgressUi {
    /// A reporter in `mode`.
    pub fn new(mode: Mode) -> ProgressUi {
        ProgressUi { mode, prefix: String::new(), bar: None }
    }

    /// The same mode with `prefix` before each phase (e.g. the listener of a `forward`).
    pub fn with_prefix(&self, prefix: impl Into<String>) -> ProgressUi {
        ProgressUi { mode: self.mode, prefix: prefix.into(), bar: None }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Shows `phase` (a progress message from the daemon, e.g. `starting i-0abc (was stopped)`).
    pub fn show(&mut self, phase: &str) {
        let text = format!("{}{phase}", self.prefix);
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("bastionctl: {text}"),
            Mode::Spinner => self.spinner().set_message(text),
        }
    }

    /// Ends the display before the command's own output: the spinner line is cleared.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn spinner(&mut self) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} bastionctl: {wide_msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(TICK);
            bar
        })
    }
}

impl Drop for ProgressUi {
    fn drop(&mut self) {
        self.finish();
    }
}
