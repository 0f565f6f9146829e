//! Integration tests of the agent protocol: a real server loop and a real endpoint over a
//! socket pair.

mod test_fuzz_corpus;
mod test_golden;
mod test_remote;
