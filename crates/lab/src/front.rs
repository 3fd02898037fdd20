//! A fault-injecting HTTP/1.1 front between the product's EC2 client and moto, on `127.0.0.1:<free port>`.
//!
//! moto's state changes are instant and it never fails on its own, so the fault tests put this front in the way
//! ([`super::LabOptions::ec2_front`]). It forwards every request to moto unchanged unless told otherwise:
//! - [`Ec2Front::inject`]: answer the next N requests of one `Action` with a [`Fault`] (throttling, 5xx, an error
//!   code, a delay, expired credentials, or no answer at all);
//! - [`Ec2Front::hold_state`]: make DescribeInstances report a state (`pending`, `stopping`, ...) for one instance
//!   whatever moto says, and refuse StartInstances/StopInstances as real EC2 does in that state
//!   (`IncorrectInstanceState`);
//! - [`Ec2Front::set_console_output`]: answer GetConsoleOutput with a given text;
//! - [`Ec2Front::actions`]: every `Action` it saw, in order (the product's requests only; the lab's own client talks
//!   to moto directly).
//!
//! It also works as a plain HTTP forward proxy for EC2 requests (`HTTP_PROXY=<url>`): whatever host the request
//! names, it goes to moto.
//!
//! EC2's Query API requests are form-encoded POSTs (`Action=...&InstanceId.1=...`) and its answers are XML.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::ec2xml;

/// Bound on forwarding one request to moto and reading its answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the front answers instead of forwarding a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 400 `RequestLimitExceeded`, EC2's throttling error (retried by the SDK's standard retry mode).
    Throttle,
    /// This HTTP status with an EC2 error body (`Unavailable` for 503, `InternalError` for 500, else `ServerError`).
    Status(u16),
    /// Any EC2 error: HTTP status, error code and message.
    Error {
        /// HTTP status, e.g. 400.
        status: u16,
        /// EC2 error code, e.g. `InvalidInstanceID.NotFound`.
        code: String,
        /// Error message.
        message: String,
    },
    /// Waits this long, then forwards the request as usual.
    Delay(Duration),
    /// HTTP 400 `ExpiredToken`: the credentials' session has expired.
    ExpiredToken,
    /// Never answers (the connection stays open until the client gives up or the front drops).
    Hang,
}

#[derive(Debug, Default)]
struct State {
    faults: HashMap<String, VecDeque<Fault>>,
    held: HashMap<String, String>,
    console: HashMap<String, String>,
    actions: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running front. Stops serving (and drops every open connection, hung ones included) when dropped.
#[derive(Debug)]
pub struct Ec2Front {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

impl Ec2Front {
    /// Listens on `127.0.0.1:<free port>` and forwards to `upstream_url` (`http://127.0.0.1:<port>`, moto).
    pub async fn start(upstream_url: &str) -> anyhow::Result<Ec2Front> {
        let upstream = upstream_addr(upstream_url)?;
        let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind the EC2 front on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let state = Shared::default();
        let task = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Ok(Ec2Front { addr, state, task })
    }

    /// The front's URL, `http://127.0.0.1:<port>`, to use as the EC2 endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `times` requests whose `Action` is `action` (e.g. `DescribeInstances`) with `fault`.
    /// Faults queue up in the order injected.
    pub fn inject(&self, action: &str, fault: Fault, times: usize) {
        let mut st = lock(&self.state);
        st.faults.entry(action.to_string()).or_default().extend(std::iter::repeat_n(fault, times));
    }

    /// Holds the state DescribeInstances reports for `instance_id` at `state` (an EC2 state name such as
    /// `pending` or `stopping`; its numeric code is rewritten too), whatever moto says. While held `stopping`,
    /// StartInstances of it fails with `IncorrectInstanceState`; while held `pending`, StopInstances does. `None`
    /// releases the hold.
    pub fn hold_state(&self, instance_id: &str, state: Option<&str>) {
        let mut st = lock(&self.state);
        match state {
            Some(s) => st.held.insert(instance_id.to_string(), s.to_string()),
            None => st.held.remove(instance_id),
        };
    }

    /// Answers GetConsoleOutput for `instance_id` with `text` (base64-encoded in the XML, as EC2 does).
    pub fn set_console_output(&self, instance_id: &str, text: String) {
        lock(&self.state).console.insert(instance_id.to_string(), text);
    }

