//! End to end, in the lab: `ssh web` resolved through the EC2 `Name` tag. moto holds running instances tagged
//! `Name=...` whose private IPs are loopback addresses (the private sshd and TCP services listen on 127.0.3.1), and
//! the real `ssh` and `bastionctl forward` go through the daemon, which opens the direct-tcpip channel to the
//! instance's IP; the bastion sshd's log shows what target it was asked for.
//!
//! Names that must reach the bastion's own resolver unchanged use `localhost` (in /etc/hosts), so that no test
//! sends a DNS query out of the machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Output, Stdio};
use std::time::Duration;

use bastionctl_lab::net::{echo_service, free_port};
use bastionctl_lab::{Lab, LabOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BASTIONCTL: &str = env!("CARGO_BIN_EXE_bastionctl");
/// Upper bound for one `ssh`, `bastionctl` run or round trip (it may start the bastion on a loaded 2-core box).
const DEADLINE: Duration = Duration::from_secs(90);
/// The private host's address, where the instance tagged `web` "is".
const PRIVATE: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);


async fn lab(o: LabOptions) -> Lab {
    Lab::start(o).await.unwrap_or_else(|e| panic!("lab did not start: {e:#}"))
}

async fn add(lab: &Lab, name: &str, ip: Ipv4Addr) -> String {
    lab.add_named_instance(name, ip).await.unwrap_or_else(|e| panic!("{e:#}"))
}

async fn run(lab: &Lab, cmd: &mut tokio::process::Command) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {DEADLINE:?}{}", lab.diagnostics()))
        .expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends 256 KiB through `addr` and checks that the same bytes come back from the echo service.
