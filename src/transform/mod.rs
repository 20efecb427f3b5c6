//! Turning a forward event into a Loki entry: which keys are dropped, which become labels, and
//! how the rest is rendered as the line.

pub mod render;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::config::{LineFormat, LokiConfig, OversizedLines};
use crate::forward::decode::{DecodeError, Event};
use crate::loki::labels::{StreamLabels, sanitize_name};
use crate::msgpack::{Reader, Value};
use render::{write_json, write_json_key, write_logfmt_value, write_plain};

/// One log line on its way to Loki.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream's labels, shared by every entry of the stream.
    pub stream: Arc<StreamLabels>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The log line.
    pub line: String,
}

/// Bytes counted for an entry besides its line, so that buffer limits track real memory.
pub const ENTRY_OVERHEAD_BYTES: usize = std::mem::size_of::<Entry>() + 16;

impl Entry {
    /// The memory the entry is charged for in buffers.
    pub fn charged_bytes(&self) -> usize {
        self.line.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// What the transform does with a record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRole {
    /// Dropped.
    Remove,
    /// The value becomes the label at this index of `label_names`.
    Label(usize),
}

/// The record-to-entry rules, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Transform {
    /// Keys with a role; all others stay in the line. Configurations name a handful of keys, so
    /// a linear search beats hashing.
    roles: Vec<(Box<[u8]>, KeyRole)>,
    /// Valid label names for the label keys, by index.
    label_names: Vec<String>,
    static_labels: Vec<(String, String)>,
    line_format: LineFormat,
    line_key: Box<[u8]>,
    drop_single_key: bool,
    max_line_bytes: usize,
    oversized_lines: OversizedLines,
}

/// What the line-length limit did to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLimit {
    /// The line fits.
    Fits,
    /// The line was cut to the limit.
    Truncated,
    /// The entry must be dropped.
    Drop,
}

/// Per-connection working memory, reused for every event to avoid allocations.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Byte ranges in the record of the keys and values that stay in the line.
    kept: Vec<(Range<usize>, Range<usize>)>,
    /// Byte range in the record of each label key's value, if present.
    label_values: Vec<Option<Range<usize>>>,
    /// The label values of the current record, length-prefixed, as the stream cache's key.
    stream_key: Vec<u8>,
    /// Label sets already built, by `stream_key`. A connection from Docker carries one
    /// container, so this nearly always holds a single stream.
    streams: HashMap<Box<[u8]>, Arc<StreamLabels>>,
}

/// Most label sets one connection remembers; beyond it the cache starts over.
const STREAM_CACHE_LIMIT: usize = 1024;

impl Transform {
    /// Builds the rules from the `[loki]` section.
    pub fn new(config: &LokiConfig) -> Self {
        let mut roles: Vec<(Box<[u8]>, KeyRole)> = Vec::new();
        for (index, key) in config.label_keys.iter().enumerate() {
            roles.push((key.as_bytes().into(), KeyRole::Label(index)));
        }
        for key in &config.remove_keys {
            if !roles.iter().any(|(existing, _)| **existing == *key.as_bytes()) {
                roles.push((key.as_bytes().into(), KeyRole::Remove));
            }
        }
        Self {
            roles,
            label_names: config.label_keys.iter().map(|key| sanitize_name(key)).collect(),
            static_labels: config.labels.clone().into_iter().collect(),
            line_format: config.line_format,
            line_key: config.line_key.as_bytes().into(),
            drop_single_key: config.drop_single_key,
            max_line_bytes: usize::try_from(config.max_line_bytes).unwrap_or(usize::MAX),
            oversized_lines: config.oversized_lines,
        }
    }

    /// Applies `max_line_bytes` to the entry's line.
    pub fn limit_line(&self, entry: &mut Entry) -> LineLimit {
        if entry.line.len() <= self.max_line_bytes {
            return LineLimit::Fits;
        }
        match self.oversized_lines {
            OversizedLines::Drop => LineLimit::Drop,
            OversizedLines::Truncate => {
                let mut end = self.max_line_bytes;
                while !entry.line.is_char_boundary(end) {
                    end -= 1;
                }
                entry.line.truncate(end);
                LineLimit::Truncated
            }
        }
    }

    /// Turns one event into an entry.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the record is not a well-formed map.
    pub fn entry(&self, event: Event<'_>, scratch: &mut Scratch) -> Result<Entry, DecodeError> {
        let record = event.record;
        self.sort_fields(record, scratch)?;
        let stream = self.stream(record, scratch)?;
        let line = self.render_line(record, &scratch.kept)?;
        Ok(Entry { stream, timestamp_ns: event.timestamp_ns, line })
    }

