//! One module per verb.

pub mod daemon;
pub mod forward;
pub mod sync;
