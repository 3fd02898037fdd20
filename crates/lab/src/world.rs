//! The EC2 world seeded into moto: network, security groups, the bastion instance and its Elastic IP.

use std::net::Ipv4Addr;

use anyhow::Context;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    DomainType, Filter, InstanceNetworkInterfaceSpecification, InstanceType, IpPermission, IpRange, ResourceType, Tag,
    TagSpecification,
};

/// VPC block of the lab.
pub const VPC_CIDR: &str = "10.0.0.0/16";
/// Public subnet (the bastion's).
pub const PUBLIC_SUBNET_CIDR: &str = "10.0.0.0/20";
/// Private subnet (the private hosts').
pub const PRIVATE_SUBNET_CIDR: &str = "10.0.16.0/20";

/// Ids of what was created.
#[derive(Debug, Clone)]
pub struct World {
    /// The VPC.
    pub vpc_id: String,
    /// The public subnet.
    pub public_subnet_id: String,
    /// The private subnet.
    pub private_subnet_id: String,
    /// The bastion's security group (SSH from anywhere).
    pub bastion_sg_id: String,
    /// The private hosts' security group (SSH from the bastion's group).
    pub private_sg_id: String,
    /// The bastion instance, stopped after seeding.
    pub instance_id: String,
    /// The `Name` tag of the bastion: `<lab>-bastion`.
    pub name_tag: String,
    /// The Elastic IP's allocation id.
    pub allocation_id: String,
    /// The Elastic IP (a loopback address).
    pub elastic_ip: Ipv4Addr,
}

/// Creates the world and leaves the bastion stopped.
pub async fn seed(ec2: &Client, lab_name: &str, elastic_ip: Ipv4Addr) -> anyhow::Result<World> {
    let vpc_id = ec2
        .create_vpc()
        .cidr_block(VPC_CIDR)
        .send()
        .await
        .context("CreateVpc")?
        .vpc
        .and_then(|v| v.vpc_id)
        .context("CreateVpc returned no id")?;
    let subnet = |cidr: &'static str| {
        let vpc_id = vpc_id.clone();
        async move {
            ec2.create_subnet()
                .vpc_id(vpc_id)
                .cidr_block(cidr)
                .send()
                .await
                .context("CreateSubnet")?
                .subnet
                .and_then(|s| s.subnet_id)
                .context("CreateSubnet returned no id")
        }
    };
    let public_subnet_id = subnet(PUBLIC_SUBNET_CIDR).await?;
    let private_subnet_id = subnet(PRIVATE_SUBNET_CIDR).await?;
    let bastion_sg_id = security_group(ec2, &vpc_id, &format!("{lab_name}-bastion"), None).await?;
    let private_sg_id = security_group(ec2, &vpc_id, &format!("{lab_name}-private"), Some(&bastion_sg_id)).await?;

    let image_id = image_id(ec2).await?;
    let name_tag = format!("{lab_name}-bastion");
    let nic = InstanceNetworkInterfaceSpecification::builder()
        .device_index(0)
        .subnet_id(&public_subnet_id)
        .associate_public_ip_address(false)
        .groups(&bastion_sg_id)
        .build();
    let instance_id = ec2
        .run_instances()
        .image_id(image_id)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .network_interfaces(nic)
        .tag_specifications(name_tag_spec(&name_tag))
        .send()
        .await
        .context("RunInstances")?
        .instances
        .unwrap_or_default()
        .into_iter()
        .find_map(|i| i.instance_id)
        .context("RunInstances returned no instance")?;

    let allocation_id = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .address(elastic_ip.to_string())
        .send()
        .await
        .context("AllocateAddress")?
        .allocation_id
        .context("AllocateAddress returned no allocation id")?;
    ec2.associate_address()
        .instance_id(&instance_id)
        .allocation_id(&allocation_id)
        .send()
        .await
        .context("AssociateAddress")?;
    ec2.stop_instances().instance_ids(&instance_id).send().await.context("StopInstances")?;

    Ok(World {
        vpc_id,
        public_subnet_id,
        private_subnet_id,
        bastion_sg_id,
        private_sg_id,
        instance_id,
        name_tag,
        allocation_id,
        elastic_ip,
    })
}

async fn image_id(ec2: &Client) -> anyhow::Result<String> {
    ec2.describe_images()
        .owners("amazon")
        .send()
        .await
        .context("DescribeImages")?
        .images
        .unwrap_or_default()
        .into_iter()
        .find_map(|i| i.image_id)
        .context("moto has no amazon-owned AMI")
}

fn name_tag_spec(name: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(Tag::builder().key("Name").value(name).build())
        .build()
}

