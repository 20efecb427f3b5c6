//! Turning a forward event into a Loki entry: which keys are dropped, which become labels,
//! structured metadata or the tenant, and how the rest is rendered as the line. Docker's split
//! lines are joined first, by [`partial::PartialAssembler`].

pub mod label_map;
pub mod line;
pub mod partial;
pub mod render;
pub mod streams;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use tracing::warn;

use crate::config::{LineFormat, LokiConfig, OversizedLines};
use crate::forward::decode::{DecodeError, Event};
use crate::loki::labels::{StreamLabels, sanitize_name};
use crate::loki::tenant::is_valid_tenant_id;
use crate::msgpack::{Reader, Value};
pub use line::Line;
use line::LineArena;
use partial::{PARTIAL_ID, PARTIAL_LAST, PARTIAL_MESSAGE, PARTIAL_ORDINAL, PartialLimits};
use render::{utf8_lossy, write_json, write_json_key, write_logfmt_value, write_plain};
use streams::{Admission, OVERFLOW_LABEL, StreamRegistry};

/// One log line on its way to Loki.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream's labels, tenant and structured metadata, shared by every entry of the
    /// stream.
    pub stream: Arc<StreamLabels>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The log line.
    pub line: Line,
}

/// Bytes counted for an entry besides its line, so that buffer limits track real memory: the
/// entry in its connection's group, then its timestamp and line handle in a batch's stream,
/// whose vector may be up to twice the size of what it holds.
pub const ENTRY_OVERHEAD_BYTES: usize =
    std::mem::size_of::<Entry>() + 2 * std::mem::size_of::<(i64, Line)>();

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
    /// The value fills this slot of the stream key (see `Transform::slots`) and leaves the
    /// line.
    Slot(usize),
    /// Docker's `partial_message`: `"true"` marks a part of a split line. Dropped.
    PartialMarker,
}

/// Where a value of the stream key goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// The label of this (valid) name.
    Label(String),
    /// The structured metadata of this (valid) name.
    StructuredMetadata(String),
    /// The tenant, if Loki accepts the value as one.
    Tenant,
}

/// The record-to-entry rules, built once from the configuration.
#[derive(Debug, Clone)]
pub struct Transform {
    /// Keys with a role; all others stay in the line. Configurations name a handful of keys, so
    /// a linear search beats hashing.
    roles: Vec<(Box<[u8]>, KeyRole)>,
    /// The lengths of the role keys, see [`length_bit`]: most record keys have no role, and
    /// most of those are turned away by their length alone.
    role_key_lengths: u64,
    /// The values that pick an entry's stream, in stream-key order: labels from `label_map`,
    /// labels from `label_keys` (later, so that they win over a mapped label of the same
    /// name), structured metadata, the tenant. The default configuration has one.
    slots: Vec<Slot>,
    /// `label_map`'s record paths and the slot each fills.
    label_paths: Vec<(Box<[u8]>, usize)>,
    /// Whether Docker's split lines are joined, and their limits.
    partials: Option<PartialLimits>,
    static_labels: Vec<(String, String)>,
    line_format: LineFormat,
    line_key: Box<[u8]>,
    drop_single_key: bool,
    max_line_bytes: usize,
    oversized_lines: OversizedLines,
    /// The streams in use, up to `max_streams`, shared by every clone.
    registry: Arc<StreamRegistry>,
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

/// What [`Transform::entry_or_fragment`] made of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// An entry, ready to go.
    Entry(Entry),
    /// A part of a line Docker split, for the connection's
    /// [`PartialAssembler`](partial::PartialAssembler).
    Fragment,
}

