//! loadgen's per-message work: generating a payload, verifying an echo against it, and recording
//! a latency in the histogram. If these were slow, loadgen would be the bottleneck.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ricochet_loadgen::payload;
use ricochet_loadgen::tally::new_histogram;

fn payload_and_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload");
    for size in [64usize, 4096, 65536] {
        let mut sent = vec![0u8; size];
        let mut echo = vec![0u8; size];
        payload::fill(&mut echo, 7, 11);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("fill + verify", size), &size, |b, _| {
            b.iter(|| {
                payload::fill(black_box(&mut sent), 7, 11);
                assert!(black_box(&sent) == black_box(&echo));
            })
        });
        // What a connection does per message sent: append it to its send/reference ring.
        let mut ring = Vec::with_capacity(size);
        group.bench_with_input(BenchmarkId::new("append to ring", size), &size, |b, &size| {
            b.iter(|| {
                ring.clear();
                payload::append(black_box(&mut ring), 1, size, 7, 11);
                black_box(&ring);
            })
        });
    }
    // A pipelined refill: 16 messages of 64 B in one append.
    let mut ring = Vec::with_capacity(16 * 64);
    group.throughput(Throughput::Bytes(16 * 64));
    group.bench_function("append 16 x 64 to ring", |b| {
        b.iter(|| {
            ring.clear();
            payload::append(black_box(&mut ring), 16, 64, 7, 11);
            black_box(&ring);
        })
    });
    group.finish();
}

fn record_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("histogram");
    group.throughput(Throughput::Elements(1));
    let mut hist = new_histogram();
    let mut ns = 12_345u64;
    group.bench_function("record one latency", |b| {
        b.iter(|| {
            ns = ns.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)
                % 10_000_000
                + 1;
            hist.saturating_record(black_box(ns));
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! { name = benches; config = config(); targets = payload_and_verify, record_latency }
criterion_main!(benches);
