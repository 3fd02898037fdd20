//! The control socket's framing on arbitrary bytes: `read_line` (requests and replies) and `read_frame` (the
//! framed tunnel) must return a value or an error, never panic, and never read past what they announce.
#![no_main]

use bastionctl_core::control::{self, Reply, Request};
use libfuzzer_sys::fuzz_target;
use tokio::io::BufReader;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut r = BufReader::with_capacity(64, data);
        while control::read_line::<_, Request>(&mut r).await.is_ok() {}
        let mut r = BufReader::new(data);
        while control::read_line::<_, Reply>(&mut r).await.is_ok() {}
        let mut r = BufReader::new(data);
        while let Ok(frame) = control::read_frame(&mut r).await {
            if let control::Frame::Data(n) = frame {
                let mut skip = tokio::io::AsyncReadExt::take(&mut r, u64::from(n));
                if tokio::io::copy(&mut skip, &mut tokio::io::sink()).await.is_err() {
                    break;
                }
            }
        }
    });
});
