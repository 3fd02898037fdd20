//! Where in the TOML text a problem is: line numbers and dotted key paths (`bastion[0].targets[1]`) for errors.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::escape::{escape, escape_keep_newlines};

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// A TOML parser/deserializer error with the dotted key path it concerns added to its first line
/// (`TOML parse error at line 3, column 16, key `bastion[0].idle_timeout``), so that a wrong value, not only an
/// unknown key, names its key.
///
/// Control characters are escaped: the parser's own message whole (it may quote a key written with escapes, such
/// as `"a\u001b\n" = 1`, newline and all), the snippet of the line keeping its line breaks.
pub(super) fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let mut msg = e.to_string();
    if let Some(at) = msg.rfind(e.message()) {
        msg.replace_range(at..at + e.message().len(), &escape(e.message()));
    }
    msg = escape_keep_newlines(&msg).into_owned();
    if e.message().ends_with("expected a duration") {
        msg = format!("{} (write a string such as \"90s\", \"15m\" or \"1h 30m\")", msg.trim_end());
    }
    let Some(key) = e.span().and_then(|s| key_at(text, s.start)) else { return msg };
    let key = escape(&key);
    match msg.split_once('\n') {
        Some((first, rest)) if first.starts_with("TOML parse error at line") => format!("{first}, key `{key}`\n{rest}"),
        _ => format!("{}\nin key `{key}`", msg.trim_end()),
    }
}

/// Visitor of [`walk_keys`]: `(dotted path, span of the key or array element, the value)`; true stops the walk.
type KeyVisitor<'a> = dyn FnMut(&str, Range<usize>, &Spanned<DeValue<'_>>) -> bool + 'a;

/// Calls `f(path, span, value)` for every key and array element of the document, depth first, with `path` in the
/// form used by [`ConfigError::Invalid`] (`bastion[0].targets[1]`) and `span` the key's (or the element's) position.
/// Stops when `f` returns true. A document that is not valid TOML is not walked.
fn walk_keys(text: &str, f: &mut KeyVisitor<'_>) -> bool {
    fn table(t: &DeTable<'_>, path: &mut String, f: &mut KeyVisitor<'_>) -> bool {
        for (k, v) in t.iter() {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k.get_ref());
            if f(path, k.span(), v) || value(v, path, f) {
                return true;
            }
            path.truncate(len);
        }
        false
    }
    fn value(v: &Spanned<DeValue<'_>>, path: &mut String, f: &mut KeyVisitor<'_>) -> bool {
        match v.get_ref() {
            DeValue::Table(t) => table(t, path, f),
            DeValue::Array(a) => a.iter().enumerate().any(|(j, e)| {
                let len = path.len();
                path.push_str(&format!("[{j}]"));
                // Inner keys first: an inline table's span covers them all.
                let found = value(e, path, f) || f(path, e.span(), e);
                path.truncate(len);
                found
            }),
            _ => false,
        }
    }
    match DeTable::parse(text) {
        Ok(doc) => table(doc.get_ref(), &mut String::new(), f),
        Err(_) => false,
    }
}

/// The dotted key path whose key or scalar value covers byte `offset` (where the deserializer reported an error).
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut found = None;
    walk_keys(text, &mut |path, key_span, v| {
        let scalar = !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_));
        let hit = key_span.contains(&offset) || (scalar && v.span().contains(&offset));
        if hit {
            found = Some(path.to_string());
        }
        hit
    });
    // An error on a whole array or inline table (e.g. `identity_files = { a = 1 }`) names the key holding it.
    if found.is_none() {
        walk_keys(text, &mut |path, _, v| {
            if v.span().contains(&offset) {
                found = Some(path.to_string());
            }
            false
        });
    }
    found
}

/// Where the key at dotted path `key` (e.g. `bastion[1].name`, or `bastion[1]` for its `[[bastion]]` header) is.
pub(super) fn key_span(text: &str, key: &str) -> Option<Range<usize>> {
    let mut found = None;
    walk_keys(text, &mut |path, span, _| {
        if path == key {
            found = Some(span);
        }
        found.is_some()
    });
    found
}
