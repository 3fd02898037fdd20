//! Property tests of bastionctl's parsers of untrusted input: the control socket's framing (`control::read_line`,
//! `control::read_frame`), the config parser (`Config::from_str`) and the target host-name check
//! (`policy::TargetHost::parse`, with `escape`), on arbitrary input and on mutated valid input.
//! They are what CI runs in place of the cargo-fuzz targets in fuzz/ (scripts/fuzz.sh), whose AddressSanitizer
//! build of aws-sdk-ec2 alone takes longer than CI allows. The whole file runs in about 60 s on 2 cores; set
//! `PROPTEST_CASES` to run each property that many times instead.
//!
//! A failing case is shrunk and saved to tests/prop_inputs.proptest-regressions (commit it): every later run replays
//! it first, so a found crash stays a regression case. Crash inputs of the fuzzer under fuzz/regressions/ are
//! replayed by `fuzz_regressions_replay_without_panic` in tests/bad_input.rs.

use std::path::Path;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use bastionctl::config::{Config, ConfigError};
use bastionctl::control::{self, ErrorReply, Frame, FrameError, MAX_FRAME, MAX_LINE, Op, Reply, Request};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, BufReader};

/// The config path the parser is told; every error must name it.
const PATH: &str = "/prop/bastionctl.toml";

/// `cases` runs per property (or `$PROPTEST_CASES`), failures saved next to this file.
fn budget(cases: u32) -> ProptestConfig {
    let env = std::env::var_os("PROPTEST_CASES").is_some();
    ProptestConfig {
        cases: if env { ProptestConfig::default().cases } else { cases },
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

/// Polls `f` once: on in-memory input every parser must finish without waiting (waiting here = a hang on a socket).
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the parser waits for more input than it was given"),
    }
}

// ---- control::read_line ----

/// Reads one line as `T` from `data` through a `cap`-byte buffer: the result and the bytes left in the reader.
fn read_line_rest<T: DeserializeOwned>(data: &[u8], cap: usize) -> (Result<T, FrameError>, Vec<u8>) {
    let mut r = BufReader::with_capacity(cap, data);
    let res = now(control::read_line::<_, T>(&mut r));
    let mut rest = Vec::new();
    now(r.read_to_end(&mut rest)).expect("reading a slice");
    (res, rest)
}

/// `read_line` returns the first line's value or a typed error, and leaves everything after the newline unread.
fn check_read_line<T: DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8], cap: usize) -> Result<(), TestCaseError> {
    let (res, rest) = read_line_rest::<T>(data, cap);
    let within = &data[..data.len().min(MAX_LINE)];
    match within.iter().position(|&b| b == b'\n') {
        Some(i) => {
            prop_assert_eq!(&rest[..], &data[i + 1..], "read_line consumed bytes past the newline");
            let expected = serde_json::from_slice::<T>(&data[..=i]);
            match (res, expected) {
                (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
                (Err(FrameError::Json(_)), Err(_)) => {}
                (got, want) => prop_assert!(false, "line {:?}: got {got:?}, serde_json says {want:?}", &data[..=i]),
            }
        }
        None if data.len() > MAX_LINE => {
            prop_assert!(matches!(res, Err(FrameError::TooLong)), "{} bytes without a newline: {res:?}", data.len());
            prop_assert!(data.ends_with(&rest) && rest.len() >= data.len() - MAX_LINE, "kept {} bytes", rest.len());
        }
        None => {
            prop_assert!(matches!(res, Err(FrameError::Closed)), "no newline: {res:?}");
            prop_assert!(rest.is_empty());
        }
    }
    Ok(())
}

fn check_both_lines(data: &[u8], cap: usize) -> Result<(), TestCaseError> {
    check_read_line::<Request>(data, cap)?;
    check_read_line::<Reply>(data, cap)
}

/// Bytes biased towards the ones JSON and the framing care about.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![3 => any::<u8>(), 2 => prop::sample::select(b"\n{}[]\":,\\ 0-1eEDXtrufalsn".to_vec())]
}