/// Per-connection working memory, reused for every event to avoid allocations.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Byte ranges in the record of the keys and values that stay in the line.
    kept: Vec<(Range<usize>, Range<usize>)>,
    /// Byte range in the record of each slot's value, if present.
    slot_values: Vec<Option<Range<usize>>>,
    /// Whether the record says it is part of a split line.
    fragment: bool,
    /// The slot values of the current record, length-prefixed, as the stream cache's key.
    stream_key: Vec<u8>,
    /// Label sets already built, by `stream_key`. A connection from Docker carries one
    /// container, so this nearly always holds a single stream.
    streams: HashMap<Box<[u8]>, Arc<StreamLabels>>,
    /// The stream of the previous record and its `stream_key`: consecutive records nearly
    /// always share it, and comparing the key is cheaper than hashing it.
    last_stream: Option<(Vec<u8>, Arc<StreamLabels>)>,
    /// Where a line is rendered before it moves to the arena.
    rendered: Vec<u8>,
    /// Where the connection's lines are kept.
    lines: LineArena,
}

/// Most label sets one connection remembers; beyond it the cache starts over.
const STREAM_CACHE_LIMIT: usize = 1024;

impl Transform {
    /// Builds the rules from the `[loki]` section.
    ///
    /// A key has one role, the first of: label key, structured metadata key, tenant key,
    /// Docker's partial marker, removed key. So `structured_metadata_keys` wins over
    /// `remove_keys`; `label_map` reads the record whatever the roles.
    pub fn new(config: &LokiConfig) -> Self {
        let mut slots: Vec<Slot> = Vec::new();
        let mut label_paths: Vec<(Box<[u8]>, usize)> = Vec::new();
        for (path, name) in &config.label_map {
            label_paths.push((path.as_bytes().into(), slots.len()));
            slots.push(Slot::Label(name.clone()));
        }
        let mut keys: Vec<(&str, KeyRole)> = Vec::new();
        for key in &config.label_keys {
            keys.push((key, KeyRole::Slot(slots.len())));
            slots.push(Slot::Label(sanitize_name(key)));
        }
        for key in &config.structured_metadata_keys {
            keys.push((key, KeyRole::Slot(slots.len())));
            slots.push(Slot::StructuredMetadata(sanitize_name(key)));
        }
        if let Some(key) = &config.tenant_key {
            keys.push((key, KeyRole::Slot(slots.len())));
            slots.push(Slot::Tenant);
        }
        if config.reassemble_partials {
            keys.push((PARTIAL_MESSAGE, KeyRole::PartialMarker));
            for key in [PARTIAL_ID, PARTIAL_ORDINAL, PARTIAL_LAST] {
                keys.push((key, KeyRole::Remove));
            }
        }
        keys.extend(config.remove_keys.iter().map(|key| (key.as_str(), KeyRole::Remove)));
        let mut roles: Vec<(Box<[u8]>, KeyRole)> = Vec::new();
        for (key, role) in keys {
            if !roles.iter().any(|(existing, _)| **existing == *key.as_bytes()) {
                roles.push((key.as_bytes().into(), role));
            }
        }
        // Each key is unique by now, so the order only sets the cost of the lookup: Docker's
        // partial keys, rare, go last.
        roles.sort_by_key(|(key, _)| key.starts_with(b"partial_"));
        let partials = config.reassemble_partials.then(|| PartialLimits {
            max_bytes: usize::try_from(config.max_partial_bytes).unwrap_or(usize::MAX),
            timeout: config.partial_timeout,
        });
        Self {
            role_key_lengths: roles.iter().fold(0, |lengths, (key, _)| lengths | length_bit(key)),
            roles,
            slots,
            label_paths,
            partials,
            static_labels: config.labels.clone().into_iter().collect(),
            line_format: config.line_format,
            line_key: config.line_key.as_bytes().into(),
            drop_single_key: config.drop_single_key,
            max_line_bytes: usize::try_from(config.max_line_bytes).unwrap_or(usize::MAX),
            oversized_lines: config.oversized_lines,
            registry: Arc::new(StreamRegistry::new(config.max_streams, overflow_labels(config))),
        }
    }

    /// Counts entries sent to the overflow stream in `counter`.
    ///
    /// # Panics
    ///
    /// When called on a clone: the counter is set up before the transform is shared.
    pub fn count_overflow_in(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Arc::get_mut(&mut self.registry)
            .expect("the counter is set before the transform is cloned")
            .count_overflow_in(counter);
        self
    }

