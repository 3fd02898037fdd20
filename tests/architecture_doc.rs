//! docs/ARCHITECTURE.md names files by path; these tests fail when one is renamed, merged or deleted without the doc
//! following, and when "the path of one connection" states a file count that is not the number of files in its
//! steps.

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

#[test]
fn the_stated_file_count_of_the_connection_path_is_the_number_of_files_in_its_steps() {
    let doc = doc();
    let start = doc.find("## The path of one connection").expect("the section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let (intro, rest) = section.split_once("\n1. ").expect("numbered steps");
    let (steps, after) = rest.split_once("\nAfter the first connection").expect("the paragraph after the steps");
    let stated: usize = intro
        .split_once(" files")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("an `N files` count before the steps");
    let not_counted: BTreeSet<&str> = spans(after).filter(|s| is_path(s)).collect();
    let on_path: BTreeSet<&str> = spans(steps).filter(|s| is_path(s) && !not_counted.contains(s)).collect();
    assert_eq!(stated, on_path.len(), "docs/ARCHITECTURE.md says {stated} files; the steps name {on_path:#?}");
    let core = on_path.iter().filter(|p| p.starts_with("crates/core/")).count();
    assert!(intro.contains(&format!("{core} of them in `crates/core`")), "{core} of the files are in crates/core");
}
