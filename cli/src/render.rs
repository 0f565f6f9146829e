//! Human rendering of entries, changes and sizes, in upstream's words.

use mutagen_reconcile::{Change, Conflict, Entry, format_permissions};

/// Renders an optional entry: `<non-existent>`, `Directory`, `File (<digest>)`... In
/// permissions mode posix, files and directories show their bits too (`Directory (2775)`,
/// `File (<digest>, 0640)`).
pub fn entry(entry: Option<&Entry>) -> String {
    match entry {
        None => "<non-existent>".into(),
        Some(Entry::Directory(directory)) => match directory.permissions {
            Some(_) => format!("Directory ({})", format_permissions(directory.permissions)),
            None => "Directory".into(),
        },
        Some(Entry::File { digest, executable, permissions }) => {
            let kind = if *executable { "Executable File" } else { "File" };
            match permissions {
                Some(_) => format!(
                    "{kind} ({}, {})",
                    &digest.to_hex()[..16],
                    format_permissions(*permissions)
                ),
                None => format!("{kind} ({})", &digest.to_hex()[..16]),
            }
        }
        Some(Entry::SymbolicLink { target }) => format!("Symbolic Link ({target})"),
        Some(Entry::Untracked) => "Untracked content".into(),
        Some(Entry::Problematic { problem }) => format!("Problematic content ({problem})"),
    }
}

/// Renders a root-relative path, `<root>` for the root itself.
pub fn path(path: &str) -> &str {
    if path.is_empty() { "<root>" } else { path }
}

fn change(side: &str, change: &Change) -> String {
    format!(
        "({side}) {} ({} -> {})",
        path(&change.path),
        entry(change.old.as_ref()),
        entry(change.new.as_ref())
    )
}

/// Renders a conflict as indented lines, one per change on each side.
pub fn conflict(conflict: &Conflict) -> Vec<String> {
    let alpha = conflict.alpha_changes.iter().map(|c| change("alpha", c));
    let beta = conflict.beta_changes.iter().map(|c| change("beta", c).replacen(')', ") ", 1));
    alpha.chain(beta).collect()
}

/// Renders `count` with the noun in singular or plural (`1 file`, `2 files`).
pub fn count(count: impl Into<u64>, singular: &str, plural: &str) -> String {
    let count = count.into();
    format!("{count} {}", if count == 1 { singular } else { plural })
}

/// Renders a byte count with a binary unit (`1.5 MiB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mutagen_reconcile::Digest;

    #[test]
    fn renders_like_upstream() {
        let file = Entry::file(Digest([0xab; 32]), true);
        assert_eq!(entry(Some(&file)), "Executable File (abababababababab)");
        assert_eq!(entry(None), "<non-existent>");
        let posix =
            Entry::File { digest: Digest([0xab; 32]), executable: false, permissions: Some(0o640) };
        assert_eq!(entry(Some(&posix)), "File (abababababababab, 0640)");
        let directory =
            Entry::Directory(mutagen_reconcile::Directory::with_permissions(Some(0o2775)));
        assert_eq!(entry(Some(&directory)), "Directory (2775)");
        assert_eq!(entry(Some(&Entry::empty_directory())), "Directory");
        let c = Conflict {
            root: "a".into(),
            alpha_changes: vec![Change::new("a", None, Some(file))],
            beta_changes: vec![Change::new("a", None, Some(Entry::Untracked))],
        };
        assert_eq!(conflict(&c)[1], "(beta)  a (<non-existent> -> Untracked content)");
        assert_eq!(count(1u64, "file", "files"), "1 file");
        assert_eq!(count(0u64, "file", "files"), "0 files");
        assert_eq!(
            (size(10), size(1536), size(20 << 20)),
            ("10 B".into(), "1.5 KiB".into(), "20.0 MiB".into())
        );
    }
}
