//! The subcommands' bodies, with context-rich errors for the user.

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::BufReader;
use tokio_util::sync::CancellationToken;

use super::{Args, Command};
use crate::client::{self, DaemonError};
use crate::config::Config;
use crate::control::{self, BastionStatus, ErrorReply, MIN_VERSION, OkReply, Op, Reply, Request, VERSION};
use crate::progress_ui::{Mode, ProgressUi};
use crate::daemon;
use crate::escape::{escape, escape_keep_newlines};
use crate::ec2::{Ec2Api, InstanceState};
use crate::ec2::aws::AwsEc2;

pub(super) async fn run(args: Args) -> anyhow::Result<()> {
    match &args.command {
        // doctor reports a config that does not load as one of its checks.
        Command::Doctor { bastion } => return super::doctor::run(args.config.as_deref(), bastion.as_deref()).await,
        Command::Completions { shell } => {
            // Generated into memory: clap_complete panics on a write error, e.g. `completions bash | head`.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut super::command(), "bastionctl", &mut script);
            super::write_stdout(&script);
            return Ok(());
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(super::command()).render(&mut page).context("cannot render the man page")?;
            super::write_stdout(&page);
            return Ok(());
        }
        _ => {}
    }
    let cfg = Config::load_default(args.config.as_deref())?;
    let mut progress = ProgressUi::new(Mode::detect(args.quiet));
    match args.command {
        Command::Proxy { host, port, fdpass: false } => crate::proxy::run(&cfg, &host, port, &mut progress).await,
        Command::Proxy { host, port, fdpass: true } => crate::proxy::run_fdpass(&cfg, &host, port, &mut progress).await,
        Command::Daemon => run_daemon(cfg).await,
        Command::Up { bastion } => {
            // A name the config does not have is a usage error here, before a daemon is started for it.
            crate::proxy::check_identities(&cfg, cfg.bastion(bastion.as_deref())?)?;
            let stream = client::connect_or_spawn(&cfg).await?;
            let ok = ask(stream, Op::Up { bastion }, &mut progress).await?;
            progress.finish();
            outln!("{}", ok.message);
            Ok(())
        }
        Command::Down { bastion, force } => down(&cfg, bastion, force, &mut progress).await,
        Command::Status { json } => status(&cfg, json).await,
        Command::Trust { bastion, yes, replace } => super::trust::run(&cfg, bastion, yes, replace).await,
        Command::Forward { bind, specs } => crate::forward::run(&cfg, bind, specs, progress).await,
        Command::SshConfig => {
            out!("{}", super::ssh_config::render(&cfg, args.config.as_deref())?);
            Ok(())
        }
        Command::Doctor { .. } | Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}

async fn run_daemon(cfg: Config) -> anyhow::Result<()> {
    let path = cfg.socket_path();
    let signal = shutdown_signal()?;
    let (listener, _lock, origin) = daemon::activation::listen(&path)?;
    let forwards = daemon::forwards::bind(&cfg).await?;
    let ec2: Arc<dyn Ec2Api> = Arc::new(AwsEc2::from_config(&cfg.aws).await?);
    let shutdown = CancellationToken::new();
    let bastions = daemon::spawn_bastions(&cfg, ec2, &shutdown);
    tracing::info!(
        socket = %path.display(),
        socket_from = ?origin,
        config = %cfg.source.display(),
        pid = std::process::id(),
        "daemon ready"
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let signals = shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        signals.cancel();
    });
    let actors = bastions.bastions.clone();
    daemon::serve(cfg, bastions, listener, forwards, shutdown).await;
    // The actors delete their lease tags on shutdown; exiting before they are done would leave the tags up for
    // `lease_ttl`, holding the bastion up for everyone else. Each has a bound of its own; this one is a backstop.
    let ended = async {
        for b in &actors {
            b.ended().await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), ended).await.is_err() {
        tracing::warn!("a bastion's actor did not finish its shutdown within 10 s");
    }
    // A socket systemd passed is systemd's file: the next connection to it starts the daemon again.
    if origin == daemon::activation::Origin::Bound {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

/// Registers SIGTERM and SIGINT handlers now (before the daemon says it is ready, so an early signal is never lost
/// to the default action) and returns a future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Sends `op`, relays progress to `progress`, returns the `ok` reply; an error reply is a [`DaemonError`].
pub(super) async fn ask(stream: tokio::net::UnixStream, op: Op, progress: &mut ProgressUi) -> anyhow::Result<OkReply> {
    let mut io = BufReader::new(stream);
    control::write_line(&mut io, &Request { v: MIN_VERSION, op }).await.context("cannot talk to the daemon")?;
    loop {
        match control::read_line(&mut io).await.context("the daemon closed the connection")? {
            Reply::Progress(p) => progress.show(&p),
            Reply::Ok(ok) => return Ok(ok),
            Reply::Error(e) => return Err(DaemonError::from(e).into()),
            Reply::Status(_) => bail!("unexpected status reply"),
        }
    }
}

async fn down(cfg: &Config, bastion: Option<String>, force: bool, progress: &mut ProgressUi) -> anyhow::Result<()> {
    let b = cfg.bastion(bastion.as_deref())?;
    if let Some(stream) = client::try_connect(&cfg.socket_path()).await? {
        let msg = ask(stream, Op::Down { bastion, force }, progress).await?.message;
        progress.finish();
        outln!("{msg}");
        return Ok(());
    }
    // No daemon: nothing is forwarded, so stop it directly.
    let ec2 = AwsEc2::from_config(&cfg.aws).await?;
    let id = crate::ec2::resolve(&ec2, &b.instance_ref()).await?;
    let state = ec2.describe(&id).await.with_context(|| format!("cannot describe {id}"))?.state;
    if matches!(state, InstanceState::Stopped | InstanceState::Stopping) {
        outln!("bastion {} ({id}) is already {state}", b.name());
        return Ok(());
    }
    if !force {
        let leases = crate::lifecycle::lease::Leases::new(
            Arc::new(ec2.clone()),
            crate::lifecycle::LeaseSpec {
                holder: crate::lifecycle::lease::local_holder(&cfg.source),
                ttl: b.lease_ttl,
                refresh: b.lease_refresh(),
                clock: Default::default(),
            },
            b.name(),
        );
        let decision = leases.decide_stop(&id).await.with_context(|| format!("cannot read the leases of {id}"))?;
        if let crate::lifecycle::lease::StopDecision::Blocked { holders, .. } = decision {
            bail!(
                "bastion {} ({id}) is in use by {}: not stopped\n  hint: their lease tags keep it running; `bastionctl \
                 down --force` stops it now and ends their sessions",
                b.name(),
                holders.join(", ")
            );
        }
    }
    ec2.stop(&id).await.with_context(|| format!("cannot stop {id}"))?;
    outln!("stopping bastion {} ({id})", b.name());
    Ok(())
}

async fn status(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let list = match client::try_connect(&cfg.socket_path()).await? {
        Some(stream) => {
            let mut io = BufReader::new(stream);
            control::write_line(&mut io, &Request { v: VERSION, op: Op::Status }).await?;
            match control::read_line(&mut io).await.context("the daemon closed the connection")? {
                Reply::Status(list) => {
                    warn_if_other_config(cfg, &list);
                    list
                }
                Reply::Error(e) if e.message.contains("protocol version") => bail!(
                    "{}: the running daemon is older than this bastionctl; restart it (`systemctl --user restart \
                     bastionctl`, or `kill` the daemon; the next command starts a new one)",
                    e.message
                ),
                Reply::Error(e) => bail!("{}", e.message),
                other => bail!("unexpected reply {other:?}"),
            }
        }
        None => {
            if !json {
                eprintln!("bastionctl: no daemon is running at {}; showing EC2's view", cfg.socket_path().display());
            }
            direct_status(cfg).await?
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        out!("{}", table(&list));
    }
    // The table shows `unknown`; the full errors (often several lines) go below it, and the exit status says so.
    let unknown: Vec<String> = list
        .iter()
        .filter(|s| s.state.is_none())
        .map(|s| match &s.error {
            Some(e) => {
                let hint = e.hint.as_ref().map(|h| format!("\n  hint: {}", escape(h))).unwrap_or_default();
                format!("bastion {}: {}{hint}", escape(&s.name), escape_keep_newlines(&e.message))
            }
            None => format!("bastion {}: unknown", escape(&s.name)),
        })
        .collect();
    if !unknown.is_empty() {
        bail!("the EC2 state is unknown for {} bastion(s):\n{}", unknown.len(), unknown.join("\n"));
    }
    Ok(())
}

/// The daemon on this socket may have been started with another config (the socket path is per user, not per
/// file): say so on stderr when its bastions are not this config's, so the table is not mistaken for this file's.
fn warn_if_other_config(cfg: &Config, list: &[BastionStatus]) {
    let mine: Vec<String> = cfg.bastions.iter().map(|b| b.name()).collect();
    let theirs: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    if mine.iter().map(String::as_str).ne(theirs.iter().copied()) {
        eprintln!(
            "bastionctl: warning: the daemon at {} serves bastions [{}], not this config's [{}] ({}): it was started \
             with another config; give each config its own `[daemon] socket`, or stop that daemon",
            cfg.socket_path().display(),
            escape(&theirs.join(", ")),
            escape(&mine.join(", ")),
            cfg.source.display()
        );
    }
}

async fn direct_status(cfg: &Config) -> anyhow::Result<Vec<BastionStatus>> {
    use crate::lifecycle::lease::{self, LEASE_PREFIX, LeaseTag};
    let ec2 = AwsEc2::from_config(&cfg.aws).await?;
    let holder = lease::local_holder(&cfg.source);
    let reply = |e: crate::ec2::Ec2Error| ErrorReply { kind: e.kind().into(), message: e.to_string(), hint: e.hint() };
    let mut out = Vec::new();
    for b in &cfg.bastions {
        let mut st = BastionStatus { name: b.name(), holder: Some(holder.clone()), ..Default::default() };
        match crate::ec2::resolve(&ec2, &b.instance_ref()).await {
            Ok(id) => {
                st.instance_id = Some(id.clone());
                match ec2.describe(&id).await {
                    Ok(info) => st.state = Some(info.state.to_string()),
                    Err(e) => st.error = Some(reply(e)),
                }
                match ec2.tags(&id, &format!("{LEASE_PREFIX}*")).await {
                    Ok(tags) => {
                        let tags: Vec<LeaseTag> = tags.iter().filter_map(|(k, v)| LeaseTag::parse(k, v)).collect();
                        st.leases = lease::lease_status(&tags, &holder, std::time::SystemTime::now());
                    }
                    Err(e) => st.lease_error = Some(reply(e)),
                }
            }
            Err(e) => st.error = Some(reply(e)),
        }
        out.push(st);
    }
    Ok(out)
}

/// The `status` table; a multi-line or error state is cut to its first word or line so the columns stay intact, and
/// control characters in any cell are escaped (states quote EC2's messages).
fn table(list: &[BastionStatus]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<21} {:<10} {:<21} {:>8} {:>10}",
        "BASTION", "INSTANCE", "STATE", "ADDRESS", "CHANNELS", "IDLE STOP"
    );
    for s in list {
        let idle = s.idle_stop_in_secs.map(|t| humantime::format_duration(std::time::Duration::from_secs(t)).to_string());
        let state = match (&s.state, &s.error) {
            (Some(state), _) => state.as_str(),
            (None, Some(_)) => "unknown",
            (None, None) => "-",
        };
        let _ = writeln!(
            out,
            "{:<12} {:<21} {:<10} {:<21} {:>8} {:>10}",
            escape(&s.name),
            escape(s.instance_id.as_deref().unwrap_or("-")),
            escape(state),
            escape(s.address.as_deref().unwrap_or("-")),
            s.channels,
            idle.as_deref().unwrap_or("-"),
        );
        for l in &s.leases {
            let whose = if l.mine { " (this daemon)" } else { "" };
            let valid = if l.valid { "until" } else { "expired" };
            let _ = writeln!(out, "  lease {}{whose} {valid} {}", escape(&l.holder), escape(&l.expires));
        }
        // The state's error (shown in full below the table) is not said again as the leases' (no credentials).
        if let Some(e) = s.lease_error.as_ref().filter(|e| s.error.as_ref().is_none_or(|s| s.message != e.message)) {
            let _ = writeln!(out, "  leases: {}", escape(e.message.lines().next().unwrap_or("")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_line_error_state_keeps_the_table_one_line_per_bastion() {
        let error = ErrorReply { kind: "api".into(), message: "DescribeInstances failed:\n  more".into(), hint: Some("...".into()) };
        let list = [
            BastionStatus { name: "a".into(), state: None, error: Some(error), ..Default::default() },
            BastionStatus { name: "b".into(), state: Some("running".into()), ..Default::default() },
        ];
        let t = table(&list);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.lines().nth(1).unwrap().contains(" unknown ") && !t.contains("hint"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains(" running "), "{t}");
    }

    #[test]
    fn an_error_of_both_the_state_and_the_leases_is_said_once() {
        let error = |m: &str| ErrorReply { kind: "credentials".into(), message: m.into(), hint: None };
        let same = BastionStatus {
            name: "a".into(),
            error: Some(error("no usable AWS credentials")),
            lease_error: Some(error("no usable AWS credentials")),
            ..Default::default()
        };
        let t = table(&[same.clone()]);
        assert!(!t.contains("credentials"), "the state's error follows the table: {t}");
        let other = BastionStatus { lease_error: Some(error("TagLimitExceeded")), ..same };
        assert!(table(&[other]).contains("  leases: TagLimitExceeded"));
    }

    #[test]
    fn control_characters_in_the_table_are_escaped() {
        let list = [BastionStatus { name: "a\x1b[2J".into(), state: Some("running\r".into()), ..Default::default() }];
        let t = table(&list);
        assert!(t.contains("a\\u{1b}[2J") && t.contains("running\\r") && !t.contains('\x1b') && !t.contains('\r'), "{t}");
    }
}
