//! Configuration and project files: merging, and errors that name the file, key and line.

use std::path::{Path, PathBuf};

use mutagen_config::{ConfigError, ConfigurationFile, Project, load_files};
use mutagen_core::{Compression, StageMode, SymlinkMode};
use mutagen_reconcile::Mode;
use mutagen_session::WatchMode;
use mutagen_session::forward::OverwriteMode;

fn error(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
    result.expect_err("the file must be refused").to_string()
}

#[test]
fn files_merge_in_order_and_ignores_concatenate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let first = write(
        "first.yml",
        "sync:\n  defaults:\n    mode: one-way-safe\n    ignore:\n      paths: [a, b]\n    \
         watch:\n      mode: force-poll\n      pollingInterval: 5\n    configurationBeta:\n      \
         stageMode: neighboring\nforward:\n  defaults:\n    socket:\n      permissionMode: 0660\n",
    );
    let second = write(
        "second.yml",
        "sync:\n  defaults:\n    mode: two-way-resolved\n    ignore:\n      paths: [c]\n      \
         vcs: true\n    symlink:\n      mode: posix-raw\n    configurationBeta:\n      watch:\n        \
         mode: no-watch\n    allowRootEmptying: true\n",
    );
    let (sync, forward) = load_files(false, &[first, second]).expect("load");
    let configuration = sync.configuration();
    assert_eq!(configuration.mode, Mode::TwoWayResolved, "the later file wins");
    assert_eq!(configuration.ignores, ["a", "b", "c"], "lists concatenate, lower first");
    assert!(configuration.ignore_vcs);
    assert_eq!(configuration.symlink_mode, SymlinkMode::PosixRaw);
    assert_eq!(configuration.watch_mode, WatchMode::ForcePoll, "unset later keeps earlier");
    assert_eq!(configuration.watch_polling_interval, 5);
    assert!(configuration.allow_root_emptying && !configuration.allow_root_deletion);
    assert_eq!(configuration.beta.stage_mode, Some(StageMode::Neighboring));
    assert_eq!(configuration.beta.watch_mode, Some(WatchMode::NoWatch));
    assert!(configuration.alpha.is_empty());
    let beta = configuration.endpoint(mutagen_core::Side::Beta);
    assert_eq!((beta.watch_mode, beta.watch_polling_interval), (WatchMode::NoWatch, 5));
    assert_eq!(configuration.endpoint(mutagen_core::Side::Alpha).stage_mode, StageMode::Auto);
    assert_eq!(forward.socket_options().mode, 0o660);
    assert_eq!(forward.socket_options().overwrite, OverwriteMode::Leave);

    // Permissions mode posix from YAML; a mode that does not exist names the key.
    let posix = write("posix.yml", "sync:\n  defaults:\n    permissions:\n      mode: posix\n");
    let (sync, _) = load_files(false, &[posix]).expect("posix");
    assert_eq!(sync.configuration().permissions_mode, mutagen_core::PermissionsMode::Posix);
    let unix = write("unix.yml", "sync:\n  defaults:\n    permissions:\n      mode: unix\n");
    let message = error(load_files(false, &[unix]));
    assert!(message.contains("unix.yml") && message.contains("permissions.mode"), "{message}");

    // A missing -c file is an error naming it; an empty file is no settings.
    let missing = dir.path().join("missing.yml");
    let message = error(load_files(false, std::slice::from_ref(&missing)));
    assert!(message.contains("missing.yml") && message.starts_with("unable to read"), "{message}");
    let empty = write("empty.yml", "# nothing yet\n");
    let (sync, _) = load_files(false, &[empty]).expect("an empty file");
    assert_eq!(sync.configuration(), mutagen_session::Configuration::default());
}

