//! Counting the entries of a Loki push body without building it: undo the snappy block, then
//! walk the protobuf fields of `PushRequest { streams: [{ labels, entries: [{ timestamp, line
//! }] }] }` and count the entries and the bytes of their lines.

use prost::encoding::decode_varint;

/// What one push carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Entries in all streams.
    pub entries: u64,
    /// Bytes of all lines.
    pub line_bytes: u64,
}

/// Why a body could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// The body is not a snappy block.
    #[error("body is not snappy-compressed: {0}")]
    Snappy(#[from] snap::Error),
    /// The decompressed body is not valid protobuf.
    #[error("body is not a protobuf PushRequest: {0}")]
    Protobuf(&'static str),
}

/// Decompresses and counts push bodies, reusing one buffer.
#[derive(Debug, Default)]
pub struct PushCounter {
    protobuf: Vec<u8>,
}

impl PushCounter {
    /// Counts the entries of one snappy-compressed protobuf `PushRequest`.
    ///
    /// # Errors
    ///
    /// [`CountError`] when the body is not one.
    pub fn count(&mut self, body: &[u8]) -> Result<PushCounts, CountError> {
        let len = snap::raw::decompress_len(body)?;
        self.protobuf.resize(len, 0);
        snap::raw::Decoder::new().decompress(body, &mut self.protobuf)?;
        count_protobuf(&self.protobuf)
    }
}

/// Counts the entries of an uncompressed protobuf `PushRequest`.
///
/// # Errors
///
/// [`CountError::Protobuf`] when the bytes are not well-formed protobuf.
pub fn count_protobuf(request: &[u8]) -> Result<PushCounts, CountError> {
    let mut counts = PushCounts::default();
    for field in Fields(request) {
        let Field::Bytes(1, stream) = field? else {
            continue;
        };
        for field in Fields(stream) {
            let Field::Bytes(2, entry) = field? else {
                continue;
            };
            counts.entries += 1;
            for field in Fields(entry) {
                if let Field::Bytes(2, line) = field? {
                    counts.line_bytes += line.len() as u64;
                }
            }
        }
    }
    Ok(counts)
}

/// One protobuf field: its number and, for length-delimited fields, its bytes.
enum Field<'a> {
    /// A length-delimited field (string, bytes or message).
    Bytes(u64, &'a [u8]),
    /// A varint or fixed-width field, already skipped.
    Scalar,
}

/// The fields of one protobuf message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, CountError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.read_field();
        if field.is_err() {
            // Stop after an error: the rest cannot be framed.
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read_field(&mut self) -> Result<Field<'a>, CountError> {
        let key = self.varint()?;
        let skip = match key & 0b111 {
            0 => {
                self.varint()?;
                return Ok(Field::Scalar);
            }
            1 => 8,
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| CountError::Protobuf("length out of range"))?;
                let bytes = self.take(len)?;
                return Ok(Field::Bytes(key >> 3, bytes));
            }
            5 => 4,
            _ => return Err(CountError::Protobuf("unknown wire type")),
        };
        self.take(skip)?;
        Ok(Field::Scalar)
    }

    fn varint(&mut self) -> Result<u64, CountError> {
        decode_varint(&mut self.0).map_err(|_| CountError::Protobuf("invalid varint"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CountError> {
        if len > self.0.len() {
            return Err(CountError::Protobuf("field runs past the end"));
        }
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::loki::batch::StreamEntries;
    use crate::loki::encode::PushEncoder;
    use crate::loki::labels::StreamLabels;

    #[test]
    fn counts_what_the_encoder_writes() {
        let streams: Vec<StreamEntries> = (0..3)
            .map(|stream| StreamEntries {
                labels: Arc::new(StreamLabels::new([("app", stream.to_string())])),
                entries: (0..=stream)
                    .map(|n| (1_700_000_000_000_000_000 + n, "x".repeat(100 + n as usize).into()))
                    .collect(),
            })
            .collect();
        let body = PushEncoder::default().encode(&streams);
        let counts = PushCounter::default().count(&body).unwrap();
        assert_eq!(
            counts,
            PushCounts { entries: 6, line_bytes: 100 + (100 + 101) + (100 + 101 + 102) }
        );
    }

    #[test]
    fn refuses_what_is_not_a_push() {
        assert!(PushCounter::default().count(b"not snappy").is_err());
        // A stream field announcing more bytes than follow.
        assert!(count_protobuf(&[0x0a, 0x05, 0x12]).is_err());
        assert!(count_protobuf(&[0x0f]).is_err());
    }
}
