//! What a conversion tells its user: warnings about settings fwd2loki does not honour, and notes
//! about settings it leaves out because fwd2loki does not need them.

use std::fmt;
use std::path::PathBuf;

use super::classic::{Entry, Origin, Section};

/// One remark about a place in the fluent-bit configuration.
///
/// Remarks never quote the value of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remark {
    /// The file the remark is about, as it was named (an `@INCLUDE`d file is named by its path).
    pub file: PathBuf,
    /// The line, counted from 1.
    pub line: usize,
    /// The section's name in upper case, such as `OUTPUT`; none for `@SET` and `@INCLUDE`
    /// lines.
    pub section: Option<String>,
    /// The key as written in the file, such as `Shared_Key`; none when about a whole section.
    pub key: Option<String>,
    /// What fwd2loki does instead, and what to do about it.
    pub message: String,
}

impl fmt::Display for Remark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        match (&self.section, &self.key) {
            (Some(section), Some(key)) => write!(f, "[{section}] {key}: ")?,
            (Some(section), None) => write!(f, "[{section}]: ")?,
            (None, Some(key)) => write!(f, "{key}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// The remarks gathered while converting, in the order of the file.
#[derive(Debug, Default)]
pub(crate) struct Remarks {
    /// Settings whose behaviour fwd2loki does not reproduce.
    pub(crate) warnings: Vec<Remark>,
    /// Settings left out without a difference that matters.
    pub(crate) notes: Vec<Remark>,
}

impl Remarks {
    /// Warns about `entry` of `section`.
    pub(crate) fn warn_key(
        &mut self,
        section: &Section,
        entry: &Entry,
        message: impl Into<String>,
    ) {
        self.warnings.push(key_remark(section, entry, message.into()));
    }

    /// Notes something about `entry` of `section`.
    pub(crate) fn note_key(
        &mut self,
        section: &Section,
        entry: &Entry,
        message: impl Into<String>,
    ) {
        self.notes.push(key_remark(section, entry, message.into()));
    }

    /// Warns about a whole section.
    pub(crate) fn warn_section(&mut self, section: &Section, message: impl Into<String>) {
        self.warnings.push(section_remark(section, message.into()));
    }

    /// Notes something about a whole section.
    pub(crate) fn note_section(&mut self, section: &Section, message: impl Into<String>) {
        self.notes.push(section_remark(section, message.into()));
    }

    /// Warns about a line outside any section, such as a directive.
    pub(crate) fn warn_line(&mut self, origin: &Origin, message: impl Into<String>) {
        self.warnings.push(Remark {
            file: origin.file.clone(),
            line: origin.line,
            section: None,
            key: None,
            message: message.into(),
        });
    }
}

fn key_remark(section: &Section, entry: &Entry, message: String) -> Remark {
    Remark {
        file: entry.origin.file.clone(),
        line: entry.origin.line,
        section: Some(section.name.clone()),
        key: Some(entry.key.clone()),
        message,
    }
}

fn section_remark(section: &Section, message: String) -> Remark {
    Remark {
        file: section.origin.file.clone(),
        line: section.origin.line,
        section: Some(section.name.clone()),
        key: None,
        message,
    }
}