#[test]
fn bad_files_name_the_file_the_key_and_the_line() {
    let path = Path::new("/home/u/.mutagen.yml");
    // (text, what the message must contain)
    let cases: &[(&str, &[&str])] = &[
        (
            "sync:\n  defaults:\n    mode: two-way-saf\n",
            &["sync.defaults.mode", "line 3", "two-way-saf"],
        ),
        (
            "sync:\n  defaults:\n    watch:\n      pollingIntervl: 3\n",
            &["sync.defaults.watch", "pollingIntervl", "line 4"],
        ),
        (
            "sync:\n  defaults:\n    watch:\n      pollingInterval: 0\n",
            &["pollingInterval", "at least 1"],
        ),
        (
            "sync:\n  defaults:\n    watch:\n      pollingInterval: x\n",
            &["pollingInterval", "line 4"],
        ),
        (
            "sync:\n  defaults:\n    compression:\n      algorithm: deflate\n",
            &["algorithm", "deflate"],
        ),
        ("sync:\n  defaults:\n    stageMode: elsewhere\n", &["stageMode", "elsewhere", "line 3"]),
        ("sync:\n  web:\n    mode: one-way-safe\n", &["sync", "web", "defaults", "line 2"]),
        (
            "sync:\n  defaults:\n    configurationAlpha:\n      mode: one-way-safe\n",
            &["configurationAlpha", "mode", "line 4"],
        ),
        ("sync:\n  defaults:\n    alpha: /x\n", &["sync.defaults.alpha", "project file"]),
        ("forward:\n  defaults:\n    socket:\n      permissionMode: 1777\n", &["permissionMode"]),
        (
            "forward:\n  defaults:\n    socket:\n      overwriteMode: clobber\n",
            &["overwriteMode", "clobber"],
        ),
        ("sync:\n  defaults:\n   mode: [\n", &["line"]),
        ("colour: blue\n", &["colour"]),
    ];
    for (text, needles) in cases {
        let message = error(ConfigurationFile::parse(path, text));
        assert!(
            message.starts_with("invalid configuration file /home/u/.mutagen.yml: "),
            "{message}"
        );
        for needle in *needles {
            assert!(message.contains(needle), "{text:?}: {message:?} lacks {needle:?}");
        }
    }
}

#[test]
fn projects_merge_defaults_into_each_session() {
    let text = "\
beforeCreate:
  - echo before
afterTerminate: [echo after]
commands:
  test: make test
sync:
  defaults:
    beta: server:/srv/app
    ignore:
      paths: [node_modules]
    configurationBeta:
      compression:
        algorithm: none
  code:
    alpha: .
    flushOnCreate: true
    ignore:
      paths: ['*.o']
  docs:
    alpha: ./docs
    beta: server:/srv/docs
    mode: one-way-replica
forward:
  web:
    source: tcp:localhost:8080
    destination: server:tcp:localhost:80
";
    let project = Project::parse(Path::new("mutagen.yml"), text).expect("parse");
    assert_eq!(project.hooks.before_create, ["echo before"]);
    assert_eq!(project.hooks.after_terminate, ["echo after"]);
    assert_eq!(project.commands["test"], "make test");
    let names: Vec<&str> = project.sync.iter().map(|entry| entry.name.as_str()).collect();
    assert_eq!(names, ["code", "docs"]);
    let code = &project.sync[0];
    assert_eq!((code.alpha.as_str(), code.beta.as_str()), (".", "server:/srv/app"));
    assert_eq!(code.settings.flush_on_create, Some(true));
    let configuration = code.settings.configuration();
    assert_eq!(configuration.ignores, ["node_modules", "*.o"]);
    assert_eq!(configuration.beta.compression, Some(Compression::None));
    assert_eq!(project.sync[1].beta, "server:/srv/docs", "the entry's own URL wins");
    assert_eq!(project.sync[1].settings.configuration().mode, Mode::OneWayReplica);
    assert_eq!(project.forward[0].destination, "server:tcp:localhost:80");

    let path = Path::new("/p/mutagen.yml");
    let cases: &[(&str, &[&str])] = &[
        ("sync:\n  my_code:\n    alpha: .\n    beta: /b\n", &["my_code", "line 2"]),
        ("sync:\n  code:\n    alpha: .\n", &["sync.code", "beta"]),
        ("forward:\n  web:\n    destination: tcp:localhost:1\n", &["forward.web", "source"]),
        (
            "sync:\n  code:\n    alpha: .\n    beta: /b\n  code:\n    alpha: .\n    beta: /c\n",
            &["code", "twice"],
        ),
        ("beforeStart: [x]\n", &["beforeStart"]),
        ("commands:\n  test: [make]\n", &["commands.test"]),
    ];
    for (text, needles) in cases {
        let message = error(Project::parse(path, text));
        assert!(message.starts_with("invalid project file /p/mutagen.yml: "), "{message}");
        for needle in *needles {
            assert!(message.contains(needle), "{text:?}: {message:?} lacks {needle:?}");
        }
    }
}
