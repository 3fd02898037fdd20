use super::*;

const FILE: &str = "/cfg/test.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new(FILE))
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("expected a valid config, got: {e}\n--- text:\n{text}"))
}

/// The `(line, key, message)` of a validation error; panics on success or another kind of error.
fn invalid(text: &str) -> (usize, String, String) {
    match parse(text) {
        Err(ConfigError::Invalid { path, line, key, message }) => {
            assert_eq!(path, Path::new(FILE));
            (line, key, message)
        }
        other => panic!("expected ConfigError::Invalid, got {other:?}\n--- text:\n{text}"),
    }
}

/// The message of a TOML parse/type error; panics on success or another kind of error.
fn parse_error(text: &str) -> String {
    match parse(text) {
        Err(e @ ConfigError::Parse { .. }) => {
            let shown = e.to_string();
            assert!(shown.contains(FILE), "error does not name the file: {shown}");
            shown
        }
        other => panic!("expected ConfigError::Parse, got {other:?}\n--- text:\n{text}"),
    }
}

const MINIMAL: &str = "[[bastion]]\ninstance_id = \"i-0123456789abcdef0\"\n";

/// The lab's config from docs/CONTRACTS.md, every key set.
const FULL: &str = r#"
[aws]
profile = "lab"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:5000"

[daemon]
socket = "/tmp/x/control.sock"
log_file = "/tmp/x/daemon.log"

[[bastion]]
name = "lab"
instance_id = "i-0123456789abcdef0"
user = "root"
port = 2222
identity_files = ["/tmp/x/id_ed25519", "~/.ssh/id_rsa"]
agent = false
identities_only = true
known_hosts = "/tmp/x/bastion_known_hosts"
idle_timeout = "3s"
start_timeout = "60s"
address = "127.0.2.1"
targets = ["127.0.3.0/24", "*.Internal"]
target_ports = [40123, 22]
resolve_name_tags = false
"#;

// ---- parsing and defaults -------------------------------------------------------------------------------------

