//! Every endpoint message survives a trip through a byte encoding: what lets a remote endpoint
//! carry the same operations over a stream.

use std::collections::BTreeMap;

use mutagen_endpoint::{Snapshot, StageRequest, TransitionResult, Transmission};
use mutagen_reconcile::{Change, Digest, Directory, Entry, Problem};
use serde::{Serialize, de::DeserializeOwned};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
    let bytes = postcard::to_stdvec(&value).expect("encode");
    assert_eq!(postcard::from_bytes::<T>(&bytes).expect("decode"), value);
}

#[test]
fn messages_round_trip() {
    let file = Entry::file(Digest([3; 32]), true);
    let tree = Entry::Directory(Directory::from(BTreeMap::from([
        ("f".to_owned(), file.clone()),
        ("l".to_owned(), Entry::SymbolicLink { target: "f".into() }),
        ("u".to_owned(), Entry::Untracked),
        ("p".to_owned(), Entry::Problematic { problem: "unreadable".into() }),
        ("ü 日本".to_owned(), Entry::empty_directory()),
    ])));
    round_trip(Snapshot {
        content: Some(tree.clone()),
        directories: 2,
        files: 1,
        symbolic_links: 1,
        total_file_size: 9,
        problems: vec![mutagen_reconcile::Problem::new("p", "unreadable")],
    });
    let request = StageRequest::new("d/f", Digest([9; 32]));
    let signature = mutagen_endpoint::rsync::signature(&[1u8; 3000][..], 3000).expect("signature");
    round_trip(StageRequest { base: Some(signature), ..request.clone() });
    round_trip(vec![
        Transmission::Begin { request: request.clone(), size: 3 },
        Transmission::Data(vec![1, 2, 3]),
        Transmission::Blocks { start: 4, count: 2 },
        Transmission::End,
        Transmission::Unavailable { request, error: "vanished".into() },
    ]);
    round_trip(vec![Change::new("d", None, Some(tree)), Change::new("f", Some(file), None)]);
    round_trip(TransitionResult {
        results: vec![None, Some(Entry::empty_directory())],
        problems: vec![Problem::new("x", "modification detected")],
        missing_files: true,
    });
}
