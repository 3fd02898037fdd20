//! What a test or the demo can observe in a [`Lab`]: the instance state in moto, the bastion sshd, the logs, the
//! fixture's files, moto's request record.

use std::path::PathBuf;
use std::time::Duration;

use super::{Lab, net, world};

impl Lab {
    /// The instance's state name in moto (`stopped`, `running`, ...).
    pub async fn instance_state(&self) -> anyhow::Result<String> {
        world::instance_state(&self.ec2, &self.world.instance_id).await
    }

    /// Polls moto until the instance is in `state`, for at most `within`.
    pub async fn wait_instance_state(&self, state: &str, within: Duration) -> anyhow::Result<()> {
        net::wait_until(&format!("instance {} to be {state}", self.world.instance_id), within, || async {
            self.instance_state().await.is_ok_and(|s| s == state)
        })
        .await
    }

    /// Whether the agent runs the bastion sshd right now.
    pub fn bastion_sshd_running(&self) -> bool {
        self.agent.sshd_running()
    }

    /// How many times the agent has started the bastion sshd (once per boot).
    pub fn bastion_sshd_starts(&self) -> u32 {
        self.agent.sshd_starts()
    }

    /// The instance state the agent saw at its last poll.
    pub fn agent_seen_state(&self) -> String {
        self.agent.last_state()
    }

    /// The PID of the private host's sshd listener.
    pub fn private_sshd_pid(&self) -> Option<u32> {
        self.private_sshd.pid()
    }

    /// The agent's last error, if any (for test failure messages).
    pub fn agent_error(&self) -> Option<String> {
        self.agent.last_error()
    }

    /// Polls until the bastion sshd is `up` (or gone, for `false`) and, when gone, also refuses connections.
    pub async fn wait_bastion_sshd(&self, up: bool, within: Duration) -> anyhow::Result<()> {
        let what = if up { "the bastion sshd to come up" } else { "the bastion sshd to be gone" };
        net::wait_until(what, within, || async {
            let banner = net::read_ssh_banner(self.bastion_addr()).await.is_ok();
            self.bastion_sshd_running() == up && banner == up
        })
        .await
    }

    /// The bastion sshd's stderr (LogLevel DEBUG1) over all of its runs.
    pub fn bastion_log(&self) -> String {
        std::fs::read_to_string(self.bastion.log_path()).unwrap_or_default()
    }

    /// The private host sshd's stderr.
    pub fn private_log(&self) -> String {
        std::fs::read_to_string(self.private.log_path()).unwrap_or_default()
    }

    /// The log of a daemon auto-started by `bastionctl proxy` (`[daemon] log_file`), and of one started with
    /// [`Lab::start_daemon`].
    pub fn daemon_log(&self) -> String {
        let auto = std::fs::read_to_string(&self.files.daemon_log).unwrap_or_default();
        let fg = std::fs::read_to_string(self.foreground_daemon_log()).unwrap_or_default();
        format!("{auto}{fg}")
    }

    /// What to look at when a test fails: the daemon log's last 60 lines, the bastion sshd log's last 20, the
    /// instance agent's last error and, with the EC2 front, the EC2 actions the product called.
    pub fn diagnostics(&self) -> String {
        let tail = |s: String, n: usize| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "\n--- daemon log ---\n{}\n--- bastion sshd log (tail) ---\n{}\n--- agent error: {:?}\n--- EC2 actions: {:?}\n",
            tail(self.daemon_log(), 60),
            tail(self.bastion_log(), 20),
            self.agent_error(),
            self.front().map(|f| f.actions()),
        )
    }

    /// Panics, with the command's stderr and [`Lab::diagnostics`], unless `out` succeeded and printed exactly
    /// `stdout`.
    pub fn assert_output(&self, out: &std::process::Output, stdout: &str) {
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout) == stdout,
            "ssh: {}, stdout {:?} (want {stdout:?}), stderr:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
    }

    /// The sshd line the bastion logs for a direct-tcpip request to the private host, e.g.
    /// `target 127.0.3.1 port 40123`.
    pub fn direct_tcpip_marker(&self) -> String {
        format!("target {} port {}", self.private.addr, self.private.port)
    }

    /// Every file of the bastion fixture (its directory, recursively): what "the bastion machine" holds.
    pub fn fixture_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![self.bastion.dir.clone()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => todo.push(p),
                    Ok(t) if t.is_file() => out.push(p),
                    _ => {}
                }
            }
        }
        out.sort();
        out
    }

    /// The fixture files that contain the user's private key (any of its base64 lines): should be none.
    pub fn fixture_files_with_user_private_key(&self) -> anyhow::Result<Vec<PathBuf>> {
        let pem = std::fs::read_to_string(&self.user_key.private)?;
        // Lines every OpenSSH ed25519 key shares (the format header) would match any host key: drop those by
        // comparing with another key generated the same way.
        let other = std::fs::read_to_string(&self.private_host_key.private)?;
        let secret_lines: Vec<&str> = pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 60 && !other.lines().any(|o| o == *l))
            .collect();
        anyhow::ensure!(!secret_lines.is_empty(), "the user's private key file has no body");
        Ok(self
            .fixture_files()
            .into_iter()
            .filter(|p| {
                let bytes = std::fs::read(p).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                secret_lines.iter().any(|l| text.contains(l))
            })
            .collect())
    }

    /// How many StartInstances requests reached moto from anyone but the lab itself (moto's request record).
    pub fn moto_start_instances_calls(&self) -> anyhow::Result<usize> {
        self.moto.start_instances_calls()
    }

    /// The EC2 actions moto received from anyone but the lab itself, in order.
    pub fn moto_foreign_actions(&self) -> anyhow::Result<Vec<String>> {
        self.moto.foreign_actions()
    }
}