/// Launches an instance tagged `Name=<name>` into the VPC with the private IP `ip` (a loopback address, so that
/// something in the lab can listen on it), in a subnet `<ip>/24` created for it (and the block associated with
/// the VPC) unless one exists. It is `running` at once (moto). Returns its id.
pub async fn run_named_instance(ec2: &Client, world: &World, name: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
    anyhow::ensure!(ip.is_loopback(), "the lab only uses 127.0.0.0/8 addresses, not {ip}");
    let block = ipnet::Ipv4Net::new(ip, 24).context("bad prefix")?.trunc().to_string();
    let subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(&world.vpc_id).build())
        .filters(Filter::builder().name("cidr-block").values(&block).build())
        .send()
        .await
        .context("DescribeSubnets")?;
    let subnet_id = match subnets.subnets().iter().find_map(|s| s.subnet_id()) {
        Some(id) => id.to_owned(),
        None => {
            let vpcs = ec2.describe_vpcs().vpc_ids(&world.vpc_id).send().await.context("DescribeVpcs")?;
            let associated = vpcs
                .vpcs()
                .iter()
                .flat_map(|v| v.cidr_block_association_set())
                .any(|a| a.cidr_block() == Some(block.as_str()));
            if !associated {
                associate_vpc_cidr(ec2, &world.vpc_id, ip, 24).await?;
            }
            ec2.create_subnet()
                .vpc_id(&world.vpc_id)
                .cidr_block(&block)
                .send()
                .await
                .with_context(|| format!("CreateSubnet {block}"))?
                .subnet
                .and_then(|s| s.subnet_id)
                .context("CreateSubnet returned no id")?
        }
    };
    ec2.run_instances()
        .image_id(image_id(ec2).await?)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .subnet_id(subnet_id)
        .private_ip_address(ip.to_string())
        .security_group_ids(&world.private_sg_id)
        .tag_specifications(name_tag_spec(name))
        .send()
        .await
        .with_context(|| format!("RunInstances Name={name} at {ip}"))?
        .instances
        .unwrap_or_default()
        .into_iter()
        .find_map(|i| i.instance_id)
        .context("RunInstances returned no instance")
}

async fn security_group(ec2: &Client, vpc_id: &str, name: &str, from_group: Option<&str>) -> anyhow::Result<String> {
    let id = ec2
        .create_security_group()
        .group_name(name)
        .description(format!("bastionctl lab: {name}"))
        .vpc_id(vpc_id)
        .send()
        .await
        .context("CreateSecurityGroup")?
        .group_id
        .context("CreateSecurityGroup returned no id")?;
    let mut perm = IpPermission::builder().ip_protocol("tcp").from_port(22).to_port(22);
    perm = match from_group {
        None => perm.ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()),
        Some(g) => perm.user_id_group_pairs(aws_sdk_ec2::types::UserIdGroupPair::builder().group_id(g).build()),
    };
    ec2.authorize_security_group_ingress()
        .group_id(&id)
        .ip_permissions(perm.build())
        .send()
        .await
        .context("AuthorizeSecurityGroupIngress")?;
    Ok(id)
}

/// The instance's state name from DescribeInstances (`running`, `stopped`, ...).
pub async fn instance_state(ec2: &Client, instance_id: &str) -> anyhow::Result<String> {
    let out = ec2.describe_instances().instance_ids(instance_id).send().await.context("DescribeInstances")?;
    out.reservations
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.instances.unwrap_or_default())
        .find_map(|i| i.state.and_then(|s| s.name).map(|n| n.as_str().to_string()))
        .with_context(|| format!("DescribeInstances did not list {instance_id}"))
}

/// The public address DescribeAddresses reports for the instance (the Elastic IP), if any.
pub async fn elastic_ip_of(ec2: &Client, instance_id: &str) -> anyhow::Result<Option<String>> {
    let out = ec2
        .describe_addresses()
        .filters(Filter::builder().name("instance-id").values(instance_id).build())
        .send()
        .await
        .context("DescribeAddresses")?;
    Ok(out.addresses.unwrap_or_default().into_iter().find_map(|a| a.public_ip))
}

/// Associates the block `<addr>/<prefix>` with the VPC (AssociateVpcCidrBlock; moto accepts loopback blocks).
pub async fn associate_vpc_cidr(ec2: &Client, vpc_id: &str, addr: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
    let block = ipnet::Ipv4Net::new(addr, prefix).context("bad prefix")?.trunc();
    ec2.associate_vpc_cidr_block()
        .vpc_id(vpc_id)
        .cidr_block(block.to_string())
        .send()
        .await
        .with_context(|| format!("AssociateVpcCidrBlock {block} to {vpc_id}"))?;
    Ok(())
}