#[test]
fn minimal_file_gets_every_default() {
    let cfg = ok(MINIMAL);
    assert_eq!(cfg.source, Path::new(FILE));
    assert!(cfg.aws.profile.is_none() && cfg.aws.region.is_none() && cfg.aws.endpoint_url.is_none());
    assert!(cfg.daemon.socket.is_none() && cfg.daemon.log_file.is_none());
    assert_eq!(cfg.socket_path(), paths::default_socket_path());
    assert_eq!(cfg.log_file(), paths::default_log_path());
    assert_eq!(cfg.bastions.len(), 1);
    let b = &cfg.bastions[0];
    assert_eq!(b.name(), "i-0123456789abcdef0");
    assert_eq!(b.instance_ref(), InstanceRef::Id("i-0123456789abcdef0".into()));
    assert_eq!(b.user, "ec2-user");
    assert_eq!(b.port, DEFAULT_SSH_PORT);
    assert!(b.identity_files().is_empty());
    assert!(b.agent);
    assert!(!b.identities_only);
    assert_eq!(b.known_hosts(), paths::home().join(".ssh/known_hosts"));
    assert_eq!(b.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(b.idle_timeout, Duration::from_secs(15 * 60));
    assert_eq!(b.start_timeout, DEFAULT_START_TIMEOUT);
    assert_eq!(b.start_timeout, Duration::from_secs(5 * 60));
    assert_eq!(b.address, None);
    assert!(b.target_rules().is_empty(), "no targets by default: nothing is allowed");
    assert_eq!(b.target_ports, vec![22]);
    assert!(b.resolve_name_tags, "names are resolved by their Name tag unless turned off");
}

#[test]
fn full_file_sets_every_key() {
    let cfg = ok(FULL);
    assert_eq!(cfg.aws.profile.as_deref(), Some("lab"));
    assert_eq!(cfg.aws.region.as_deref(), Some("us-east-1"));
    assert_eq!(cfg.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(cfg.socket_path(), Path::new("/tmp/x/control.sock"));
    assert_eq!(cfg.log_file(), Path::new("/tmp/x/daemon.log"));
    let b = cfg.bastion(Some("lab")).unwrap();
    assert_eq!(b.name(), "lab");
    assert_eq!(b.user, "root");
    assert_eq!(b.port, 2222);
    assert_eq!(
        b.identity_files(),
        vec![PathBuf::from("/tmp/x/id_ed25519"), paths::home().join(".ssh/id_rsa")],
        "`~/` is expanded"
    );
    assert!(!b.agent);
    assert!(b.identities_only);
    assert_eq!(b.known_hosts(), Path::new("/tmp/x/bastion_known_hosts"));
    assert_eq!(b.idle_timeout, Duration::from_secs(3));
    assert_eq!(b.start_timeout, Duration::from_secs(60));
    assert_eq!(b.address, Some("127.0.2.1".parse().unwrap()));
    assert_eq!(
        b.target_rules(),
        vec![TargetRule::Cidr("127.0.3.0/24".parse().unwrap()), TargetRule::Pattern("*.internal".into())]
    );
    assert_eq!(b.target_ports, vec![40123, 22]);
    assert!(!b.resolve_name_tags);
}

#[test]
fn name_tag_identifies_the_instance_and_names_the_bastion() {
    let cfg = ok("[[bastion]]\nname_tag = \"prod-bastion\"\n");
    let b = &cfg.bastions[0];
    assert_eq!(b.instance_ref(), InstanceRef::NameTag("prod-bastion".into()));
    assert_eq!(b.instance_ref().to_string(), "Name=prod-bastion");
    assert_eq!(b.name(), "prod-bastion");
}

#[test]
fn short_instance_ids_are_accepted() {
    let cfg = ok("[[bastion]]\ninstance_id = \"i-0abc1234\"\n");
    assert_eq!(cfg.bastions[0].instance_ref().to_string(), "i-0abc1234");
}

#[test]
fn durations_use_humantime() {
    for (text, secs) in [("90s", 90), ("15m", 900), ("1h 30m", 5400), ("2 minutes", 120), ("1500ms", 1)] {
        let cfg = ok(&format!("{MINIMAL}idle_timeout = \"{text}\"\nstart_timeout = \"{text}\"\n"));
        assert_eq!(cfg.bastions[0].idle_timeout.as_secs(), secs, "{text}");
        assert_eq!(cfg.bastions[0].start_timeout.as_secs(), secs, "{text}");
    }
}

#[test]
fn inline_array_of_tables_is_the_same_as_bastion_headers() {
    let cfg = ok("bastion = [{ instance_id = \"i-0123456789abcdef0\", name = \"a\" }, { name_tag = \"b\" }]\n");
    let names: Vec<String> = cfg.bastions.iter().map(|b| b.name()).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn bastion_lookup_by_name_defaults_to_the_first_and_lists_known_names() {
    let cfg = ok(concat!(
        "[[bastion]]\nname = \"prod\"\ninstance_id = \"i-0123456789abcdef0\"\n",
        "[[bastion]]\nname_tag = \"staging-bastion\"\n",
    ));
    assert_eq!(cfg.bastion(None).unwrap().name(), "prod");
    assert_eq!(cfg.bastion(Some("staging-bastion")).unwrap().name(), "staging-bastion");
    let err = cfg.bastion(Some("dev")).unwrap_err().to_string();
    assert!(err.contains("no bastion named `dev`") && err.contains(FILE), "{err}");
    assert!(err.contains("prod, staging-bastion"), "{err}");
}

#[test]
fn targets_parse_as_cidrs_or_host_patterns() {
    assert_eq!(parse_target("10.0.16.0/20"), Ok(TargetRule::Cidr("10.0.16.0/20".parse().unwrap())));
    // Host bits are dropped, so 10.0.16.7/20 means the same block.
    assert_eq!(parse_target("10.0.16.7/20"), Ok(TargetRule::Cidr("10.0.16.0/20".parse().unwrap())));
    assert_eq!(parse_target("10.0.16.10"), Ok(TargetRule::Cidr("10.0.16.10/32".parse().unwrap())));
    assert_eq!(parse_target("fd00:ec2::/64"), Ok(TargetRule::Cidr("fd00:ec2::/64".parse().unwrap())));
    assert_eq!(parse_target("fd00::1"), Ok(TargetRule::Cidr("fd00::1/128".parse().unwrap())));
    assert_eq!(parse_target("*.Internal"), Ok(TargetRule::Pattern("*.internal".into())));
    let pattern = "ip-10-0-16-??.ec2.internal";
    assert_eq!(parse_target(pattern), Ok(TargetRule::Pattern(pattern.into())));
    for bad in ["10.0.16.0/33", "10.0.16/20", "10.0.16", "300.0.0.1", "10.0.0.0/x"] {
        let err = parse_target(bad).unwrap_err();
        assert!(err.contains("not a valid CIDR block") && err.contains(bad), "{bad}: {err}");
    }
    assert!(parse_target("").unwrap_err().contains("an empty target"));
    assert!(parse_target(" ").unwrap_err().contains("an empty target"));
    for bad in ["web server", "host:22", "a,b", " *.internal"] {
        let err = parse_target(bad).unwrap_err();
        assert!(err.contains("neither a CIDR block nor a host-name pattern"), "{bad:?}: {err}");
    }
}

#[test]
fn tilde_expands_only_at_the_start() {
    assert_eq!(expand_tilde(Path::new("~/.ssh/id_ed25519")), paths::home().join(".ssh/id_ed25519"));
    assert_eq!(expand_tilde(Path::new("/etc/~x")), Path::new("/etc/~x"));
    assert_eq!(expand_tilde(Path::new("relative/key")), Path::new("relative/key"));
}

// ---- validation errors: file, line, key ---------------------------------------------------------------------

#[test]
fn missing_bastion_is_an_error_on_line_1() {
    for text in ["", "# nothing yet\n", "[aws]\nregion = \"eu-west-1\"\n"] {
        let (line, key, message) = invalid(text);
        assert_eq!((line, key.as_str()), (1, "bastion"), "{text:?}");
        assert!(message.contains("no [[bastion]] table"), "{message}");
    }
}

#[test]
fn both_instance_id_and_name_tag_names_the_instance_id_line() {
    let text = "[[bastion]]\nname_tag = \"x\"\n\ninstance_id = \"i-0123456789abcdef0\"\n";
    let (line, key, message) = invalid(text);
    assert_eq!((line, key.as_str()), (4, "bastion[0].instance_id"));
    assert!(message.contains("either instance_id or name_tag, not both"), "{message}");
}

#[test]
fn neither_instance_id_nor_name_tag_names_the_bastion_header() {
    let text = "[[bastion]]\ninstance_id = \"i-0123456789abcdef0\"\n\n# second\n[[bastion]]\nuser = \"ubuntu\"\n";
    let (line, key, message) = invalid(text);
    assert_eq!((line, key.as_str()), (5, "bastion[1]"));
    assert!(message.contains("instance_id = \"i-...\" or name_tag"), "{message}");
    // The same for the inline form, where the element itself carries the position.
    let (line, key, _) =
        invalid("bastion = [\n  { instance_id = \"i-0123456789abcdef0\" },\n  { user = \"ubuntu\" },\n]\n");
    assert_eq!((line, key.as_str()), (3, "bastion[1]"));
}

#[test]
fn bad_instance_id_names_its_line() {
    for bad in ["i-123", "i-0123456789abcdef", "0123456789abcdef0", "i-0123456789abcdefg", "I-0123456789ABCDEF0x"] {
        let text = format!("[aws]\nregion = \"eu-west-1\"\n\n[[bastion]]\ninstance_id = \"{bad}\"\n");
        let (line, key, message) = invalid(&text);
        assert_eq!((line, key.as_str()), (5, "bastion[0].instance_id"), "{bad}");
        assert!(message.contains(bad) && message.contains("not an EC2 instance id"), "{message}");
    }
}

#[test]
fn bad_cidr_names_the_element_and_its_line() {
    let text = format!("{MINIMAL}targets = [\n  \"10.0.16.0/20\",\n  \"*.internal\",\n  \"10.0.32.0/33\",\n]\n");
    let (line, key, message) = invalid(&text);
    assert_eq!((line, key.as_str()), (6, "bastion[0].targets[2]"));
    assert!(message.contains("`10.0.32.0/33` is not a valid CIDR block"), "{message}");
}

#[test]
fn target_patterns_that_could_never_match_are_rejected_with_what_to_write() {
    let text = format!("{MINIMAL}[[bastion]]\nname_tag = \"b\"\ntargets = [\"web.internal.\"]\n");
    let (line, key, message) = invalid(&text);
    assert_eq!((line, key.as_str()), (5, "bastion[1].targets[0]"));
    assert!(message.contains("ends with a dot") && message.contains("write `web.internal`"), "{message}");
    assert!(parse_target(".internal").unwrap_err().contains("write `*.internal`"));
    assert!(parse_target("web..internal").unwrap_err().contains("empty label"));
    assert!(parse_target("*.internal").is_ok() && parse_target("web").is_ok());
}

#[test]
fn bad_target_pattern_is_rejected() {
    let text = format!("{MINIMAL}[[bastion]]\nname_tag = \"b\"\ntargets = [\"db server\"]\n");
    let (line, key, message) = invalid(&text);
    assert_eq!((line, key.as_str()), (5, "bastion[1].targets[0]"));
    assert!(message.contains("neither a CIDR block nor a host-name pattern"), "{message}");
}

#[test]
fn zero_timeouts_name_the_right_key() {
    let (line, key, message) = invalid(&format!("{MINIMAL}idle_timeout = \"0s\"\n"));
    assert_eq!((line, key.as_str()), (3, "bastion[0].idle_timeout"));
    assert!(message.contains("idle_timeout must be longer than zero"), "{message}");
    let (line, key, message) = invalid(&format!("{MINIMAL}idle_timeout = \"1m\"\nstart_timeout = \"0ms\"\n"));
    assert_eq!((line, key.as_str()), (4, "bastion[0].start_timeout"));
    assert!(message.contains("start_timeout must be longer than zero"), "{message}");
}

#[test]
fn duplicate_explicit_names_point_at_the_second_name() {
    let text = concat!(
        "[[bastion]]\nname = \"prod\"\ninstance_id = \"i-0123456789abcdef0\"\n\n",
        "[[bastion]]\ninstance_id = \"i-0fedcba9876543210\"\nname = \"prod\"\n",
    );
    let (line, key, message) = invalid(text);
    assert_eq!((line, key.as_str()), (7, "bastion[1].name"));
    assert!(message.contains("same name `prod` as bastion[0]"), "{message}");
}

#[test]
fn duplicate_implicit_names_point_at_what_produced_them() {
    let text = format!("{MINIMAL}[[bastion]]\nuser = \"ubuntu\"\ninstance_id = \"i-0123456789abcdef0\"\n");
    let (line, key, message) = invalid(&text);
    assert_eq!((line, key.as_str()), (5, "bastion[1].instance_id"));
    assert!(message.contains("same name `i-0123456789abcdef0`"), "{message}");
    // A Name tag that equals another bastion's explicit name.
    let text = "[[bastion]]\nname = \"x\"\nname_tag = \"a\"\n[[bastion]]\nname_tag = \"x\"\n";
    let (line, key, _) = invalid(text);
    assert_eq!((line, key.as_str()), (5, "bastion[1].name_tag"));
}

#[test]
fn invalid_error_message_names_file_line_and_key() {
    let err = parse(&format!("{MINIMAL}targets = [\"10.0.0.0/40\"]\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid config file {FILE}, line 3, key `bastion[0].targets[0]`: `10.0.0.0/40` is not a valid CIDR \
             block (expected e.g. 10.0.16.0/20)"
        )
    );
}

// ---- parse and type errors: line and key from toml's span ---------------------------------------------------

#[test]
fn unknown_key_names_line_and_key() {
    let msg = parse_error(&format!("{MINIMAL}idle_timout = \"5m\"\n"));
    assert!(msg.contains("line 3") && msg.contains("key `bastion[0].idle_timout`"), "{msg}");
    assert!(msg.contains("unknown field `idle_timout`") && msg.contains("`idle_timeout`"), "lists valid keys: {msg}");

    let msg = parse_error(&format!("[aws]\nregion = \"eu-west-1\"\nsecret_access_key = \"x\"\n{MINIMAL}"));
    assert!(msg.contains("line 3") && msg.contains("key `aws.secret_access_key`"), "{msg}");

    let msg = parse_error(&format!("{MINIMAL}[daemon]\nsocket = \"/x\"\npid_file = \"/y\"\n"));
    assert!(msg.contains("line 5") && msg.contains("key `daemon.pid_file`"), "{msg}");

    let msg = parse_error(&format!("[bastions]\nx = 1\n{MINIMAL}"));
    assert!(msg.contains("line 1") && msg.contains("key `bastions`") && msg.contains("unknown field"), "{msg}");

    let msg = parse_error(&format!("{MINIMAL}[bastion.ssh]\nport = 22\n"));
    assert!(msg.contains("line 3") && msg.contains("key `bastion[0].ssh`"), "{msg}");
}

#[test]
fn bad_duration_names_line_and_key() {
    for value in ["\"fifteen minutes\"", "\"15\"", "\"-5m\"", "900"] {
        let msg = parse_error(&format!("{MINIMAL}\nidle_timeout = {value}\n"));
        assert!(msg.contains("line 4") && msg.contains("key `bastion[0].idle_timeout`"), "{value}: {msg}");
        assert!(msg.contains("expected a duration (write a string such as \"90s\""), "{value}: {msg}");
    }
    let msg = parse_error(&format!("{MINIMAL}[[bastion]]\nname_tag = \"b\"\nstart_timeout = \"5 mins please\"\n"));
    assert!(msg.contains("line 5") && msg.contains("key `bastion[1].start_timeout`"), "{msg}");
}

#[test]
fn wrong_types_name_line_and_key() {
    let cases = [
        ("port = 70000", "bastion[0].port", "u16"),
        ("port = \"22\"", "bastion[0].port", "u16"),
        ("agent = \"yes\"", "bastion[0].agent", "boolean"),
        ("address = \"10.0.0\"", "bastion[0].address", "IP address"),
        ("targets = \"10.0.16.0/20\"", "bastion[0].targets", "sequence"),
        ("target_ports = [22, \"ssh\"]", "bastion[0].target_ports[1]", "u16"),
        ("identity_files = { a = 1 }", "bastion[0].identity_files", ""),
        ("instance_id = 5", "bastion[0].instance_id", "string"),
    ];
    for (line, key, what) in cases {
        let msg = parse_error(&format!("[[bastion]]\nname_tag = \"b\"\n{line}\n"));
        assert!(msg.contains("line 3") && msg.contains(&format!("key `{key}`")), "{line}: {msg}");
        assert!(msg.contains(what), "{line}: {msg}");
    }
    let msg = parse_error("[daemon]\nsocket = 5\n");
    assert!(msg.contains("line 2") && msg.contains("key `daemon.socket`"), "{msg}");
}

#[test]
fn type_error_inside_an_inline_table_names_the_inner_key() {
    let msg =
        parse_error("bastion = [\n  { name_tag = \"a\" },\n  { name_tag = \"b\", idle_timeout = \"soon\" },\n]\n");
    assert!(msg.contains("line 3") && msg.contains("key `bastion[1].idle_timeout`"), "{msg}");
}

#[test]
fn toml_syntax_errors_name_the_line() {
    for (text, line) in [
        ("[[bastion]\ninstance_id = \"i-0123456789abcdef0\"\n", "line 1"),
        ("[[bastion]]\ninstance_id = \"i-0123456789abcdef0\n", "line 2"),
        ("[[bastion]]\nname_tag = \"a\"\nname_tag = \"b\"\n", "line 3"),
        ("[[bastion]]\nname_tag = \"a\"\ntargets = [\"10.0.0.0/8\"\n", "line 3"),
    ] {
        let msg = parse_error(text);
        assert!(msg.contains(line), "{text:?}: {msg}");
    }
}

#[test]
fn load_reports_unreadable_files() {
    let missing = Path::new("/nonexistent/bastionctl/config.toml");
    let err = Config::load(missing).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/bastionctl/config.toml") && msg.contains("bastionctl.example.toml"), "{msg}");
    // One sentence: no I/O error text, and no `source` that anyhow's `{:#}` would print again.
    assert!(!msg.contains("os error") && std::error::Error::source(&err).is_none(), "{msg}");
    let err = Config::load_default(Some(missing)).unwrap_err();
    assert!(matches!(err, ConfigError::Missing { .. }), "an explicit path is never replaced by the default: {err:?}");
    // A directory exists but is unreadable as a file: its I/O error is in the message, once.
    let err = Config::load(Path::new("/")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }) && std::error::Error::source(&err).is_none(), "{err:?}");
    assert_eq!(err.to_string().matches("os error").count(), 1, "{err}");
    // A file that never ends is refused after 1 MiB instead of being read forever.
    let err = Config::load(Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("/dev/zero") && err.to_string().contains("1024 KiB"), "{err}");
    // An empty path (`BASTIONCTL_CONFIG=`) is not a path: the default location is used instead.
    match Config::load_default(Some(Path::new(""))) {
        Err(ConfigError::Missing { path }) | Err(ConfigError::Read { path, .. }) => {
            assert_ne!(path, Path::new(""), "the empty path was tried")
        }
        _ => {}
    }
}

#[test]
fn key_positions_are_found_for_every_form() {
    let text = "[aws]\nregion = \"x\"\n[[bastion]]\nname = \"a\"\ntargets = [\"a\",\n \"b\"]\n";
    let line = |key: &str| key_span(text, key).map(|s| line_of(text, s.start));
    assert_eq!(line("aws.region"), Some(2));
    assert_eq!(line("bastion[0]"), Some(3));
    assert_eq!(line("bastion[0].name"), Some(4));
    assert_eq!(line("bastion[0].targets[1]"), Some(6));
    assert_eq!(line("bastion[1]"), None);
    assert_eq!(key_at(text, text.find("\"b\"").unwrap()), Some("bastion[0].targets[1]".into()));
    assert_eq!(key_at(text, 0), Some("aws".into()));
    assert_eq!(key_span("not [valid", "aws"), None);
}

#[test]
fn a_quoted_value_with_control_characters_is_shown_escaped_on_one_line() {
    let text = "[[bastion]]\ninstance_id = \"i-0123456789abcdef0\"\ntargets = [\"web\\nx\\u001b[31m\"]\n";
    let err = parse(text).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { line: 3, .. }), "{err:?}");
    let shown = err.to_string();
    assert!(!shown.contains('\n') && !shown.contains('\u{1b}'), "raw control characters in: {shown:?}");
    assert!(shown.contains(r"web\nx"), "the value is not shown escaped: {shown}");
}

