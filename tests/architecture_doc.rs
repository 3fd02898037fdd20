//! docs/ARCHITECTURE.md names files by path; these tests fail when one is renamed, merged or deleted without the doc
//! following, and when "the path of one connection" or "the path of a start" states a file count that is not the
//! number of files in its steps.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("read docs/ARCHITECTURE.md")
}

/// The code spans (`like this`) of `text`.
fn spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// A path from the repository's root, like `src/ssh/dialer.rs`.
fn is_path(span: &str) -> bool {
    ["src/", "crates/", "tests/", "docs/", "scripts/"].iter().any(|p| span.starts_with(p)) && !span.contains(' ')
}

/// Every file and directory under `src/` and `crates/` (build output left out), relative to the root.
fn tree() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root().join("src"), root().join("crates")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                todo.push(path.clone());
            }
            out.push(path.strip_prefix(root()).expect("under the root").to_path_buf());
        }
    }
    out
}

#[test]
fn every_file_the_architecture_doc_names_exists() {
    let doc = doc();
    let tree = tree();
    let (mut checked, mut missing) = (0, Vec::new());
    for span in spans(&doc) {
        let found = if is_path(span) {
            root().join(span.trim_end_matches('/')).exists()
        } else if !span.contains(' ') && (span.ends_with(".rs") || span.ends_with('/')) {
            // A name relative to a module (`conn.rs`, `control/`): some file or directory ends with it.
            let name = Path::new(span.trim_end_matches('/'));
            tree.iter().any(|p| p.ends_with(name) && (span.ends_with('/') == root().join(p).is_dir()))
        } else {
            continue;
        };
        checked += 1;
        if !found {
            missing.push(span);
        }
    }
    assert!(checked >= 40, "only {checked} file names found in docs/ARCHITECTURE.md: is the parsing broken?");
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md names files that do not exist: {missing:?}");
}

/// The section of `doc` that starts with `title`: its stated count (the number before " files" or " more files"
/// in the intro), and the files named in its numbered steps that the paragraph after the steps (starting with
/// `after`) does not exclude.
fn path_section<'a>(doc: &'a str, title: &str, after: &str) -> (&'a str, usize, BTreeSet<&'a str>) {
    let start = doc.find(title).unwrap_or_else(|| panic!("the section {title:?}"));
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let (intro, rest) = section.split_once("\n1. ").expect("numbered steps");
    let (steps, after) = rest.split_once(after).unwrap_or_else(|| panic!("the paragraph after the steps: {after:?}"));
    let stated: usize = intro
        .split_once(" files")
        .map(|(head, _)| head.trim_end_matches(" more"))
        .and_then(|head| head.rsplit(char::is_whitespace).next())
        .and_then(|n| n.parse().ok())
        .expect("an `N files` count before the steps");
    let not_counted: BTreeSet<&str> = spans(after).filter(|s| is_path(s)).collect();
    let on_path = spans(steps).filter(|s| is_path(s) && !not_counted.contains(s)).collect();
    (intro, stated, on_path)
}

fn in_core(files: &BTreeSet<&str>) -> usize {
    files.iter().filter(|p| p.starts_with("crates/core/")).count()
}

#[test]
fn the_stated_file_counts_of_the_connection_and_start_paths_are_the_numbers_of_files_in_their_steps() {
    let doc = doc();
    let (intro, stated, conn) = path_section(&doc, "## The path of one connection", "\nAfter the first connection");
    assert_eq!(stated, conn.len(), "docs/ARCHITECTURE.md says {stated} files; the steps name {conn:#?}");
    let core = in_core(&conn);
    assert!(intro.contains(&format!("{core} of them in `crates/core`")), "{core} of the files are in crates/core");

    let (intro, stated, start) = path_section(&doc, "## The path of a start", "\nAfter the start");
    let more: BTreeSet<&str> = start.difference(&conn).copied().collect();
    assert_eq!(stated, more.len(), "the start section says {stated} more files; the new ones are {more:#?}");
    let total = conn.len() + more.len();
    assert!(intro.contains(&format!("({total} for a connection")), "a cold connection crosses {total} files");
    let core = in_core(&more);
    assert!(intro.contains(&format!("{core} of them in `crates/core`")), "{core} of the new files are in crates/core");
}
