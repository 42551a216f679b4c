//! A finding: one broken rule of the repository, with the place it is in. Every check returns a list of them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// The file (relative to the repository root), with a panel, rule or query when there is one.
    pub place: String,
    pub message: String,
}

impl Finding {
    pub fn new(place: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            place: place.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// Collects findings for one check.
#[derive(Debug, Default)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    pub fn add(&mut self, place: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding::new(place, message));
    }

    /// Whether any finding's message contains `text` (for the tests: the check caught what it is for).
    #[cfg(test)]
    pub fn mention(&self, text: &str) -> bool {
        self.0.iter().any(|f| f.to_string().contains(text))
    }
}