/// Reader buffer sizes: tiny ones split lines and frames across fills.
fn cap() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=16, Just(64usize), Just(8192usize)]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[ -~]{0,24}", any::<String>().prop_map(|s| s.chars().take(24).collect())]
}

fn request() -> impl Strategy<Value = Request> {
    let op = prop_oneof![
        (text(), any::<u16>(), any::<bool>()).prop_map(|(host, port, framed)| Op::Connect { host, port, framed }),
        prop::option::of(text()).prop_map(|bastion| Op::Up { bastion }),
        (prop::option::of(text()), any::<bool>()).prop_map(|(bastion, force)| Op::Down { bastion, force }),
        Just(Op::Status),
    ];
    (prop_oneof![3 => Just(control::VERSION), 1 => any::<u32>()], op).prop_map(|(v, op)| Request { v, op })
}

/// One byte-level edit; positions are taken modulo the length at the time of the edit.
#[derive(Debug, Clone)]
enum ByteEdit {
    Flip(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    Repeat(Index, Index),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, x)| ByteEdit::Flip(i, x)),
        (any::<Index>(), byte()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<Index>().prop_map(ByteEdit::Delete),
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ByteEdit::Repeat(a, b)),
    ]
}

fn apply_bytes(mut d: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for e in edits {
        let n = d.len();
        match e {
            ByteEdit::Insert(i, b) => d.insert(i.index(n + 1), *b),
            _ if n == 0 => {}
            ByteEdit::Flip(i, x) => d[i.index(n)] ^= x,
            ByteEdit::Delete(i) => drop(d.remove(i.index(n))),
            ByteEdit::Truncate(i) => d.truncate(i.index(n)),
            ByteEdit::Repeat(a, b) => {
                let (a, b) = (a.index(n), b.index(n));
                let piece = d[a.min(b)..=a.max(b)].to_vec();
                d.splice(a..a, piece);
            }
        }
    }
    d
}

fn line_of(req: &Request) -> Vec<u8> {
    let mut line = serde_json::to_vec(req).expect("a request serializes");
    line.push(b'\n');
    line
}

// ---- control::read_frame ----

/// What `read_frame` must do with `d`, and how many bytes it consumes (payload of a data frame not included).
fn frame_model(d: &[u8]) -> (String, usize) {
    let len = |d: &[u8]| d.get(1..5).map(|b| u32::from_be_bytes(b.try_into().unwrap()));
    match d.first() {
        None => ("closed".into(), 0),
        Some(b'E') => (format!("{:?}", Frame::End), 1),
        Some(&t @ (b'D' | b'X')) => match len(d) {
            None => ("closed".into(), d.len()),
            Some(n) if n as usize > MAX_FRAME => (format!("too long {n}"), 5),
            Some(0) if t == b'D' => ("bad tag 68".into(), 5),
            Some(n) if t == b'D' => (format!("{:?}", Frame::Data(n)), 5),
            Some(n) => match d.get(5..5 + n as usize) {
                None => ("closed".into(), d.len()),
                Some(json) => match serde_json::from_slice::<ErrorReply>(json) {
                    Ok(e) => (format!("{:?}", Frame::Error(e)), 5 + n as usize),
                    Err(_) => ("json".into(), 5 + n as usize),
                },
            },
        },
        Some(t) => (format!("bad tag {t}"), 1),
    }
}

fn frame_outcome(r: &Result<Frame, FrameError>) -> String {
    match r {
        Ok(f) => format!("{f:?}"),
        Err(FrameError::Closed) => "closed".into(),
        Err(FrameError::FrameTooLong(n)) => format!("too long {n}"),
        Err(FrameError::BadTag(t)) => format!("bad tag {t}"),
        Err(FrameError::Json(_)) => "json".into(),
        Err(e) => format!("unexpected error {e}"),
    }
}

