//! Scanning real directories: kinds, names, symbolic link modes, ignores, the digest cache and
//! file-system boundaries.

use std::fs::{self, File, FileTimes};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mutagen_endpoint::scan::{Cache, ScanOptions, ScanOutput, scan};
use mutagen_endpoint::{Ignorer, SymlinkMode};
use mutagen_reconcile::{Digest, Entry};

fn scan_with(root: &Path, options: &ScanOptions) -> ScanOutput {
    scan(root, options, &Cache::default()).expect("scan")
}

fn content(output: &ScanOutput) -> &Entry {
    output.snapshot.content.as_ref().expect("root exists")
}

fn digest(data: &[u8]) -> Digest {
    Digest(*blake3::hash(data).as_bytes())
}

#[test]
fn roots_absent_file_and_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = scan_with(&dir.path().join("absent"), &ScanOptions::default());
    assert_eq!(absent.snapshot.content, None);

    let file = dir.path().join("single");
    fs::write(&file, "one file").expect("write");
    let output = scan_with(&file, &ScanOptions::default());
    assert_eq!(content(&output), &Entry::file(digest(b"one file"), false));
    assert_eq!((output.snapshot.files, output.snapshot.total_file_size), (1, 8));

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).expect("symlink");
    let error = scan(&link, &ScanOptions::default(), &Cache::default()).expect_err("link root");
    let message = error.to_string();
    assert!(message.contains("root is a symbolic link") && message.contains("link"), "{message}");
}

#[test]
fn kinds_names_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("d/e")).expect("mkdir");
    fs::write(root.join("d/e/f"), "12345").expect("write");
    fs::write(root.join("run"), "#!").expect("write");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("run"), fs::Permissions::from_mode(0o700)).expect("chmod");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        0o600.into(),
        0,
    )
    .expect("fifo");
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).expect("socket");
    fs::write(root.join(".mutagen-temporary-staging-x"), "ours").expect("write");
    fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), "x").expect("write");

    let output = scan_with(root, &ScanOptions::default());
    let Entry::Directory(children) = content(&output) else { panic!("directory root") };
    let names: Vec<&str> = children.keys().map(String::as_str).collect();
    assert_eq!(names, ["bad\u{fffd}name (non-UTF-8)", "d", "fifo", "run", "sock"]);
    assert_eq!(children["fifo"], Entry::Untracked);
    assert_eq!(children["sock"], Entry::Untracked);
    assert_eq!(children["run"], Entry::file(digest(b"#!"), true));
    assert!(
        matches!(&children["bad\u{fffd}name (non-UTF-8)"], Entry::Problematic { problem } if problem.contains("utf-8"))
    );
    let s = &output.snapshot;
    assert_eq!((s.directories, s.files, s.symbolic_links, s.total_file_size), (3, 2, 0, 7));
    assert_eq!(output.cache.records.len(), 2);
    assert_eq!(s.problems().len(), 1);
}

#[test]
fn symbolic_link_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir(root.join("d")).expect("mkdir");
    for (name, target) in
        [("inside", "d"), ("d/up", "../inside"), ("escape", "../x"), ("absolute", "/etc")]
    {
        std::os::unix::fs::symlink(target, root.join(name)).expect("symlink");
    }
    let get = |mode: SymlinkMode, path: &str| {
        let options = ScanOptions { symlink_mode: mode, ..ScanOptions::default() };
        content(&scan_with(root, &options)).get(path).cloned().expect("entry")
    };
    let link = |target: &str| Entry::SymbolicLink { target: target.into() };
    assert_eq!(get(SymlinkMode::Portable, "inside"), link("d"));
    assert_eq!(get(SymlinkMode::Portable, "d/up"), link("../inside"));
    assert!(
        matches!(get(SymlinkMode::Portable, "escape"), Entry::Problematic { problem } if problem.contains("escapes"))
    );
    assert!(
        matches!(get(SymlinkMode::Portable, "absolute"), Entry::Problematic { problem } if problem.contains("absolute"))
    );
    assert_eq!(get(SymlinkMode::PosixRaw, "absolute"), link("/etc"));
    assert_eq!(get(SymlinkMode::PosixRaw, "escape"), link("../x"));
    assert_eq!(get(SymlinkMode::Ignore, "inside"), Entry::Untracked);
}

