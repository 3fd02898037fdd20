//! Escaping of text that came from outside (a client's request, an EC2 or sshd message) before it reaches a log
//! line, an error message or the `status` table, so that it can never forge a line or drive the terminal.
//!
//! Every control character (C0, DEL, C1: newline, carriage return, escape, ...) and every Unicode bidirectional
//! or invisible format character (U+200B..U+200F, U+202A..U+202E, U+2066..U+2069, U+FEFF) is written as a Rust-style
//! escape (`\n`, `\r`, `\t`, `\u{1b}`). Text without such characters is returned as it is, without copying, so
//! escaping twice (a message escaped where it was made, then again where it is printed) changes nothing more.
//! Backslashes are left alone for the same reason.

use std::borrow::Cow;
use std::fmt;

/// True for a character that must not reach a terminal or log line as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `s` with every control and bidi/format character escaped (see the module docs).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` escaped like [`escape`], except that newlines are kept: for multi-line text this program wrote itself
/// (an error with its `hint:` line) whose parts may carry outside text.
pub fn escape_keep_newlines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let lines: Vec<Cow<'_, str>> = s.split('\n').map(escape).collect();
    Cow::Owned(lines.join("\n"))
}

/// Displays its text escaped: `format!("bad name {}", Escaped(name))`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(escape("web.internal:22 — ok"), Cow::Borrowed("web.internal:22 — ok")));
        assert!(matches!(escape_keep_newlines("a\n  hint: b"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_bidi_are_escaped_once() {
        assert_eq!(escape("a\nINFO forged\r\x1b[31m\u{7f}\u{85}"), "a\\nINFO forged\\r\\u{1b}[31m\\u{7f}\\u{85}");
        assert_eq!(escape("evil\u{202e}txt.exe\u{200b}"), "evil\\u{202e}txt.exe\\u{200b}");
        assert_eq!(escape("a\\nb\tc\0"), "a\\nb\\tc\\u{0}");
        let once = escape("x\u{1b}y\n").into_owned();
        assert_eq!(escape(&once), once, "escaping is idempotent");
        assert_eq!(Escaped("x\ny").to_string(), "x\\ny");
    }

    #[test]
    fn keep_newlines_escapes_everything_but_the_line_breaks() {
        assert_eq!(escape_keep_newlines("bad\x1b[2J\n  hint: x\r"), "bad\\u{1b}[2J\n  hint: x\\r");
    }
}
