//! Ignore syntaxes through the binary, against real `git check-ignore` on a generated tree:
//! `--ignore-vcs-ignored` must synchronize exactly what git does not ignore, and
//! `--ignore-syntax docker` must agree with git on the patterns both read alike, and
//! re-include below an excluded directory where git cannot.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon_env::{DaemonEnv, write};

/// Writes a tree of directories and files with the names ignore rules care about.
fn generate(root: &Path) {
    let names = ["main.rs", "lib.rs", "x.log", "keep.log", "a.tmp", "b.o", "local", "top.only"];
    let directories =
        ["", "d0", "d0/sub", "d1", "d1/gen", "d2", "d2/sub", "d2/sub/gen", "d3", "build"];
    for (index, directory) in directories.iter().enumerate() {
        for (offset, name) in names.iter().enumerate() {
            // Not every name everywhere, so that directories differ.
            if (index + offset) % 3 == 2 {
                continue;
            }
            let path = if directory.is_empty() {
                (*name).to_owned()
            } else {
                format!("{directory}/{name}")
            };
            write(&root.join(path), format!("{directory}/{name}"));
        }
    }
    write(&root.join("d3/keep/inner.txt"), "kept");
    write(&root.join("d3/other.txt"), "other");
}

/// Every path below `root` (files and directories), `.git` left out.
fn walk(root: &Path) -> BTreeSet<String> {
    fn visit(root: &Path, relative: &str, out: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(root.join(relative)) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".git" {
                continue;
            }
            let path = if relative.is_empty() { name } else { format!("{relative}/{name}") };
            if entry.file_type().expect("type").is_dir() {
                visit(root, &path, out);
            }
            out.insert(path);
        }
    }
    let mut out = BTreeSet::new();
    visit(root, "", &mut out);
    out
}

fn git(env: &DaemonEnv, directory: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(directory)
        .env("HOME", env.path("home"))
        .env("XDG_CONFIG_HOME", env.path("home/.config"))
        .env_remove("GIT_CONFIG_GLOBAL")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    command
}