#[test]
fn ignored_directories_are_untracked_and_not_traversed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("node_modules/pkg")).expect("mkdir");
    fs::write(root.join("node_modules/pkg/index.js"), "x").expect("write");
    fs::write(root.join("keep.js"), "y").expect("write");
    let ignorer = Ignorer::new(&["node_modules/".to_owned(), "!index.js".to_owned()], false)
        .expect("ignores");
    let options = ScanOptions { ignorer: Arc::new(ignorer), ..ScanOptions::default() };
    let output = scan_with(root, &options);
    assert_eq!(content(&output).get("node_modules"), Some(&Entry::Untracked));
    assert_eq!(output.cache.records.len(), 1, "nothing inside the ignored directory was hashed");
}

#[test]
fn unchanged_metadata_means_no_rehash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    fs::write(&path, "aaaa").expect("write");
    // Older than the racy window: its metadata can be trusted.
    let modified = SystemTime::now() - Duration::from_secs(3600);
    set_modified(&path, modified);
    let options = ScanOptions::default();
    let first = scan_with(dir.path(), &options);
    assert!(!first.cache.records["f"].is_racy());

    // Same size, same inode, mtime put back: the cache vouches for the old digest, proving the
    // file was not read. A cold scan reads it.
    fs::write(&path, "bbbb").expect("rewrite in place");
    set_modified(&path, modified);
    let warm = scan(dir.path(), &options, &first.cache).expect("warm scan");
    assert_eq!(content(&warm).get("f"), content(&first).get("f"));
    let cold = scan_with(dir.path(), &options);
    assert_eq!(content(&cold).get("f"), Some(&Entry::file(digest(b"bbbb"), false)));

    // Any metadata change is noticed.
    fs::write(&path, "ccccc").expect("rewrite");
    let warm = scan(dir.path(), &options, &first.cache).expect("warm scan");
    assert_eq!(content(&warm).get("f"), Some(&Entry::file(digest(b"ccccc"), false)));
}

/// A write in the same clock tick as the one the scan saw can leave size and mtime as they
/// were (the kernel's timestamps advance in ticks): a record of a file modified within the
/// racy window of its scan is not trusted, and the next scan reads the file again.
#[test]
fn a_file_rewritten_in_the_tick_of_its_scan_is_hashed_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    fs::write(&path, "aaaa").expect("write");
    // Stamped ahead of the scan, so racy however long the scan takes to start (a file written
    // in the scan's tick is racy for the window only; a loaded machine may be slower).
    let modified = SystemTime::now() + Duration::from_secs(60);
    set_modified(&path, modified);
    let options = ScanOptions::default();
    let first = scan_with(dir.path(), &options);
    assert!(first.cache.records["f"].is_racy(), "stamped ahead of the scan, so racy");

    // What a same-tick rewrite leaves: same size, inode and mtime.
    fs::write(&path, "bbbb").expect("rewrite in place");
    set_modified(&path, modified);
    let warm = scan(dir.path(), &options, &first.cache).expect("warm scan");
    assert_eq!(content(&warm).get("f"), Some(&Entry::file(digest(b"bbbb"), false)));

    // Whole-second timestamps (FAT, some network file systems) have a window of seconds.
    // Whole-second timestamps (FAT, some network file systems) have a window of seconds: a
    // whole second 1.5 s before the scan is racy there, where 1.5 s would not be otherwise.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after the epoch");
    let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() - 1);
    set_modified(&path, whole);
    let coarse = scan_with(dir.path(), &options);
    assert!(coarse.cache.records["f"].is_racy(), "a whole second, within 2 s, so racy");
}

fn set_modified(path: &Path, modified: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_times(FileTimes::new().set_modified(modified))
        .expect("utimes");
}

/// Needs root and a working `mount`; says so and passes without checking otherwise, because
/// the boundary cannot be created without them.
#[test]
fn never_crosses_a_file_system_boundary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mount_point = dir.path().join("mnt");
    fs::create_dir(&mount_point).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount_point)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    fs::write(mount_point.join("other-fs"), "x").expect("write");
    let output = scan_with(dir.path(), &ScanOptions::default());
    let _ = std::process::Command::new("umount").arg(&mount_point).status();
    assert!(
        matches!(content(&output).get("mnt"), Some(Entry::Problematic { problem }) if problem == "scan crossed filesystem boundary"),
        "{:?}",
        content(&output)
    );
    assert!(output.cache.records.is_empty());
}
