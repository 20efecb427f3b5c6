//! Joining the parts of a line that Docker split.
//!
//! Docker's log copier reads a container's output into a 16 KiB buffer. A longer line leaves
//! as several records, "fragments", each with a piece of the line in `log` and four more keys:
//! `partial_message = "true"`, `partial_id` (shared by the fragments of one line),
//! `partial_ordinal` (`"1"`, `"2"`, ...) and `partial_last` (`"true"` on the final one). All of
//! them carry the first fragment's time.
//!
//! A [`PartialAssembler`], one per connection, holds fragments until the last one arrives and
//! then hands back one record: the first fragment's keys, the whole line in `log`, and none of
//! the partial keys. Lines of several containers or streams may be open at once. A line whose
//! remaining fragments stop coming is shipped as far as it got after a timeout, and a line that
//! grows beyond a limit is cut there, so a connection holds a bounded amount of text.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::forward::decode::{DecodeError, Event};
use crate::msgpack::{Reader, Value};

/// The key holding the text in Docker's records.
const LOG_KEY: &[u8] = b"log";
/// `"true"` on every fragment of a split line.
pub const PARTIAL_MESSAGE: &str = "partial_message";
/// The id shared by the fragments of one line.
pub const PARTIAL_ID: &str = "partial_id";
/// The fragment's position in its line, from `"1"`.
pub const PARTIAL_ORDINAL: &str = "partial_ordinal";
/// `"true"` on the last fragment of a line, `"false"` on the others.
pub const PARTIAL_LAST: &str = "partial_last";

/// Lines one connection may have open at once. Docker has at most two (stdout and stderr); a
/// client opening more loses its oldest open line to the limit instead of growing memory.
const MAX_OPEN_LINES: usize = 16;

/// How a joined line came to be shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Every fragment up to the last one arrived.
    Whole,
    /// No fragment came for the timeout; the line is shipped as far as it got.
    Timeout,
    /// The line reached the size limit and was cut there; the rest of it is skipped.
    TooLarge,
    /// The connection closed before the last fragment.
    Closed,
    /// Too many lines were open on the connection; the oldest was shipped as far as it got.
    TooMany,
}

impl JoinOutcome {
    /// The `reason` label counting a line shipped incomplete, or `None` for a whole one.
    pub fn incomplete_reason(self) -> Option<&'static str> {
        match self {
            Self::Whole => None,
            Self::Timeout => Some("timeout"),
            Self::TooLarge => Some("too_large"),
            Self::Closed => Some("closed"),
            Self::TooMany => Some("too_many"),
        }
    }
}

/// A record rebuilt from the fragments of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedLine {
    /// The time of the line's first fragment.
    pub timestamp_ns: i64,
    /// A msgpack map: the first fragment's keys without the partial ones, and the joined text
    /// in `log`.
    pub record: Vec<u8>,
    /// Whether the line is whole, and if not, why it was shipped.
    pub outcome: JoinOutcome,
}

impl JoinedLine {
    /// The line as an event, to be transformed like any received one.
    pub fn event(&self) -> Event<'_> {
        Event::new(self.timestamp_ns, &self.record)
    }
}

/// When lines are shipped before they are whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialLimits {
    /// Most bytes of text a line is joined to; the rest of a longer line is skipped.
    pub max_bytes: usize,
    /// How long a line waits for its next fragment.
    pub timeout: Duration,
}

/// The lines of one connection that are being joined.
#[derive(Debug)]
pub struct PartialAssembler {
    limits: PartialLimits,
    /// Open lines by `partial_id`.
    open: HashMap<Box<[u8]>, OpenLine>,
}

/// A line whose last fragment has not arrived yet.
#[derive(Debug)]
struct OpenLine {
    /// When its latest fragment arrived; it times out `timeout` later.
    last_arrival: Instant,
    /// When its first fragment arrived, to pick the oldest line at the open-lines limit.
    first_arrival: Instant,
    /// The record of the fragment with the lowest ordinal so far: the joined record keeps its
    /// keys and time.
    template: Template,
    /// Each fragment's ordinal and text, in arrival order.
    parts: Vec<(u64, Vec<u8>)>,
    /// Bytes of text in `parts`.
    bytes: usize,
    /// The line was cut at the size limit and shipped; its remaining fragments are skipped.
    skipping: bool,
}

#[derive(Debug)]
struct Template {
    ordinal: u64,
    timestamp_ns: i64,
    record: Vec<u8>,
}

/// The parts of a fragment the assembler needs, borrowed from its record.
struct Fragment<'a> {
    id: &'a [u8],
    ordinal: u64,
    last: bool,
    text: &'a [u8],
}

