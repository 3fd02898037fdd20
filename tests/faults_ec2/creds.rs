//! Items 5 and 14: expired or missing credentials fail fast with a hint; HTTP(S)_PROXY and NO_PROXY in the
//! environment are honoured by the EC2 calls, and a dead proxy gives a clear error, not a hang.

use std::time::Duration;

use bastionctl_lab::{Ec2Front, Fault, Lab, LabOptions};

use super::common::*;

/// Points the lab's config at AWS profile `profile`, an SSO profile (IAM Identity Center) with no cached token.
fn use_sso_profile(lab: &Lab, profile: &str) {
    let f = lab.files();
    let aws_config = format!(
        "[profile {profile}]\nsso_session = {profile}\nsso_account_id = 123456789012\nsso_role_name = Lab\n\
         region = us-east-1\n\n[sso-session {profile}]\nsso_start_url = https://lab.invalid/start\n\
         sso_region = us-east-1\nsso_registration_scopes = sso:account:access\n"
    );
    std::fs::write(&f.aws_config, aws_config).expect("write AWS config");
    let text = std::fs::read_to_string(&f.config).expect("read config");
    let text = text.replacen("[aws]\n", &format!("[aws]\nprofile = {profile:?}\n"), 1);
    std::fs::write(&f.config, text).expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_expired_or_missing_credentials_fail_within_5s_with_a_hint() {
    let bound = Duration::from_secs(5);
    let lab = lab(opts(Duration::from_secs(30), Duration::from_secs(60))).await;
    let host = lab.private_addr().ip().to_string();
    let port = lab.private_addr().port();

    // Expired session token: EC2 answers ExpiredToken to everything.
    let _daemon = lab.start_daemon().await.expect("daemon");
    front(&lab).inject("DescribeInstances", Fault::ExpiredToken, 100);
    front(&lab).inject("StartInstances", Fault::ExpiredToken, 100);
    let (expired, expired_took) = proxy(&lab, &host, port, &[]).await;
    let expired_err = stderr(&expired);
    let expired_ok = !expired.status.success()
        && expired_err.contains("ExpiredToken")
        && expired_err.contains("aws sso login")
        && expired_took < bound;
    assert!(lab.stop_daemon().await, "the daemon was not running");

    // An SSO profile without a cached token (never logged in, or the session ended); no static keys anywhere. The
    // proxy starts the daemon itself, with this environment.
    use_sso_profile(&lab, "lab-sso");
    let home = lab.dir().display().to_string();
    let env = [("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None), ("HOME", Some(home.as_str()))];
    let (sso, sso_took) = proxy(&lab, &host, port, &env).await;
    let sso_err = stderr(&sso);
    let sso_ok =
        !sso.status.success() && sso_err.contains("aws sso login --profile lab-sso") && sso_took < bound;
    record(
        &lab,
        "5",
        "Expired or invalid credentials",
        "the proxy fails within 5 s with a hint (`aws sso login --profile X` for SSO profiles); no hang",
        &format!(
            "ExpiredToken from EC2: proxy exited {} after {}: {:?}; SSO profile with no token: exited {} after {}: {:?}",
            expired.status,
            secs(expired_took),
            error_line(&expired_err),
            sso.status,
            secs(sso_took),
            error_line(&sso_err),
        ),
        expired_ok && sso_ok,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case14_proxy_environment_is_honoured_and_a_dead_proxy_fails_clearly() {
    // No front in the product's path here: the endpoint is moto itself, and a separate front plays the HTTP proxy.
    let mut o = LabOptions::new(BASTIONCTL);
    o.idle_timeout = Duration::from_secs(30);
    o.boot_delay = Duration::from_millis(500);
    let lab = lab(o).await;
    let http_proxy = Ec2Front::start(&lab.moto_url()).await.expect("proxy front");
    let dead = format!("http://127.0.0.1:{}", bastionctl_lab::net::free_port(std::net::Ipv4Addr::LOCALHOST).unwrap());
    let host = lab.private_addr().ip().to_string();
    let port = lab.private_addr().port();

    // 1. A live proxy in HTTP_PROXY/HTTPS_PROXY: the EC2 calls go through it.
    let live = http_proxy.url();
    let (via, via_took) = ssh_with_env(&lab, &proxy_env(&live, None)).await;
    let via_ok = ok(&via, "ok\n");
    let proxied = http_proxy.actions();
    assert!(lab.stop_daemon().await, "the daemon was not running");

    // 2. A dead proxy, but NO_PROXY covers the endpoint: works without touching the proxy.
    let (bypass, bypass_took) = ssh_with_env(&lab, &proxy_env(&dead, Some("127.0.0.1"))).await;
    let bypass_ok = ok(&bypass, "ok\n");
    assert!(lab.stop_daemon().await, "the daemon was not running");

    // 3. A dead proxy and no NO_PROXY: a clear error, bounded in time.
    let (refused, refused_took) = proxy(&lab, &host, port, &proxy_env(&dead, None)).await;
    let refused_err = stderr(&refused);
    let refused_clear = !refused.status.success() && refused_err.contains(&dead) && refused_took < Duration::from_secs(45);
    record(
        &lab,
        "14",
        "HTTPS_PROXY / NO_PROXY in the environment",
        "EC2 calls honour HTTP(S)_PROXY and NO_PROXY; a dead proxy gives a clear error naming the proxy, not a hang",
        &format!(
            "live proxy: ssh {} in {}, the proxy carried {} EC2 calls ({:?}); dead proxy with NO_PROXY=127.0.0.1: \
             ssh {} in {}; dead proxy without NO_PROXY: proxy exited {} after {}: {:?}",
            if via_ok { "succeeded" } else { "FAILED" },
            secs(via_took),
            proxied.len(),
            proxied.iter().take(4).collect::<Vec<_>>(),
            if bypass_ok { "succeeded" } else { "FAILED" },
            secs(bypass_took),
            refused.status,
            secs(refused_took),
            error_line(&refused_err),
        ),
        via_ok && proxied.iter().any(|a| a == "StartInstances") && bypass_ok && refused_clear,
    );
}

/// HTTP_PROXY and HTTPS_PROXY set to `proxy`, NO_PROXY to `no_proxy` (or unset), every other spelling unset.
fn proxy_env<'a>(proxy: &'a str, no_proxy: Option<&'a str>) -> Vec<(&'a str, Option<&'a str>)> {
    let mut env = vec![("HTTP_PROXY", Some(proxy)), ("HTTPS_PROXY", Some(proxy)), ("NO_PROXY", no_proxy)];
    env.extend(["http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"].map(|k| (k, None)));
    env
}

/// `ssh private 'echo ok'` with extra environment for its ProxyCommand (and so for the daemon it starts).
async fn ssh_with_env(lab: &Lab, env: &[(&str, Option<&str>)]) -> (std::process::Output, Duration) {
    let mut cmd = lab.ssh_command("echo ok");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let t = std::time::Instant::now();
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let out = tokio::time::timeout(SSH_DEADLINE, child.wait_with_output()).await.expect("ssh in time").unwrap();
    (out, t.elapsed())
}
