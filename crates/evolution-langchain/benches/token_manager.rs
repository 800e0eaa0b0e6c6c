//! `get_token()` on a fresh token: the path every model request takes.
//! Target: well under 50 ns per call, and near-linear scaling across threads
//! (no shared lock on the hot path).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use evolution_emulator::Emulator;
use evolution_langchain::TokenManager;
use futures::FutureExt;

fn fresh_manager(runtime: &tokio::runtime::Runtime) -> TokenManager {
    runtime.block_on(async {
        let emu = Emulator::start().await.expect("emulator starts");
        let manager = TokenManager::builder()
            .key_id(emu.key_id())
            .secret(emu.secret())
            .auth_url(emu.auth_url())
            .build()
            .unwrap();
        manager.get_token().await.unwrap();
        // The emulator keeps running on the runtime; the token stays fresh for an hour.
        std::mem::forget(emu);
        manager
    })
}

/// A fresh token is served without awaiting anything, so one poll completes it.
fn get_fresh(manager: &TokenManager) {
    let token = manager
        .get_token()
        .now_or_never()
        .expect("a fresh token is served without waiting")
        .unwrap();
    std::hint::black_box(token);
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let manager = fresh_manager(&runtime);
    let _context = runtime.enter();

    let mut group = c.benchmark_group("get_token_fresh");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1 thread", |b| b.iter(|| get_fresh(&manager)));

    group.throughput(Throughput::Elements(2));
    group.bench_function("2 threads", |b| {
        b.iter_custom(|iters| {
            let barrier = Barrier::new(2);
            let handle = runtime.handle();
            let elapsed: Vec<Duration> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            let _context = handle.enter();
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..iters {
                                get_fresh(&manager);
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            elapsed.into_iter().max().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