/// Reads frames (skipping data payloads as the client does) until an error or the end: each one is what the format
/// says, and an end or error frame leaves what follows it unread.
fn check_frames(data: &[u8], cap: usize) -> Result<(), TestCaseError> {
    let mut r = BufReader::with_capacity(cap, data);
    let mut pos = 0;
    loop {
        let got = now(control::read_frame(&mut r));
        let (want, used) = frame_model(&data[pos..]);
        prop_assert_eq!(frame_outcome(&got), want, "at byte {}", pos);
        pos += used;
        match got {
            Ok(Frame::Data(n)) => {
                let copied = now(tokio::io::copy(&mut (&mut r).take(u64::from(n)), &mut tokio::io::sink()));
                prop_assert_eq!(copied.expect("copy from a slice"), (n as usize).min(data.len() - pos) as u64);
                pos = (pos + n as usize).min(data.len());
            }
            Ok(_) => {
                let mut rest = Vec::new();
                now(r.read_to_end(&mut rest)).expect("reading a slice");
                prop_assert_eq!(&rest[..], &data[pos..], "bytes after an end or error frame were consumed");
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
    }
}

fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..48).prop_map(|p| [&control::data_frame_head(p.len())[..], &p].concat()),
        Just(vec![control::FRAME_END]),
        (text(), text(), prop::option::of(text()))
            .prop_map(|(kind, message, hint)| control::error_frame(&ErrorReply { kind, message, hint })),
        (prop::sample::select(b"DXE?".to_vec()), any::<u32>()).prop_map(|(t, n)| [&[t][..], &n.to_be_bytes()].concat()),
    ]
}

proptest! {
    #![proptest_config(budget(26000))]

    #[test]
    fn read_line_on_arbitrary_bytes(data in prop::collection::vec(byte(), 0..300), cap in cap()) {
        check_both_lines(&data, cap)?;
    }

    #[test]
    fn read_line_on_mutated_requests(
        reqs in prop::collection::vec(request(), 1..4),
        edits in prop::collection::vec(byte_edit(), 0..6),
        cap in cap(),
    ) {
        let data = apply_bytes(reqs.iter().flat_map(line_of).collect(), &edits);
        check_both_lines(&data, cap)?;
    }

    #[test]
    fn read_line_round_trips_requests(req in request(), tail in prop::collection::vec(any::<u8>(), 0..16), cap in cap()) {
        let (got, rest) = read_line_rest::<Request>(&[line_of(&req), tail.clone()].concat(), cap);
        prop_assert_eq!(got.ok(), Some(req));
        prop_assert_eq!(rest, tail);
    }

    #[test]
    fn read_frame_on_arbitrary_bytes(data in prop::collection::vec(byte(), 0..300), cap in cap()) {
        check_frames(&data, cap)?;
    }

    #[test]
    fn read_frame_on_mutated_frames(
        frames in prop::collection::vec(frame(), 1..5),
        edits in prop::collection::vec(byte_edit(), 0..6),
        cap in cap(),
    ) {
        check_frames(&apply_bytes(frames.concat(), &edits), cap)?;
    }
}

proptest! {
    // Lines of about MAX_LINE bytes (64 KiB each): fewer cases.
    #![proptest_config(budget(1300))]

    #[test]
    fn read_line_at_the_length_limit(pad in (MAX_LINE - 24)..(MAX_LINE + 4), newline in any::<bool>(), cap in cap()) {
        let mut data = br#"{"v":1,"op":"status"}"#.to_vec();
        data.resize(pad, b' ');
        if newline {
            data.extend_from_slice(b"\n{\"v\":1}\n");
        }
        check_both_lines(&data, cap)?;
    }
}

// ---- Config::from_str ----

/// The example config and the valid config fixtures, then the invalid ones (they start mutations near an error).
static SEEDS: LazyLock<(Vec<String>, Vec<String>)> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read_dir = |dir: &str| -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir)).expect(dir).map(|e| e.expect(dir).path()).collect();
        files.sort();
        files.iter().map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))).collect()
    };
    let mut valid = read_dir("tests/config/valid");
    valid.push(std::fs::read_to_string(root.join("config/bastionctl.example.toml")).expect("the example config"));
    (valid, read_dir("tests/config/invalid"))
});

