//! Zero-copy MessagePack reading for the forward protocol.
//!
//! The forward protocol has no length prefix: a connection is a plain concatenation of msgpack
//! values. [`Scanner`] finds where each value ends by walking the markers (never decoding the
//! payloads), and [`Reader`] then reads a complete value while borrowing strings and binaries
//! from the buffer, so the common path allocates nothing per field.
//!
//! Markers are classified with the `rmp` crate; the spec is
//! <https://github.com/msgpack/msgpack/blob/master/spec.md>.

mod reader;
mod scanner;

pub use reader::{ReadError, Reader, Value};
pub use scanner::{ScanError, Scanner, value_len};

use rmp::Marker;

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

/// Reads the marker at the start of `buf` and the length field after it.
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

    match Marker::from_u8(first) {
        Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => {
            scalar(1)
        }
        Marker::U8 | Marker::I8 => scalar(2),
        Marker::U16 | Marker::I16 => scalar(3),
        Marker::U32 | Marker::I32 | Marker::F32 => scalar(5),
        Marker::U64 | Marker::I64 | Marker::F64 => scalar(9),
        Marker::FixStr(len) => Ok(Head { header_len: 1, payload_len: len as usize, children: 0 }),
        Marker::Str8 | Marker::Bin8 => blob(1, 0),
        Marker::Str16 | Marker::Bin16 => blob(2, 0),
        Marker::Str32 | Marker::Bin32 => blob(4, 0),
        // Extension headers carry one more byte, the extension type, after the length.
        Marker::Ext8 => blob(1, 1),
        Marker::Ext16 => blob(2, 1),
        Marker::Ext32 => blob(4, 1),
        Marker::FixExt1 => fixed_ext(1),
        Marker::FixExt2 => fixed_ext(2),
        Marker::FixExt4 => fixed_ext(4),
        Marker::FixExt8 => fixed_ext(8),
        Marker::FixExt16 => fixed_ext(16),
        Marker::FixArray(len) => Ok(Head { header_len: 1, payload_len: 0, children: len.into() }),
        Marker::Array16 => container(2, 1),
        Marker::Array32 => container(4, 1),
        Marker::FixMap(len) => Ok(Head { header_len: 1, payload_len: 0, children: 2 * len as u64 }),
        Marker::Map16 => container(2, 2),
        Marker::Map32 => container(4, 2),
        Marker::Reserved => Err(HeadError::ReservedMarker),
    }
}

/// Reads the big-endian unsigned integer of `width` bytes that follows the marker.
fn read_be(buf: &[u8], width: usize) -> Result<u64, HeadError> {
    let bytes = buf.get(1..1 + width).ok_or(HeadError::Incomplete)?;
    Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}