#[test]
fn empty_or_malformed_region_is_rejected() {
    let (line, key, msg) = invalid(&format!("[aws]\nregion = \"\"\n{MINIMAL}"));
    assert_eq!((line, key.as_str()), (2, "aws.region"));
    assert!(msg.contains("region is empty") && msg.contains("eu-west-1"), "{msg}");
    let (_, key, msg) = invalid(&format!("[aws]\nregion = \"eu west 1\\u0000\"\n{MINIMAL}"));
    assert_eq!(key, "aws.region");
    assert!(msg.contains("is not an AWS region"), "{msg}");
}

#[test]
fn the_control_socket_must_be_an_absolute_path() {
    for (socket, want) in [("", "socket is empty"), ("control.sock", "relative path"), ("~user/s", "relative path")] {
        let (line, key, msg) = invalid(&format!("[daemon]\nsocket = \"{socket}\"\n{MINIMAL}"));
        assert_eq!((line, key.as_str()), (2, "daemon.socket"), "{socket}");
        assert!(msg.contains(want) && msg.contains("absolute"), "{socket}: {msg}");
    }
    for socket in ["/run/b/control.sock", "~/b/control.sock"] {
        ok(&format!("[daemon]\nsocket = \"{socket}\"\n{MINIMAL}"));
    }
}