/// A seed config: a valid one three times in four.
fn seed() -> impl Strategy<Value = &'static str> {
    (prop::bool::weighted(0.75), any::<Index>()).prop_map(|(valid, i)| {
        let list = if valid { &SEEDS.0 } else { &SEEDS.1 };
        list[i.index(list.len())].as_str()
    })
}

/// The keys of `[aws]`, `[daemon]` and `[[bastion]]`.
const AWS_KEYS: &[&str] = &["profile", "region", "endpoint_url"];
const DAEMON_KEYS: &[&str] = &["socket", "log_file", "pinned_host_keys"];
const BASTION_KEYS: &[&str] = &[
    "name", "instance_id", "name_tag", "user", "port", "identity_files", "agent", "identities_only", "known_hosts",
    "trust_on_first_use", "idle_timeout", "start_timeout", "address", "targets", "target_ports",
];
/// Every key the schema knows, a few it does not, and the table headers.
const KEYS: &[&str] = &[
    "profile", "region", "endpoint_url", "socket", "log_file", "pinned_host_keys", "name", "instance_id", "name_tag",
    "user", "port", "identity_files", "agent", "identities_only", "known_hosts", "trust_on_first_use", "idle_timeout",
    "start_timeout", "address", "targets", "target_ports", "secret_access_key", "bastion", "aws.region", "\"\"",
];
const HEADERS: &[&str] = &["[aws]", "[daemon]", "[[bastion]]", "[bastion]", "[[aws]]", "[bastion.x]", "[[daemon]]"];

/// TOML values that hit the validators' edges, and random ones.
fn value() -> impl Strategy<Value = String> {
    const EDGES: &[&str] = &[
        "\"\"", "\"i-0123456789abcdef0\"", "\"i-0abc1234\"", "\"i-0abc\"", "\"i-\"", "\"0s\"", "\"15m\"", "\"1h 30m\"",
        "\"5 minutes\"", "\"bogus\"", "\"18446744073709551616s\"", "\"0.0.0.0/0\"", "\"::/0\"", "\"*\"", "\"*.\"", "\".\"",
        "\"a*\"", "\"*.*\"", "\"10.0.0.0/33\"", "\"10.0.0.1/32\"", "\"300.1.1.1\"", "\"fd00::/8\"", "[]", "[\"*\"]",
        "[\"10.0.16.0/20\", \"\"]", "[22, 70000]", "[0]", "{}", "{ a = 1 }", "[[1]]", "true", "0", "-1", "65536",
        "1e400", "nan", "-inf", "\"~\"", "\"~user/x\"", "\"~/\"", "1979-05-27T07:32:00Z", "'''\n'''", "\"\\u0000\"",
    ];
    prop_oneof![
        3 => prop::sample::select(EDGES).prop_map(str::to_string),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
        1 => text(),
    ]
}

/// One line-level edit of a config; positions are taken modulo the line count at the time of the edit.
#[derive(Debug, Clone)]
enum LineEdit {
    Drop(Index),
    Duplicate(Index, Index),
    /// Gives the line's key a new value, or (`false`, or no key on the line) inserts `key = value` before it.
    Set(Index, bool, &'static str, String),
    Header(Index, &'static str),
    Raw(Index, String),
    Truncate(Index),
    Bytes(Vec<ByteEdit>),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        2 => any::<Index>().prop_map(LineEdit::Drop),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Duplicate(a, b)),
        4 => (any::<Index>(), prop::bool::weighted(0.8), prop::sample::select(KEYS), value())
            .prop_map(|(i, keep, k, v)| LineEdit::Set(i, keep, k, v)),
        1 => (any::<Index>(), prop::sample::select(HEADERS)).prop_map(|(i, h)| LineEdit::Header(i, h)),
        1 => (any::<Index>(), text()).prop_map(|(i, s)| LineEdit::Raw(i, s)),
        1 => any::<Index>().prop_map(LineEdit::Truncate),
        1 => prop::collection::vec(byte_edit(), 1..3).prop_map(LineEdit::Bytes),
    ]
}

