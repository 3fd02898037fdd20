//! EC2 errors: what went wrong talking to the EC2 API, with the AWS error code kept and a hint saying what to do.
//!
//! [`Ec2Error::from_sdk`] maps every `aws_sdk_ec2` [`SdkError`] (service errors keep their code; timeouts, network
//! failures and missing credentials get their own variants). Messages never carry secrets: only error texts are
//! kept, never credential structs, and anything that looks like an access key or secret is redacted.

use std::error::Error as StdError;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use bastionctl_core::text::{error_chain, redact};

use super::proxy_env;

/// AWS error codes that mean the identity is not allowed to call the operation (an IAM policy problem).
const PERMISSION_CODES: &[&str] = &["UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Forbidden"];

/// AWS error codes that mean the credentials themselves are missing, invalid or expired.
const CREDENTIAL_CODES: &[&str] = &[
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "OptInRequired",
];

/// AWS error codes for "this instance id does not exist" (or is not even well-formed).
const NOT_FOUND_CODES: &[&str] = &["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"];

/// AWS error codes for request throttling (the SDK already retried these with backoff).
const THROTTLE_CODES: &[&str] = &["RequestLimitExceeded", "Throttling", "ThrottlingException", "EC2ThrottledException"];

/// An error from the EC2 side. [`Ec2Error::kind`] gives a stable machine-readable class, [`Ec2Error::hint`] what the
/// user should do about it. `Display` does not include the hint: print both (`"{err}; {hint}"`).
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// EC2 answered with an error (HTTP 4xx/5xx after the SDK's retries). The AWS error code is kept verbatim.
    #[error("EC2 {operation} failed: {code}: {message}")]
    Api {
        /// The API operation, e.g. `StartInstances`.
        operation: &'static str,
        /// The AWS error code (`ProvideErrorMetadata::code()`), e.g. `UnauthorizedOperation`,
        /// `IncorrectInstanceState`, `RequestLimitExceeded`; `Unknown` when EC2 sent none.
        code: String,
        /// The AWS error message (redacted of anything that looks like a key).
        message: String,
    },
    /// No usable AWS credentials: the default chain (environment, profile, SSO, IMDS) found none, or loading them
    /// failed (e.g. an expired SSO session).
    #[error("no usable AWS credentials: {detail}")]
    NoCredentials {
        /// What the credentials provider reported (redacted).
        detail: String,
        /// The AWS profile in use, if one was configured.
        profile: Option<String>,
    },
    /// An EC2 call did not finish within the SDK timeouts (see `super::aws::OPERATION_TIMEOUT`).
    #[error("EC2 {operation} timed out")]
    Timeout {
        /// The API operation, e.g. `DescribeInstances`.
        operation: &'static str,
    },
    /// The request could not be sent or no response arrived (DNS, TCP connect, TLS, connection reset).
    #[error("cannot reach the EC2 API for {operation}: {detail}")]
    Network {
        /// The API operation.
        operation: &'static str,
        /// The transport error chain (redacted).
        detail: String,
    },
    /// EC2 sent something the SDK or bastionctl could not understand (unparseable body, malformed address), or the
    /// request could not be built.
    #[error("unexpected result from EC2 {operation}: {detail}")]
    BadResponse {
        /// The API operation.
        operation: &'static str,
        /// What was wrong (redacted).
        detail: String,
    },
    /// The instance does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `instance i-0123456789abcdef0` or `an instance tagged Name=lab`.
        what: String,
    },
    /// Several instances match.
    #[error("several instances are tagged Name={name}: {}", ids.join(", "))]
    Ambiguous {
        /// The tag value.
        name: String,
        /// Matching ids.
        ids: Vec<String>,
    },
    /// No AWS region is configured anywhere (config file, profile, environment).
    #[error("no AWS region configured")]
    NoRegion,
}

