//! Where the keys and values of a small map lie, noted during the walk that finds the map's
//! end, so that whoever reads the map's fields next does not walk it a second time.
//!
//! A layout is small enough to travel by value with the map's bytes (about fifty bytes): it
//! keeps only where each value starts and ends, as 16-bit offsets, since each key starts where
//! the previous value ended.

use std::ops::Range;

/// Maps with more pairs get no layout; their readers walk them. A Docker record has four
/// keys, or seven when the line was split.
pub const MAX_LAID_OUT_PAIRS: usize = 8;

/// `text_header` of a key that is not a string or binary.
const NOT_TEXT: u8 = 0;

/// Where one pair ends, from the start of the map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PairEnds {
    /// Bytes of the key's header when the key is a string or binary, else [`NOT_TEXT`].
    text_header: u8,
    value_start: u16,
    value_end: u16,
}

/// One key/value pair of a map, as byte ranges from the start of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSpan {
    /// The key, header included.
    pub key: Range<usize>,
    /// The key's text without its header, when the key is a string or binary.
    pub name: Option<Range<usize>>,
    /// The value, header included.
    pub value: Range<usize>,
}

/// The pairs of a map of at most [`MAX_LAID_OUT_PAIRS`] pairs whose bytes fit in 64 KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapLayout {
    header_len: u8,
    len: u8,
    pairs: [PairEnds; MAX_LAID_OUT_PAIRS],
}

impl MapLayout {
    /// An empty layout for a map whose header takes `header_len` bytes (1, 3 or 5).
    pub(super) fn new(header_len: usize) -> Self {
        debug_assert!(header_len <= 5, "a map header is at most 5 bytes");
        Self { header_len: header_len as u8, ..Self::default() }
    }

    /// The pairs, in the order the map holds them.
    pub fn pairs(&self) -> impl Iterator<Item = PairSpan> + '_ {
        let ends = &self.pairs[..usize::from(self.len)];
        let mut key_start = usize::from(self.header_len);
        ends.iter().map(move |ends| {
            let value_start = usize::from(ends.value_start);
            let pair = PairSpan {
                key: key_start..value_start,
                name: (ends.text_header != NOT_TEXT)
                    .then(|| key_start + usize::from(ends.text_header)..value_start),
                value: value_start..usize::from(ends.value_end),
            };
            key_start = pair.value.end;
            pair
        })
    }

    /// Notes the next pair, whose key began where the last value ended, `text_header` being
    /// the key's header length when it is a string or binary; false, noting nothing, when the
    /// layout is full or the offsets do not fit in 16 bits.
    #[inline(always)]
    pub(super) fn push(&mut self, text_header: Option<usize>, value: Range<usize>) -> bool {
        // A string's or binary's header takes 1 to 5 bytes, never `NOT_TEXT`'s 0.
        let text_header = text_header.map_or(NOT_TEXT, |len| len as u8);
        let (Ok(value_start), Ok(value_end)) =
            (u16::try_from(value.start), u16::try_from(value.end))
        else {
            return false;
        };
        let Some(slot) = self.pairs.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = PairEnds { text_header, value_start, value_end };
        self.len += 1;
        true
    }
}