    /// Fills `scratch.kept` and `scratch.label_values` from the record's keys.
    fn sort_fields(&self, record: &[u8], scratch: &mut Scratch) -> Result<(), DecodeError> {
        scratch.kept.clear();
        scratch.label_values.clear();
        scratch.label_values.resize(self.label_names.len(), None);

        let mut reader = Reader::new(record);
        let Value::Map(pairs) = reader.read()? else {
            return Err(DecodeError::RecordNotMap { found: "not a map" });
        };
        let offset = |reader: &Reader<'_>| record.len() - reader.remaining().len();
        for _ in 0..pairs {
            let key_start = offset(&reader);
            let key = reader.read_raw()?;
            let value_start = offset(&reader);
            reader.read_raw()?;
            let key_range = key_start..value_start;
            let value_range = value_start..offset(&reader);

            match self.role_of(key) {
                Some(KeyRole::Remove) => {}
                Some(KeyRole::Label(index)) => scratch.label_values[index] = Some(value_range),
                None => scratch.kept.push((key_range, value_range)),
            }
        }
        Ok(())
    }

    /// The role of the raw msgpack key `key`, if it is a string or binary with one.
    fn role_of(&self, key: &[u8]) -> Option<KeyRole> {
        let Ok(Value::Str(name) | Value::Bin(name)) = Reader::new(key).read() else {
            return None;
        };
        self.roles.iter().find(|(role_key, _)| **role_key == *name).map(|(_, role)| *role)
    }

    /// The interned label set for the record's label values.
    fn stream(
        &self,
        record: &[u8],
        scratch: &mut Scratch,
    ) -> Result<Arc<StreamLabels>, DecodeError> {
        scratch.stream_key.clear();
        for value in &scratch.label_values {
            match value.clone().map(|range| &record[range]) {
                // A nil value adds no label, like a missing key.
                Some(raw) if raw != [0xc0] => {
                    let start = scratch.stream_key.len();
                    scratch.stream_key.extend_from_slice(&[1, 0, 0, 0, 0]);
                    write_plain(raw, &mut scratch.stream_key)?;
                    let len = (scratch.stream_key.len() - start - 5) as u32;
                    scratch.stream_key[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
                }
                _ => scratch.stream_key.push(0),
            }
        }
        if let Some(stream) = scratch.streams.get(scratch.stream_key.as_slice()) {
            return Ok(Arc::clone(stream));
        }

        let stream = Arc::new(self.build_labels(&scratch.stream_key));
        if scratch.streams.len() >= STREAM_CACHE_LIMIT {
            scratch.streams.clear();
        }
        scratch.streams.insert(scratch.stream_key.as_slice().into(), Arc::clone(&stream));
        Ok(stream)
    }

    /// Builds a label set from the static labels and a stream key made by [`Self::stream`].
    fn build_labels(&self, mut stream_key: &[u8]) -> StreamLabels {
        let mut dynamic = Vec::new();
        for name in &self.label_names {
            let (present, rest) = stream_key.split_first().expect("one byte per label key");
            stream_key = rest;
            if *present == 1 {
                let (len, rest) = stream_key.split_at(4);
                let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
                let (value, rest) = rest.split_at(len);
                stream_key = rest;
                dynamic.push((name.as_str(), String::from_utf8_lossy(value).into_owned()));
            }
        }
        let fixed = self.static_labels.iter().map(|(name, value)| (name.as_str(), value.clone()));
        // Values taken from the record come last, so they win over a static label of the
        // same name.
        StreamLabels::new(fixed.chain(dynamic))
    }

    /// Renders the fields that stay in the line.
    fn render_line(
        &self,
        record: &[u8],
        kept: &[(Range<usize>, Range<usize>)],
    ) -> Result<String, DecodeError> {
        let fields = kept.iter().map(|(key, value)| (&record[key.clone()], &record[value.clone()]));
        let line_bytes: usize = kept.iter().map(|(key, value)| key.len() + value.len() + 4).sum();
        let mut line = Vec::with_capacity(line_bytes);

        match (self.line_format, kept) {
            (LineFormat::Raw, _) => match fields.clone().find(|(key, _)| self.is_line_key(key)) {
                Some((_, value)) => write_plain(value, &mut line)?,
                // Without the line key, nothing of the record is lost: ship it as JSON.
                None => write_object(fields, &mut line)?,
            },
            (_, [(_, value)]) if self.drop_single_key => {
                write_plain(&record[value.clone()], &mut line)?
            }
            (LineFormat::Json, _) => write_object(fields, &mut line)?,
            (LineFormat::KeyValue, _) => {
                for (index, (key, value)) in fields.enumerate() {
                    if index > 0 {
                        line.push(b' ');
                    }
                    write_plain(key, &mut line)?;
                    line.push(b'=');
                    write_logfmt_value(value, &mut line)?;
                }
            }
        }
        Ok(String::from_utf8(line).expect("rendering produces UTF-8"))
    }

    fn is_line_key(&self, key: &[u8]) -> bool {
        matches!(Reader::new(key).read(), Ok(Value::Str(name) | Value::Bin(name)) if *name == *self.line_key)
    }
}

/// Writes key/value pairs as a JSON object.
fn write_object<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    out.push(b'{');
    for (index, (key, value)) in fields.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_json_key(key, out)?;
        out.push(b':');
        write_json(value, out)?;
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests;
