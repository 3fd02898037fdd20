//! The HTTP proxy settings the SDK's client reads from the environment, for error hints (a proxy is a common reason
//! the EC2 endpoint cannot be reached).

use bastionctl_core::text::redact_userinfo;

/// The proxy variables set in this process's environment, as the SDK's default HTTP client reads them
/// (aws-smithy-http-client's `ProxyConfig::from_env`, on since BehaviorVersion 2025-08-07: `HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, upper case first), e.g. `HTTPS_PROXY=http://proxy:3128, NO_PROXY unset`.
/// Credentials in a proxy URL are replaced by `***`. `None` when no proxy is set.
pub(super) fn proxy_settings() -> Option<String> {
    fn get(names: [&'static str; 2]) -> Option<(&'static str, String)> {
        names.into_iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()).map(|v| (n, v)))
    }
    let proxies: Vec<String> = [["HTTPS_PROXY", "https_proxy"], ["HTTP_PROXY", "http_proxy"], ["ALL_PROXY", "all_proxy"]]
        .into_iter()
        .filter_map(get)
        .map(|(n, v)| format!("{n}={}", redact_userinfo(&v)))
        .collect();
    if proxies.is_empty() {
        return None;
    }
    let no = get(["NO_PROXY", "no_proxy"]).map_or_else(|| "NO_PROXY unset".to_string(), |(n, v)| format!("{n}={v}"));
    Some(format!("{}, {no}", proxies.join(", ")))
}