impl PartialAssembler {
    /// An assembler with no open lines.
    pub fn new(limits: PartialLimits) -> Self {
        Self { limits, open: HashMap::new() }
    }

    /// Takes `event` if it is a fragment of a split line: returns true, and appends to `out`
    /// the lines it completes (or cuts, or pushes out). Returns false for a record that is not
    /// a fragment after all (no `partial_id`, say); it is then an ordinary record.
    ///
    /// A fragment whose ordinal was already taken replaces the earlier one, so a client that
    /// sends a request again does not double that part.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the record is not a well-formed map.
    pub fn add(
        &mut self,
        event: Event<'_>,
        now: Instant,
        out: &mut Vec<JoinedLine>,
    ) -> Result<bool, DecodeError> {
        let Some(fragment) = Fragment::parse(event.record)? else {
            return Ok(false);
        };
        if !self.open.contains_key(fragment.id) && self.open.len() >= MAX_OPEN_LINES {
            self.ship_oldest(out)?;
        }
        let line = self.open.entry(fragment.id.into()).or_insert_with(|| OpenLine {
            last_arrival: now,
            first_arrival: now,
            template: Template {
                ordinal: fragment.ordinal,
                timestamp_ns: event.timestamp_ns,
                record: event.record.to_vec(),
            },
            parts: Vec::new(),
            bytes: 0,
            skipping: false,
        });
        line.last_arrival = now;
        let outcome = if line.skipping {
            None
        } else if line.take(&fragment, event, self.limits.max_bytes) {
            Some(JoinOutcome::TooLarge)
        } else if fragment.last {
            Some(JoinOutcome::Whole)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            out.push(line.join(outcome)?);
            line.skipping = true;
        }
        if fragment.last {
            self.open.remove(fragment.id);
        }
        Ok(true)
    }

    /// When the next open line times out, if any is open.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.limits.timeout;
        self.open.values().map(|line| line.last_arrival + timeout).min()
    }

    /// Ships every line that has waited `timeout` for its next fragment, as far as it got.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when a held record is not a well-formed map, which [`Self::add`] has
    /// already ruled out.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<JoinedLine>) -> Result<(), DecodeError> {
        let timeout = self.limits.timeout;
        let expired: Vec<Box<[u8]>> = self
            .open
            .iter()
            .filter(|(_, line)| line.last_arrival + timeout <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(line) = self.open.remove(&id) {
                line.ship(JoinOutcome::Timeout, out)?;
            }
        }
        Ok(())
    }

    /// Ships every open line as far as it got, for a connection that is closing.
    ///
    /// # Errors
    ///
    /// As [`Self::expire`].
    pub fn close(&mut self, out: &mut Vec<JoinedLine>) -> Result<(), DecodeError> {
        let mut lines: Vec<OpenLine> = self.open.drain().map(|(_, line)| line).collect();
        lines.sort_by_key(|line| line.first_arrival);
        for line in lines {
            line.ship(JoinOutcome::Closed, out)?;
        }
        Ok(())
    }

    /// Whether any line is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn ship_oldest(&mut self, out: &mut Vec<JoinedLine>) -> Result<(), DecodeError> {
        let oldest = self.open.iter().min_by_key(|(_, line)| line.first_arrival);
        let Some(id) = oldest.map(|(id, _)| id.clone()) else {
            return Ok(());
        };
        match self.open.remove(&id) {
            Some(line) => line.ship(JoinOutcome::TooMany, out),
            None => Ok(()),
        }
    }
}

impl OpenLine {
    /// Adds the fragment's text, cut so that the line stays within `max_bytes`. Returns whether
    /// it had to be cut.
    fn take(&mut self, fragment: &Fragment<'_>, event: Event<'_>, max_bytes: usize) -> bool {
        if fragment.ordinal < self.template.ordinal {
            self.template = Template {
                ordinal: fragment.ordinal,
                timestamp_ns: event.timestamp_ns,
                record: event.record.to_vec(),
            };
        }
        if let Some(index) = self.parts.iter().position(|(ordinal, _)| *ordinal == fragment.ordinal)
        {
            let (_, replaced) = self.parts.remove(index);
            self.bytes -= replaced.len();
        }
        let room = max_bytes.saturating_sub(self.bytes);
        let text = cut_at_char_boundary(fragment.text, room);
        self.bytes += text.len();
        self.parts.push((fragment.ordinal, text.to_vec()));
        text.len() < fragment.text.len()
    }

    /// Ships the line unless it was already shipped at the size limit.
    fn ship(mut self, outcome: JoinOutcome, out: &mut Vec<JoinedLine>) -> Result<(), DecodeError> {
        if !self.skipping {
            out.push(self.join(outcome)?);
        }
        Ok(())
    }