impl Ec2Error {
    /// A stable, machine-readable class of the error (for logs and `status --json`): `permission`, `credentials`,
    /// `not_found`, `ambiguous`, `no_region`, `timeout`, `network`, `throttled`, `invalid_state`, `tag_limit`
    /// (more than 50 tags on the instance), `bad_response` or `api` (any other AWS error code).
    pub fn kind(&self) -> &'static str {
        match self {
            Ec2Error::Api { code, .. } if is_permission_code(code) => "permission",
            Ec2Error::Api { code, .. } if CREDENTIAL_CODES.contains(&code.as_str()) => "credentials",
            Ec2Error::Api { code, .. } if NOT_FOUND_CODES.contains(&code.as_str()) => "not_found",
            Ec2Error::Api { code, .. } if THROTTLE_CODES.contains(&code.as_str()) => "throttled",
            Ec2Error::Api { code, .. } if code == "IncorrectInstanceState" => "invalid_state",
            Ec2Error::Api { code, .. } if code == "TagLimitExceeded" => "tag_limit",
            Ec2Error::Api { .. } => "api",
            Ec2Error::NoCredentials { .. } => "credentials",
            Ec2Error::Timeout { .. } => "timeout",
            Ec2Error::Network { .. } => "network",
            Ec2Error::BadResponse { .. } => "bad_response",
            Ec2Error::NotFound { .. } => "not_found",
            Ec2Error::Ambiguous { .. } => "ambiguous",
            Ec2Error::NoRegion => "no_region",
        }
    }

    /// Whether the error is about the way to EC2 (credentials, region, network, timeouts) rather than the call:
    /// every other EC2 call fails the same way, and reports it.
    pub fn is_not_about_the_call(&self) -> bool {
        matches!(self.kind(), "credentials" | "no_region" | "network" | "timeout")
    }

    /// Whether trying again later may succeed (timeouts, network failures, throttling, 5xx-class errors).
    pub fn is_transient(&self) -> bool {
        match self {
            Ec2Error::Timeout { .. } | Ec2Error::Network { .. } => true,
            Ec2Error::Api { code, .. } => {
                THROTTLE_CODES.contains(&code.as_str())
                    || matches!(
                        code.as_str(),
                        "InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable"
                    )
            }
            _ => false,
        }
    }

    /// What the user should do about it, when there is something specific to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Ec2Error::Api { operation, code, .. } if is_permission_code(code) => Some(format!(
                "your AWS identity lacks permission ec2:{operation}: add it to its IAM policy (see config/iam-policy.json)"
            )),
            Ec2Error::Api { code, .. } if CREDENTIAL_CODES.contains(&code.as_str()) => Some(credentials_hint(None)),
            Ec2Error::NoCredentials { profile, .. } => Some(credentials_hint(profile.as_deref())),
            Ec2Error::Api { code, .. } if NOT_FOUND_CODES.contains(&code.as_str()) => {
                Some("check instance_id in the config".into())
            }
            Ec2Error::NotFound { what } if what.starts_with("instance ") => {
                Some("check instance_id (and region) in the config".into())
            }
            Ec2Error::NotFound { .. } => Some("check name_tag (and region) in the config".into()),
            Ec2Error::Ambiguous { .. } => {
                Some("give the bastion a unique Name tag, or set instance_id instead of name_tag".into())
            }
            Ec2Error::Api { code, .. } if code == "IncorrectInstanceState" => {
                Some("the instance is changing state (or was terminated): wait for it to settle and try again".into())
            }
            Ec2Error::Api { code, .. } if code == "TagLimitExceeded" => Some(format!(
                "the instance already has {} tags, EC2's limit per instance, so bastionctl cannot add its lease tag: \
                 delete tags it does not need (`aws ec2 describe-tags --filters Name=resource-id,Values=INSTANCE_ID`, \
                 then `aws ec2 delete-tags --resources INSTANCE_ID --tags Key=KEY`)",
                super::MAX_TAGS_PER_INSTANCE
            )),
            Ec2Error::Api { code, .. } if THROTTLE_CODES.contains(&code.as_str()) => {
                Some("EC2 is throttling this account's API calls: try again in a minute".into())
            }
            Ec2Error::NoRegion => Some("set region in [aws] or AWS_REGION".into()),
            Ec2Error::Timeout { .. } | Ec2Error::Network { .. } => Some(match proxy_env::proxy_settings() {
                Some(p) => format!(
                    "check network access to the EC2 endpoint: EC2 calls use the HTTP proxy from the environment \
                     ({p}); check that the proxy runs, or list the endpoint's host in NO_PROXY"
                ),
                None => "check network access to the EC2 endpoint (proxy, VPN, [aws] endpoint_url)".into(),
            }),
            _ => None,
        }
    }

    /// Maps an aws-sdk-ec2 error of `operation` (e.g. `"StartInstances"`). `profile` is the configured AWS profile,
    /// named in the hint of [`Ec2Error::NoCredentials`].
    ///
    /// Service errors become [`Ec2Error::Api`] with their code; timeouts (operation, attempt or connect)
    /// [`Ec2Error::Timeout`]; transport failures [`Ec2Error::Network`], or [`Ec2Error::NoCredentials`] /
    /// [`Ec2Error::NoRegion`] when the error chain says credentials or the region could not be resolved; anything
    /// else (unparseable response, request not buildable) [`Ec2Error::BadResponse`].
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>, profile: Option<&str>) -> Ec2Error
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let profile_owned = profile.map(str::to_owned);
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                Ec2Error::Api {
                    operation,
                    code: e.code().unwrap_or("Unknown").to_owned(),
                    message: redact(e.message().unwrap_or("(no message)")),
                }
            }
            SdkError::TimeoutError(_) => Ec2Error::Timeout { operation },
            SdkError::DispatchFailure(d) if d.is_timeout() => Ec2Error::Timeout { operation },
            SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => {
                let detail = redact(&chain_text(&err));
                match chain_cause(&err) {
                    Cause::Credentials => Ec2Error::NoCredentials { detail, profile: profile_owned },
                    Cause::Region => Ec2Error::NoRegion,
                    Cause::Other if matches!(err, SdkError::DispatchFailure(_)) => {
                        Ec2Error::Network { operation, detail }
                    }
                    Cause::Other => Ec2Error::BadResponse { operation, detail },
                }
            }
            _ => Ec2Error::BadResponse { operation, detail: redact(&chain_text(&err)) },
        }
    }
}

