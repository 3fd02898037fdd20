//! The Name tag cache and the errors of name routing, against a fake EC2 that answers only
//! `private_ips_by_name`. The routing through real bastions is tested in the lab (`tests/e2e_names.rs`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Answers `private_ips_by_name` with `instances` (or `fail`), counting the calls; every other call panics.
#[derive(Default)]
struct FakeEc2 {
    instances: Mutex<Vec<NamedInstance>>,
    fail: Mutex<Option<&'static str>>,
    calls: AtomicUsize,
}

fn named(id: &str, ip: &str) -> NamedInstance {
    NamedInstance { instance_id: id.into(), private_ip: ip.parse().unwrap() }
}

#[async_trait::async_trait]
impl Ec2Api for FakeEc2 {
    async fn private_ips_by_name(&self, vpc_id: &str, _name: &str) -> Result<Vec<NamedInstance>, Ec2Error> {
        assert_eq!(vpc_id, "vpc-1");
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(code) = *self.fail.lock().unwrap() {
            return Err(Ec2Error::Api { operation: "DescribeInstances", code: code.into(), message: "no".into() });
        }
        Ok(self.instances.lock().unwrap().clone())
    }
    async fn describe(&self, _: &str) -> Result<crate::ec2::InstanceInfo, Ec2Error> {
        unimplemented!()
    }
    async fn find_by_name_tag(&self, _: &str) -> Result<String, Ec2Error> {
        unimplemented!()
    }
    async fn elastic_ip(&self, _: &str) -> Result<Option<IpAddr>, Ec2Error> {
        unimplemented!()
    }
    async fn start(&self, _: &str) -> Result<(), Ec2Error> {
        unimplemented!()
    }
    async fn stop(&self, _: &str) -> Result<(), Ec2Error> {
        unimplemented!()
    }
    async fn vpc_cidrs(&self, _: &str) -> Result<Vec<ipnet::IpNet>, Ec2Error> {
        unimplemented!()
    }
    async fn console_output(&self, _: &str) -> Result<Option<String>, Ec2Error> {
        unimplemented!()
    }
    async fn tags(&self, _: &str, _: &str) -> Result<Vec<(String, String)>, Ec2Error> {
        unimplemented!()
    }
    async fn create_tags(&self, _: &str, _: &[(String, String)]) -> Result<(), Ec2Error> {
        unimplemented!()
    }
    async fn delete_tags(&self, _: &str, _: &[String]) -> Result<(), Ec2Error> {
        unimplemented!()
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_is_reused_for_the_ttl_then_asked_again() {
    let ec2 = FakeEc2::default();
    *ec2.instances.lock().unwrap() = vec![named("i-1", "10.0.16.5")];
    let cache = NameCache::new(NAME_TTL);
    assert_eq!(cache.lookup(&ec2, "vpc-1", "web").await.unwrap(), Some(named("i-1", "10.0.16.5")));
    // The instance is replaced: within the TTL the old answer stands, after it the new one.
    *ec2.instances.lock().unwrap() = vec![named("i-2", "10.0.16.9")];
    tokio::time::advance(NAME_TTL - Duration::from_secs(1)).await;
    assert_eq!(cache.lookup(&ec2, "vpc-1", "web").await.unwrap(), Some(named("i-1", "10.0.16.5")));
    assert_eq!(ec2.calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(cache.lookup(&ec2, "vpc-1", "web").await.unwrap(), Some(named("i-2", "10.0.16.9")));
    assert_eq!(ec2.calls.load(Ordering::SeqCst), 2);
    // Another name is its own entry, and "no such tag" is an answer too.
    *ec2.instances.lock().unwrap() = vec![];
    assert_eq!(cache.lookup(&ec2, "vpc-1", "db").await.unwrap(), None);
    assert_eq!(cache.lookup(&ec2, "vpc-1", "db").await.unwrap(), None);
    assert_eq!(ec2.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn several_instances_and_failures_are_errors_and_never_kept() {
    let ec2 = FakeEc2::default();
    *ec2.instances.lock().unwrap() = vec![named("i-1", "10.0.16.5"), named("i-2", "10.0.16.6")];
    let cache = NameCache::new(NAME_TTL);
    let err = cache.lookup(&ec2, "vpc-1", "web").await.unwrap_err();
    let reply = err.to_reply();
    assert_eq!(reply.kind, "ambiguous");
    assert_eq!(
        reply.message,
        "target web: 2 running instances in VPC vpc-1 are tagged Name=web: i-1 (10.0.16.5), i-2 (10.0.16.6)"
    );
    let hint = reply.hint.unwrap();
    assert!(hint.contains("--resources i-2 --tags Key=Name,Value=web-2") && hint.contains("ssh 10.0.16.5"), "{hint}");

    *ec2.fail.lock().unwrap() = Some("UnauthorizedOperation");
    let err = cache.lookup(&ec2, "vpc-1", "web").await.unwrap_err();
    assert_eq!(err.kind(), "permission");
    *ec2.fail.lock().unwrap() = None;
    *ec2.instances.lock().unwrap() = vec![named("i-2", "10.0.16.6")];
    assert_eq!(cache.lookup(&ec2, "vpc-1", "web").await.unwrap(), Some(named("i-2", "10.0.16.6")));
    assert_eq!(ec2.calls.load(Ordering::SeqCst), 3, "neither the ambiguity nor the failure was kept");
}

#[test]
fn name_errors_say_which_key_to_change() {
    let outside = Error::NameOutsideTargets {
        name: "web".into(),
        port: 22,
        ip: "10.0.99.5".parse().unwrap(),
        instance_id: "i-1".into(),
        bastion: "prod".into(),
        config: "/c.toml".into(),
        detail: "10.0.99.5 matches none of targets [10.0.16.0/20, web]".into(),
    };
    let reply = outside.to_reply();
    assert_eq!(reply.kind, "not_allowed");
    assert_eq!(
        reply.message,
        "target web:22 resolved by its EC2 Name tag to 10.0.99.5 (i-1), which /c.toml does not allow: bastion prod: \
         10.0.99.5 matches none of targets [10.0.16.0/20, web]"
    );
    let hint = reply.hint.unwrap();
    assert!(hint.contains("add 10.0.99.5") && hint.contains("`targets` of bastion prod"), "{hint}");
    assert!(hint.contains("resolve_name_tags = false"), "{hint}");

    let denied =
        Ec2Error::Api { operation: "DescribeInstances", code: "UnauthorizedOperation".into(), message: "".into() };
    let lookup = Error::NameLookup { name: "web".into(), bastion: "prod".into(), cause: Arc::new(Error::Ec2(denied)) };
    assert_eq!(lookup.kind(), "permission");
    let hint = lookup.hint().unwrap();
    assert!(hint.contains("ec2:DescribeInstances") && hint.contains("resolve_name_tags = false"), "{hint}");
    let no_vpc = Ec2Error::NotFound { what: "a VPC of instance i-9".into() };
    let lookup = Error::NameLookup { name: "web".into(), bastion: "prod".into(), cause: Arc::new(Error::Ec2(no_vpc)) };
    assert!(lookup.to_string().contains("a VPC of instance i-9 not found"), "{lookup}");
    assert!(!lookup.hint().unwrap().contains("check name_tag"), "the bastion's name_tag is not the problem here");
}
