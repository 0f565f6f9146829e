//! Cold and warm scans of a generated 100,000-file tree (on /dev/shm when available, so the
//! figures measure the engine rather than the disk).

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use mutagen_endpoint::scan::{Cache, ScanOptions, scan, scan_into};

/// 100 × 25 directories of 40 small files = 100,000 files.
fn generate(root: &Path) {
    for top in 0..100 {
        for sub in 0..25 {
            let dir = root.join(format!("top{top:03}/sub{sub:02}"));
            std::fs::create_dir_all(&dir).expect("create directory");
            for i in 0..40 {
                let content = format!("file {top} {sub} {i}\n").repeat(1 + i % 8);
                std::fs::write(dir.join(format!("file{i:02}.txt")), content).expect("write");
            }
        }
    }
}

fn bench_root() -> (tempfile::TempDir, PathBuf) {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir =
        tempfile::Builder::new().prefix("mutagen-scan-bench").tempdir_in(parent).expect("temp");
    let root = dir.path().join("tree");
    generate(&root);
    (dir, root)
}

fn bench(c: &mut Criterion) {
    let (_dir, root) = bench_root();
    let options = ScanOptions::default();
    let warm = scan(&root, &options, &Cache::default()).expect("scan");
    assert_eq!(warm.snapshot.files, 100_000);
    let mut group = c.benchmark_group("scan_100k");
    group.sample_size(10);
    group.bench_function("cold", |b| {
        b.iter(|| scan(&root, &options, &Cache::default()).expect("scan"));
    });
    // What a no-watch session does each cycle: the cache is updated in place.
    let mut cache = warm.cache;
    group.bench_function("warm", |b| {
        b.iter(|| scan_into(&root, &options, &mut cache).expect("scan"));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
