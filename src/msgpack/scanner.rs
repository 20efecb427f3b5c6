//! Finding the end of a msgpack value in a byte stream without decoding it.

use super::{HeadError, read_head};

/// Why the bytes cannot be the start of a msgpack value within the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The value would be longer than the limit. Detected from length fields, so a peer that
    /// announces a huge value is refused before the bytes arrive.
    #[error("message larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The reserved marker byte 0xc1 was found.
    #[error("invalid msgpack: reserved marker 0xc1 at offset {offset}")]
    ReservedMarker {
        /// Offset of the byte from the start of the value.
        offset: usize,
    },
}

/// Finds the boundaries of consecutive msgpack values in a growing buffer.
///
/// The scanner keeps its place between calls, so feeding it a large value in small reads costs
/// time proportional to the markers, not to the number of reads times the value size.
#[derive(Debug, Clone)]
pub struct Scanner {
    /// Offset of the next marker to read in the current value.
    pos: usize,
    /// Values still to be read before the current value is complete; zero between values.
    pending: u64,
    /// Largest value accepted, in bytes.
    max_len: usize,
}

impl Scanner {
    /// A scanner that refuses values longer than `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self { pos: 0, pending: 0, max_len }
    }

    /// Whether a value is partly scanned: the next [`Self::scan`] goes on with it rather than
    /// starting at the beginning of the buffer.
    pub fn in_progress(&self) -> bool {
        self.pending > 0
    }

    /// The longest value accepted, in bytes.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Looks for the end of the value that starts at `buf[0]`.
    ///
    /// Returns `Ok(Some(len))` when `buf[..len]` holds one complete value, and `Ok(None)` when
    /// more bytes are needed. After `Some`, the caller removes those bytes and the scanner starts
    /// afresh on the next value. Between calls `buf` may only grow at its end.
    ///
    /// # Errors
    ///
    /// [`ScanError`] when the value is malformed or would exceed the limit; the stream cannot be
    /// resynchronised after that.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ScanError> {
        if self.pending == 0 {
            self.pos = 0;
            self.pending = 1;
        }
        while self.pending > 0 {
            let Some(rest) = buf.get(self.pos..) else {
                return Ok(None);
            };
            let head = match read_head(rest) {
                Ok(head) => head,
                Err(HeadError::Incomplete) => return Ok(None),
                Err(HeadError::ReservedMarker) => {
                    return Err(ScanError::ReservedMarker { offset: self.pos });
                }
            };
            let too_large = ScanError::TooLarge { limit: self.max_len };
            let end = self
                .pos
                .checked_add(head.header_len + head.payload_len)
                .filter(|&end| end <= self.max_len)
                .ok_or(too_large)?;
            self.pending = self.pending - 1 + head.children;
            // Each value still to come takes at least one byte, so a container announcing more
            // elements than the limit leaves room for is refused now.
            if self.pending > (self.max_len - end) as u64 {
                return Err(too_large);
            }
            self.pos = end;
        }
        if self.pos > buf.len() {
            // The last value's payload has not fully arrived yet.
            return Ok(None);
        }
        self.pending = 0;
        Ok(Some(self.pos))
    }
}

/// Length of the complete msgpack value at the start of `buf`, or `None` if it is truncated or
/// malformed.
pub fn value_len(buf: &[u8]) -> Option<usize> {
    Scanner::new(buf.len()).scan(buf).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec(value).expect("json values encode")
    }

    #[test]
    fn finds_end_of_each_value_at_every_split_point() {
        let values = [
            serde_json::json!(["tag", 1_700_000_000, {"log": "hello", "n": [1, 2.5, null]}, {}]),
            serde_json::json!(null),
            serde_json::json!({"a": {"b": {"c": "x".repeat(70_000)}}}),
            serde_json::json!([[], {}, "", -1, u64::MAX, i64::MIN]),
        ];
        for value in &values {
            let bytes = encode(value);
            for split in 0..bytes.len() {
                let mut scanner = Scanner::new(1 << 20);
                assert_eq!(scanner.scan(&bytes[..split]), Ok(None), "split at {split}");
                assert_eq!(scanner.scan(&bytes), Ok(Some(bytes.len())), "split at {split}");
            }
        }
    }

    #[test]
    fn stops_at_the_first_of_two_values() {
        let mut bytes = encode(&serde_json::json!(["a", 1]));
        let first = bytes.len();
        bytes.extend(encode(&serde_json::json!(["b", 2])));
        let mut scanner = Scanner::new(1024);
        assert_eq!(scanner.scan(&bytes), Ok(Some(first)));
        assert_eq!(scanner.scan(&bytes[first..]), Ok(Some(bytes.len() - first)));
    }

    #[test]
    fn refuses_announced_sizes_over_the_limit_before_the_bytes_arrive() {
        // bin32 announcing 1 GiB, followed by nothing.
        let huge_bin = [0xc6, 0x40, 0x00, 0x00, 0x00];
        assert_eq!(Scanner::new(1024).scan(&huge_bin), Err(ScanError::TooLarge { limit: 1024 }));
        // array32 announcing four billion elements.
        let huge_array = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(Scanner::new(1024).scan(&huge_array), Err(ScanError::TooLarge { limit: 1024 }));
    }

    #[test]
    fn deep_nesting_needs_no_recursion() {
        let mut bytes = vec![0x91; 100_000];
        bytes.push(0xc0);
        assert_eq!(Scanner::new(1 << 20).scan(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn reserved_marker_is_an_error() {
        assert_eq!(
            Scanner::new(64).scan(&[0x92, 0x01, 0xc1]),
            Err(ScanError::ReservedMarker { offset: 2 })
        );
    }
}
