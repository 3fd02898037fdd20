//! `bastionctl doctor [BASTION]`: checks everything bastionctl needs, one `PASS`/`FAIL` line each, every `FAIL`
//! followed by the fix. In order: the config loads; the control socket's directory is private; AWS credentials
//! resolve (nothing about them is printed but the profile); per bastion: the instance exists and its state, each
//! IAM permission (EC2 `DryRun`), the default targets when `targets` is unset, the identity files / ssh-agent, and
//! the host key pin. Checks that depend on a failed one are printed as `SKIP`. Fails (exit 1) if any check fails.
//!
//! Nothing here connects to the bastion, changes an instance, or prints key material or AWS secrets.

mod keys;
mod watchdog;

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use aws_sdk_ec2::config::ProvideCredentials;

use crate::config::{BastionConfig, Config, InstanceRef};
use crate::daemon::socket::{self, SocketError};
use crate::ec2::aws::{AwsEc2, load_sdk_config};
use crate::ec2::permissions::{self, Permission};
use crate::ec2::{Ec2Api, Ec2Error, InstanceInfo, InstanceState};
use bastionctl_core::text::{error_chain, redact};

/// Bound on resolving AWS credentials (SSO, credential_process and IMDS can be slow or hang).
pub const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts and prints check results.
#[derive(Default)]
pub(super) struct Report {
    failed: usize,
    passed: usize,
}

impl Report {
    pub(super) fn pass(&mut self, what: impl Display) {
        self.passed += 1;
        outln!("PASS  {what}");
    }

    pub(super) fn fail(&mut self, what: impl Display, fix: impl Display) {
        self.failed += 1;
        outln!("FAIL  {what}\n      fix: {fix}");
    }

    pub(super) fn skip(&mut self, what: impl Display) {
        outln!("SKIP  {what}");
    }

    /// Something to know that does not stop bastionctl from working (not counted as a failure).
    pub(super) fn warn(&mut self, what: impl Display, fix: impl Display) {
        outln!("WARN  {what}\n      fix: {fix}");
    }
}

/// Runs every check; `Err` (exit 1) when at least one failed.
pub(super) async fn run(config: Option<&Path>, bastion: Option<&str>) -> anyhow::Result<()> {
    // A name the config does not have is a usage error (as for up, down and trust), not a failed check.
    if let (Some(name), Ok(cfg)) = (bastion, Config::load_default(config)) {
        cfg.bastion(Some(name))?;
    }
    let mut r = Report::default();
    check_all(&mut r, config, bastion).await;
    outln!("{} passed, {} failed", r.passed, r.failed);
    anyhow::ensure!(r.failed == 0, "{} check(s) failed; see the FAIL lines above for the fixes", r.failed);
    Ok(())
}

async fn check_all(r: &mut Report, config: Option<&Path>, bastion: Option<&str>) {
    let cfg = match Config::load_default(config) {
        Ok(cfg) => {
            r.pass(format!("config {} loads ({} bastion(s))", cfg.source.display(), cfg.bastions.len()));
            cfg
        }
        Err(e) => {
            r.fail(
                format!("config: {e}"),
                "correct the file as the message says (config/bastionctl.example.toml documents every key)",
            );
            return;
        }
    };
    let bastions: Vec<&BastionConfig> = match bastion {
        None => cfg.bastions.iter().collect(),
        Some(name) => match cfg.bastion(Some(name)) {
            Ok(b) => vec![b],
            Err(e) => return r.fail(e, "pass one of the names listed, or none to check every bastion"),
        },
    };
    check_socket_dir(r, &cfg.socket_path());
    let ec2 = check_credentials(r, &cfg).await;
    for b in bastions {
        check_bastion(r, &cfg, b, ec2.as_ref()).await;
    }
}

fn check_socket_dir(r: &mut Report, socket_path: &Path) {
    let Some(dir) = socket_path.parent() else { return r.fail("socket path has no directory", "set [daemon] socket") };
    match socket::check_dir(dir, false) {
        Ok(()) => r.pass(format!("socket directory {} is yours and private (0700)", dir.display())),
        Err(SocketError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            r.pass(format!("socket directory {} does not exist yet; the daemon creates it 0700", dir.display()))
        }
        Err(e @ SocketError::Unsafe { owner, me, .. }) if owner == me => {
            r.fail(format!("socket directory: {e}"), format!("chmod 700 {}", dir.display()))
        }
        Err(e) => r.fail(
            format!("socket directory: {e}"),
            format!("remove {} (or point [daemon] socket at a directory of your own)", dir.display()),
        ),
    }
}

