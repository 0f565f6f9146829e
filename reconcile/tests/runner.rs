//! The crate's integration tests, in one binary.

mod test_fuzz_corpus;
mod test_properties;
mod test_table;

/// Every `test_*.rs` file in this folder is listed above.
#[test]
fn no_forgotten_test_files() {
    let listed = include_str!("runner.rs");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    for entry in std::fs::read_dir(dir).expect("tests folder is readable") {
        let name = entry.expect("tests folder entry").file_name().into_string().expect("utf-8");
        if let Some(module) = name.strip_prefix("test_").and_then(|n| n.strip_suffix(".rs")) {
            assert!(listed.contains(&format!("mod test_{module};")), "{name} is not listed");
        }
    }
}
