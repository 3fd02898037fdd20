//! Routing, the one place that answers "which bastion, and which address, for `host:port`", for the proxy's
//! `connect` (`conn.rs`) and the daemon's `[[forward]]` listeners (`forwards.rs`):
//!
//! 1. the first bastion whose allowed set ([`RuleSet`]) allows `host:port` (core [`policy::check`]) serves it. The
//!    set is its configured `targets`, or, when it has none, the CIDR blocks of its VPC, looked up (DescribeInstances
//!    for the VPC id, then DescribeVpcs) on the first connection that needs them and cached for the daemon's life;
//! 2. a host *name* on a bastion with `resolve_name_tags` (the default) is looked up as the `Name` tag of the
//!    running instances in the bastion's VPC: none, and the name goes to the bastion unchanged (its resolver: VPC
//!    DNS, private Route 53 zones); one, and the channel opens to its private IP, which the same set must allow
//!    too; several are an error naming them. The VPC id is cached like the blocks; a lookup's answer is reused for
//!    [`NAME_TTL`] only, since instances come and go.
//!
//! A failed lookup is not cached: the next connection tries again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Shared;
use crate::config::BastionConfig;
use crate::ec2::{Ec2Api, Ec2Error, NamedInstance};
use crate::error::Error;
use crate::lifecycle::Bastion;
use crate::policy::{self, RuleSet};
use crate::policy::TargetHost;

/// Bound on resolving one bastion's VPC blocks (up to three EC2 calls, each with its own SDK timeouts).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(45);
/// Bound on one Name tag lookup: the VPC id the first time, then DescribeInstances with all its pages (each call
/// with its own SDK timeouts).
pub const NAME_LOOKUP_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the answer of a Name tag lookup (an instance, or none) is reused before EC2 is asked again: long
/// enough for a burst of connections (scp, rsync, git, a shell loop), short enough for a replaced instance.
pub const NAME_TTL: Duration = Duration::from_secs(30);

/// Where a connection goes.
pub(crate) struct Route<'a> {
    /// The bastion that serves it.
    pub bastion: &'a Bastion,
    /// What the direct-tcpip channel opens to: the requested host, or the private IP its Name tag resolved to.
    pub host: TargetHost,
}

/// The first bastion whose allowed set allows `host:port`, and the host to open the channel to (see the module
/// docs). When no bastion allows it and a VPC lookup failed, that EC2 error is returned (its hint names the missing
/// permission).
///
/// Errors: [`Error::NotAllowed`]; for a name, [`Error::NameOutsideTargets`], [`Error::NameAmbiguous`] or
/// [`Error::NameLookup`].
pub(super) async fn route<'a>(shared: &'a Shared, host: &TargetHost, port: u16) -> Result<Route<'a>, Arc<Error>> {
    let mut reasons = Vec::new();
    let mut lookup_error = None;
    for (i, b) in shared.bastions.iter().enumerate() {
        let set = match shared.routes.set(i, b).await {
            Ok(set) => set,
            Err(e) => {
                warn!(bastion = %b.spec().name, "cannot look up its VPC's CIDR blocks (the default targets): {e}");
                reasons.push(format!("bastion {}: its VPC's CIDR blocks are unknown ({e})", b.spec().name));
                lookup_error.get_or_insert(e);
                continue;
            }
        };
        match policy::check(set, host, port) {
            Ok(()) => {
                let host = shared.routes.by_name_tag(i, b, set, host, port, &shared.config.source).await?;
                return Ok(Route { bastion: b, host });
            }
            Err(why) => reasons.push(format!("bastion {}: {why}", b.spec().name)),
        }
    }
    if let Some(e) = lookup_error {
        return Err(e);
    }
    Err(Arc::new(Error::NotAllowed {
        host: host.to_string(),
        port,
        config: shared.config.source.display().to_string(),
        detail: reasons.join("; "),
    }))
}

/// One bastion's set, fixed or the VPC's blocks once resolved.
enum SetSource {
    Configured(RuleSet),
    Vpc { ports: Vec<u16>, cell: OnceCell<RuleSet> },
}

/// What the daemon knows about one bastion's routes.
struct Entry {
    set: SetSource,
    /// `resolve_name_tags`.
    resolve_names: bool,
    /// The VPC id, from DescribeInstances of the bastion.
    vpc_id: OnceCell<String>,
    names: NameCache,
}

/// The routes of all bastions, in the order of the config's `[[bastion]]` tables.
pub(crate) struct Routes {
    entries: Vec<Entry>,
    ec2: Arc<dyn Ec2Api>,
}

impl Routes {
    /// Configured sets are taken as they are; bastions without `targets` get a lazily filled VPC entry. VPC ids
    /// and Name tags are looked up with `ec2`.
    pub fn new(bastions: &[BastionConfig], ec2: Arc<dyn Ec2Api>) -> Routes {
        let entries = bastions
            .iter()
            .map(|b| Entry {
                set: match b.target_rules() {
                    rules if !rules.is_empty() => {
                        SetSource::Configured(RuleSet::configured(rules, b.target_ports.clone()))
                    }
                    _ => SetSource::Vpc { ports: b.target_ports.clone(), cell: OnceCell::new() },
                },
                resolve_names: b.resolve_name_tags,
                vpc_id: OnceCell::new(),
                names: NameCache::new(NAME_TTL),
            })
            .collect();
        Routes { entries, ec2 }
    }

