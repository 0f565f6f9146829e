//! A model-based crash test of the journal: a child process runs random session operations
//! (create, cycles, pause, resume, compaction, removal) on a real journal, flushing after
//! each and saying which one was acknowledged; the parent kills it with SIGKILL at a random
//! point, reopens the journal and compares it with a model of the same operations.
//!
//! Every reopened session must hold at least everything acknowledged and at most what the
//! next, interrupted operation wrote; its history must be a suffix of the model's records and
//! its state the fold of them. A kill is not damage: the journal must never be refused.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use mutagen_core::Side;
use mutagen_journal::{Event, Journal, JournalError, Record, SessionLog, SessionState};
use mutagen_reconcile::{Change, Digest, Entry};
use mutagen_session::SessionSpec;

const CHILD: &str = "MUTAGEN_JOURNAL_CRASH_CHILD";
const ROUNDS: u64 = 24;

/// A small deterministic generator (xorshift64*), so that parent and child agree.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operation, as both sides derive it from the seed and the model so far.
#[derive(Debug, Clone)]
enum Operation {
    Create(String),
    Append(String, Vec<Record>),
    Compact(String),
    Remove(String),
}

/// What the operations so far have written: each session's records, without compaction
/// (compaction only prunes, and appends a checkpoint).
#[derive(Debug, Clone, Default)]
struct Model {
    sessions: BTreeMap<String, Vec<Record>>,
    created: u64,
}

impl Model {
    fn state(&self, identifier: &str) -> SessionState {
        SessionState::fold(&self.sessions[identifier]).expect("folds").expect("created")
    }

    /// Chooses the next operation.
    fn choose(&self, random: &mut Random, time: u64) -> Operation {
        let live: Vec<&String> = self.sessions.keys().collect();
        let pick = |random: &mut Random| live[random.below(live.len() as u64) as usize].clone();
        match random.below(20) {
            _ if live.is_empty() => Operation::Create(format!("sync_{:0>43}", self.created + 1)),
            0 | 1 if live.len() < 4 => Operation::Create(format!("sync_{:0>43}", self.created + 1)),
            2 => Operation::Remove(pick(random)),
            3 | 4 => Operation::Compact(pick(random)),
            5 | 6 => {
                let identifier = pick(random);
                let paused = self.state(&identifier).paused;
                let event = if paused { Event::Resumed } else { Event::Paused };
                let cycle = self.state(&identifier).cycle;
                Operation::Append(identifier, vec![Record { time, cycle, event }])
            }
            _ => {
                let identifier = pick(random);
                let cycle = self.state(&identifier).cycle + 1;
                let files = 1 + random.below(40) as u8;
                Operation::Append(identifier, cycle_records(time, cycle, files))
            }
        }
    }

    /// Applies an operation (the checkpoint a compaction appends is `checkpoint`).
    fn apply(&mut self, operation: &Operation, time: u64) {
        match operation {
            Operation::Create(identifier) => {
                self.created += 1;
                self.sessions.insert(identifier.clone(), vec![created(identifier, time)]);
            }
            Operation::Append(identifier, records) => {
                self.sessions.get_mut(identifier).expect("live").extend(records.iter().cloned());
            }
            Operation::Compact(identifier) => {
                let state = self.state(identifier);
                let checkpoint = Record { time, cycle: state.cycle, event: checkpoint(state) };
                self.sessions.get_mut(identifier).expect("live").push(checkpoint);
            }
            Operation::Remove(identifier) => {
                self.sessions.remove(identifier);
            }
        }
    }
}

fn checkpoint(state: SessionState) -> Event {
    Event::Checkpoint(Box::new(state))
}

fn created(identifier: &str, time: u64) -> Record {
    let spec = SessionSpec {
        alpha: format!("/{identifier}/a"),
        beta: format!("/{identifier}/b"),
        name: "crash".into(),
        labels: Default::default(),
        paused: false,
        configuration: Default::default(),
        alpha_environment: Default::default(),
        beta_environment: Default::default(),
    };
    let event = Event::Created {
        identifier: identifier.to_owned(),
        version: "0".into(),
        spec: Box::new(spec),
    };
    Record { time, cycle: 0, event }
}

fn cycle_records(time: u64, cycle: u64, files: u8) -> Vec<Record> {
    let mut changes = Vec::new();
    if cycle == 1 {
        changes.push(Change::new("", None, Some(Entry::Directory(Default::default()))));
    }
    for file in 0..files {
        let entry = Entry::file(Digest([file ^ cycle as u8; 32]), false);
        changes.push(Change::new(format!("c{cycle}-{file}"), None, Some(entry)));
    }
    let scan = Event::ScanCompleted {
        side: Side::Beta,
        directories: 1,
        files: u64::from(files),
        symbolic_links: 0,
        total_file_size: 4096,
        duration_us: 1,
        problems: Vec::new(),
    };
    vec![
        Record { time, cycle, event: scan },
        Record { time, cycle, event: Event::AncestorUpdated { changes } },
    ]
}