fn apply_lines(text: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for e in edits {
        let n = lines.len();
        match e {
            LineEdit::Header(i, h) => lines.insert(i.index(n + 1), h.to_string()),
            LineEdit::Raw(i, s) => lines.insert(i.index(n + 1), s.clone()),
            LineEdit::Bytes(b) => {
                let bytes = apply_bytes(lines.join("\n").into_bytes(), b);
                lines = String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect();
            }
            _ if n == 0 => {}
            LineEdit::Drop(i) => drop(lines.remove(i.index(n))),
            LineEdit::Duplicate(a, b) => lines.insert(b.index(n + 1), lines[a.index(n)].clone()),
            LineEdit::Set(i, keep, k, v) => match lines[i.index(n)].split_once('=') {
                Some((key, _)) if *keep => lines[i.index(n)] = format!("{key}= {v}"),
                _ => lines.insert(i.index(n + 1), format!("{k} = {v}")),
            },
            LineEdit::Truncate(i) => lines.truncate(i.index(n)),
        }
    }
    lines.join("\n")
}

/// A value of the right type for `key` (often valid, sometimes at the edge), or rarely any [`value`].
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let quoted = |s: String| format!("{s:?}");
    let target = prop::sample::select(&["10.0.16.0/20", "10.0.32.10", "fd00:ec2:16::/48", "*.internal", "ip-10-*", "*",
        "0.0.0.0/0", "10.0.0.0/7", "*.", "", "a*b*", "::/0", "10.0.0.1/32", "host.example"][..]);
    let typed: BoxedStrategy<String> = match key {
        "instance_id" => prop_oneof!["i-[0-9a-f]{8}", "i-[0-9a-f]{17}", "i-[0-9a-fA-Z]{0,18}"].prop_map(quoted).boxed(),
        "port" => any::<u16>().prop_map(|p| p.to_string()).boxed(),
        "agent" | "identities_only" | "trust_on_first_use" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "idle_timeout" | "start_timeout" => prop_oneof![8 => "[0-9]{1,3}(s|m|h| minutes)", 1 => "0s", 1 => "[0-9]{1,25}[a-z]{0,2}"]
            .prop_map(quoted)
            .boxed(),
        "address" => prop_oneof![8 => any::<std::net::IpAddr>().prop_map(|a| a.to_string()), 1 => "[0-9.:]{0,16}"]
            .prop_map(quoted)
            .boxed(),
        "targets" => prop::collection::vec(target, 0..4).prop_map(|t| format!("{t:?}")).boxed(),
        "target_ports" => prop::collection::vec(any::<u16>(), 0..3).prop_map(|p| format!("{p:?}")).boxed(),
        "identity_files" => prop::collection::vec("~?/?[a-z/._]{0,12}", 0..3).prop_map(|f| format!("{f:?}")).boxed(),
        "endpoint_url" => prop_oneof![Just("http://127.0.0.1:5000".to_string()), "[ -~]{0,16}"].prop_map(quoted).boxed(),
        _ => "~?/?[a-z/._ -]{0,12}".prop_map(quoted).boxed(),
    };
    prop_oneof![30 => typed, 1 => value()].boxed()
}

/// A table of `header` with some of `keys` (each at most once), each set by [`value_for`].
fn table(header: &'static str, keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::subsequence(keys, 0..=keys.len())
        .prop_flat_map(|ks| ks.into_iter().map(|k| value_for(k).prop_map(move |v| format!("{k} = {v}\n"))).collect::<Vec<_>>())
        .prop_map(move |lines| format!("{header}\n{}", lines.concat()))
}

