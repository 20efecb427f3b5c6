//! Hands a section's keys to the code that converts them, then reports every key nobody took,
//! so that each fluent-bit setting ends up converted, warned about or noted.

use super::classic::{Entry, Section};
use super::remarks::Remarks;

/// How a key that is not converted is reported.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Treatment {
    /// fwd2loki does not do what the key asks: a warning giving this reason.
    Warn(&'static str),
    /// The key makes no difference to fwd2loki: a note giving this reason.
    Note(&'static str),
    /// The value is a secret: a warning giving this advice, never quoting the value.
    Credential(&'static str),
}

/// The treatment of one key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rule {
    /// The key in lower case; a trailing `*` matches any rest, as in `tls.*`.
    pub(crate) key: &'static str,
    /// How it is reported.
    pub(crate) treatment: Treatment,
}

impl Rule {
    /// A key reported with a warning.
    pub(crate) const fn warn(key: &'static str, reason: &'static str) -> Rule {
        Rule { key, treatment: Treatment::Warn(reason) }
    }

    /// A key reported with a note.
    pub(crate) const fn note(key: &'static str, reason: &'static str) -> Rule {
        Rule { key, treatment: Treatment::Note(reason) }
    }

    /// A key holding a secret.
    pub(crate) const fn credential(key: &'static str, advice: &'static str) -> Rule {
        Rule { key, treatment: Treatment::Credential(advice) }
    }

    fn matches(&self, key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        match self.key.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == self.key,
        }
    }
}

/// The keys of one section, as they are converted.
pub(crate) struct Keys<'a> {
    section: &'a Section,
    /// Whether each entry, by index, has been converted.
    taken: Vec<bool>,
    /// Keys given more than once: the entry used and how many there were.
    repeated: Vec<(&'a Entry, usize)>,
}

impl<'a> Keys<'a> {
    /// Starts with none of `section`'s keys taken.
    pub(crate) fn new(section: &'a Section) -> Keys<'a> {
        Keys { section, taken: vec![false; section.entries.len()], repeated: Vec::new() }
    }

    /// The section the keys belong to.
    pub(crate) fn section(&self) -> &'a Section {
        self.section
    }

    /// The entry of `key` (in lower case), the last one when it is given more than once, which
    /// the conversion then owns.
    pub(crate) fn take(&mut self, key: &str) -> Option<&'a Entry> {
        let mut found = None;
        let mut count = 0;
        for (index, entry) in self.section.entries.iter().enumerate() {
            if entry.is(key) {
                self.taken[index] = true;
                found = Some(entry);
                count += 1;
            }
        }
        if let Some(entry) = found.filter(|_| count > 1) {
            self.repeated.push((entry, count));
        }
        found
    }

    /// Reports each key not taken by the first rule of `rules` that matches it; a key no rule
    /// matches gets the warning `unknown` returns for it.
    pub(crate) fn finish(
        self,
        rules: &[&[Rule]],
        unknown: &dyn Fn(&Entry) -> String,
        remarks: &mut Remarks,
    ) {
        for (entry, count) in self.repeated {
            let line = entry.origin.line;
            let message = format!("given {count} times; the last one (line {line}) is used");
            remarks.warn_key(self.section, entry, message);
        }
        let untaken = self.section.entries.iter().zip(self.taken).filter(|(_, taken)| !taken);
        for (entry, _) in untaken {
            let rule =
                rules.iter().flat_map(|rules| rules.iter()).find(|rule| rule.matches(&entry.key));
            match rule.map(|rule| rule.treatment) {
                Some(Treatment::Warn(reason)) => remarks.warn_key(self.section, entry, reason),
                Some(Treatment::Note(reason)) => remarks.note_key(self.section, entry, reason),
                Some(Treatment::Credential(advice)) => {
                    let message =
                        format!("credentials are not converted (the value is not shown): {advice}");
                    remarks.warn_key(self.section, entry, message);
                }
                None => remarks.warn_key(self.section, entry, unknown(entry)),
            }
        }
    }
}