fn is_permission_code(code: &str) -> bool {
    PERMISSION_CODES.contains(&code) || code.starts_with("AccessDenied")
}

fn credentials_hint(profile: Option<&str>) -> String {
    let p = profile.unwrap_or("<profile>");
    format!(
        "AWS credentials are missing, invalid or expired: run `aws sso login --profile {p}` for SSO profiles, or `aws \
         configure`; a running daemon keeps the environment it was started with, so if you changed credentials in \
         this shell, restart the daemon: `kill PID` (see `bastionctl status`) or `systemctl --user restart bastionctl`"
    )
}

/// What a non-service error is really about, judged from the texts of its source chain.
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    Credentials,
    Region,
    Other,
}

/// Walks the error chain. aws-credential-types' `CredentialsError` is not reachable as a type from this crate's
/// dependencies, so it is recognised by its messages ("... credentials ...", "credential provider ...").
fn chain_cause(err: &(dyn StdError + 'static)) -> Cause {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("credential") || text.contains("no identity") || text.contains("identity resolver") {
            return Cause::Credentials;
        }
        if text.contains("region")
            && (text.contains("must be set") || text.contains("missing") || text.contains("no region"))
        {
            return Cause::Region;
        }
        cur = e.source();
    }
    Cause::Other
}

/// The `Display` texts of the error's sources, joined with `: ` (the top level, "dispatch failure" and the like, is
/// left out: the variant says it). Only `Display` is used, never `Debug`, so no struct is dumped.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let parts: Vec<String> = error_chain(err).into_iter().skip(1).filter(|t| t != "other").collect();
    if parts.is_empty() { err.to_string() } else { parts.join(": ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(operation: &'static str, code: &str) -> Ec2Error {
        Ec2Error::Api { operation, code: code.into(), message: "m".into() }
    }

    #[test]
    fn permission_hint_names_the_iam_action() {
        for code in ["UnauthorizedOperation", "AccessDenied", "AccessDeniedException"] {
            let e = api("StopInstances", code);
            assert_eq!(e.kind(), "permission");
            assert!(e.hint().unwrap().contains("ec2:StopInstances"), "{code}");
        }
    }

    #[test]
    fn credential_hint_names_the_profile() {
        let e = api("DescribeInstances", "ExpiredToken");
        assert_eq!(e.kind(), "credentials");
        assert!(e.hint().unwrap().contains("aws sso login --profile <profile>"));
        let e = Ec2Error::NoCredentials { detail: "x".into(), profile: Some("work".into()) };
        assert!(e.hint().unwrap().contains("aws sso login --profile work"));
        assert!(e.hint().unwrap().contains("aws configure"));
        assert!(e.hint().unwrap().contains("restart the daemon"), "changed credentials need a daemon restart");
    }

    #[test]
    fn other_hints() {
        assert_eq!(Ec2Error::NoRegion.hint().unwrap(), "set region in [aws] or AWS_REGION");
        assert!(api("StartInstances", "InvalidInstanceID.Malformed").hint().unwrap().contains("instance_id"));
        assert!(api("StartInstances", "RequestLimitExceeded").is_transient());
        assert_eq!(api("StartInstances", "IncorrectInstanceState").kind(), "invalid_state");
        assert_eq!(api("StartInstances", "Whatever").hint(), None);
    }
}
