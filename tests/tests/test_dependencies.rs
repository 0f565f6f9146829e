//! The crate dependency rules of the architecture, checked over `cargo metadata`: the agent
//! (shipped to remote hosts) links no journal, daemon, transport or CLI code (forwarding
//! included: it is blocking, thread-based code the agent shares with the daemon); the session model
//! and the journal depend on pure crates only, never on the file-system endpoint.

use std::collections::BTreeMap;
use std::process::Command;

fn internal_dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let mut graph = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let dependencies = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("mutagen-"))
            .map(str::to_owned)
            .collect();
        graph.insert(name, dependencies);
    }
    graph
}

#[test]
fn crates_depend_only_downwards() {
    let graph = internal_dependencies();
    let allowed: &[(&str, &[&str])] = &[
        ("mutagen-core", &[]),
        ("mutagen-reconcile", &[]),
        ("mutagen-endpoint", &["mutagen-core", "mutagen-reconcile"]),
        ("mutagen-session", &["mutagen-core", "mutagen-reconcile"]),
        ("mutagen-journal", &["mutagen-core", "mutagen-reconcile", "mutagen-session"]),
        ("mutagen-protocol", &["mutagen-core", "mutagen-endpoint", "mutagen-reconcile"]),
        ("mutagen-forward", &["mutagen-core", "mutagen-protocol", "mutagen-session"]),
        ("mutagen-agent", &["mutagen-forward", "mutagen-protocol"]),
        ("mutagen-transports", &["mutagen-protocol", "mutagen-session"]),
    ];
    for (name, permitted) in allowed {
        let actual = graph.get(*name).unwrap_or_else(|| panic!("{name} is not in the workspace"));
        for dependency in actual {
            assert!(
                permitted.contains(&dependency.as_str()),
                "{name} must not depend on {dependency} (allowed: {permitted:?})"
            );
        }
    }
}