#[test]
fn the_files_of_the_daemon_and_known_hosts_are_absolute_or_under_home() {
    for key in ["log_file", "pinned_host_keys"] {
        for (path, want) in [("", "is empty"), ("state/x", "relative path")] {
            let (line, k, msg) = invalid(&format!("[daemon]\n{key} = \"{path}\"\n{MINIMAL}"));
            assert_eq!((line, k.as_str()), (2, format!("daemon.{key}").as_str()), "{path}");
            assert!(msg.contains(want) && msg.contains("absolute"), "{key} = {path:?}: {msg}");
        }
        ok(&format!("[daemon]\n{key} = \"~/.local/state/bastionctl/x\"\n{MINIMAL}"));
    }
    let (_, key, msg) = invalid(&format!("{MINIMAL}known_hosts = \"known_hosts\"\n"));
    assert_eq!(key, "bastion[0].known_hosts");
    assert!(msg.contains("relative path"), "{msg}");
    ok(&format!("{MINIMAL}known_hosts = \"~/.ssh/known_hosts\"\n"));
    let (_, key, msg) = invalid(&format!("[aws]\nprofile = \" \"\n{MINIMAL}"));
    assert_eq!(key, "aws.profile");
    assert!(msg.contains("profile is empty"), "{msg}");
}