/// A well-formed config of known keys in their own tables: only the values are wrong, if anything.
fn generated_config() -> impl Strategy<Value = String> {
    (table("[aws]", AWS_KEYS), table("[daemon]", DAEMON_KEYS), prop::collection::vec(table("[[bastion]]", BASTION_KEYS), 1..3))
        .prop_map(|(aws, daemon, bastions)| format!("{aws}{daemon}{}", bastions.concat()))
}

/// `from_str` gives a config its users can use, or an error naming the file and a line of it.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    let lines = text.lines().count().max(1) + 1;
    match Config::from_str(text, Path::new(PATH)) {
        Ok(cfg) => {
            prop_assert!(!cfg.bastions.is_empty());
            prop_assert!(cfg.bastion(None).is_ok());
            for b in &cfg.bastions {
                let _ = (b.instance_ref(), b.identity_files(), b.known_hosts(), b.target_rules());
                prop_assert!(cfg.bastion(Some(&b.name())).is_ok(), "bastion `{}` not found by its name", b.name());
                // What the daemon prints or sends as it is: never empty, never a control character.
                prop_assert!(!b.name().chars().any(bastionctl::escape::is_unsafe), "raw name {:?}", b.name());
                prop_assert!(!b.user.trim().is_empty() && !b.target_ports.is_empty(), "empty user or target_ports");
                prop_assert!(b.identity_files.iter().all(|p| !p.as_os_str().is_empty()), "an empty identity file");
                prop_assert!(b.known_hosts().is_absolute(), "relative known_hosts {:?}", b.known_hosts());
            }
            prop_assert!(cfg.socket_path().is_absolute(), "relative socket {:?}", cfg.socket_path());
            prop_assert!(cfg.socket_path().as_os_str().len() <= 107, "socket too long for sun_path");
            prop_assert!(cfg.log_file().is_absolute() && cfg.pinned_host_keys().is_absolute(), "a relative daemon file");
            prop_assert!(cfg.aws.profile.as_ref().is_none_or(|p| !p.trim().is_empty()), "an empty profile");
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(shown.contains(PATH), "the error does not name the file: {shown}");
            let line = match &e {
                ConfigError::Parse { message, .. } => message
                    .strip_prefix("TOML parse error at line ")
                    .and_then(|m| m.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse().ok()),
                ConfigError::Invalid { line, .. } => Some(*line),
                _ => None,
            };
            prop_assert!(line.is_some_and(|l| (1..=lines).contains(&l)), "no line (of {lines}) in: {shown}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(budget(16000))]

    #[test]
    fn config_on_arbitrary_text(text in prop_oneof![any::<String>(), "[\\[\\]a-z_=\" \n.0-9#{},*/~-]{0,120}"]) {
        check_config(&text)?;
    }

    #[test]
    fn config_on_generated_configs(text in generated_config()) {
        check_config(&text)?;
    }

    #[test]
    fn config_on_mutated_configs(seed in seed(), edits in prop::collection::vec(line_edit(), 1..4)) {
        check_config(&apply_lines(seed, &edits))?;
    }
}

// ---- target host names (bastionctl_core::policy) and escaping (bastionctl_core::escape) ----

use bastionctl::escape::escape;
use bastionctl::policy::{MAX_LABEL, MAX_NAME, TargetHost};

/// A label in RFC 1123 syntax, in mixed case.
fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
}

/// A host name of 1 to 5 labels whose last label has a letter (so it cannot read as a number).
fn host_name() -> impl Strategy<Value = String> {
    (prop::collection::vec(label(), 0..4), "[a-zA-Z][a-zA-Z0-9-]{0,20}[a-zA-Z0-9]")
        .prop_map(|(mut labels, last)| {
            labels.push(last);
            labels.join(".")
        })
        .prop_filter("at most 253 bytes", |n| n.len() <= MAX_NAME)
}

/// Characters a name may not contain, controls and look-alikes first.
fn forbidden() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        prop::sample::select(vec!['\u{7f}', '\u{85}', '\u{202e}', '\u{200b}', ' ', '_', ':', '%', '/', '@', 'é', 'ı', '[']),
    ]
}

