//! The control plane's error: what went wrong, in words for a person, and of which kind,
//! so that each front end (the admin API's HTTP status, the CLI's exit code) can say so
//! its own way.

use std::fmt;

/// Which kind of failure a [`ControlError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request or the file is wrong (a malformed CID or address, an invalid
    /// configuration, an ambiguous name): fix it and ask again.
    Invalid,
    /// No such listener or backend.
    NotFound,
    /// The request is fine but cannot be done now (no file to reload, a change that
    /// needs a restart, no backend id free, a backend removed meanwhile).
    Conflict,
}

/// An operation of the control plane failed; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlError {
    /// Which kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

impl ControlError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ControlError {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ControlError {}
