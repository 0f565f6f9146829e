//! Property test: any tree of directories, files (with content and executability) and portable
//! symbolic links written to disk scans back to exactly the expected entries.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use mutagen_endpoint::scan::{Cache, ScanOptions, scan};
use mutagen_reconcile::{Digest, Entry};
use proptest::prelude::*;

/// A tree to write, with file contents.
#[derive(Clone, Debug)]
enum Model {
    Directory(BTreeMap<String, Model>),
    File(Vec<u8>, bool),
    Link(String),
}

fn model() -> impl Strategy<Value = Model> {
    let name = prop::sample::select(vec!["a", "b", "c", "é", "日本", "x y", ".hidden"]);
    let leaf = prop_oneof![
        (prop::collection::vec(any::<u8>(), 0..64), any::<bool>())
            .prop_map(|(c, x)| Model::File(c, x)),
        // Targets that stay inside the root from any depth.
        prop::sample::select(vec!["a", "b/c", "./a"]).prop_map(|t| Model::Link(t.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop::collection::btree_map(name.clone().prop_map(str::to_owned), inner, 0..4)
            .prop_map(Model::Directory)
    })
    .prop_map(|m| match m {
        Model::Directory(_) => m,
        other => Model::Directory(BTreeMap::from([("root-file".to_owned(), other)])),
    })
}

fn write(path: &Path, model: &Model) {
    match model {
        Model::Directory(children) => {
            fs::create_dir(path).expect("mkdir");
            for (name, child) in children {
                write(&path.join(name), child);
            }
        }
        Model::File(content, executable) => {
            fs::write(path, content).expect("write");
            let mode = if *executable { 0o755 } else { 0o644 };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        Model::Link(target) => std::os::unix::fs::symlink(target, path).expect("symlink"),
    }
}

fn expected(model: &Model) -> Entry {
    match model {
        Model::Directory(children) => {
            Entry::Directory(children.iter().map(|(n, c)| (n.clone(), expected(c))).collect())
        }
        Model::File(content, executable) => {
            Entry::file(Digest(*blake3::hash(content).as_bytes()), *executable)
        }
        Model::Link(target) => Entry::SymbolicLink { target: target.clone() },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn scan_matches_what_was_written(tree in model()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        write(&root, &tree);
        let cold = scan(&root, &ScanOptions::default(), &Cache::default()).expect("scan");
        prop_assert_eq!(cold.snapshot.content.as_ref(), Some(&expected(&tree)));
        let warm = scan(&root, &ScanOptions::default(), &cold.cache).expect("warm scan");
        prop_assert_eq!(warm.snapshot, cold.snapshot);
    }
}
