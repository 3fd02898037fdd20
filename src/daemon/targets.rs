//! Each bastion's allowed target set ([`RuleSet`]): its configured `targets`, or, when it has none, the CIDR blocks
//! of its VPC. The VPC's blocks are looked up (DescribeInstances for the VPC id, then DescribeVpcs) on the first
//! connection that needs them and cached for the daemon's life; a failed lookup is retried on the next connection.

use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::InstanceRef;
use crate::ec2::Ec2Error;
use crate::lifecycle::Bastion;
use crate::policy::RuleSet;

/// Bound on resolving one bastion's VPC blocks (up to three EC2 calls, each with its own SDK timeouts).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(45);

/// One bastion's set: fixed, or the VPC's blocks once resolved.
enum Entry {
    Configured(RuleSet),
    Vpc(OnceCell<RuleSet>),
}

/// The allowed sets of all bastions, in the order of [`super::Shared::bastions`].
pub(crate) struct Targets {
    entries: Vec<Entry>,
}

impl Targets {
    /// Configured sets are taken as they are; bastions without `targets` get a lazily filled VPC entry.
    pub fn new(bastions: &[Bastion]) -> Targets {
        let entries = bastions
            .iter()
            .map(|b| {
                let spec = b.spec();
                match spec.rules.is_empty() {
                    false => Entry::Configured(RuleSet::configured(spec.rules.clone(), spec.target_ports.clone())),
                    true => Entry::Vpc(OnceCell::new()),
                }
            })
            .collect();
        Targets { entries }
    }

    /// The set of `bastions[index]`, resolving the VPC's blocks if needed.
    ///
    /// Errors: the EC2 call that failed (its hint names the IAM action), [`Ec2Error::NotFound`] when the instance
    /// has no VPC, [`Ec2Error::Timeout`] after [`RESOLVE_TIMEOUT`].
    pub async fn get(&self, index: usize, bastion: &Bastion) -> Result<&RuleSet, Ec2Error> {
        match &self.entries[index] {
            Entry::Configured(set) => Ok(set),
            Entry::Vpc(cell) => cell.get_or_try_init(|| resolve(bastion)).await,
        }
    }
}

async fn resolve(bastion: &Bastion) -> Result<RuleSet, Ec2Error> {
    let spec = bastion.spec();
    let ec2 = bastion.ec2();
    let lookup = async {
        let id = match &spec.instance {
            InstanceRef::Id(id) => id.clone(),
            InstanceRef::NameTag(tag) => ec2.find_by_name_tag(tag).await?,
        };
        let info = ec2.describe(&id).await?;
        let vpc_id = info.vpc_id.ok_or_else(|| Ec2Error::NotFound { what: format!("a VPC of instance {id}") })?;
        let blocks = ec2.vpc_cidrs(&vpc_id).await?;
        Ok(RuleSet::vpc(&vpc_id, blocks, spec.target_ports.clone()))
    };
    let set = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| Ec2Error::Timeout { operation: "DescribeVpcs" })??;
    tracing::info!(bastion = %spec.name, ports = ?set.ports, "no `targets` configured; allowing {}", set.describe());
    Ok(set)
}
