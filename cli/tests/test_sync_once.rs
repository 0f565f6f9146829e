//! `mutagen sync once` on real temporary directories, with an isolated data directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env { dir: tempfile::tempdir().expect("tempdir") };
        fs::create_dir(env.path("alpha")).expect("alpha");
        env
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn mutagen(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mutagen"))
            .args(args)
            .current_dir(self.dir.path())
            .env("MUTAGEN_DATA_DIRECTORY", self.path("data"))
            .env("HOME", self.path("home"))
            .output()
            .expect("run mutagen")
    }

    fn once(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["sync", "once", "alpha", "beta"];
        args.extend_from_slice(extra);
        let output = self.mutagen(&args);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
    }
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

#[test]
fn syncs_then_propagates_deletions_on_later_runs() {
    let env = Env::new();
    write(&env.path("alpha/src/main.rs"), "fn main() {}\n");
    write(&env.path("alpha/README"), "hello\n");
    let (code, out, err) = env.once(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Synchronized "), "{out}");
    assert_eq!(fs::read_to_string(env.path("beta/src/main.rs")).expect("synced"), "fn main() {}\n");

    // A deletion on beta propagates to alpha because the ancestor was remembered.
    fs::remove_file(env.path("beta/README")).expect("delete");
    write(&env.path("beta/new.txt"), "from beta\n");
    let (code, out, err) = env.once(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!env.path("alpha/README").exists(), "deletion did not propagate: {out}");
    assert_eq!(fs::read_to_string(env.path("alpha/new.txt")).expect("synced"), "from beta\n");
}

#[test]
fn conflicts_are_listed_with_exit_code_2_and_both_versions_kept() {
    let env = Env::new();
    write(&env.path("alpha/f.txt"), "base\n");
    assert_eq!(env.once(&[]).0, 0);
    write(&env.path("alpha/f.txt"), "alpha edit\n");
    write(&env.path("beta/f.txt"), "beta edit, longer\n");
    let (code, out, _) = env.once(&[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Conflicts: 1"), "{out}");
    assert!(out.contains("(alpha) f.txt (File ("), "{out}");
    assert!(out.contains("(beta)  f.txt (File ("), "{out}");
    assert_eq!(fs::read_to_string(env.path("alpha/f.txt")).expect("kept"), "alpha edit\n");
    assert_eq!(fs::read_to_string(env.path("beta/f.txt")).expect("kept"), "beta edit, longer\n");

    // two-way-resolved settles it for alpha.
    let (code, out, _) = env.once(&["--mode", "two-way-resolved"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fs::read_to_string(env.path("beta/f.txt")).expect("resolved"), "alpha edit\n");
}

#[test]
fn halts_instead_of_propagating_a_root_deletion() {
    let env = Env::new();
    write(&env.path("alpha/a"), "a\n");
    write(&env.path("alpha/b"), "b\n");
    assert_eq!(env.once(&[]).0, 0);
    fs::remove_dir_all(env.path("alpha")).expect("delete alpha");
    let (code, _, err) = env.once(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("halted due to root deletion"), "{err}");
    assert!(err.contains("--reset"), "{err}");
    assert!(env.path("beta/a").exists() && env.path("beta/b").exists(), "beta lost files");
    // With --reset, the surviving content flows back.
    let (code, out, err) = env.once(&["--reset"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(fs::read_to_string(env.path("alpha/b")).expect("restored"), "b\n");
}

#[test]
fn bad_input_gets_clear_errors_and_touches_nothing() {
    let env = Env::new();
    write(&env.path("alpha/keep"), "keep\n");
    std::os::unix::fs::symlink(env.path("alpha"), env.path("link-to-alpha")).expect("symlink");
    let cases: &[(&[&str], &str)] = &[
        (
            &["sync", "once", "alpha", "host:/srv"],
            "invalid endpoint url \"host:/srv\": ssh endpoints are not supported",
        ),
        (&["sync", "once", "docker://box/app", "beta"], "docker endpoints"),
        (&["sync", "once", "alpha", "alpha/inner"], "overlap"),
        (&["sync", "once", "alpha", "link-to-alpha/inner"], "overlap"),
        (&["sync", "once", "alpha", "beta", "--ignore", "!"], "invalid ignore pattern \"!\""),
        (
            &["sync", "once", "alpha", "beta", "--mode", "sideways"],
            "unknown synchronization mode \"sideways\"",
        ),
        (
            &["sync", "once", "alpha", "beta", "--symlink-mode", "raw"],
            "unknown symbolic link mode \"raw\"",
        ),
    ];
    for (args, message) in cases {
        let output = env.mutagen(args);
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert!(!env.path("beta").exists(), "a failed command created beta");
    assert_eq!(fs::read_to_string(env.path("alpha/keep")).expect("intact"), "keep\n");
}

#[test]
fn problems_are_reported_per_path_and_other_files_still_sync() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    write(&env.path("alpha/good.txt"), "good\n");
    let bad = env.path("alpha").join(std::ffi::OsStr::from_bytes(b"bad-\xff-name"));
    fs::write(&bad, "x").expect("non-utf-8 name");
    std::os::unix::fs::symlink("/etc/passwd", env.path("alpha/escape")).expect("symlink");
    let (code, out, _) = env.once(&[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Problems: 2"), "{out}");
    assert!(out.contains("name is not valid utf-8"), "{out}");
    assert!(out.contains("(alpha) escape: invalid symbolic link: target is absolute"), "{out}");
    assert_eq!(fs::read_to_string(env.path("beta/good.txt")).expect("synced"), "good\n");
    assert!(!env.path("beta/escape").exists());
}

#[test]
fn a_beta_whose_parent_is_missing_is_a_problem_at_the_root() {
    let env = Env::new();
    write(&env.path("alpha/f"), "f");
    let output = env.mutagen(&["sync", "once", "alpha", "missing/parent/beta"]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(
        out.contains("(beta) <root>: unable to locate parent: no such file or directory"),
        "{out}"
    );
    assert!(!env.path("missing").exists());
}

#[test]
fn a_failed_placement_is_not_counted_as_applied() {
    let env = Env::new();
    write(&env.path("alpha/ok.txt"), "fine\n");
    write(&env.path("alpha/ro/blocked.txt"), "blocked\n");
    fs::create_dir_all(env.path("beta/ro")).expect("beta/ro");
    // Immutable: even root cannot create a file in it (the suite runs as root).
    let immutable = |flag: &str| {
        let status = Command::new("chattr").arg(flag).arg(env.path("beta/ro")).status();
        assert!(status.expect("chattr").success(), "chattr {flag} (needs root)");
    };
    immutable("+i");
    let (code, out, _) = env.once(&[]);
    immutable("-i");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Beta:") && out.contains("1 change applied, 1 failed"), "{out}");
    assert!(out.contains("ro/blocked.txt: unable to place file"), "{out}");
}