    /// The joined record: the template's keys without the partial ones, and the parts' text in
    /// ordinal order as `log`.
    fn join(&mut self, outcome: JoinOutcome) -> Result<JoinedLine, DecodeError> {
        self.parts.sort_by_key(|(ordinal, _)| *ordinal);
        let text_len: usize = self.parts.iter().map(|(_, text)| text.len()).sum();
        let template = &self.template.record;

        let mut kept: Vec<&[u8]> = Vec::new();
        let mut reader = Reader::new(template);
        let Value::Map(pairs) = reader.read()? else {
            return Err(DecodeError::RecordNotMap { found: "not a map" });
        };
        for _ in 0..pairs {
            let start = template.len() - reader.remaining().len();
            let key = key_name(reader.read_raw()?);
            reader.read_raw()?;
            let end = template.len() - reader.remaining().len();
            if !key.is_some_and(|key| is_partial_key(key) || key == LOG_KEY) {
                kept.push(&template[start..end]);
            }
        }

        let mut record = Vec::with_capacity(template.len() + text_len + 8);
        write_map_len(&mut record, kept.len() + 1);
        for pair in kept {
            record.extend_from_slice(pair);
        }
        write_str(&mut record, LOG_KEY);
        write_str_len(&mut record, text_len);
        for (_, text) in &self.parts {
            record.extend_from_slice(text);
        }
        self.parts.clear();
        Ok(JoinedLine { timestamp_ns: self.template.timestamp_ns, record, outcome })
    }
}

impl<'a> Fragment<'a> {
    /// The fragment in `record`, or `None` when it does not say `partial_message = "true"` or
    /// lacks a `partial_id`. A missing ordinal sorts last; a missing `partial_last` means more
    /// is to come.
    fn parse(record: &'a [u8]) -> Result<Option<Self>, DecodeError> {
        let mut reader = Reader::new(record);
        let Value::Map(pairs) = reader.read()? else {
            return Err(DecodeError::RecordNotMap { found: "not a map" });
        };
        let (mut partial, mut id, mut ordinal, mut last, mut text) =
            (false, None, None, false, None);
        for _ in 0..pairs {
            let key = key_name(reader.read_raw()?);
            let value = Reader::new(reader.read_raw()?).read()?;
            let Some(key) = key else {
                continue;
            };
            match (key, value) {
                (b"partial_message", value) => partial = is_true(value),
                (b"partial_id", Value::Str(bytes) | Value::Bin(bytes)) => id = Some(bytes),
                (b"partial_ordinal", Value::UInt(number)) => ordinal = Some(number),
                (b"partial_ordinal", Value::Str(digits)) => {
                    ordinal = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok());
                }
                (b"partial_last", value) => last = is_true(value),
                (b"log", Value::Str(bytes) | Value::Bin(bytes)) => text = Some(bytes),
                _ => {}
            }
        }
        Ok(match (partial, id) {
            (true, Some(id)) => Some(Fragment {
                id,
                ordinal: ordinal.unwrap_or(u64::MAX),
                last,
                text: text.unwrap_or_default(),
            }),
            _ => None,
        })
    }
}

/// The bytes of a string or binary key.
fn key_name(raw_key: &[u8]) -> Option<&[u8]> {
    match Reader::new(raw_key).read() {
        Ok(Value::Str(name) | Value::Bin(name)) => Some(name),
        _ => None,
    }
}

fn is_partial_key(key: &[u8]) -> bool {
    [PARTIAL_MESSAGE, PARTIAL_ID, PARTIAL_ORDINAL, PARTIAL_LAST]
        .iter()
        .any(|partial| partial.as_bytes() == key)
}

/// Docker writes `"true"`; a boolean is taken too.
fn is_true(value: Value<'_>) -> bool {
    matches!(value, Value::Str(b"true") | Value::Bool(true))
}

/// The longest prefix of `text` of at most `max` bytes that does not end inside a UTF-8
/// character (when the text is UTF-8 at that point).
fn cut_at_char_boundary(text: &[u8], max: usize) -> &[u8] {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    // Step back over continuation bytes (10xxxxxx) to the start of the character cut in two.
    while end > 0 && text[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    &text[..end]
}

fn write_map_len(out: &mut Vec<u8>, len: usize) {
    rmp::encode::write_map_len(out, len as u32).expect("writing to a Vec cannot fail");
}

fn write_str_len(out: &mut Vec<u8>, len: usize) {
    rmp::encode::write_str_len(out, len as u32).expect("writing to a Vec cannot fail");
}

fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    write_str_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
#[path = "partial_tests.rs"]
mod tests;