/// Resolves credentials through aws-config's chain and builds the EC2 client; `None` when that failed.
async fn check_credentials(r: &mut Report, cfg: &Config) -> Option<AwsEc2> {
    let profile = cfg.aws.profile.clone();
    let sdk = match load_sdk_config(&cfg.aws).await {
        Ok(sdk) => sdk,
        Err(e) => {
            let fix = e.hint().unwrap_or_else(|| "set region in [aws] or AWS_REGION".into());
            r.fail(format!("AWS: {e}"), fix);
            return None;
        }
    };
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let no_creds = |detail: String| Ec2Error::NoCredentials { detail: redact(&detail), profile: profile.clone() };
    let result = match sdk.credentials_provider() {
        None => Err(no_creds("no credentials provider is configured".into())),
        Some(p) => match tokio::time::timeout(CREDENTIALS_TIMEOUT, p.provide_credentials()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(no_creds(error_chain(&e).join(": "))),
            Err(_) => Err(no_creds(format!("no answer within {CREDENTIALS_TIMEOUT:?}"))),
        },
    };
    let from = profile.as_deref().map(|p| format!("profile {p}")).unwrap_or_else(|| "the default chain".into());
    match result {
        Ok(()) => r.pass(format!("AWS credentials resolve (from {from}; region {region})")),
        Err(e) => {
            r.fail(e.to_string(), e.hint().unwrap_or_default());
            return None;
        }
    }
    Some(AwsEc2::from_sdk_config(&sdk, profile))
}

async fn check_bastion(r: &mut Report, cfg: &Config, b: &BastionConfig, ec2: Option<&AwsEc2>) {
    let name = b.name();
    let instance = match ec2 {
        Some(ec2) => check_instance(r, &name, b, ec2).await,
        None => {
            r.skip(format!("bastion {name}: instance, permissions and targets (no AWS credentials)"));
            None
        }
    };
    match (ec2, &instance) {
        (Some(ec2), Some(info)) => {
            let holder = crate::lifecycle::lease::local_holder(&cfg.source);
            check_permissions(r, &name, ec2, &info.instance_id, info.vpc_id.as_deref(), &holder).await;
            watchdog::check(r, &name, ec2, &info.instance_id).await;
            check_default_targets(r, &name, b, ec2, info.vpc_id.as_deref()).await;
        }
        (Some(_), None) => r.skip(format!("bastion {name}: permissions (they are checked against the instance)")),
        (None, _) => {}
    }
    keys::check_identities(r, &name, b).await;
    match &instance {
        Some(info) => {
            // The address counts when the configured known_hosts lists the bastion by address, as for the daemon.
            let ip = match ec2 {
                Some(ec2) => crate::ec2::bastion_ip(ec2, b.address, info)
                    .await
                    .ok()
                    .flatten(),
                None => b.address,
            };
            keys::check_pin(
                r,
                cfg,
                &name,
                b,
                &info.instance_id,
                ip.map(|ip| std::net::SocketAddr::new(ip, b.port)),
            )
        }
        None => match b.instance_ref() {
            InstanceRef::Id(id) => {
                keys::check_pin(r, cfg, &name, b, &id, b.address.map(|ip| std::net::SocketAddr::new(ip, b.port)))
            }
            InstanceRef::NameTag(_) => r.skip(format!("bastion {name}: host key pin (instance id unknown)")),
        },
    }
}

/// The instance's description when it exists.
async fn check_instance(
    r: &mut Report,
    name: &str,
    b: &BastionConfig,
    ec2: &AwsEc2,
) -> Option<InstanceInfo> {
    let id = match crate::ec2::resolve(ec2, &b.instance_ref()).await {
        Ok(id) => id,
        Err(e) => {
            let fix = e.hint().unwrap_or_else(|| "tag the bastion with its Name tag, or set instance_id".into());
            r.fail(format!("bastion {name}: {e}"), fix);
            return None;
        }
    };
    match ec2.describe(&id).await {
        Ok(info) if matches!(info.state, InstanceState::ShuttingDown | InstanceState::Terminated) => {
            r.fail(
                format!("bastion {name}: instance {id} is {}", info.state),
                "point instance_id (or name_tag) at the new bastion",
            );
            None
        }
        Ok(info) => {
            r.pass(format!("bastion {name}: instance {id} exists, state {}", info.state));
            Some(info)
        }
        Err(e @ Ec2Error::NotFound { .. }) => {
            r.fail(
                format!("bastion {name}: {e} in this account and region"),
                format!("correct instance_id in the config, or the region/profile in [aws] (`aws ec2 describe-instances --instance-ids {id}`)"),
            );
            None
        }
        Err(e) => {
            r.fail(format!("bastion {name}: {e}"), e.hint().unwrap_or_else(|| "see the message".into()));
            None
        }
    }
}

