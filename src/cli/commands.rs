//! The subcommands' bodies, with context-rich errors for the user.

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::io::BufReader;
use tokio_util::sync::CancellationToken;

use super::{Args, Command};
use crate::client;
use crate::config::Config;
use crate::control::{self, BastionStatus, OkReply, Op, Reply, Request, VERSION};
use crate::daemon;
use crate::escape::{escape, escape_keep_newlines};
use crate::ec2::{Ec2Api, InstanceState};
use crate::ec2::aws::AwsEc2;

pub(super) async fn run(args: Args) -> anyhow::Result<()> {
    // doctor reports a config that does not load as one of its checks.
    if let Command::Doctor { bastion } = &args.command {
        return super::doctor::run(args.config.as_deref(), bastion.as_deref()).await;
    }
    let cfg = Config::load_default(args.config.as_deref())?;
    match args.command {
        Command::Proxy { host, port, fdpass: false } => crate::proxy::run(&cfg, &host, port).await,
        Command::Proxy { host, port, fdpass: true } => crate::proxy::run_fdpass(&cfg, &host, port).await,
        Command::Daemon => run_daemon(cfg).await,
        Command::Up { bastion } => {
            let stream = client::connect_or_spawn(&cfg).await?;
            let ok = ask(stream, Op::Up { bastion }).await?;
            println!("{}", ok.message);
            Ok(())
        }
        Command::Down { bastion, force } => down(&cfg, bastion, force).await,
        Command::Status { json } => status(&cfg, json).await,
        Command::Trust { bastion, yes, replace } => super::trust::run(&cfg, bastion, yes, replace).await,
        Command::Doctor { .. } => unreachable!("handled before the config is loaded"),
    }
}

async fn run_daemon(cfg: Config) -> anyhow::Result<()> {
    let path = cfg.socket_path();
    let signal = shutdown_signal()?;
    let (listener, _lock) = daemon::socket::bind(&path)?;
    let ec2: Arc<dyn Ec2Api> = Arc::new(AwsEc2::from_config(&cfg.aws).await?);
    let shutdown = CancellationToken::new();
    let bastions = daemon::spawn_bastions(&cfg, ec2, &shutdown);
    tracing::info!(socket = %path.display(), config = %cfg.source.display(), pid = std::process::id(), "daemon ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let signals = shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        signals.cancel();
    });
    daemon::serve(cfg, bastions, listener, shutdown).await;
    let _ = std::fs::remove_file(&path);
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

/// Sends `op`, relays progress to stderr, returns the `ok` reply.
pub(super) async fn ask(stream: tokio::net::UnixStream, op: Op) -> anyhow::Result<OkReply> {
    let mut io = BufReader::new(stream);
    control::write_line(&mut io, &Request { v: VERSION, op }).await.context("cannot talk to the daemon")?;
    loop {
        match control::read_line(&mut io).await.context("the daemon closed the connection")? {
            Reply::Progress(p) => eprintln!("bastionctl: {p}"),
            Reply::Ok(ok) => return Ok(ok),
            Reply::Error(e) => {
                let hint = e.hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default();
                bail!("{}{hint}", e.message)
            }
            Reply::Status(_) => bail!("unexpected status reply"),
        }
    }
}

async fn down(cfg: &Config, bastion: Option<String>, force: bool) -> anyhow::Result<()> {
    if let Some(stream) = client::try_connect(&cfg.socket_path()).await? {
        println!("{}", ask(stream, Op::Down { bastion, force }).await?.message);
        return Ok(());
    }
    // No daemon: nothing is forwarded, so stop it directly.
    let b = cfg.bastion(bastion.as_deref()).map_err(anyhow::Error::msg)?;
    let ec2 = AwsEc2::from_config(&cfg.aws).await?;
    let id = crate::ec2::resolve(&ec2, &b.instance_ref()).await?;
    let state = ec2.describe(&id).await.with_context(|| format!("cannot describe {id}"))?.state;
    if matches!(state, InstanceState::Stopped | InstanceState::Stopping) {
        println!("bastion {} ({id}) is already {state}", b.name());
        return Ok(());
    }
    ec2.stop(&id).await.with_context(|| format!("cannot stop {id}"))?;
    println!("stopping bastion {} ({id})", b.name());
    Ok(())
}

async fn status(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let list = match client::try_connect(&cfg.socket_path()).await? {
        Some(stream) => {
            let mut io = BufReader::new(stream);
            control::write_line(&mut io, &Request { v: VERSION, op: Op::Status }).await?;
            match control::read_line(&mut io).await.context("the daemon closed the connection")? {
                Reply::Status(list) => list,
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
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", table(&list));
    }
    // The table shows `unknown`; the full errors (often several lines) go below it, and the exit status says so.
    let unknown: Vec<String> =
        list.iter()
            .filter(|s| s.state.starts_with("unknown"))
            .map(|s| format!("bastion {}: {}", escape(&s.name), escape_keep_newlines(&s.state)))
            .collect();
    if !unknown.is_empty() {
        bail!("the EC2 state is unknown for {} bastion(s):\n{}", unknown.len(), unknown.join("\n"));
    }
    Ok(())
}

async fn direct_status(cfg: &Config) -> anyhow::Result<Vec<BastionStatus>> {
    let ec2 = AwsEc2::from_config(&cfg.aws).await?;
    let mut out = Vec::new();
    for b in &cfg.bastions {
        let mut st = BastionStatus { name: b.name(), ..Default::default() };
        st.state = match crate::ec2::resolve(&ec2, &b.instance_ref()).await {
            Ok(id) => {
                st.instance_id = Some(id.clone());
                match ec2.describe(&id).await {
                    Ok(info) => info.state.to_string(),
                    Err(e) => format!("unknown ({e})"),
                }
            }
            Err(e) => format!("unknown ({e})"),
        };
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
        let state = match s.state.lines().next().unwrap_or("") {
            "" => "-",
            first if first.starts_with("unknown") => "unknown",
            first => first,
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
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_line_error_state_keeps_the_table_one_line_per_bastion() {
        let list = [
            BastionStatus { name: "a".into(), state: "unknown (DescribeInstances failed:\n  hint: ...)".into(), ..Default::default() },
            BastionStatus { name: "b".into(), state: "running".into(), ..Default::default() },
        ];
        let t = table(&list);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.lines().nth(1).unwrap().contains(" unknown ") && !t.contains("hint"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains(" running "), "{t}");
    }

    #[test]
    fn control_characters_in_the_table_are_escaped() {
        let list = [BastionStatus { name: "a\x1b[2J".into(), state: "running\r".into(), ..Default::default() }];
        let t = table(&list);
        assert!(t.contains("a\\u{1b}[2J") && t.contains("running\\r") && !t.contains('\x1b') && !t.contains('\r'), "{t}");
    }
}
