//! Reconcile on a generated 100,000-entry tree: the steady state (nothing changed) and a cycle
//! with 1,000 scattered edits on each side.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mutagen_reconcile::{Digest, Entry, Mode, reconcile};

/// 100 top-level directories × 25 subdirectories × 39 files ≈ 100,000 entries; every
/// `100_000 / edits`-th file gets a digest derived from `seed`.
fn tree(seed: u8, edits: usize) -> Entry {
    let mut n = 0u32;
    let mut file = |i: usize| {
        n += 1;
        let edited = edits > 0 && (n as usize).is_multiple_of(100_000 / edits);
        let mut digest = [0u8; 32];
        digest[..4].copy_from_slice(&n.to_le_bytes());
        digest[4] = if edited { seed } else { 0 };
        (format!("file{i:03}.rs"), Entry::file(Digest(digest), false))
    };
    let mut root = BTreeMap::new();
    for top in 0..100 {
        let mut top_dir = BTreeMap::new();
        for sub in 0..25 {
            let files = (0..39).map(&mut file).collect();
            top_dir.insert(format!("sub{sub:02}"), Entry::Directory(files));
        }
        root.insert(format!("top{top:03}"), Entry::Directory(top_dir.into()));
    }
    Entry::Directory(root.into())
}

fn bench(c: &mut Criterion) {
    let ancestor = tree(0, 0);
    assert!(ancestor.count() > 100_000);
    let alpha = tree(1, 1000);
    let beta = tree(2, 1000);
    let mut group = c.benchmark_group("reconcile_100k");
    group.sample_size(20);
    group.bench_function("no_changes", |b| {
        b.iter(|| {
            black_box(reconcile(
                Some(&ancestor),
                Some(&ancestor),
                Some(&ancestor),
                Mode::TwoWaySafe,
            ));
        });
    });
    group.bench_function("1000_edits_each_side", |b| {
        b.iter(|| {
            black_box(reconcile(Some(&ancestor), Some(&alpha), Some(&beta), Mode::TwoWaySafe));
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
