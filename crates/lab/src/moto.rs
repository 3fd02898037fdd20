//! moto's EC2 server on a free loopback port, and an aws-sdk-ec2 client for it.
//!
//! moto records every request (`MOTO_ENABLE_RECORDING`) to a file in the lab's directory, so a test can count
//! the StartInstances calls that really reached "EC2". The lab's own client marks its requests with the app name
//! [`LAB_APP_NAME`] so they can be told apart from the product's.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_ec2::config::{AppName, BehaviorVersion, Credentials, Region};
use tokio::process::Command;
use tokio::time::Instant;

use super::net::{self, POLL_INTERVAL};
use super::proc::Proc;

/// How long moto may take to answer HTTP after it was spawned (it loads its AMI catalogue first).
pub const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);
/// The region the lab's EC2 lives in.
pub const REGION: &str = "us-east-1";
/// The dummy access key id and secret of the lab.
pub const DUMMY_SECRET: &str = "testing";
/// App name in the User-Agent of the lab's own EC2 requests.
pub const LAB_APP_NAME: &str = "bastionctl-lab";

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    proc: Proc,
    port: u16,
    recording: PathBuf,
}

impl Moto {
    /// Spawns `moto_server -H 127.0.0.1 -p <free port>` with its log and request recording in `dir`, and waits
    /// until it answers HTTP. A port clash (the process exits) is retried on a new port.
    pub async fn start(dir: &Path) -> anyhow::Result<Moto> {
        let recording = dir.join("moto_recording.jsonl");
        let mut last_err = None;
        for _ in 0..5 {
            let port = net::free_port(Ipv4Addr::LOCALHOST)?;
            match Self::try_start(dir, port, &recording).await {
                Ok(proc) => return Ok(Moto { proc, port, recording }),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt")).context("moto_server did not start")
    }

    async fn try_start(dir: &Path, port: u16, recording: &Path) -> anyhow::Result<Proc> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("moto.log"))?;
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", recording)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot run moto_server (install it: pip install 'moto[server]')")?;
        let mut proc = Proc::new(child, "moto_server");
        let deadline = Instant::now() + MOTO_START_TIMEOUT;
        loop {
            if let Some(status) = proc.exited() {
                bail!("moto_server on port {port} exited with {status}; see {}", dir.join("moto.log").display());
            }
            if let Ok((200, _)) = net::http_get(port, "/moto-api/").await {
                return Ok(proc);
            }
            if Instant::now() >= deadline {
                bail!("moto_server on port {port} did not answer HTTP within {MOTO_START_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The loopback port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, the endpoint URL for EC2.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The moto process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// An EC2 client for this moto: fixed region, dummy static credentials, no profile files, no IMDS.
    pub fn client(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.url())
            .credentials_provider(Credentials::new(DUMMY_SECRET, DUMMY_SECRET, None, None, "bastionctl-lab"))
            .app_name(AppName::new(LAB_APP_NAME).expect("valid app name"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// The EC2 actions (`StartInstances`, ...) that moto received from clients other than the lab itself, in order.
    pub fn foreign_actions(&self) -> anyhow::Result<Vec<String>> {
        let text = match std::fs::read_to_string(&self.recording) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context("cannot read moto's recording"),
        };
        let mut actions = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let ua = entry["headers"]["User-Agent"].as_str().unwrap_or_default();
            if ua.contains(&format!("app/{LAB_APP_NAME}")) {
                continue;
            }
            if let Some(action) = action_of(&entry) {
                actions.push(action);
            }
        }
        Ok(actions)
    }

    /// How many StartInstances calls reached moto from clients other than the lab.
    pub fn start_instances_calls(&self) -> anyhow::Result<usize> {
        Ok(self.foreign_actions()?.iter().filter(|a| *a == "StartInstances").count())
    }
}

/// The `Action=` parameter of one recorded request (form body, base64 when `body_encoded`, or the URL query).
fn action_of(entry: &serde_json::Value) -> Option<String> {
    let body = entry["body"].as_str().unwrap_or_default();
    let body = if entry["body_encoded"].as_bool() == Some(true) {
        String::from_utf8(aws_smithy_types::base64::decode(body).ok()?).ok()?
    } else {
        body.to_string()
    };
    let url = entry["url"].as_str().unwrap_or_default();
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    body.split('&').chain(query.split('&')).find_map(|kv| kv.strip_prefix("Action=").map(str::to_string))
}
