//! Idle channels for the daemon's memory figure: control connections that each ask for a direct-tcpip channel to
//! the private host and then sit idle, spoken with the control protocol itself (no ssh or proxy processes).

use tokio::io::BufReader;
use tokio::net::UnixStream;

use anyhow::{Context, bail};

use bastionctl_core::control::{self, Op, Reply, Request, MIN_VERSION};
use crate::Lab;

/// How long one channel may take to open.
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens `n` channels to the private host through the lab's daemon and returns their sockets (dropping them closes
/// the channels).
pub async fn open_idle(lab: &Lab, n: usize) -> anyhow::Result<Vec<BufReader<UnixStream>>> {
    let target = lab.private_addr();
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let stream = UnixStream::connect(&lab.files().socket).await.context("cannot reach the daemon")?;
        let mut io = BufReader::new(stream);
        let req = Request {
            v: MIN_VERSION, // as the proxy asks: an older daemon under test answers too
            op: Op::Connect { host: target.ip().to_string(), port: target.port(), framed: true },
        };
        control::write_line(io.get_mut(), &req).await?;
        let ok = tokio::time::timeout(OPEN_TIMEOUT, async {
            loop {
                match control::read_line::<_, Reply>(&mut io).await? {
                    Reply::Progress(_) => continue,
                    Reply::Ok(_) => return anyhow::Ok(()),
                    other => bail!("channel {i}: the daemon answered {other:?}"),
                }
            }
        });
        ok.await.with_context(|| format!("channel {i} did not open within {OPEN_TIMEOUT:?}"))??;
        open.push(io);
    }
    Ok(open)
}