/// What git would leave: the paths neither ignored nor below an ignored directory.
fn git_keeps(env: &DaemonEnv, root: &Path) -> BTreeSet<String> {
    let paths = walk(root);
    let mut child = git(env, root)
        .args(["check-ignore", "--stdin", "--no-index"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git check-ignore");
    let input: String = paths.iter().map(|path| format!("{path}\n")).collect();
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let output = child.wait_with_output().expect("wait");
    let ignored: BTreeSet<String> =
        String::from_utf8(output.stdout).expect("utf-8").lines().map(str::to_owned).collect();
    assert!(!ignored.is_empty(), "git ignored nothing: the test would prove nothing");
    paths
        .into_iter()
        .filter(|path| {
            let mut prefix = String::new();
            path.split('/').all(|part| {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                !ignored.contains(&prefix)
            })
        })
        .collect()
}

fn init(env: &DaemonEnv, root: &Path) {
    let status = git(env, root).args(["init", "--quiet"]).status().expect("git init");
    assert!(status.success());
}

#[test]
fn vcs_ignored_synchronizes_exactly_what_git_keeps() {
    let mut env = DaemonEnv::new();
    env.env.push(("XDG_CONFIG_HOME".into(), env.path("home/.config").display().to_string()));
    let alpha = env.path("alpha");
    generate(&alpha);
    init(&env, &alpha);
    write(&alpha.join(".gitignore"), "*.log\n!keep.log\nbuild/\n/top.only\n**/gen/*.rs\n");
    write(&alpha.join("d1/.gitignore"), "*.rs\n!main.rs\n");
    write(&alpha.join("d2/sub/.gitignore"), "/local\n");
    write(&alpha.join(".git/info/exclude"), "*.o\n");
    write(&env.path("home/.config/git/ignore"), "*.tmp\n");
    let expected = git_keeps(&env, &alpha);

    env.ok(&[
        "sync",
        "create",
        "alpha",
        "beta",
        "--name",
        "git",
        "--ignore-vcs-ignored",
        "--ignore-vcs",
        "--mode",
        "one-way-replica",
    ]);
    env.ok(&["sync", "flush", "git"]);
    let synchronized = walk(&env.path("beta"));
    assert_eq!(synchronized, expected, "beta differs from what git keeps");
    for sample in ["d1/main.rs", "keep.log", ".gitignore"] {
        assert!(synchronized.contains(sample), "{sample} should be kept");
    }
    for sample in ["x.log", "d1/lib.rs", "build", "top.only", "d0/b.o", "d2/a.tmp"] {
        assert!(!synchronized.contains(sample), "{sample} should be ignored");
    }
    let listed = env.ok(&["sync", "list", "--long", "git"]);
    assert!(listed.contains("\tIgnore VCS-ignored files: Yes\n"), "{listed}");

    // A .gitignore edit applies below its directory at once, without a flush: d0/sub/x.log
    // (in a directory the edit does not touch) becomes synchronized.
    fs::create_dir_all(env.path("watched")).expect("mkdir");
    for path in ["d0/sub/x.log", "d0/sub/y.rs"] {
        write(&env.path(&format!("watched/{path}")), path);
    }
    write(&env.path("watched/.gitignore"), "*.log\n");
    env.ok(&["sync", "create", "watched", "watched-beta", "--name", "w", "--ignore-vcs-ignored"]);
    env.ok(&["sync", "flush", "w"]);
    assert!(!env.path("watched-beta/d0/sub/x.log").exists());
    write(&env.path("watched/.gitignore"), "# nothing ignored now\n");
    env.until("the un-ignored file crossing", Duration::from_secs(30), || {
        env.path("watched-beta/d0/sub/x.log").exists()
    });
}

#[test]
fn docker_syntax_agrees_with_git_and_re_includes_below_an_excluded_directory() {
    let env = DaemonEnv::new();
    let alpha = env.path("alpha");
    generate(&alpha);
    init(&env, &alpha);
    // The same rules in both languages: docker anchors every pattern at the root.
    let docker = ["*.log", "!keep.log", "build", "d2/**/*.rs", "!d2/sub/main.rs", "  d0/sub  "];
    let gitignore = "/*.log\n!/keep.log\n/build\n/d2/**/*.rs\n!/d2/sub/main.rs\n/d0/sub\n";
    write(&alpha.join(".git/info/exclude"), gitignore);
    let expected = git_keeps(&env, &alpha);
    let mut args =
        vec!["sync", "create", "alpha", "beta", "--name", "docker", "--ignore-syntax", "docker"];
    for pattern in &docker {
        args.extend(["--ignore", pattern]);
    }
    args.extend(["--ignore-vcs", "--mode", "one-way-replica"]);
    env.ok(&args);
    env.ok(&["sync", "flush", "docker"]);
    assert_eq!(walk(&env.path("beta")), expected, "beta differs from what git keeps");
    assert!(env.path("beta/d0/x.log").exists(), "`*.log` is anchored at the root in docker syntax");

    // Beyond git: a negation reaches inside an excluded directory.
    fs::create_dir(env.path("alpha2")).expect("mkdir");
    write(&env.path("alpha2/d3/keep/inner.txt"), "kept");
    write(&env.path("alpha2/d3/other.txt"), "other");
    write(&env.path("alpha2/d3/sub/deep.txt"), "deep");
    env.ok(&[
        "sync",
        "create",
        "alpha2",
        "beta2",
        "--name",
        "phantom",
        "--ignore-syntax",
        "docker",
        "--ignore",
        "d3",
        "--ignore",
        "!d3/keep",
    ]);
    env.ok(&["sync", "flush", "phantom"]);
    assert_eq!(fs::read_to_string(env.path("beta2/d3/keep/inner.txt")).expect("kept"), "kept");
    assert!(!env.path("beta2/d3/other.txt").exists() && !env.path("beta2/d3/sub").exists());
    let session = &env.sessions().into_iter().find(|s| s["name"] == "phantom").expect("phantom");
    assert_eq!(session["ignore"]["syntax"], "docker");

    env.fails(
        &["sync", "create", "alpha2", "b3", "--ignore-syntax", "docker", "--ignore", "a\\b"],
        "backslashes are not allowed",
    );
    env.fails(&["sync", "create", "alpha2", "b3", "--ignore-syntax", "dockerish"], "dockerish");
}
