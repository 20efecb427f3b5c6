//! Zero-copy MessagePack reading for the forward protocol.
//!
//! The forward protocol has no length prefix: a connection is a plain concatenation of msgpack
//! values. [`Scanner`] finds where each value ends by walking the markers (never decoding the
//! payloads), and [`Reader`] then reads a complete value while borrowing strings and binaries
//! from the buffer, so the common path allocates nothing per field.
//!
//! The spec is <https://github.com/msgpack/msgpack/blob/master/spec.md>; the tests check the
//! marker table against the `rmp` crate's.

mod layout;
mod reader;
mod scanner;

pub use layout::{MAX_LAID_OUT_PAIRS, MapLayout, PairSpan};
pub use reader::{ReadError, Reader, Value};
pub use scanner::{ScanError, Scanner, value_len};

/// The shape of one msgpack value as told by its marker and the length bytes that follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// Bytes taken by the marker and its length field.
    header_len: usize,
    /// Bytes of payload that follow the header (string, binary or extension data).
    payload_len: usize,
    /// Number of nested values that follow (array elements, or keys plus values of a map).
    children: u64,
}

/// Why a marker could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadError {
    /// More bytes are needed to read the length field.
    Incomplete,
    /// The byte 0xc1, which the msgpack spec reserves and never uses.
    ReservedMarker,
}

/// Whether `marker` starts a map.
pub fn is_map_marker(marker: u8) -> bool {
    matches!(marker, 0x80..=0x8f | 0xde | 0xdf)
}

/// Reads the marker at the start of `buf` and the length field after it.
#[inline(always)]
fn read_head(buf: &[u8]) -> Result<Head, HeadError> {
    let Some(&first) = buf.first() else {
        return Err(HeadError::Incomplete);
    };
    let scalar = |header_len| Ok(Head { header_len, payload_len: 0, children: 0 });
    let blob = |width: usize, extra: usize| -> Result<Head, HeadError> {
        let len = read_be(buf, width)?;
        Ok(Head { header_len: 1 + width + extra, payload_len: len as usize, children: 0 })
    };
    let container = |width: usize, per_item: u64| -> Result<Head, HeadError> {
        let len = read_be(buf, width)?;
        Ok(Head { header_len: 1 + width, payload_len: 0, children: len * per_item })
    };
    let fixed_ext = |size: usize| Ok(Head { header_len: 2, payload_len: size, children: 0 });

    // One jump on the marker byte; the msgpack spec's table, in byte order.
    match first {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => scalar(1),
        0x80..=0x8f => {
            Ok(Head { header_len: 1, payload_len: 0, children: 2 * u64::from(first & 0x0f) })
        }
        0x90..=0x9f => {
            Ok(Head { header_len: 1, payload_len: 0, children: u64::from(first & 0x0f) })
        }
        0xa0..=0xbf => {
            Ok(Head { header_len: 1, payload_len: usize::from(first & 0x1f), children: 0 })
        }
        0xc1 => Err(HeadError::ReservedMarker),
        // bin 8/16/32 and str 8/16/32.
        0xc4 | 0xd9 => blob(1, 0),
        0xc5 | 0xda => blob(2, 0),
        0xc6 | 0xdb => blob(4, 0),
        // Extension headers carry one more byte, the extension type, after the length.
        0xc7 => blob(1, 1),
        0xc8 => blob(2, 1),
        0xc9 => blob(4, 1),
        // Numbers: 8-bit, 16-bit, 32-bit (and float32), 64-bit (and float64) integers.
        0xcc | 0xd0 => scalar(2),
        0xcd | 0xd1 => scalar(3),
        0xca | 0xce | 0xd2 => scalar(5),
        0xcb | 0xcf | 0xd3 => scalar(9),
        // fixext 1, 2, 4, 8, 16.
        0xd4..=0xd8 => fixed_ext(1 << (first - 0xd4)),
        0xdc => container(2, 1),
        0xdd => container(4, 1),
        0xde => container(2, 2),
        0xdf => container(4, 2),
    }
}

/// Reads the big-endian unsigned integer of `width` bytes that follows the marker.
fn read_be(buf: &[u8], width: usize) -> Result<u64, HeadError> {
    let bytes = buf.get(1..1 + width).ok_or(HeadError::Incomplete)?;
    Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

#[cfg(test)]
mod tests {
    use rmp::Marker;

    use super::*;

    /// `read_head` as told by `rmp`'s marker classification.
    fn head_by_rmp(buf: &[u8]) -> Result<Head, HeadError> {
        let first = buf[0];
        let scalar = |header_len| Ok(Head { header_len, payload_len: 0, children: 0 });
        let blob = |width: usize, extra: usize| {
            let len = read_be(buf, width)?;
            Ok(Head { header_len: 1 + width + extra, payload_len: len as usize, children: 0 })
        };
        let container = |width: usize, per_item: u64| {
            let len = read_be(buf, width)?;
            Ok(Head { header_len: 1 + width, payload_len: 0, children: len * per_item })
        };
        let fixed_ext = |size| Ok(Head { header_len: 2, payload_len: size, children: 0 });
        match Marker::from_u8(first) {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
                scalar(1)
            }
            Marker::U8 | Marker::I8 => scalar(2),
            Marker::U16 | Marker::I16 => scalar(3),
            Marker::U32 | Marker::I32 | Marker::F32 => scalar(5),
            Marker::U64 | Marker::I64 | Marker::F64 => scalar(9),
            Marker::FixStr(len) => Ok(Head { header_len: 1, payload_len: len.into(), children: 0 }),
            Marker::Str8 | Marker::Bin8 => blob(1, 0),
            Marker::Str16 | Marker::Bin16 => blob(2, 0),
            Marker::Str32 | Marker::Bin32 => blob(4, 0),
            Marker::Ext8 => blob(1, 1),
            Marker::Ext16 => blob(2, 1),
            Marker::Ext32 => blob(4, 1),
            Marker::FixExt1 => fixed_ext(1),
            Marker::FixExt2 => fixed_ext(2),
            Marker::FixExt4 => fixed_ext(4),
            Marker::FixExt8 => fixed_ext(8),
            Marker::FixExt16 => fixed_ext(16),
            Marker::FixArray(len) => {
                Ok(Head { header_len: 1, payload_len: 0, children: len.into() })
            }
            Marker::Array16 => container(2, 1),
            Marker::Array32 => container(4, 1),
            Marker::FixMap(len) => {
                Ok(Head { header_len: 1, payload_len: 0, children: 2 * u64::from(len) })
            }
            Marker::Map16 => container(2, 2),
            Marker::Map32 => container(4, 2),
            Marker::Reserved => Err(HeadError::ReservedMarker),
        }
    }

    #[test]
    fn every_marker_reads_as_rmp_classifies_it() {
        for first in 0..=u8::MAX {
            for length_field in [[0, 0, 0, 0], [0, 0, 1, 2], [0xff, 0xff, 0xff, 0xff]] {
                let mut buf = vec![first];
                buf.extend_from_slice(&length_field);
                assert_eq!(read_head(&buf), head_by_rmp(&buf), "marker {first:#04x}");
                // Cut inside the length field, both must ask for more (or agree otherwise).
                for cut in 1..buf.len() {
                    assert_eq!(read_head(&buf[..cut]), head_by_rmp(&buf[..cut]), "{first:#04x}");
                }
            }
        }
        assert_eq!(read_head(&[]), Err(HeadError::Incomplete));
    }
}
