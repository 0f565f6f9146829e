//! One module per verb.

pub mod daemon;
pub mod forward;
pub mod project;
pub mod sync;
