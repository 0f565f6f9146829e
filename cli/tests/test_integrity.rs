//! A damaged journal (issue 12, part 1): the daemon refuses to start, names the journal and
//! the sessions, and changes nothing, neither the journal nor the roots; `daemon verify`
//! reports, and `daemon recover` keeps the sessions (damaged ones reset and paused) and the
//! damaged journal.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::daemon_env::{DaemonEnv, write};

fn files(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(path).expect("list").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.insert(path.clone(), fs::read(&path).expect("read"));
        }
    }
    found
}

/// Three sessions, the second paused; a file deleted on the paused session's beta.
fn sessions(env: &DaemonEnv) {
    for (name, alpha, beta) in [("one", "a1", "b1"), ("two", "a2", "b2"), ("three", "a3", "b3")] {
        write(&env.path(alpha).join("kept.txt"), name);
        env.ok(&["sync", "create", "-n", name, alpha, beta]);
        env.ok(&["sync", "flush", name]);
    }
    env.ok(&["sync", "pause", "two"]);
    fs::remove_file(env.path("b2/kept.txt")).expect("delete on beta while paused");
    env.ok(&["daemon", "stop"]);
}

#[test]
fn a_damaged_journal_is_refused_untouched_then_verified_and_recovered() {
    let env = DaemonEnv::new();
    sessions(&env);
    let db = env.data().join("journal/db");
    let length = fs::metadata(&db).expect("db").len();
    fs::OpenOptions::new().write(true).open(&db).expect("db").set_len(length / 2).expect("cut");
    let mut journal = files(&env.data().join("journal"));
    let head = env.data().join("journal.head");
    journal.insert(head.clone(), fs::read(&head).expect("head"));
    let roots = files(env.dir.path());

    for command in [&["sync", "list"][..], &["sync", "flush", "--all"], &["daemon", "start"]] {
        let run = env.run(command);
        assert_eq!(run.code, 1, "{command:?}: {}{}", run.stdout, run.stderr);
        for expected in ["does not hold everything it acknowledged", "mutagen daemon recover"] {
            assert!(run.stderr.contains(expected), "{command:?}: {}", run.stderr);
        }
        assert!(run.stderr.contains(&env.data().join("journal").display().to_string()));
        assert!(run.stderr.contains("session sync_"), "{}", run.stderr);
    }
    let mut after = files(&env.data().join("journal"));
    after.insert(head.clone(), fs::read(&head).expect("head"));
    assert!(after == journal, "the refused journal changed");
    assert!(!env.path("b2/kept.txt").exists(), "nothing ran: the deletion stands");
    let roots_after = files(env.dir.path());
    for (path, content) in roots.iter().filter(|(p, _)| !p.starts_with(env.data())) {
        assert_eq!(roots_after.get(path), Some(content), "{} changed", path.display());
    }

    let verify = env.run(&["daemon", "verify"]);
    assert_eq!(verify.code, 1, "{}{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains("damaged"), "{}", verify.stdout);
    assert!(verify.stderr.contains("is damaged"), "{}", verify.stderr);

    let recover = env.ok(&["daemon", "recover"]);
    assert!(recover.contains("The damaged journal was moved to"), "{recover}");
    let kept: Vec<_> = fs::read_dir(env.data())
        .expect("data")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("journal.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "{recover}");
    assert_eq!(
        fs::read(kept[0].path().join("journal/db")).expect("kept db"),
        journal[&db],
        "the damaged journal is kept as it was"
    );

    // An intact session comes back as it was; a damaged one reset and paused, so that
    // nothing runs on an ancestor older than the files until the user says so.
    let listed = env.sessions();
    let mut reset = 0;
    for session in &listed {
        let name = session["name"].as_str().expect("name");
        let outcomes = recover.split_once("Recovered:").expect("outcomes").1;
        let line = outcomes.lines().find(|l| l.contains(&format!("({name})"))).expect("outcome");
        if line.ends_with("kept as it was") {
            assert_eq!(session["paused"], name == "two", "{line}: {session}");
        } else {
            assert!(line.contains("kept, reset and paused"), "{line}");
            assert_eq!(session["paused"], true, "{line}: {session}");
            reset += 1;
        }
    }
    assert!(reset > 0, "cutting the journal in half lost acknowledged records: {recover}");
    assert!(!env.path("b2/kept.txt").exists());
    env.fails(&["daemon", "verify"], "is running on this journal");
    env.ok(&["daemon", "stop"]);
    assert!(env.ok(&["daemon", "verify"]).contains("The journal is intact."));
}

#[test]
fn a_lost_head_file_is_refused_and_a_crash_never_is() {
    let env = DaemonEnv::new();
    write(&env.path("alpha/f.txt"), "x");
    env.ok(&["sync", "create", "-n", "s", "alpha", "beta"]);
    env.ok(&["sync", "flush", "s"]);
    // A crash, at any moment, is not damage: the head never claims more than sled holds.
    for _ in 0..5 {
        write(&env.path("alpha/f.txt"), format!("{:?}", std::time::Instant::now()));
        env.kill9();
        env.ok(&["sync", "flush", "s"]);
    }
    env.ok(&["daemon", "stop"]);
    env.ok(&["daemon", "verify"]);
    let head = env.data().join("journal.head");
    let saved = fs::read(&head).expect("head");
    fs::remove_file(&head).expect("delete the head");
    env.fails(&["sync", "list"], "journal.head is missing");
    fs::write(&head, saved).expect("restore");
    assert_eq!(env.sessions().len(), 1);
}