#[test]
fn a_control_socket_longer_than_sun_path_is_rejected() {
    let fits = format!("/{}", "s".repeat(106));
    ok(&format!("[daemon]\nsocket = \"{fits}\"\n{MINIMAL}"));
    let (_, key, msg) = invalid(&format!("[daemon]\nsocket = \"{fits}s\"\n{MINIMAL}"));
    assert_eq!(key, "daemon.socket");
    assert!(msg.contains("108 bytes long") && msg.contains("at most 107 bytes"), "{msg}");
}

#[test]
fn empty_target_ports_user_and_identity_file_are_rejected() {
    let (line, key, msg) = invalid(&format!("{MINIMAL}target_ports = []\n"));
    assert_eq!((line, key.as_str()), (3, "bastion[0].target_ports"));
    assert!(msg.contains("allows no port") && msg.contains("[22]"), "{msg}");
    let (line, key, msg) = invalid(&format!("{MINIMAL}user = \"\"\n"));
    assert_eq!((line, key.as_str()), (3, "bastion[0].user"));
    assert!(msg.contains("user is empty") && msg.contains("ec2-user"), "{msg}");
    let (_, key, msg) = invalid(&format!("{MINIMAL}user = \"ec2-user\\n\"\n"));
    assert_eq!(key, "bastion[0].user");
    assert!(msg.contains("control or invisible character"), "{msg}");
    let (line, key, msg) = invalid(&format!("{MINIMAL}identity_files = [\"~/.ssh/id_rsa\",\n  \"\"]\n"));
    assert_eq!((line, key.as_str()), (4, "bastion[0].identity_files[1]"));
    assert!(msg.contains("an empty path"), "{msg}");
}

