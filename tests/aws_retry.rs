//! The SDK's retry settings come from the user where the user set them (`AWS_MAX_ATTEMPTS`, `AWS_RETRY_MODE`, a
//! profile's `max_attempts` / `retry_mode`), and bastionctl's default attempt count only where nothing was set.
//!
//! One test in its own binary: it changes the process environment, which no other test may see.

use aws_sdk_ec2::config::retry::RetryMode;
use bastionctl::config::AwsConfig;
use bastionctl::ec2::aws::{MAX_ATTEMPTS, load_sdk_config};

async fn retry(cfg: &AwsConfig) -> (u32, RetryMode) {
    let sdk = load_sdk_config(cfg).await.expect("a region is set");
    let rc = sdk.retry_config().expect("a retry config");
    (rc.max_attempts(), rc.mode())
}

fn set(key: &str, value: &str) {
    // SAFETY: this binary has this one test and no other thread reads the environment meanwhile.
    unsafe { std::env::set_var(key, value) }
}

fn unset(key: &str) {
    // SAFETY: as in `set`.
    unsafe { std::env::remove_var(key) }
}

#[tokio::test(flavor = "current_thread")]
async fn user_retry_settings_win_over_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let config_file = tmp.path().join("config");
    std::fs::write(&config_file, "[default]\n\n[profile patient]\nmax_attempts = 9\nretry_mode = adaptive\n").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            unset(&k);
        }
    }
    set("AWS_CONFIG_FILE", config_file.to_str().unwrap());
    set("AWS_SHARED_CREDENTIALS_FILE", tmp.path().join("credentials").to_str().unwrap());
    set("AWS_REGION", "us-east-1");
    set("AWS_EC2_METADATA_DISABLED", "true");
    let plain = AwsConfig::default();

    assert_eq!(retry(&plain).await, (MAX_ATTEMPTS, RetryMode::Standard), "nothing set: bastionctl's default");

    set("AWS_MAX_ATTEMPTS", "7");
    assert_eq!(retry(&plain).await.0, 7, "AWS_MAX_ATTEMPTS");
    unset("AWS_MAX_ATTEMPTS");

    set("AWS_RETRY_MODE", "adaptive");
    assert_eq!(retry(&plain).await, (MAX_ATTEMPTS, RetryMode::Adaptive), "AWS_RETRY_MODE alone keeps our count");
    unset("AWS_RETRY_MODE");

    let patient = AwsConfig { profile: Some("patient".into()), ..AwsConfig::default() };
    assert_eq!(retry(&patient).await, (9, RetryMode::Adaptive), "[aws] profile's max_attempts and retry_mode");

    set("AWS_PROFILE", "patient");
    assert_eq!(retry(&plain).await, (9, RetryMode::Adaptive), "AWS_PROFILE's max_attempts");
    set("AWS_MAX_ATTEMPTS", "2");
    assert_eq!(retry(&plain).await.0, 2, "the environment wins over the profile, as in the AWS CLI");
}
