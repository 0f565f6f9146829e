//! `mutagen daemon register|unregister`: the systemd user unit, checked by
//! `systemd-analyze verify`, and autostart when systemd cannot be reached.

use std::process::Command;

use crate::daemon_env::DaemonEnv;

#[test]
fn register_writes_a_unit_systemd_accepts_and_unregister_removes_it() {
    let mut env = DaemonEnv::new();
    let config = env.path("config");
    env.env.push(("XDG_CONFIG_HOME".into(), config.display().to_string()));
    let unit = config.join("systemd/user/mutagen.service");

    let run = env.run(&["daemon", "register"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&unit.display().to_string()), "{}", run.stdout);
    // Without a user manager (as here, in a container) it says so and what to run.
    assert!(
        run.stderr.is_empty() || run.stderr.contains("systemctl --user enable --now"),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&unit).expect("the unit is written");
    assert!(text.contains(env!("CARGO_BIN_EXE_mutagen")), "{text}");
    assert!(text.contains(&env.data().display().to_string()), "{text}");

    // systemd's own checker: it exits 0 even for bad settings, which it only warns about,
    // so nothing must be said about the unit either.
    let verify = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("run");
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{said}");
    assert!(!said.contains("mutagen.service"), "systemd-analyze complained: {said}");

    // A registered unit that systemd cannot start: autostart starts the daemon itself.
    env.ok(&["sync", "list"]);
    env.ok(&["daemon", "stop"]);

    let run = env.run(&["daemon", "unregister"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!unit.exists(), "the unit is still there");
    // Unregistering twice is not an error.
    env.ok(&["daemon", "unregister"]);
}

/// The checker used above does catch a broken unit (so the test can fail).
#[test]
fn systemd_analyze_reports_a_broken_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("mutagen.service");
    std::fs::write(
        &unit,
        "[Service]\nExecStart=/bin/true\nRestart=on-fialure\n[Install]\nWantedBy=default.target\n",
    )
    .expect("write");
    let verify = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("run");
    assert!(String::from_utf8_lossy(&verify.stderr).contains("mutagen.service"));
}