    /// Applies `max_line_bytes` to the entry's line.
    pub fn limit_line(&self, entry: &mut Entry) -> LineLimit {
        if entry.line.len() <= self.max_line_bytes {
            return LineLimit::Fits;
        }
        match self.oversized_lines {
            OversizedLines::Drop => LineLimit::Drop,
            OversizedLines::Truncate => {
                entry.line.truncate(self.max_line_bytes);
                LineLimit::Truncated
            }
        }
    }

    /// The limits of joining Docker's split lines, or `None` when they are not joined.
    pub fn partial_limits(&self) -> Option<PartialLimits> {
        self.partials
    }

    /// Turns one event into an entry. A part of a split line is turned into an entry of its
    /// own (without the partial keys, when lines are joined).
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the record is not a well-formed map.
    pub fn entry(&self, event: Event<'_>, scratch: &mut Scratch) -> Result<Entry, DecodeError> {
        self.sort_fields(&event, scratch)?;
        self.finish_entry(event, scratch)
    }

    /// Turns one event into an entry, or says that it is part of a line Docker split (only
    /// when such lines are joined).
    ///
    /// # Errors
    ///
    /// As [`Self::entry`].
    pub fn entry_or_fragment(
        &self,
        event: Event<'_>,
        scratch: &mut Scratch,
    ) -> Result<Transformed, DecodeError> {
        self.sort_fields(&event, scratch)?;
        if scratch.fragment {
            return Ok(Transformed::Fragment);
        }
        self.finish_entry(event, scratch).map(Transformed::Entry)
    }

    /// The entry of an event whose fields [`Self::sort_fields`] has sorted.
    fn finish_entry(&self, event: Event<'_>, scratch: &mut Scratch) -> Result<Entry, DecodeError> {
        let record = event.record;
        let stream = self.stream(record, scratch)?;
        let plain = self.plain_value(record, &scratch.kept);
        let line = match plain.map(|raw| (raw, Reader::new(raw).read())) {
            // The common case, a Docker record's `log`: its text goes straight to the arena.
            Some((_, Ok(Value::Str(text) | Value::Bin(text)))) => {
                scratch.lines.line(utf8_lossy(text).as_bytes())
            }
            Some((raw, _)) => {
                scratch.rendered.clear();
                write_plain(raw, &mut scratch.rendered)?;
                scratch.lines.line(&scratch.rendered)
            }
            None => {
                scratch.rendered.clear();
                self.render_fields(record, &scratch.kept, &mut scratch.rendered)?;
                scratch.lines.line(&scratch.rendered)
            }
        };
        Ok(Entry { stream, timestamp_ns: event.timestamp_ns, line })
    }

    /// Fills `scratch.kept`, `scratch.slot_values` and `scratch.fragment` from the record,
    /// following its layout when the decoder noted one.
    fn sort_fields(&self, event: &Event<'_>, scratch: &mut Scratch) -> Result<(), DecodeError> {
        scratch.kept.clear();
        scratch.slot_values.clear();
        scratch.slot_values.resize(self.slots.len(), None);
        scratch.fragment = false;

        let record = event.record;
        match &event.layout {
            Some(layout) => {
                for pair in layout.pairs() {
                    let name = pair.name.map(|name| &record[name]);
                    self.sort_field(record, name, pair.key, pair.value, scratch)?;
                }
            }
            None => self.walk_fields(record, scratch)?,
        }
        for (path, index) in &self.label_paths {
            scratch.slot_values[*index] = label_map::find(record, path)?;
        }
        Ok(())
    }

    /// [`Self::sort_fields`] for a record without a layout: finds its pairs first.
    fn walk_fields(&self, record: &[u8], scratch: &mut Scratch) -> Result<(), DecodeError> {
        let mut reader = Reader::new(record);
        let Value::Map(pairs) = reader.read()? else {
            return Err(DecodeError::RecordNotMap { found: "not a map" });
        };
        let offset = |reader: &Reader<'_>| record.len() - reader.remaining().len();
        for _ in 0..pairs {
            let key_start = offset(&reader);
            // Keys are nearly always strings: read them once, as values, not as raw bytes
            // to be decoded again.
            let mut after_key = reader.clone();
            let name = match after_key.read()? {
                Value::Str(name) | Value::Bin(name) => {
                    reader = after_key;
                    Some(name)
                }
                _ => {
                    reader.read_raw()?;
                    None
                }
            };
            let value_start = offset(&reader);
            reader.read_raw()?;
            let value_range = value_start..offset(&reader);
            self.sort_field(record, name, key_start..value_start, value_range, scratch)?;
        }
        Ok(())
    }

