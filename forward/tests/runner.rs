//! Tests of forwarding on real sockets and links, in one binary.

mod test_agent;
mod test_fuzz_corpus;
mod test_mux;
mod test_socket;