#[test]
fn a_cidr_with_host_bits_set_names_its_network() {
    let (line, key, msg) = invalid(&format!("{MINIMAL}targets = [\"10.0.16.5/20\"]\n"));
    assert_eq!((line, key.as_str()), (3, "bastion[0].targets[0]"));
    assert!(msg.contains("`10.0.16.5/20` has host bits set") && msg.contains("write `10.0.16.0/20`"), "{msg}");
    assert!(msg.contains("`10.0.16.5`"), "offers the single host too: {msg}");
    let (_, _, msg) = invalid(&format!("{MINIMAL}targets = [\"fd00:ec2::1/64\"]\n"));
    assert!(msg.contains("write `fd00:ec2::/64`"), "{msg}");
    // An open block with host bits is refused as open, not sent to write `0.0.0.0/0`.
    let (_, _, msg) = invalid(&format!("{MINIMAL}targets = [\"10.0.0.0/0\"]\n"));
    assert!(msg.contains("public internet"), "{msg}");
    ok(&format!("{MINIMAL}targets = [\"10.0.16.0/20\", \"10.0.16.5\", \"10.0.16.5/32\", \"fd00::1\"]\n"));
}

#[test]
fn names_with_control_or_invisible_characters_are_rejected() {
    for (field, value) in [
        ("name", r"prod\u001b[2J"),
        ("name", r"a\nb"),
        ("name", r"a\u202eb"),
        ("name_tag", r"web\tbox"),
        ("name_tag", r"web\u0000"),
    ] {
        let text = format!("[[bastion]]\n{field} = \"{value}\"\ninstance_id = \"i-0123456789abcdef0\"\n");
        let text = if field == "name_tag" { text.replace("instance_id = \"i-0123456789abcdef0\"\n", "") } else { text };
        let (line, key, msg) = invalid(&text);
        assert_eq!((line, key.as_str()), (2, format!("bastion[0].{field}").as_str()), "{value}");
        assert!(msg.contains("control or invisible character"), "{value}: {msg}");
    }
    let (_, key, msg) = invalid("[[bastion]]\nname_tag = \"\"\n");
    assert_eq!(key, "bastion[0].name_tag");
    assert!(msg.contains("name_tag is empty"), "{msg}");
    let forward = "[[forward]]\nname = \"db\\u001b\"\nlisten = \"127.0.0.1:1\"\ntarget = \"10.0.16.9:22\"\n";
    let (_, key, msg) = invalid(&format!("{MINIMAL}targets = [\"10.0.16.0/20\"]\n{forward}"));
    assert_eq!(key, "forward[0].name");
    assert!(msg.contains("control or invisible character"), "{msg}");
    ok("[[bastion]]\nname = \"prod-eu_1 café\"\nname_tag = \"Prod Bastion (eu)\"\n");
}

#[test]
fn endpoint_url_with_a_control_character_is_rejected() {
    for url in [r"http://127.0.0.1:5000/\u0000", r"http://127.0.0.1:5000\n", r"http://127.0.0.1:\t5000"] {
        let (line, key, msg) = invalid(&format!("[aws]\nendpoint_url = \"{url}\"\n{MINIMAL}"));
        assert_eq!((line, key.as_str()), (2, "aws.endpoint_url"), "{url}");
        assert!(msg.contains("contains a control or invisible character"), "{url}: {msg}");
    }
}

#[test]
fn an_unknown_key_with_control_characters_is_shown_escaped() {
    let msg = parse_error("[[bastion]]\ninstance_id = \"i-0123456789abcdef0\"\n\"a\\u001b[2Jb\\nc\" = 1\n");
    assert!(!msg.contains('\u{1b}'), "raw escape in: {msg:?}");
    assert!(msg.contains(r"key `bastion[0].a\u{1b}[2Jb\nc`"), "{msg}");
    assert!(msg.contains(r"unknown field `a\u{1b}[2Jb\nc`"), "{msg}");
    assert!(!msg.lines().any(|l| l.starts_with("c`")), "the key's newline broke the line: {msg}");
}