    /// Sorts one pair of the record by the role of its key, `name` when it is text.
    #[inline(always)]
    fn sort_field(
        &self,
        record: &[u8],
        name: Option<&[u8]>,
        key_range: Range<usize>,
        value_range: Range<usize>,
        scratch: &mut Scratch,
    ) -> Result<(), DecodeError> {
        match name.and_then(|name| self.role_of(name)) {
            Some(KeyRole::Remove) => {}
            Some(KeyRole::Slot(index)) => scratch.slot_values[index] = Some(value_range),
            Some(KeyRole::PartialMarker) => {
                let marker = Reader::new(&record[value_range]).read()?;
                scratch.fragment = matches!(marker, Value::Str(b"true") | Value::Bool(true));
            }
            None => scratch.kept.push((key_range, value_range)),
        }
        Ok(())
    }

    /// The role of the key named `name`, if it has one.
    #[inline(always)]
    fn role_of(&self, name: &[u8]) -> Option<KeyRole> {
        if self.role_key_lengths & length_bit(name) == 0 {
            return None;
        }
        self.roles.iter().find(|(role_key, _)| **role_key == *name).map(|(_, role)| *role)
    }

    /// The interned label set for the record's label values.
    fn stream(
        &self,
        record: &[u8],
        scratch: &mut Scratch,
    ) -> Result<Arc<StreamLabels>, DecodeError> {
        scratch.stream_key.clear();
        for value in &scratch.slot_values {
            match value.clone().map(|range| &record[range]) {
                // A nil value adds no label, like a missing key.
                // The raw msgpack is the key: comparing it needs no decoding. The same text
                // written another way (str8 instead of fixstr) only costs another cache entry;
                // both get the one label set the registry holds for it.
                Some(raw) if raw != [0xc0] => {
                    scratch.stream_key.push(1);
                    scratch.stream_key.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                    scratch.stream_key.extend_from_slice(raw);
                }
                _ => scratch.stream_key.push(0),
            }
        }
        if let Some((key, stream)) = &scratch.last_stream {
            if *key == scratch.stream_key {
                return Ok(Arc::clone(stream));
            }
        }
        if let Some(stream) = scratch.streams.get(scratch.stream_key.as_slice()) {
            let stream = Arc::clone(stream);
            scratch.last_stream = Some((scratch.stream_key.clone(), Arc::clone(&stream)));
            return Ok(stream);
        }

        let labels = self.build_labels(&scratch.stream_key)?;
        let tenant = labels.tenant().cloned();
        let metadata: Vec<(String, String)> = labels
            .structured_metadata()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let stream = match self.registry.admit(labels) {
            Admission::Admitted(stream) => stream,
            // Not cached, so that the stream is let in as soon as there is room.
            Admission::Overflow(overflow) => return Ok(keep_details(overflow, tenant, metadata)),
        };
        if scratch.streams.len() >= STREAM_CACHE_LIMIT {
            scratch.streams.clear();
        }
        scratch.streams.insert(scratch.stream_key.as_slice().into(), Arc::clone(&stream));
        scratch.last_stream = Some((scratch.stream_key.clone(), Arc::clone(&stream)));
        Ok(stream)
    }

