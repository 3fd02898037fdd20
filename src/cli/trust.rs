//! `bastionctl trust [BASTION] [--yes] [--replace]`: show the host key the bastion offers beside the fingerprints
//! in its console output, and pin it by instance id after confirmation. A stopped bastion is started by the daemon
//! (the running one, or one started for it), so its idle clock stops it again.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::config::{BastionConfig, Config};
use crate::control::Op;
use crate::ec2::Ec2Api;
use crate::ec2::aws::AwsEc2;
use crate::hostkeys::check::{Decision, HostNames, decide};
use crate::hostkeys::known_hosts::{KnownHosts, Lookup};
use crate::hostkeys::{cert, console, fingerprint, pins};
use crate::ssh::fetch_host_key;
use crate::ssh::{HANDSHAKE_TIMEOUT, wait_for_banner};

/// Runs `bastionctl trust`.
pub async fn run(cfg: &Config, bastion: Option<String>, yes: bool, replace: bool) -> anyhow::Result<()> {
    let b = cfg.bastion(bastion.as_deref())?;
    let deadline = Instant::now() + b.start_timeout;
    let (id, addr) = start_through_daemon(cfg, b).await?;
    let ec2 = AwsEc2::from_config(&cfg.aws).await?;
    wait_for_banner(addr, deadline).await.with_context(|| format!("sshd of {id} at {addr} does not answer"))?;
    let offered = fetch_host_key(addr, HANDSHAKE_TIMEOUT).await.with_context(|| format!("cannot get the host key of {addr}"))?;
    let key = offered.public_key();
    let fp = fingerprint(&key);
    let pin_file = cfg.pinned_host_keys();

    let user = KnownHosts::load(&b.known_hosts()).with_context(|| format!("cannot read {}", b.known_hosts().display()))?;
    let pinned = KnownHosts::load(&pin_file).with_context(|| format!("cannot read {}", pin_file.display()))?;
    let names = HostNames { instance_id: id.clone(), addr };
    if let Decision::Revoked { path, line } = decide(&offered, &names, Some(&pinned), &user, cert::unix_now()) {
        bail!("{fp} is revoked by {}:{line}; it cannot be trusted", path.display());
    }
    match pinned.lookup(&id.to_ascii_lowercase(), key.key_data()) {
        Lookup::Found(e) => {
            outln!("{fp} is already pinned for {id} at {}:{}", pin_file.display(), e.line);
            return Ok(());
        }
        Lookup::Changed(e) if !replace => bail!(
            "{}:{} pins {} for {id}, but the bastion now offers {fp}.\n  hint: if the bastion was rebuilt, verify \
             the new key and run `{} --replace`",
            pin_file.display(),
            e.line,
            fingerprint(&e.key),
            crate::hostkeys::trust_command(&cfg.source, &b.name())
        ),
        _ => {}
    }

    let certified = if offered.certificate().is_some() { " (inside a host certificate)" } else { "" };
    eprintln!("bastion {} ({id}) at {addr} offers the host key{certified}:\n  {} {fp}", b.name(), key.algorithm());
    let listed = console_fingerprints(&ec2, &id).await;
    let matches = listed.contains(&fp);
    if listed.is_empty() {
        eprintln!("its console output shows no host key fingerprints (cloud-init prints them at boot); verify {fp} another way, e.g. on the instance: ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub", key_file_kind(&key));
    } else {
        eprintln!("its console output lists:");
        for f in &listed {
            eprintln!("  {f}{}", if *f == fp { "   <- matches the offered key" } else { "" });
        }
        if !matches {
            eprintln!("WARNING: none of them is the offered key; someone may be intercepting the connection");
        }
    }
    if !listed.is_empty() && !matches && yes {
        bail!("the console output contradicts the offered key {fp}; refusing to pin it with --yes (check it, then run without --yes to confirm)");
    }
    if !yes && !confirm(&format!("Pin {fp} for {id} in {}? [y/N] ", pin_file.display())).await? {
        bail!("not pinned");
    }
    let source = if matches { "bastionctl trust (matches the console output)" } else { "bastionctl trust" };
    let (path, id2, key2) = (pin_file.clone(), id.clone(), key.clone());
    let line = tokio::task::spawn_blocking(move || pins::pin(&path, &id2, &key2, source, replace)).await??;
    outln!("pinned {fp} for {id} (bastion {}) at {}:{line}", b.name(), pin_file.display());
    Ok(())
}

/// Has the daemon (the running one, or one started now) start the bastion and wait for `running` and its address;
/// the bastion is then the daemon's, whose idle clock stops it. Returns the instance id and sshd address.
async fn start_through_daemon(cfg: &Config, b: &BastionConfig) -> anyhow::Result<(String, SocketAddr)> {
    let stream = crate::client::connect_or_spawn(cfg).await?;
    let mut progress = crate::progress_ui::ProgressUi::new(crate::progress_ui::Mode::Lines);
    let ok = super::commands::ask(stream, Op::Start { bastion: Some(b.name()) }, &mut progress)
        .await
        .with_context(|| format!("cannot start bastion {} to see its host key", b.name()))?;
    eprintln!("bastionctl: {}", ok.message);
    let id = ok.instance_id.context("the daemon did not say which instance it started (is it older than this bastionctl?)")?;
    let addr = ok.address.as_deref().and_then(|a| a.parse().ok()).context("the daemon did not say the bastion's address")?;
    Ok((id, addr))
}

async fn console_fingerprints(ec2: &AwsEc2, id: &str) -> Vec<String> {
    match ec2.console_output(id).await {
        Ok(Some(text)) => console::fingerprints(&text),
        Ok(None) => Vec::new(),
        Err(e) => {
            eprintln!("cannot read the console output of {id}: {e}");
            Vec::new()
        }
    }
}

/// `ssh_host_<kind>_key.pub`'s kind for the key's algorithm.
fn key_file_kind(key: &russh::keys::PublicKey) -> &'static str {
    match key.algorithm().as_str() {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" => "rsa",
        _ => "ecdsa",
    }
}

/// Asks `question` on the terminal; only `y`/`yes` confirms. Errors when stdin is not a terminal.
async fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to confirm on: check the fingerprint above, then run again with --yes");
    }
    let question = question.to_string();
    tokio::task::spawn_blocking(move || {
        eprint!("{question}");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
    })
    .await?
}
