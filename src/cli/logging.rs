//! Log output on stderr, in the form its reader wants:
//!
//! - a terminal: colours, unless `NO_COLOR` is set to anything non-empty (<https://no-color.org>);
//! - the journal (systemd sets `JOURNAL_STREAM` to the `device:inode` of the stream it gave us as stderr): no
//!   timestamp (the journal adds its own) and each line prefixed with its syslog priority, `<3>` error, `<4>`
//!   warning, `<6>` info, `<7>` debug and trace (sd-daemon(3); journald's `SyslogLevelPrefix=` is on by default),
//!   so `journalctl -p warning` selects warnings and errors;
//! - anything else (a file, a pipe): plain lines with a timestamp.

use std::ffi::OsStr;
use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// Where stderr goes, as far as the log format is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// A terminal that may show colours.
    ColourTerminal,
    /// The systemd journal's stream.
    Journal,
    /// A file, a pipe, or a terminal under `NO_COLOR`.
    Plain,
}

/// Decides the [`Sink`] from `NO_COLOR`, whether stderr is a terminal, and whether it is the journal's stream.
pub fn sink(no_color: Option<&OsStr>, is_terminal: bool, is_journal: bool) -> Sink {
    if is_journal {
        return Sink::Journal;
    }
    let colour_refused = no_color.is_some_and(|v| !v.is_empty());
    match is_terminal && !colour_refused {
        true => Sink::ColourTerminal,
        false => Sink::Plain,
    }
}

/// Whether stderr is the stream named by `JOURNAL_STREAM` (`<st_dev>:<st_ino>`), as systemd documents the check: a
/// stderr redirected elsewhere by a child process keeps the inherited variable but is not the journal.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else { return false };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else { return false };
    dev.parse::<u64>().is_ok_and(|d| d == st.st_dev) && ino.parse::<u64>().is_ok_and(|i| i == st.st_ino)
}

/// Installs the global subscriber: `default` as the filter unless `RUST_LOG` is set, output on stderr per [`sink`].
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let is_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match sink(std::env::var_os("NO_COLOR").as_deref(), is_terminal, stderr_is_journal()) {
        Sink::Journal => builder
            .with_ansi(false)
            .event_format(Prioritised(format::format().without_time().with_level(false).with_target(false).with_ansi(false)))
            .try_init(),
        Sink::ColourTerminal => builder.with_ansi(true).try_init(),
        Sink::Plain => builder.with_ansi(false).try_init(),
    };
}

/// The syslog priority journald stores for a tracing level.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Wraps a formatter and puts `<priority>` before each event.
struct Prioritised<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritised<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_turns_colours_off_on_a_terminal_and_the_journal_wins() {
        let set = Some(OsStr::new("1"));
        assert_eq!(sink(None, true, false), Sink::ColourTerminal);
        assert_eq!(sink(set, true, false), Sink::Plain);
        // no-color.org: an empty value does not count.
        assert_eq!(sink(Some(OsStr::new("")), true, false), Sink::ColourTerminal);
        assert_eq!(sink(None, false, false), Sink::Plain);
        assert_eq!(sink(None, true, true), Sink::Journal);
        assert_eq!(sink(set, false, true), Sink::Journal);
    }

    #[test]
    fn priorities_follow_syslog() {
        let p: Vec<u8> = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG].into_iter().map(priority).collect();
        assert_eq!(p, [3, 4, 6, 7]);
    }
}