async fn check_permissions(r: &mut Report, name: &str, ec2: &AwsEc2, id: &str, vpc: Option<&str>, holder: &str) {
    let key = format!("{}{holder}", crate::lifecycle::lease::LEASE_PREFIX);
    for c in permissions::check(ec2.client(), id, vpc, &key).await {
        match c.result {
            Permission::Allowed => r.pass(format!("bastion {name}: {} allowed", c.action)),
            Permission::Missing { message } if matches!(c.action, "ec2:CreateTags" | "ec2:DeleteTags") => r.fail(
                format!(
                    "bastion {name}: {} is not allowed ({message}), so the daemon runs in single-user mode: it cannot \
                     put up its lease tag {key}, and other users' daemons may stop the bastion under its sessions",
                    c.action
                ),
                missing_fix(c.action, id),
            ),
            Permission::Missing { message } => {
                r.fail(format!("bastion {name}: {} is not allowed ({message})", c.action), missing_fix(c.action, id))
            }
            Permission::Unknown(e) => r.fail(
                format!("bastion {name}: cannot tell whether {} is allowed: {e}", c.action),
                e.hint().unwrap_or_else(|| "see the message, then run doctor again".into()),
            ),
        }
    }
}

/// The fix for a missing permission: which action on which resource, and where the policy is.
pub(super) fn missing_fix(action: &str, instance_id: &str) -> String {
    let resource = match action {
        "ec2:StartInstances" | "ec2:StopInstances" | "ec2:GetConsoleOutput" => {
            format!("arn:aws:ec2:REGION:ACCOUNT:instance/{instance_id} (or instances tagged bastionctl=managed)")
        }
        "ec2:CreateTags" | "ec2:DeleteTags" => format!(
            "arn:aws:ec2:REGION:ACCOUNT:instance/{instance_id} (or instances tagged bastionctl=managed) for tag keys \
             bastionctl:lease:* (condition aws:TagKeys)"
        ),
        _ => "\"*\" (Describe calls cannot be limited to one resource)".to_string(),
    };
    format!(
        "allow {action} on {resource} in the IAM policy of these credentials; config/iam-policy.json has all of them"
    )
}

async fn check_default_targets(r: &mut Report, name: &str, b: &BastionConfig, ec2: &AwsEc2, vpc: Option<&str>) {
    if b.targets.is_some() {
        return;
    }
    let Some(vpc) = vpc else {
        return r.fail(
            format!("bastion {name}: no `targets` and the instance is in no VPC, so nothing can be forwarded"),
            "set `targets` in the config",
        );
    };
    match ec2.vpc_cidrs(vpc).await {
        Ok(blocks) => {
            let set = crate::policy::RuleSet::vpc(vpc, blocks, b.target_ports.clone());
            r.pass(format!(
                "bastion {name}: no `targets`, so it forwards to {} on ports {:?}",
                set.describe(),
                set.ports
            ))
        }
        Err(e) => {
            r.fail(format!("bastion {name}: default targets: {e}"), e.hint().unwrap_or_else(|| "set `targets`".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_for_a_missing_permission_names_action_and_resource() {
        let fix = missing_fix("ec2:StartInstances", "i-0123456789abcdef0");
        assert!(
            fix.contains("allow ec2:StartInstances on arn:aws:ec2:REGION:ACCOUNT:instance/i-0123456789abcdef0"),
            "{fix}"
        );
        assert!(fix.contains("config/iam-policy.json"), "{fix}");
        assert!(missing_fix("ec2:DescribeVpcs", "i-1").contains("\"*\""));
    }

    #[test]
    fn the_actions_checked_are_those_of_the_shipped_policy() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/iam-policy.json")).unwrap();
        let policy: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut granted: Vec<String> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()))
            .collect();
        granted.sort();
        let mut checked: Vec<String> = permissions::ACTIONS.iter().map(|a| a.to_string()).collect();
        checked.sort();
        assert_eq!(granted, checked);
        let scoped = &policy["Statement"][1];
        assert_eq!(
            scoped["Resource"], "arn:aws:ec2:*:*:instance/*",
            "Start/Stop/GetConsoleOutput are limited to instances"
        );
        assert_eq!(scoped["Condition"]["StringEquals"]["aws:ResourceTag/bastionctl"], "managed");
        let tags = &policy["Statement"][2];
        assert_eq!(tags["Action"], serde_json::json!(["ec2:CreateTags", "ec2:DeleteTags"]));
        assert_eq!(tags["Resource"], "arn:aws:ec2:*:*:instance/*");
        assert_eq!(tags["Condition"]["StringEquals"]["aws:ResourceTag/bastionctl"], "managed", "only the bastion");
        assert_eq!(tags["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"], "bastionctl:lease:*", "only leases");
        assert_eq!(tags["Condition"]["Null"]["aws:TagKeys"], "false", "no DeleteTags without keys (= all tags)");
    }
}
