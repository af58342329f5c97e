//! A load scenario, and the median the run reports.

use std::fmt;

use crate::BoxError;

/// One load scenario: a route, and whether requests spread over every session or
/// all carry one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Scenario {
    pub(crate) write: bool,
    pub(crate) hot: bool,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 4] = [
        Scenario {
            write: false,
            hot: false,
        },
        Scenario {
            write: false,
            hot: true,
        },
        Scenario {
            write: true,
            hot: false,
        },
        Scenario {
            write: true,
            hot: true,
        },
    ];

    /// A scenario by its short name: `read`, `read-hot`, `write` or `write-hot`.
    pub(crate) fn parse(name: &str) -> Result<Self, BoxError> {
        let (route, hot) = match name.strip_suffix("-hot") {
            Some(route) => (route, true),
            None => (name, false),
        };
        let write = match route {
            "read" => false,
            "write" => true,
            _ => {
                return Err(format!("scenario {name:?}: read, read-hot, write or write-hot").into())
            }
        };
        Ok(Scenario { write, hot })
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route = if self.write { "write" } else { "read" };
        let spread = if self.hot {
            "one hot session"
        } else {
            "10,000 sessions"
        };
        write!(f, "{route}, {spread}")
    }
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