    /// Every `Action` the front has seen, in order, faulted ones included.
    pub fn actions(&self) -> Vec<String> {
        lock(&self.state).actions.clone()
    }
}

impl Drop for Ec2Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn upstream_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url.strip_prefix("http://").with_context(|| format!("upstream `{url}` is not an http:// URL"))?;
    let hostport = hostport.trim_end_matches('/');
    let addr: SocketAddr = hostport.parse().with_context(|| format!("upstream `{url}` is not http://IP:PORT"))?;
    anyhow::ensure!(addr.ip().is_loopback(), "the lab only talks to 127.0.0.0/8, not {addr}");
    Ok(addr)
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Shared) {
    // Connections live in this set, so aborting this task (on drop) aborts them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, upstream, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn xml_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/xml"));
    resp
}

fn error_response(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    xml_response(status, ec2xml::error_body(code, message))
}

async fn handle(req: Request<Incoming>, upstream: SocketAddr, state: Shared) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error_response(400, "InvalidRequest", &format!("front: cannot read body: {e}"))),
    };
    let form = ec2xml::parse_form(&body);
    let action = ec2xml::action(&form);
    let ids = ec2xml::instance_ids(&form);
    let (fault, held_refusal) = {
        let mut st = lock(&state);
        st.actions.push(action.clone());
        let fault = st.faults.get_mut(&action).and_then(VecDeque::pop_front);
        let refusal = ids.iter().find_map(|id| match (action.as_str(), st.held.get(id).map(String::as_str)) {
            ("StartInstances", Some("stopping")) => Some(format!(
                "The instance '{id}' is not in a state from which it can be started."
            )),
            ("StopInstances", Some("pending")) => {
                Some(format!("The instance '{id}' is not in a state from which it can be stopped."))
            }
            _ => None,
        });
        (fault, refusal)
    };
    match fault {
        Some(Fault::Throttle) => return Ok(error_response(400, "RequestLimitExceeded", "Request limit exceeded.")),
        Some(Fault::Status(s)) => {
            let code = match s {
                503 => "Unavailable",
                500 => "InternalError",
                _ => "ServerError",
            };
            return Ok(error_response(s, code, "injected by the bastionctl lab front"));
        }
        Some(Fault::Error { status, code, message }) => return Ok(error_response(status, &code, &message)),
        Some(Fault::ExpiredToken) => {
            return Ok(error_response(400, "ExpiredToken", "The security token included in the request is expired"));
        }
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    if let Some(message) = held_refusal {
        return Ok(error_response(400, "IncorrectInstanceState", &message));
    }
    let upstream_resp = tokio::time::timeout(UPSTREAM_TIMEOUT, forward(parts, body, upstream)).await;
    let (status, headers, bytes) = match upstream_resp {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Ok(error_response(502, "ServerError", &format!("front: upstream failed: {e:#}"))),
        Err(_) => return Ok(error_response(504, "ServerError", "front: upstream timed out")),
    };
    let text = rewrite(&action, &ids, String::from_utf8_lossy(&bytes).into_owned(), &state);
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    for (k, v) in &headers {
        if k != hyper::header::CONTENT_LENGTH && k != hyper::header::TRANSFER_ENCODING {
            resp.headers_mut().append(k, v.clone());
        }
    }
    Ok(resp)
}

/// Applies held states and console texts to moto's answer.
fn rewrite(action: &str, ids: &[String], mut text: String, state: &Shared) -> String {
    let st = lock(state);
    match action {
        "DescribeInstances" => {
            for (id, s) in &st.held {
                text = ec2xml::set_instance_state(&text, id, s);
            }
        }
        "GetConsoleOutput" => {
            if let Some(out) = ids.iter().find_map(|id| st.console.get(id)) {
                text = ec2xml::set_console_output(&text, &aws_smithy_types::base64::encode(out.as_bytes()));
            }
        }
        _ => {}
    }
    text
}

async fn forward(
    mut parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    // A client that uses the front as its HTTP proxy sends the absolute form (`POST http://host/ HTTP/1.1`); moto
    // gets the origin form either way.
    let origin = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = origin.parse().context("request path")?;
    let stream = TcpStream::connect(upstream).await.with_context(|| format!("cannot connect to {upstream}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(Request::from_parts(parts, Full::new(body))).await?;
    let (rp, rb) = resp.into_parts();
    let bytes = rb.collect().await?.to_bytes();
    conn.abort();
    Ok((rp.status, rp.headers, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_must_be_loopback_http() {
        assert!(upstream_addr("http://127.0.0.1:5000/").is_ok());
        assert!(upstream_addr("https://127.0.0.1:5000").is_err());
        assert!(upstream_addr("http://10.0.0.1:5000").is_err());
    }
}
