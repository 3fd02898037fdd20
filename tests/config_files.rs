//! Loads every config file the project ships or keeps as a fixture, through `Config::load` (STYLE.md item 8):
//!
//! - `tests/config/valid/*.toml` must load;
//! - `tests/config/invalid/*.toml` must fail. Each starts with `# expect: <substring of the error>`, optionally
//!   followed by `# line: <N>`; the error must contain the substring, name the file and give a line number (that
//!   line, if set);
//! - every shipped example `config/*.toml` must load, and so must its commented-out `# [[bastion]]` once uncommented.

use std::path::{Path, PathBuf};

use bastionctl::config::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `*.toml` files directly in `dir`, sorted; panics when there are none (a moved directory must not pass).
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.toml files in {}", dir.display());
    files
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn valid_fixtures_load() {
    for file in toml_files(&root().join("tests/config/valid")) {
        let cfg = Config::load(&file).unwrap_or_else(|e| panic!("{} should load, got:\n{e}", name(&file)));
        assert_eq!(cfg.source, file);
        assert!(!cfg.bastions.is_empty(), "{}", name(&file));
        // Everything the daemon reads at start-up is usable without panicking.
        for b in &cfg.bastions {
            assert!(cfg.bastion(Some(&b.name())).is_ok(), "{}: {}", name(&file), b.name());
            let _ = (b.instance_ref(), b.identity_files(), b.known_hosts());
            assert_eq!(b.target_rules().len(), b.targets.as_ref().map_or(0, Vec::len), "{}: every target parses", name(&file));
        }
        let _ = (cfg.socket_path(), cfg.log_file());
    }
}

/// The expectations in an invalid fixture's header.
struct Expect {
    substring: String,
    line: Option<usize>,
}

fn expectations(file: &Path, text: &str) -> Expect {
    let mut lines = text.lines();
    let substring = lines
        .next()
        .and_then(|l| l.strip_prefix("# expect:"))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{} must start with `# expect: <substring of the error>`", name(file)));
    let line = lines.next().and_then(|l| l.strip_prefix("# line:")).map(|n| {
        n.trim().parse().unwrap_or_else(|_| panic!("{}: `# line:` needs a number", name(file)))
    });
    Expect { substring, line }
}

#[test]
fn invalid_fixtures_fail_naming_file_line_and_cause() {
    for file in toml_files(&root().join("tests/config/invalid")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = expectations(&file, &text);
        let err = match Config::load(&file) {
            Ok(_) => panic!("{} should fail to load (expected: {})", name(&file), expect.substring),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&expect.substring), "{}: error lacks `{}`:\n{err}", name(&file), expect.substring);
        assert!(err.contains(&file.display().to_string()), "{}: error does not name the file:\n{err}", name(&file));
        let has_line_number = err.match_indices("line ").any(|(i, m)| {
            err[i + m.len()..].starts_with(|c: char| c.is_ascii_digit())
        });
        assert!(has_line_number, "{}: error gives no line number:\n{err}", name(&file));
        if let Some(n) = expect.line {
            assert!(err.contains(&format!("line {n},")), "{}: error should point at line {n}:\n{err}", name(&file));
        }
    }
}

#[test]
fn shipped_examples_load() {
    for file in toml_files(&root().join("config")) {
        let cfg = Config::load(&file).unwrap_or_else(|e| panic!("{} should load, got:\n{e}", name(&file)));
        assert!(!cfg.bastions.is_empty(), "{}", name(&file));
    }
}

#[test]
fn example_documents_the_defaults_it_claims() {
    let cfg = Config::load(&root().join("config/bastionctl.example.toml")).unwrap();
    let b = cfg.bastion(None).unwrap();
    assert_eq!(b.idle_timeout, bastionctl::config::DEFAULT_IDLE_TIMEOUT);
    assert_eq!(b.start_timeout, bastionctl::config::DEFAULT_START_TIMEOUT);
    assert_eq!(b.port, bastionctl::config::DEFAULT_SSH_PORT);
    let targets: Vec<String> = b.target_rules().iter().map(|r| r.to_string()).collect();
    assert_eq!(targets, ["10.0.16.0/20", "web", "*.internal"]);
    assert!(b.resolve_name_tags);
}

/// A copied example must not pin a profile: that would silently override `AWS_PROFILE`, which the README says
/// selects the profile.
#[test]
fn example_leaves_the_aws_profile_to_aws_profile() {
    for file in toml_files(&root().join("config")) {
        let cfg = Config::load(&file).unwrap();
        assert_eq!(cfg.aws.profile, None, "{} sets [aws] profile, which overrides AWS_PROFILE", name(&file));
    }
}

/// Uncomments the `# [[bastion]]` block of an example (and the `# key = value` lines and `# [[forward]]` tables
/// after it).
fn uncomment_second_bastion(text: &str) -> Option<String> {
    let start = text.lines().position(|l| l.trim() == "# [[bastion]]")?;
    let out: Vec<&str> = text
        .lines()
        .enumerate()
        .map(|(i, l)| match l.strip_prefix("# ") {
            Some(rest) if i >= start && (rest == "[[bastion]]" || rest == "[[forward]]" || rest.contains(" = ")) => rest,
            _ => l,
        })
        .collect();
    Some(out.join("\n") + "\n")
}

#[test]
fn commented_second_bastion_in_examples_loads_when_uncommented() {
    for file in toml_files(&root().join("config")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let Some(uncommented) = uncomment_second_bastion(&text) else { continue };
        let cfg = Config::from_str(&uncommented, &file)
            .unwrap_or_else(|e| panic!("{} with its second bastion uncommented should load:\n{e}", name(&file)));
        assert!(cfg.bastions.len() >= 2, "{}: the uncommented block adds a bastion", name(&file));
    }
}
