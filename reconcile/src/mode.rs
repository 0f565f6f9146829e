//! Synchronization modes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How disagreements between alpha and beta are settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Three-way merge; changes on both sides that do not agree are conflicts.
    #[default]
    TwoWaySafe,
    /// Three-way merge; alpha wins where two-way-safe would report a conflict.
    TwoWayResolved,
    /// Alpha's changes flow to beta; beta's own creations are left alone.
    OneWaySafe,
    /// Beta becomes an exact copy of alpha.
    OneWayReplica,
}

impl Mode {
    /// Every mode, in declaration order.
    pub const ALL: [Mode; 4] =
        [Mode::TwoWaySafe, Mode::TwoWayResolved, Mode::OneWaySafe, Mode::OneWayReplica];

    /// Returns whether changes flow in both directions.
    pub fn is_bidirectional(self) -> bool {
        matches!(self, Mode::TwoWaySafe | Mode::TwoWayResolved)
    }

    /// Returns the command-line name (`two-way-safe`...).
    pub fn name(self) -> &'static str {
        match self {
            Mode::TwoWaySafe => "two-way-safe",
            Mode::TwoWayResolved => "two-way-resolved",
            Mode::OneWaySafe => "one-way-safe",
            Mode::OneWayReplica => "one-way-replica",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown synchronization mode name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown synchronization mode {0:?} (expected two-way-safe, two-way-resolved, one-way-safe \
     or one-way-replica)"
)]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(text: &str) -> Result<Mode, ParseModeError> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| ParseModeError(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(mode.name().parse::<Mode>(), Ok(mode));
        }
        assert!("two-way".parse::<Mode>().is_err());
    }
}
