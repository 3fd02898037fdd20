//! Rows of the reliability table (`docs/RELIABILITY.md`): each fault test records what was expected and what it
//! observed. Rows are JSON lines appended to `$BASTIONCTL_REPORT_DIR/<case>.jsonl` (default
//! `target/reliability/`); `scripts/reliability.sh` runs the fault tests and renders the table from them.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One observed case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Case id as in the fault matrix, e.g. `"1"` or `"bad-input: malformed JSON"`.
    pub case: String,
    /// Short title.
    pub title: String,
    /// The behaviour the test requires.
    pub expected: String,
    /// What the test saw (figures included: seconds, bytes, RSS).
    pub observed: String,
    /// Whether the observation met the expectation.
    pub pass: bool,
}

/// Where rows go: `$BASTIONCTL_REPORT_DIR`, else `<crate>/target/reliability`.
pub fn dir() -> PathBuf {
    std::env::var_os("BASTIONCTL_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/reliability"))
}

/// Records a row (best effort: a failure to write is printed, never fatal to the test that observed it).
pub fn record(case: &str, title: &str, expected: &str, observed: &str, pass: bool) {
    let row = Row { case: case.into(), title: title.into(), expected: expected.into(), observed: observed.into(), pass };
    let dir = dir();
    let file = dir.join(format!("{}.jsonl", case.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
    let res = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&file)?;
        let line = serde_json::to_string(&row).map_err(std::io::Error::other)?;
        writeln!(f, "{line}")
    });
    if let Err(e) = res {
        eprintln!("cannot record reliability row in {}: {e}", file.display());
    }
}

/// Reads every row under [`dir`], sorted by case id (numeric ids first, in order).
pub fn read_all() -> std::io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = dir();
    if !dir.exists() {
        return Ok(rows);
    }
    for entry in std::fs::read_dir(&dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        rows.extend(text.lines().filter_map(|l| serde_json::from_str::<Row>(l).ok()));
    }
    rows.sort_by(|a, b| {
        let key = |r: &Row| (r.case.parse::<u32>().unwrap_or(u32::MAX), r.case.clone());
        key(a).cmp(&key(b))
    });
    Ok(rows)
}
