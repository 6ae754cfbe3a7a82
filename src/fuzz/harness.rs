//! The fuzz harness, shared by the targets of both crates (`src/fuzz/mod.rs`, and loadgen's
//! `src/fuzz.rs`, which includes this file): a target replays its corpus, then runs generated
//! inputs for its budget, and panics with the shrunk input on a failure. The including module
//! defines `CORPUS`, the directory that holds `TARGET/` corpora.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseResult, TestRunner};

/// Inputs per target in a plain test run.
pub(crate) const MIN_CASES: u64 = 500;

/// Runs `test` on the target's corpus, then on inputs from `strategy` for the budget; prints
/// `fuzz TARGET: N inputs in S s` (seen with `--nocapture`).
pub(crate) fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S::Value: FromCorpus,
{
    fuzz_cases(target, MIN_CASES, strategy, test);
}

/// As [`fuzz`], with `min_cases` inputs in a plain test run instead of [`MIN_CASES`] (for a
/// target whose every input is slow, so that `cargo test` stays quick).
pub(crate) fn fuzz_cases<S: Strategy>(
    target: &str,
    min_cases: u64,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S::Value: FromCorpus,
{
    for (path, bytes) in corpus(target) {
        if let Err(e) = test(S::Value::from_corpus(bytes)) {
            panic!("fuzz {target}: corpus input {} fails: {e}", path.display());
        }
    }
    run_cases(target, min_cases, strategy, test);
}

/// An input as a corpus file holds it.
pub(crate) trait FromCorpus {
    fn from_corpus(bytes: Vec<u8>) -> Self;
}

impl FromCorpus for Vec<u8> {
    fn from_corpus(bytes: Vec<u8>) -> Self {
        bytes
    }
}

impl FromCorpus for String {
    fn from_corpus(bytes: Vec<u8>) -> Self {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// As [`fuzz`], for targets whose inputs are not kept as files (no corpus).
pub(crate) fn run<S: Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) {
    run_cases(target, MIN_CASES, strategy, test);
}

fn run_cases<S: Strategy>(
    target: &str,
    min_cases: u64,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) {
    let budget = std::env::var("RICOCHET_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    let mut runner = TestRunner::new(Config { failure_persistence: None, ..Config::default() });
    let start = Instant::now();
    let mut tried = 0u64;
    while tried < min_cases || start.elapsed() < budget {
        let tree = strategy.new_tree(&mut runner).expect("the strategies never reject");
        if let Err(e) = runner.run_one(tree, &test) {
            panic!("fuzz {target}: {e}");
        }
        tried += 1;
    }
    println!("fuzz {target}: {tried} inputs in {:.1} s", start.elapsed().as_secs_f64());
}

/// The files of `fuzz/corpus/TARGET/`, sorted.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(super::CORPUS).join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("a corpus file"))).collect()
}

/// Any bytes, short ones more often than long.
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..32),
        proptest::collection::vec(any::<u8>(), 0..max),
    ]
}

/// Cut points for splitting an input into reads.
pub(crate) fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..64, 0..16)
}

/// `data` split at `cuts` (each a length, cycled), as reads would deliver it.
pub(crate) fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let len = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(data.len()).max(1);
        let end = (at + len).min(data.len());
        pieces.push(&data[at..end]);
        at = end;
        i += 1;
    }
    pieces
}