async fn round_trip(addr: SocketAddr, lab: &Lab) {
    let payload: Vec<u8> = (0..1u32 << 18).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut s = tokio::time::timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect in time").unwrap();
    let (mut rd, mut wr) = s.split();
    let send = async {
        wr.write_all(&payload).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let (_, got) = tokio::time::timeout(DEADLINE, async { tokio::join!(send, rd.read_to_end(&mut back)) })
        .await
        .unwrap_or_else(|_| panic!("round trip through {addr} did not finish{}", lab.diagnostics()));
    got.unwrap_or_else(|e| panic!("reading back through {addr}: {e}{}", lab.diagnostics()));
    assert!(back == payload, "{} of {} bytes came back through {addr}{}", back.len(), payload.len(), lab.diagnostics());
}

/// Runs `bastionctl forward 0:<target>` and returns the child and its local address (from its listener line).
async fn forward(lab: &Lab, target: &str) -> (tokio::process::Child, SocketAddr) {
    let spec = format!("0:{target}");
    let mut cmd = lab.bastionctl_command(["forward", spec.as_str()]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("a listener line").unwrap().unwrap();
    let local = line.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("listener line {line:?}"));
    (child, local)
}

fn marker(host: &str, port: u16) -> String {
    format!("target {host} port {port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_through_the_name_tag_or_fail_clearly() {
    let db = echo_service(PRIVATE).await;
    let local_db = echo_service(Ipv4Addr::LOCALHOST).await;
    let listen = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = Duration::from_secs(60);
    o.extra_targets = ["web", "twin", "far", "localhost"].map(String::from).to_vec();
    o.extra_target_ports = vec![db.port(), local_db.port()];
    o.name_hosts = ["web", "twin", "far"].map(String::from).to_vec();
    o.extra_config =
        format!("\n[[forward]]\nname = \"webdb\"\nlisten = \"127.0.0.1:{listen}\"\ntarget = \"web:{}\"\n", db.port());
    let lab = lab(o).await;
    // Tagged in mixed case: found by `ssh web`, which arrives in lower case (EC2's tag filter is case-sensitive).
    let web = add(&lab, "Web", PRIVATE).await;
    // A stopped instance with the same Name does not count: only running ones are looked up.
    let stopped_web = add(&lab, "web", Ipv4Addr::new(127, 0, 3, 7)).await;
    lab.ec2().stop_instances().instance_ids(&stopped_web).send().await.unwrap();
    let twins = [
        add(&lab, "twin", Ipv4Addr::new(127, 0, 3, 2)).await,
        // Differs from the other only in case: still ambiguous.
        add(&lab, "TWIN", Ipv4Addr::new(127, 0, 3, 3)).await,
    ];
    // In the VPC, but outside `targets` (127.0.3.1/32): refused before anything dials it.
    let far = add(&lab, "far", Ipv4Addr::new(127, 0, 4, 1)).await;
    let _daemon = lab.start_daemon().await.unwrap_or_else(|e| panic!("{e:#}"));

    // Two instances named alike: a clear error naming both, and ssh fails with nothing on stdout.
    let out = run(&lab, &mut lab.ssh_host_command("twin", "echo twin")).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "ssh twin: {}\n{stderr}", out.status);
    assert!(stderr.contains("2 running instances") && twins.iter().all(|id| stderr.contains(id.as_str())), "{stderr}");
    assert!(stderr.contains("its own Name tag") && stderr.contains("connect by private IP"), "no hint: {stderr}");
    let port = lab.private_addr().port().to_string();
    let proxy = run(&lab, &mut lab.bastionctl_command(["proxy", "twin", port.as_str()])).await;
    assert_eq!(proxy.status.code(), Some(78), "exit status of an ambiguous name: {}", text(&proxy.stderr));

    // A name whose instance's IP is outside `targets`: refused, saying which key to change.
    let out = run(&lab, &mut lab.ssh_host_command("far", "echo far")).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "ssh far: {}\n{stderr}", out.status);
    let says = format!("resolved by its EC2 Name tag to 127.0.4.1 ({far})");
    assert!(stderr.contains(&says) && stderr.contains("matches none of targets"), "want {says:?} in:\n{stderr}");
    assert!(stderr.contains("add 127.0.4.1") && stderr.contains("resolve_name_tags = false"), "no hint: {stderr}");
    assert_eq!(lab.moto_start_instances_calls().unwrap(), 0, "a refused target started the bastion");

    // `ssh web`: the real ssh reaches the private host (its key is checked under the name) through the channel
    // the daemon opened to the instance's private IP.
    let out = run(&lab, &mut lab.ssh_host_command("web", "echo hello from web")).await;
    lab.assert_output(&out, "hello from web\n");
    let bastion_log = lab.bastion_log();
    assert!(bastion_log.contains(&lab.direct_tcpip_marker()), "no direct-tcpip to {PRIVATE}:\n{bastion_log}");
    assert!(!bastion_log.contains("target web "), "the name reached the bastion:\n{bastion_log}");
    assert!(!bastion_log.contains("127.0.4.1") && !bastion_log.contains("127.0.3.2"), "{bastion_log}");
    let resolved = format!("web resolved by Name tag to {PRIVATE} ({web})");
    assert!(lab.daemon_log().contains(&resolved), "no {resolved:?} in the daemon log{}", lab.diagnostics());

    // The daemon's [[forward]] to web:PORT goes to the same instance.
    round_trip(SocketAddr::from((Ipv4Addr::LOCALHOST, listen)), &lab).await;
    assert!(lab.bastion_log().contains(&marker(&PRIVATE.to_string(), db.port())), "{}", lab.diagnostics());

    // No instance carries the name: it passes to the bastion unchanged, which resolves it itself.
    let (mut fwd, local) = forward(&lab, &format!("localhost:{}", local_db.port())).await;
    round_trip(local, &lab).await;
    assert!(lab.bastion_log().contains(&marker("localhost", local_db.port())), "{}", lab.diagnostics());
    fwd.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resolve_name_tags_false_a_tagged_name_goes_to_the_bastion_unchanged() {
    // Bound on 127.0.0.1 only: had the daemon resolved the tag, the channel would go to 127.0.3.1 and be refused.
    let service = echo_service(Ipv4Addr::LOCALHOST).await;
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = Duration::from_secs(60);
    o.extra_targets = vec!["localhost".into()];
    o.extra_target_ports = vec![service.port()];
    o.extra_config = "resolve_name_tags = false\n".into();
    let lab = lab(o).await;
    add(&lab, "localhost", PRIVATE).await;

    let (mut fwd, local) = forward(&lab, &format!("localhost:{}", service.port())).await;
    round_trip(local, &lab).await;
    assert!(lab.bastion_log().contains(&marker("localhost", service.port())), "{}", lab.diagnostics());
    assert!(!lab.daemon_log().contains("resolved by Name tag"), "{}", lab.diagnostics());
    fwd.kill().await.unwrap();
}