    /// Builds a label set, with its tenant and structured metadata, from the static labels and
    /// a stream key made by [`Self::stream`].
    fn build_labels(&self, mut stream_key: &[u8]) -> Result<StreamLabels, DecodeError> {
        let mut dynamic = Vec::new();
        let mut metadata = Vec::new();
        let mut tenant = None;
        for slot in &self.slots {
            let (present, rest) = stream_key.split_first().expect("one byte per slot");
            stream_key = rest;
            if *present == 1 {
                let (len, rest) = stream_key.split_at(4);
                let len = u32::from_le_bytes(len.try_into().expect("four bytes")) as usize;
                let (raw, rest) = rest.split_at(len);
                stream_key = rest;
                let mut text = Vec::new();
                write_plain(raw, &mut text)?;
                let value = String::from_utf8(text).expect("rendered values are UTF-8");
                match slot {
                    Slot::Label(name) => dynamic.push((name.as_str(), value)),
                    Slot::StructuredMetadata(name) => metadata.push((name.as_str(), value)),
                    Slot::Tenant if is_valid_tenant_id(&value) => tenant = Some(value.into()),
                    Slot::Tenant => {
                        warn!(tenant = %value, "record tenant is not a valid Loki tenant id; using the default tenant");
                    }
                }
            }
        }
        let fixed = self.static_labels.iter().map(|(name, value)| (name.as_str(), value.clone()));
        // Values taken from the record come last, so they win over a static label of the
        // same name.
        Ok(StreamLabels::new(fixed.chain(dynamic))
            .with_tenant(tenant)
            .with_structured_metadata(metadata))
    }

    /// Renders the fields that stay in the line into `line`, as UTF-8, when the line is not
    /// one plain value (see [`Self::plain_value`]).
    fn render_fields(
        &self,
        record: &[u8],
        kept: &[(Range<usize>, Range<usize>)],
        line: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let fields = kept.iter().map(|(key, value)| (&record[key.clone()], &record[value.clone()]));
        match self.line_format {
            // Without the line key, nothing of the record is lost: ship it as JSON.
            LineFormat::Raw | LineFormat::Json => write_object(fields, line)?,
            LineFormat::KeyValue => {
                for (index, (key, value)) in fields.enumerate() {
                    if index > 0 {
                        line.push(b' ');
                    }
                    write_plain(key, line)?;
                    line.push(b'=');
                    write_logfmt_value(value, line)?;
                }
            }
        }
        Ok(())
    }

    /// The raw value whose plain text is the whole line, when the line is one value: the line
    /// key's in the raw format, the one field left when `drop_single_key` is on.
    fn plain_value<'r>(
        &self,
        record: &'r [u8],
        kept: &[(Range<usize>, Range<usize>)],
    ) -> Option<&'r [u8]> {
        let value = match (self.line_format, kept) {
            (LineFormat::Raw, _) => {
                let (_, value) =
                    kept.iter().find(|(key, _)| self.is_line_key(&record[key.clone()]))?;
                value
            }
            (_, [(_, value)]) if self.drop_single_key => value,
            _ => return None,
        };
        Some(&record[value.clone()])
    }

    fn is_line_key(&self, key: &[u8]) -> bool {
        matches!(Reader::new(key).read(), Ok(Value::Str(name) | Value::Bin(name)) if *name == *self.line_key)
    }
}

/// A bit standing for the length of `key`: bit n for n bytes, bit 63 for 63 bytes or more.
fn length_bit(key: &[u8]) -> u64 {
    1 << key.len().min(63)
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
mod routing_tests;
#[cfg(test)]
mod tests;

/// The overflow stream for an entry of `tenant` with `metadata`: past the stream limit an entry
/// loses its labels, but it still goes to its own tenant, with its structured metadata.
fn keep_details(
    overflow: Arc<StreamLabels>,
    tenant: Option<Arc<str>>,
    metadata: Vec<(String, String)>,
) -> Arc<StreamLabels> {
    if tenant.is_none() && metadata.is_empty() {
        return overflow;
    }
    Arc::new((*overflow).clone().with_tenant(tenant).with_structured_metadata(metadata))
}

/// The overflow stream's labels: the static labels and the overflow marker.
fn overflow_labels(config: &LokiConfig) -> StreamLabels {
    let fixed = config.labels.iter().map(|(name, value)| (name.as_str(), value.as_str()));
    StreamLabels::new(fixed.chain([OVERFLOW_LABEL]))
}
