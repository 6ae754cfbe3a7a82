//! Benchmarks of the core I/O path: an in-process ricochet (`spawn`) and loopback clients.
//!
//! - `round_trip/{64 B, 4 KiB, 64 KiB}`: one connection, write a message, read its echo.
//! - `pipelined/64 MiB over 16 connections`: each connection streams 4 MiB while reading its
//!   echo concurrently.
//! - `outbuf/*`: the output buffer's push/consume, the server's hot pure piece.
//!
//! End-to-end comparisons with other servers come from `scripts/compare.sh`, not from here.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ricochet::buffer::{BufferPool, OutBuf};

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn round_trip(c: &mut Criterion) {
    let server = ricochet::spawn(ricochet::Config::ephemeral()).unwrap();
    let mut group = c.benchmark_group("round_trip");
    for (label, size) in [("64 B", 64usize), ("4 KiB", 4096), ("64 KiB", 65536)] {
        let mut conn = connect(server.tcp_addr().unwrap());
        let msg = vec![0x5Au8; size];
        let mut back = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                conn.write_all(&msg).unwrap();
                conn.read_exact(&mut back).unwrap();
            })
        });
    }
    group.finish();
}

fn pipelined(c: &mut Criterion) {
    const CONNS: usize = 16;
    const PER_CONN: usize = 4 << 20;
    let server = ricochet::spawn(ricochet::Config::ephemeral()).unwrap();
    let addr = server.tcp_addr().unwrap();
    let mut conns: Vec<TcpStream> = (0..CONNS).map(|_| connect(addr)).collect();
    let chunk = vec![0xA5u8; 64 * 1024];
    let mut group = c.benchmark_group("pipelined");
    group.sample_size(10);
    group.throughput(Throughput::Bytes((CONNS * PER_CONN) as u64));
    group.bench_function("64 MiB over 16 connections", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for conn in conns.iter_mut() {
                    let mut writer = conn.try_clone().unwrap();
                    let chunk = &chunk;
                    s.spawn(move || {
                        for _ in 0..PER_CONN / chunk.len() {
                            writer.write_all(chunk).unwrap();
                        }
                    });
                    s.spawn(move || {
                        let mut buf = vec![0u8; 256 * 1024];
                        let mut got = 0;
                        while got < PER_CONN {
                            got += conn.read(&mut buf).unwrap();
                        }
                    });
                }
            });
        })
    });
    group.finish();
}

fn outbuf(c: &mut Criterion) {
    let mut group = c.benchmark_group("outbuf");
    let chunk = [7u8; 4096];
    group.throughput(Throughput::Bytes(64 * 1024));
    group.bench_function("push 16 x 4 KiB then drain in 1 KiB sends", |b| {
        let mut pool = BufferPool::new(4);
        let mut out = OutBuf::new();
        b.iter(|| {
            for _ in 0..16 {
                out.push(black_box(&chunk), 256 * 1024, &mut pool);
            }
            while !out.is_empty() {
                let n = out.len().min(1024);
                black_box(&out.pending()[..n]);
                out.consume(n, &mut pool);
            }
        })
    });
    group.bench_function("interleaved push 4 KiB / consume 3 KiB", |b| {
        let mut pool = BufferPool::new(4);
        let mut out = OutBuf::new();
        b.iter(|| {
            for _ in 0..16 {
                out.push(black_box(&chunk), 256 * 1024, &mut pool);
                out.consume(3072, &mut pool);
            }
            let rest = out.len();
            out.consume(rest, &mut pool);
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

criterion_group! { name = benches; config = config(); targets = round_trip, pipelined, outbuf }
criterion_main!(benches);
