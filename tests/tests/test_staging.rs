//! Staging through a pipeline (the supplier on a thread of its own): a receiver that fails
//! mid-stream, or a supplier whose link dies mid-stream, fails the cycle with the right side
//! named, leaves nothing half-written in the root, and the next cycle completes.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use mutagen_endpoint::{
    CycleError, Endpoint, EndpointError, EndpointResult, LocalEndpoint, LocalOptions, Snapshot,
    StageRequest, Synchronizer, TransitionResult, Transmission,
};
use mutagen_reconcile::{Change, Mode};

/// A local endpoint whose `receive` or whose supply link fails after a number of
/// transmissions (`None`: never).
struct Faulty {
    inner: LocalEndpoint,
    fail_receive_after: Option<usize>,
    fail_supply_after: Option<usize>,
    seen: usize,
}

fn broken(operation: &str) -> EndpointError {
    EndpointError::Protocol(format!("{operation} broke on purpose"))
}

impl Endpoint for Faulty {
    fn check(&mut self) -> EndpointResult<bool> {
        self.inner.check()
    }
    fn scan(&mut self) -> EndpointResult<Arc<Snapshot>> {
        self.inner.scan()
    }
    fn trusted(&self) -> bool {
        self.inner.trusted()
    }
    fn stage(&mut self, requests: Vec<StageRequest>) -> EndpointResult<Vec<StageRequest>> {
        self.inner.stage(requests)
    }
    fn supply(
        &mut self,
        requests: &[StageRequest],
        sink: &mut dyn FnMut(Transmission) -> EndpointResult<()>,
    ) -> EndpointResult<()> {
        let (limit, seen) = (self.fail_supply_after, &mut self.seen);
        self.inner.supply(requests, &mut |transmission| {
            *seen += 1;
            if limit.is_some_and(|limit| *seen > limit) {
                return Err(broken("the supply link"));
            }
            sink(transmission)
        })
    }
    fn receive(&mut self, transmission: Transmission) -> EndpointResult<()> {
        self.seen += 1;
        if self.fail_receive_after.is_some_and(|limit| self.seen > limit) {
            return Err(broken("receive"));
        }
        self.inner.receive(transmission)
    }
    fn transition(&mut self, changes: Vec<Change>) -> EndpointResult<TransitionResult> {
        self.inner.transition(changes)
    }
    fn shutdown(&mut self) -> EndpointResult<()> {
        self.inner.shutdown()
    }
}

fn endpoint(dir: &Path, side: &str) -> Faulty {
    let options = LocalOptions::new(dir.join(format!("staging-{side}")));
    let inner = LocalEndpoint::new(dir.join(side), options);
    Faulty { inner, fail_receive_after: None, fail_supply_after: None, seen: 0 }
}

fn files_in(root: &Path) -> usize {
    fs::read_dir(root).map_or(0, |entries| entries.count())
}

#[test]
fn a_failure_on_either_end_of_staging_names_its_side_and_the_next_cycle_completes() {
    const FILES: usize = 2000;
    for (fail_receive, fail_supply, side, operation) in
        [(Some(700), None, "beta", "stage"), (None, Some(900), "alpha", "supply")]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("alpha")).expect("alpha");
        for i in 0..FILES {
            fs::write(dir.path().join(format!("alpha/f{i:04}")), format!("file {i}"))
                .expect("write");
        }
        let mut alpha = endpoint(dir.path(), "alpha");
        let mut beta = endpoint(dir.path(), "beta");
        alpha.fail_supply_after = fail_supply;
        beta.fail_receive_after = fail_receive;
        let mut synchronizer = Synchronizer::new(Mode::TwoWaySafe);
        let error = synchronizer.cycle(&mut alpha, &mut beta).expect_err("the cycle fails");
        match &error {
            CycleError::Endpoint { side: failed, operation: failed_operation, .. } => {
                assert_eq!((failed.to_string().as_str(), *failed_operation), (side, operation));
            }
            other => panic!("{other}"),
        }
        // Nothing was placed: placing comes after staging.
        assert_eq!(files_in(&dir.path().join("beta")), 0, "{error}");
        alpha.fail_supply_after = None;
        beta.fail_receive_after = None;
        let report = synchronizer.cycle(&mut alpha, &mut beta).expect("the next cycle");
        assert_eq!(report.beta.transitions.len(), 1, "the root, with every file");
        assert_eq!(files_in(&dir.path().join("beta")), FILES);
        assert_eq!(fs::read_to_string(dir.path().join("beta/f1999")).expect("read"), "file 1999");
    }
}
