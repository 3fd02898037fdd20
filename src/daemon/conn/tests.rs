//! The splice's two copies over a real socket pair: every byte arrives, in order, framed or raw; chunks that queued
//! up go out in one write, each with its own frame head; empty chunks produce no (invalid) empty frame.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{copy_down, copy_up};
use crate::control::{FrameDecoder, Piece};
use crate::tunnel::ChannelRx;

/// Deterministic, non-repeating test bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// A channel that delivers `chunks`, all queued at once, then ends.
fn delivering(chunks: Vec<Bytes>) -> ChannelRx {
    Box::pin(futures_util::stream::iter(chunks))
}

/// Tunnel bytes (through the proxy's decoder) and the number of data frames (counted from the heads) of a framed
/// byte stream; panics on anything but data frames.
fn unframe(wire: &[u8]) -> (Vec<u8>, usize) {
    let mut dec = FrameDecoder::default();
    let (mut out, mut rest) = (Vec::new(), wire);
    while let Some(piece) = dec.next(&mut rest).expect("valid frames") {
        match piece {
            Piece::Data(d) => out.extend_from_slice(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    let (mut frames, mut at) = (0, 0);
    while at < wire.len() {
        assert_eq!(wire[at], crate::control::FRAME_DATA);
        let len = u32::from_be_bytes(wire[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
        assert!(len > 0, "empty data frame");
        at += 5 + len;
        frames += 1;
    }
    (out, frames)
}

#[tokio::test]
async fn queued_chunks_arrive_whole_and_in_order_framed() {
    let data = pattern(300 * 1024);
    // SSH-packet-sized chunks, an empty one among them, all already received.
    let mut chunks: Vec<Bytes> = data.chunks(32 * 1024 - 7).map(Bytes::copy_from_slice).collect();
    chunks.insert(3, Bytes::new());
    let n = chunks.len() - 1;
    let (a, mut b) = UnixStream::pair().expect("pair");
    let reader = tokio::spawn(async move {
        let mut wire = Vec::new();
        b.read_to_end(&mut wire).await.expect("read");
        wire
    });
    let sent = copy_down(&a, &mut delivering(chunks), true).await.map_err(|e| e.0).expect("written");
    drop(a);
    let (got, frames) = unframe(&reader.await.expect("reader"));
    assert_eq!(sent, data.len() as u64);
    assert!(got == data, "tunnel bytes differ");
    assert_eq!(frames, n, "one frame per non-empty chunk");
}

#[tokio::test]
async fn raw_download_is_the_bytes_themselves() {
    let data = pattern(1 << 20);
    let chunks = data.chunks(10_000).map(Bytes::copy_from_slice).collect();
    let (a, mut b) = UnixStream::pair().expect("pair");
    let reader = tokio::spawn(async move {
        let mut wire = Vec::new();
        b.read_to_end(&mut wire).await.expect("read");
        wire
    });
    copy_down(&a, &mut delivering(chunks), false).await.map_err(|e| e.0).expect("written");
    drop(a);
    assert!(reader.await.expect("reader") == data);
}

#[tokio::test]
async fn upload_sends_the_early_bytes_then_the_socket_until_eof() {
    let data = pattern(2 << 20);
    let (a, mut b) = UnixStream::pair().expect("pair");
    let crate::tunnel::Channel { mut rx, mut tx } = crate::tunnel::tests::echo_channel();
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            b.write_all(&data[5..]).await.expect("write");
            b.shutdown().await.expect("shutdown");
            b
        })
    };
    let echoed = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut rx).await {
            got.extend_from_slice(&chunk);
        }
        got
    });
    let early = Bytes::copy_from_slice(&data[..5]);
    let total = copy_up(&a, early, tx.as_mut()).await.expect("copied");
    tx.eof().await.expect("eof");
    let _b = writer.await.expect("writer");
    assert_eq!(total, data.len() as u64);
    assert!(echoed.await.expect("echo") == data, "bytes differ");
}
