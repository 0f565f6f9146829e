//! One module per verb.

pub mod daemon;
pub mod sync;