/// The child: runs operations forever, printing `ack N` after operation N is flushed.
fn child(directory: &Path, seed: u64) -> ! {
    let journal = Journal::open(directory).expect("open");
    let mut logs: BTreeMap<String, SessionLog> = BTreeMap::new();
    let mut model = Model::default();
    let mut random = Random(seed);
    let mut stdout = std::io::stdout().lock();
    for number in 1.. {
        let operation = model.choose(&mut random, number);
        match &operation {
            Operation::Create(identifier) => {
                let log = journal.create(identifier, &created(identifier, number)).expect("create");
                logs.insert(identifier.clone(), log);
            }
            Operation::Append(identifier, records) => {
                let log = logs.get_mut(identifier).expect("log");
                for record in records {
                    log.append(record).expect("append");
                }
            }
            Operation::Compact(identifier) => {
                let state = model.state(identifier);
                logs.get_mut(identifier).expect("log").compact(&state, 2).expect("compact");
            }
            Operation::Remove(identifier) => {
                logs.remove(identifier);
                journal.remove(identifier).expect("remove");
            }
        }
        journal.flush().expect("flush");
        model.apply(&operation, number);
        writeln!(stdout, "ack {number}").expect("stdout");
        stdout.flush().expect("stdout");
    }
    unreachable!()
}

/// A record without its time (a compaction stamps its checkpoint with the clock).
fn timeless(record: &Record) -> (u64, Event) {
    (record.cycle, record.event.clone())
}

#[derive(Debug, Default)]
struct Tally {
    rounds: u64,
    operations: u64,
    interrupted_operation_kept: u64,
    sessions_checked: u64,
}

/// Checks the reopened journal against the model after `acknowledged` operations, with the
/// next operation `next` possibly written in part.
fn check(journal: &Journal, seed: u64, acknowledged: u64, tally: &mut Tally) {
    let mut random = Random(seed);
    let mut model = Model::default();
    for number in 1..=acknowledged {
        let operation = model.choose(&mut random, number);
        model.apply(&operation, number);
    }
    let next = model.choose(&mut random, acknowledged + 1);
    let mut after = model.clone();
    after.apply(&next, acknowledged + 1);
    let found = journal.identifiers();
    let mut kept_more = false;
    for identifier in &found {
        // A session the interrupted operation removed keeps the records it had.
        let ceiling = after.sessions.get(identifier).or(model.sessions.get(identifier));
        let Some(ceiling) = ceiling else { panic!("seed {seed}: an unknown session {identifier}") };
        let floor = model.sessions.get(identifier).map_or(0, Vec::len);
        let history: Vec<(u64, Event)> = journal
            .records(identifier, 0)
            .expect("records")
            .iter()
            .map(|(_, r)| timeless(r))
            .collect();
        let modelled: Vec<(u64, Event)> = ceiling.iter().map(timeless).collect();
        // Some prefix of the ceiling, at least as long as what was acknowledged, ends with the
        // history found (a compaction may have pruned its start).
        let length = (floor.max(1)..=modelled.len())
            .rev()
            .find(|&n| modelled[..n].ends_with(&history))
            .unwrap_or_else(|| {
                panic!("seed {seed}: {identifier}: history is no prefix of the model")
            });
        kept_more |= length > floor;
        let (_, state) = journal.load(identifier).expect("load");
        let expected = SessionState::fold(&ceiling[..length]).expect("folds").expect("created");
        assert!(state == expected, "seed {seed}: {identifier}: another state");
        tally.sessions_checked += 1;
    }
    for identifier in model.sessions.keys() {
        let removed_next = matches!(&next, Operation::Remove(r) if r == identifier);
        assert!(
            found.contains(identifier) || removed_next,
            "seed {seed}: acknowledged session {identifier} is gone"
        );
    }
    tally.interrupted_operation_kept += u64::from(kept_more);
}

#[test]
fn a_journal_killed_at_random_points_reopens_to_the_acknowledged_state() {
    if let Some(value) = std::env::var_os(CHILD) {
        let value = value.to_string_lossy().into_owned();
        let (directory, seed) = value.rsplit_once(':').expect("dir:seed");
        child(Path::new(directory), seed.parse().expect("seed"));
    }
    let mut tally = Tally::default();
    let mut random = Random(0x6d75_7461_6765_6e21);
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let directory = dir.path().join("journal");
        let seed = random.next() | 1;
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "a_journal_killed_at_random_points_reopens_to_the_acknowledged_state",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, format!("{}:{seed}", directory.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child");
        let target = 1 + random.below(60);
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut acknowledged = 0;
        while acknowledged < target {
            let line = lines.next().expect("the child ended early").expect("line");
            if let Some(number) = line.strip_prefix("ack ") {
                acknowledged = number.parse().expect("number");
            }
        }
        // Somewhere inside a later operation (or between two).
        std::thread::sleep(std::time::Duration::from_micros(random.below(3000)));
        child.kill().expect("kill");
        child.wait().expect("wait");
        for line in lines {
            if let Some(number) = line.expect("line").strip_prefix("ack ") {
                acknowledged = number.parse().expect("number");
            }
        }
        let journal = match Journal::open(&directory) {
            Ok(journal) => journal,
            Err(error @ JournalError::Damaged { .. }) => {
                panic!("round {round}, seed {seed}: a kill was taken for damage: {error}")
            }
            Err(error) => panic!("round {round}, seed {seed}: {error}"),
        };
        check(&journal, seed, acknowledged, &mut tally);
        tally.rounds += 1;
        tally.operations += acknowledged;
    }
    println!("{tally:?}");
    assert_eq!(tally.rounds, ROUNDS);
}