    /// The set of `bastions[index]`, resolving the VPC's blocks if needed (the instance id comes from the
    /// bastion's actor, which resolves a Name tag once).
    ///
    /// Errors: the EC2 call that failed (its hint names the IAM action), [`Ec2Error::NotFound`] when the instance
    /// has no VPC, [`Ec2Error::Timeout`] after [`RESOLVE_TIMEOUT`].
    async fn set(&self, index: usize, bastion: &Bastion) -> Result<&RuleSet, Arc<Error>> {
        match &self.entries[index].set {
            SetSource::Configured(set) => Ok(set),
            SetSource::Vpc { ports, cell } => {
                cell.get_or_try_init(|| self.resolve_vpc_set(index, bastion, ports)).await
            }
        }
    }

    async fn resolve_vpc_set(&self, index: usize, bastion: &Bastion, ports: &[u16]) -> Result<RuleSet, Arc<Error>> {
        let lookup = async {
            let vpc_id = self.vpc_id(index, bastion).await?;
            let blocks = self.ec2.vpc_cidrs(vpc_id).await.map_err(|e| Arc::new(Error::Ec2(e)))?;
            Ok::<_, Arc<Error>>(RuleSet::vpc(vpc_id, blocks, ports.to_vec()))
        };
        let set = tokio::time::timeout(RESOLVE_TIMEOUT, lookup)
            .await
            .map_err(|_| Arc::new(Error::Ec2(Ec2Error::Timeout { operation: "DescribeVpcs" })))??;
        let name = &bastion.spec().name;
        info!(bastion = %name, ports = ?set.ports, "no `targets` configured; allowing {}", set.describe());
        Ok(set)
    }

    /// The VPC id of `bastions[index]`, looked up once (DescribeInstances of its instance).
    async fn vpc_id(&self, index: usize, bastion: &Bastion) -> Result<&str, Arc<Error>> {
        let lookup = || async {
            let id = bastion.instance_id().await?;
            let ec2 = |e: Ec2Error| Arc::new(Error::Ec2(e));
            let info = self.ec2.describe(&id).await.map_err(ec2)?;
            info.vpc_id.ok_or_else(|| ec2(Ec2Error::NotFound { what: format!("a VPC of instance {id}") }))
        };
        self.entries[index].vpc_id.get_or_try_init(lookup).await.map(String::as_str)
    }

    /// `host` as the channel's target once `set` (of `bastions[index]`) has allowed it: an IP, or a name with
    /// `resolve_name_tags` off, as it is; otherwise the name's Name tag lookup decides (see the module docs).
    async fn by_name_tag(
        &self,
        index: usize,
        bastion: &Bastion,
        set: &RuleSet,
        host: &TargetHost,
        port: u16,
        config: &Path,
    ) -> Result<TargetHost, Arc<Error>> {
        let entry = &self.entries[index];
        let TargetHost::Name(name) = host else { return Ok(host.clone()) };
        if !entry.resolve_names {
            return Ok(host.clone());
        }
        let bastion_name = &bastion.spec().name;
        let lookup = async {
            let vpc_id = self.vpc_id(index, bastion).await?;
            entry.names.lookup(self.ec2.as_ref(), vpc_id, name).await
        };
        let found = tokio::time::timeout(NAME_LOOKUP_TIMEOUT, lookup)
            .await
            .unwrap_or_else(|_| Err(Arc::new(Error::Ec2(Ec2Error::Timeout { operation: "DescribeInstances" }))))
            .map_err(|cause| match &*cause {
                Error::NameAmbiguous { .. } => cause,
                _ => Arc::new(Error::NameLookup { name: name.clone(), bastion: bastion_name.clone(), cause }),
            })?;
        let Some(inst) = found else {
            debug!(bastion = %bastion_name, "no running instance in the VPC is tagged Name={name}; passing {name} on");
            return Ok(host.clone());
        };
        let ip = TargetHost::Ip(inst.private_ip);
        policy::check(set, &ip, port).map_err(|detail| {
            Arc::new(Error::NameOutsideTargets {
                name: name.clone(),
                port,
                ip: inst.private_ip,
                instance_id: inst.instance_id.clone(),
                bastion: bastion_name.clone(),
                config: config.display().to_string(),
                detail,
            })
        })?;
        info!(bastion = %bastion_name, "{name} resolved by Name tag to {} ({})", inst.private_ip, inst.instance_id);
        Ok(ip)
    }
}

/// Recent answers of Name tag lookups in one VPC, each kept for a TTL; errors are never kept.
struct NameCache {
    ttl: Duration,
    answers: Mutex<HashMap<String, (Instant, Option<NamedInstance>)>>,
}

impl NameCache {
    fn new(ttl: Duration) -> NameCache {
        NameCache { ttl, answers: Mutex::new(HashMap::new()) }
    }

    /// The one running instance of VPC `vpc_id` tagged Name=`name`, or `None` when there is none: from an answer
    /// younger than the TTL, else from EC2.
    ///
    /// Errors: [`Error::NameAmbiguous`] for several (sorted by id), [`Error::Ec2`] when DescribeInstances fails.
    async fn lookup(&self, ec2: &dyn Ec2Api, vpc_id: &str, name: &str) -> Result<Option<NamedInstance>, Arc<Error>> {
        let now = Instant::now();
        if let Some((at, answer)) = self.answers.lock().expect("not poisoned").get(name)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(answer.clone());
        }
        let mut found = ec2.private_ips_by_name(vpc_id, name).await.map_err(|e| Arc::new(Error::Ec2(e)))?;
        if found.len() > 1 {
            return Err(Arc::new(Error::NameAmbiguous { name: name.into(), vpc_id: vpc_id.into(), instances: found }));
        }
        let answer = found.pop();
        let mut answers = self.answers.lock().expect("not poisoned");
        answers.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        answers.insert(name.to_owned(), (now, answer.clone()));
        Ok(answer)
    }
}

#[cfg(test)]
mod tests;
