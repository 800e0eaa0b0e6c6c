//! Decoding a recorded 1,000-chunk llama.cpp stream: raw SSE events, and full
//! `ChatChunk`s through `ChatStream` (JSON parsing included).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use evolution_langchain::chat::sse::SseDecoder;
use evolution_langchain::ChatStream;
use futures::StreamExt;

const STREAM: &[u8] = include_bytes!("../tests/fixtures/llama-server.stream-long.sse");

/// Reads as a network would deliver them: a few KiB at a time.
fn reads() -> Vec<&'static [u8]> {
    STREAM.chunks(4096).collect()
}

fn bench(c: &mut Criterion) {
    let events = {
        let mut decoder = SseDecoder::new();
        decoder.push(STREAM);
        std::iter::from_fn(|| decoder.next_event()).count()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(STREAM.len() as u64));
    group.bench_function("decode events (bytes)", |b| {
        b.iter(|| {
            let mut decoder = SseDecoder::new();
            let mut n = 0;
            for read in reads() {
                decoder.push(read);
                while decoder.next_event().is_some() {
                    n += 1;
                }
            }
            assert_eq!(n, events);
        })
    });
    group.throughput(Throughput::Elements(events as u64));
    group.bench_function("decode events (chunks)", |b| {
        b.iter(|| {
            let mut decoder = SseDecoder::new();
            for read in reads() {
                decoder.push(read);
                while decoder.next_event().is_some() {}
            }
        })
    });
    group.bench_function("parse ChatChunks (chunks)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let body = futures::stream::iter(
                    reads().into_iter().map(Ok::<_, std::convert::Infallible>),
                );
                let mut stream = ChatStream::from_byte_stream(body, Duration::from_secs(5));
                let mut n = 0;
                while let Some(chunk) = stream.next().await {
                    chunk.unwrap();
                    n += 1;
                }
                assert_eq!(n, events - 1); // [DONE] is not a chunk
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
