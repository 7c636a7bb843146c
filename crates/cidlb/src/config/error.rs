//! [`ConfigError`]: why a configuration was rejected, and where.

use std::fmt;

/// What kind of problem a [`ConfigError`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io,
    /// The text is not valid TOML.
    Syntax,
    /// A key that the configuration does not have (often a typo).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value has the wrong type or breaks a rule (range, uniqueness...).
    InvalidValue,
}

/// A line and column (both 1-based, columns counted in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Why a configuration was rejected: where (file, key path, line) and what is wrong.
///
/// `Display` gives one line, e.g.
/// `cidlb.toml: listener[0].cid_length: 40 is out of range 1..=32 (line 5, column 14)`,
/// `cidlb.toml: unknown key listener[0].backnd; allowed here: name, address, ...`, or
/// `cidlb.toml: TOML syntax error at line 3, column 9: ...`.
#[derive(Debug)]
pub struct ConfigError {
    pub(super) origin: String,
    pub(super) kind: ConfigErrorKind,
    pub(super) path: Option<String>,
    pub(super) message: String,
    pub(super) location: Option<Location>,
    pub(super) source: Option<std::io::Error>,
}

impl ConfigError {
    /// What kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// Where the configuration came from: a file name, or `command line` for
    /// [`Config::quick`](super::Config::quick).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The key path, e.g. `listener[0].backend[1].address`, when the error concerns a
    /// key. For [`Config::quick`](super::Config::quick) errors it names the flag (`--backend`).
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// What is wrong, without origin, path or location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Line and column in the file, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        match (self.kind, &self.path, self.location) {
            (ConfigErrorKind::Syntax, _, Some(l)) => {
                return write!(
                    f,
                    "TOML syntax error at line {}, column {}: {}",
                    l.line, l.column, self.message
                );
            }
            (ConfigErrorKind::Syntax, _, None) => write!(f, "TOML syntax error: {}", self.message)?,
            (ConfigErrorKind::UnknownKey, Some(p), _) => {
                write!(f, "unknown key {p}")?;
                if !self.message.is_empty() {
                    write!(f, "; {}", self.message)?;
                }
            }
            (_, Some(p), _) => write!(f, "{p}: {}", self.message)?,
            (_, None, _) => f.write_str(&self.message)?,
        }
        if let Some(l) = self.location {
            write!(f, " (line {}, column {})", l.line, l.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