/// What every answer of [`TargetHost::parse`] must satisfy: an accepted host is normalised (its text parses back
/// to itself) and well formed; a refusal is one bounded line without a control character.
fn check_target(raw: &str) -> Result<(), TestCaseError> {
    match TargetHost::parse(raw) {
        Ok(host) => {
            let text = host.to_string();
            let again = TargetHost::parse(&text);
            prop_assert_eq!(again.as_ref(), Ok(&host), "normalised form re-parses to itself");
            if let TargetHost::Name(n) = &host {
                prop_assert!(n.len() <= MAX_NAME && !n.ends_with('.') && !n.is_empty());
                prop_assert!(n.split('.').all(|l| !l.is_empty() && l.len() <= MAX_LABEL && !l.starts_with('-') && !l.ends_with('-')));
                prop_assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
                prop_assert!(!n.rsplit('.').next().unwrap().bytes().all(|b| b.is_ascii_digit()), "numeric last label: {n}");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.chars().any(char::is_control), "control character in {msg:?}");
            prop_assert!(msg.len() < 400, "unbounded message ({} bytes)", msg.len());
        }
    }
    Ok(())
}

proptest! {
    // Regex-generated names are slow to make: a few thousand cases keep this section near 10 s on 2 cores.
    #![proptest_config(budget(2500))]

    #[test]
    fn target_parse_on_arbitrary_text(raw in any::<String>()) {
        check_target(&raw)?;
    }

    #[test]
    fn target_parse_on_near_names(raw in "[a-zA-Z0-9.\\-\\[\\]:_]{0,80}") {
        check_target(&raw)?;
    }

    #[test]
    fn host_names_are_accepted_folded_and_lose_one_trailing_dot(name in host_name(), dot in any::<bool>()) {
        let raw = if dot { format!("{name}.") } else { name.clone() };
        prop_assert_eq!(TargetHost::parse(&raw), Ok(TargetHost::Name(name.to_ascii_lowercase())));
    }

    #[test]
    fn a_forbidden_character_anywhere_is_refused(name in host_name(), c in forbidden(), at in any::<Index>()) {
        let mut chars: Vec<char> = name.chars().collect();
        chars.insert(at.index(chars.len() + 1), c);
        let raw: String = chars.into_iter().collect();
        prop_assume!(!(c == '[' && raw.starts_with('[') && raw.ends_with(']')));
        prop_assert!(TargetHost::parse(&raw).is_err(), "{raw:?} accepted");
        check_target(&raw)?;
    }

    #[test]
    fn ip_literals_are_accepted_as_addresses(ip in any::<std::net::IpAddr>(), brackets in any::<bool>()) {
        let raw = match (ip, brackets) {
            (std::net::IpAddr::V6(v6), true) => format!("[{v6}]"),
            _ => ip.to_string(),
        };
        prop_assert_eq!(TargetHost::parse(&raw), Ok(TargetHost::Ip(ip)));
    }

    #[test]
    fn numbers_in_any_inet_aton_form_are_never_names(parts in prop::collection::vec(any::<u32>(), 1..5), hex in any::<bool>()) {
        let raw: Vec<String> = parts.iter().map(|p| if hex { format!("0x{p:x}") } else { format!("0{p}") }).collect();
        prop_assert!(!matches!(TargetHost::parse(&raw.join(".")), Ok(TargetHost::Name(_))));
    }

    #[test]
    fn escaped_text_has_no_control_character_and_escaping_again_changes_nothing(s in any::<String>()) {
        let once = escape(&s).into_owned();
        prop_assert!(!once.chars().any(bastionctl::escape::is_unsafe), "{once:?}");
        prop_assert_eq!(escape(&once).into_owned(), once);
    }
}
