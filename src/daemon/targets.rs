//! Each bastion's allowed target set ([`RuleSet`]): its configured `targets`, or, when it has none, the CIDR blocks
//! of its VPC. The VPC's blocks are looked up (DescribeInstances for the VPC id, then DescribeVpcs) on the first
//! connection that needs them and cached for the daemon's life; a failed lookup is retried on the next connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::config::BastionConfig;
use crate::ec2::{Ec2Api, Ec2Error};
use crate::error::Error;
use crate::lifecycle::Bastion;
use crate::policy::RuleSet;

/// Bound on resolving one bastion's VPC blocks (up to three EC2 calls, each with its own SDK timeouts).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(45);

/// One bastion's set: fixed, or the VPC's blocks once resolved.
enum Entry {
    Configured(RuleSet),
    Vpc { ports: Vec<u16>, cell: OnceCell<RuleSet> },
}

/// The allowed sets of all bastions, in the order of the config's `[[bastion]]` tables.
pub(crate) struct Targets {
    entries: Vec<Entry>,
    ec2: Arc<dyn Ec2Api>,
}

impl Targets {
    /// Configured sets are taken as they are; bastions without `targets` get a lazily filled VPC entry, looked up
    /// with `ec2`.
    pub fn new(bastions: &[BastionConfig], ec2: Arc<dyn Ec2Api>) -> Targets {
        let entries = bastions
            .iter()
            .map(|b| match b.target_rules() {
                rules if !rules.is_empty() => Entry::Configured(RuleSet::configured(rules, b.target_ports.clone())),
                _ => Entry::Vpc { ports: b.target_ports.clone(), cell: OnceCell::new() },
            })
            .collect();
        Targets { entries, ec2 }
    }

    /// The set of `bastions[index]`, resolving the VPC's blocks if needed (the instance id comes from the
    /// bastion's actor, which resolves a Name tag once).
    ///
    /// Errors: the EC2 call that failed (its hint names the IAM action), [`Ec2Error::NotFound`] when the instance
    /// has no VPC, [`Ec2Error::Timeout`] after [`RESOLVE_TIMEOUT`].
    pub async fn get(&self, index: usize, bastion: &Bastion) -> Result<&RuleSet, Arc<Error>> {
        match &self.entries[index] {
            Entry::Configured(set) => Ok(set),
            Entry::Vpc { ports, cell } => cell.get_or_try_init(|| self.resolve(bastion, ports)).await,
        }
    }

    async fn resolve(&self, bastion: &Bastion, ports: &[u16]) -> Result<RuleSet, Arc<Error>> {
        let lookup = async {
            let id = bastion.instance_id().await?;
            let ec2 = |e: Ec2Error| Arc::new(Error::Ec2(e));
            let info = self.ec2.describe(&id).await.map_err(ec2)?;
            let vpc_id = info.vpc_id.ok_or_else(|| ec2(Ec2Error::NotFound { what: format!("a VPC of instance {id}") }))?;
            let blocks = self.ec2.vpc_cidrs(&vpc_id).await.map_err(ec2)?;
            Ok::<_, Arc<Error>>(RuleSet::vpc(&vpc_id, blocks, ports.to_vec()))
        };
        let set = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| Arc::new(Error::Ec2(Ec2Error::Timeout { operation: "DescribeVpcs" })))??;
        let name = &bastion.spec().name;
        tracing::info!(bastion = %name, ports = ?set.ports, "no `targets` configured; allowing {}", set.describe());
        Ok(set)
    }
}
