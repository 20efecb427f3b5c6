//! Reading the parts of a complete msgpack value, borrowing from its buffer.

use super::layout::{MAX_LAID_OUT_PAIRS, MapLayout};
use super::{Head, HeadError, is_map_marker, read_head, value_len};

/// One msgpack item. Containers give only their length; their elements follow in the reader.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// A float32 or float64.
    Float(f64),
    /// A string's bytes, not yet checked to be UTF-8.
    Str(&'a [u8]),
    /// A binary's bytes.
    Bin(&'a [u8]),
    /// An extension: its type and data.
    Ext(i8, &'a [u8]),
    /// An array of this many elements; the elements follow.
    Array(u32),
    /// A map of this many pairs; keys and values follow, alternating.
    Map(u32),
}

/// Why a value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The buffer ended inside a value.
    #[error("truncated msgpack value")]
    Truncated,
    /// The reserved marker byte 0xc1 was found.
    #[error("invalid msgpack: reserved marker 0xc1")]
    ReservedMarker,
}

/// A cursor over msgpack bytes that hands out borrowed items.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads the next item; for a container, only its header.
    ///
    /// # Errors
    ///
    /// [`ReadError`] when the bytes end early or hold the reserved marker.
    pub fn read(&mut self) -> Result<Value<'a>, ReadError> {
        // The items a Docker record is made of (small maps, short strings, small integers)
        // take one byte of header; they are decoded without the general path's two lookups.
        match self.buf.first() {
            Some(&byte @ 0x00..=0x7f) => {
                self.buf = &self.buf[1..];
                return Ok(Value::UInt(byte.into()));
            }
            Some(&byte @ 0x80..=0x8f) => {
                self.buf = &self.buf[1..];
                return Ok(Value::Map(u32::from(byte & 0x0f)));
            }
            Some(&byte @ 0x90..=0x9f) => {
                self.buf = &self.buf[1..];
                return Ok(Value::Array(u32::from(byte & 0x0f)));
            }
            Some(&byte @ 0xa0..=0xbf) => {
                let text = self.take(1, usize::from(byte & 0x1f))?;
                return Ok(Value::Str(text));
            }
            // Integer seconds, a `log` line of 32 to 255 bytes and EventTime are the rest of
            // what Docker sends.
            Some(&byte @ 0xcc..=0xcf) => {
                let bytes = self.take(1, 1 << (byte - 0xcc))?;
                return Ok(Value::UInt(big_endian(bytes)));
            }
            Some(0xd9) => {
                let len = *self.buf.get(1).ok_or(ReadError::Truncated)?;
                let text = self.take(2, len.into())?;
                return Ok(Value::Str(text));
            }
            Some(0xd7) => {
                let ext_type = *self.buf.get(1).ok_or(ReadError::Truncated)? as i8;
                let data = self.take(2, 8)?;
                return Ok(Value::Ext(ext_type, data));
            }
            _ => {}
        }
        let head = read_head(self.buf).map_err(|error| match error {
            HeadError::Incomplete => ReadError::Truncated,
            HeadError::ReservedMarker => ReadError::ReservedMarker,
        })?;
        let end = head.header_len + head.payload_len;
        if end > self.buf.len() {
            return Err(ReadError::Truncated);
        }
        let (item, rest) = self.buf.split_at(end);
        self.buf = rest;
        Ok(decode_item(item, head.header_len))
    }

    /// Takes an item of a `header_len`-byte header and a `payload_len`-byte payload, and
    /// returns the payload.
    fn take(&mut self, header_len: usize, payload_len: usize) -> Result<&'a [u8], ReadError> {
        let end = header_len + payload_len;
        if end > self.buf.len() {
            return Err(ReadError::Truncated);
        }
        let payload = &self.buf[header_len..end];
        self.buf = &self.buf[end..];
        Ok(payload)
    }

    /// Like [`Self::read_raw`], and when the value is a map of at most [`MAX_LAID_OUT_PAIRS`]
    /// pairs, also where its keys and values lie, found in the same walk.
    ///
    /// # Errors
    ///
    /// As [`Self::read_raw`].
    pub fn read_map(&mut self) -> Result<(&'a [u8], Option<MapLayout>), ReadError> {
        match map_layout(self.buf) {
            Some((len, layout)) => {
                let (map, rest) = self.buf.split_at(len);
                self.buf = rest;
                Ok((map, Some(layout)))
            }
            // Not a map, more pairs than a layout holds, over 64 KiB, cut short or malformed:
            // `read_raw` walks it and says which error, if any.
            None => Ok((self.read_raw()?, None)),
        }
    }

    /// Skips the next value, nested elements included, and returns its raw bytes.
    ///
    /// # Errors
    ///
    /// [`ReadError::Truncated`] when the value is incomplete or malformed.
    pub fn read_raw(&mut self) -> Result<&'a [u8], ReadError> {
        // Most values are scalars or strings, whose length their head tells; only containers
        // need the scanner to walk their elements.
        let len = match read_head(self.buf) {
            Ok(head) => item_len(self.buf, head),
            Err(_) => value_len(self.buf),
        }
        .ok_or(ReadError::Truncated)?;
        if len > self.buf.len() {
            return Err(ReadError::Truncated);
        }
        let (raw, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(raw)
    }
}

/// Whether `marker` starts a string or a binary.
fn is_text_marker(marker: u8) -> bool {
    matches!(marker, 0xa0..=0xbf | 0xc4..=0xc6 | 0xd9..=0xdb)
}

/// The length and layout of the map at the start of `buf`, when it is small and complete.
fn map_layout(buf: &[u8]) -> Option<(usize, MapLayout)> {
    let head = read_head(buf).ok()?;
    let pairs = head.children / 2;
    if !is_map_marker(buf[0]) || pairs > MAX_LAID_OUT_PAIRS as u64 {
        return None;
    }
    let mut layout = MapLayout::new(head.header_len);
    let mut end = head.header_len;
    for _ in 0..pairs {
        let key = buf.get(end..)?;
        let key_head = read_head(key).ok()?;
        let text_header = is_text_marker(key[0]).then_some(key_head.header_len);
        end += item_len(key, key_head)?;
        let value_start = end;
        let value = buf.get(end..)?;
        end += item_len(value, read_head(value).ok()?)?;
        if end > buf.len() || !layout.push(text_header, value_start..end) {
            return None;
        }
    }
    Some((end, layout))
}

/// Length of the item at the start of `buf` whose head is `head`, nested elements included,
/// as far as its heads tell; `None` when it is cut short or malformed. The bytes may still end
/// before it.
#[inline(always)]
fn item_len(buf: &[u8], head: Head) -> Option<usize> {
    if head.children == 0 {
        Some(head.header_len + head.payload_len)
    } else {
        flat_container_len(buf, head.header_len, head.children).or_else(|| value_len(buf))
    }
}

/// Length of the container at the start of `buf` when none of its `children` is a container
/// itself, as in a Docker record; `None` otherwise, or when it is truncated, and then the
/// scanner walks it instead.
fn flat_container_len(buf: &[u8], header_len: usize, children: u64) -> Option<usize> {
    let mut end = header_len;
    for _ in 0..children {
        let head = read_head(buf.get(end..)?).ok()?;
        if head.children > 0 {
            return None;
        }
        end += head.header_len + head.payload_len;
    }
    Some(end)
}

/// The big-endian unsigned integer of up to 8 bytes.
fn big_endian(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Decodes an item whose header and payload are both in `item`.
fn decode_item(item: &[u8], header_len: usize) -> Value<'_> {
    let payload = &item[header_len..];
    let uint = big_endian;
    // Two's complement sign extension of a big-endian integer of 1, 2, 4 or 8 bytes.
    let int = |bytes: &[u8]| {
        let shift = 64 - 8 * bytes.len() as u32;
        ((uint(bytes) << shift) as i64) >> shift
    };
    let signed = |bytes: &[u8]| match int(bytes) {
        n if n >= 0 => Value::UInt(n as u64),
        n => Value::Int(n),
    };
    // Lengths of containers were validated by `read_head`; they fit in 32 bits.
    let len = |bytes: &[u8]| uint(bytes) as u32;

    match item[0] {
        byte @ 0x00..=0x7f => Value::UInt(byte.into()),
        byte @ 0x80..=0x8f => Value::Map(u32::from(byte & 0x0f)),
        byte @ 0x90..=0x9f => Value::Array(u32::from(byte & 0x0f)),
        0xa0..=0xbf | 0xd9..=0xdb => Value::Str(payload),
        0xc4..=0xc6 => Value::Bin(payload),
        0xc7..=0xc9 => Value::Ext(item[header_len - 1] as i8, payload),
        0xd4..=0xd8 => Value::Ext(item[1] as i8, payload),
        0xc0 => Value::Nil,
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xca => Value::Float(f32::from_bits(uint(&item[1..5]) as u32).into()),
        0xcb => Value::Float(f64::from_bits(uint(&item[1..9]))),
        0xcc..=0xcf => Value::UInt(uint(&item[1..header_len])),
        0xd0..=0xd3 => signed(&item[1..header_len]),
        0xdc | 0xdd => Value::Array(len(&item[1..header_len])),
        0xde | 0xdf => Value::Map(len(&item[1..header_len])),
        byte @ 0xe0..=0xff => Value::Int(i64::from(byte as i8)),
        0xc1 => unreachable!("read_head refuses the reserved marker"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::MAX_LAID_OUT_PAIRS;
    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<Value<'_>> {
        let mut reader = Reader::new(bytes);
        let mut items = Vec::new();
        while !reader.is_empty() {
            items.push(reader.read().expect("valid msgpack"));
        }
        items
    }

    #[test]
    fn reads_every_kind_of_item() {
        let value = serde_json::json!([
            0, 127, 128, 65_535, 4_294_967_296_u64, -1, -33, -129, -40_000, -3_000_000_000_i64,
            1.5, "hi", null, true, {"k": false}
        ]);
        let bytes = rmp_serde::to_vec(&value).expect("json values encode");
        let expected = [
            Value::Array(15),
            Value::UInt(0),
            Value::UInt(127),
            Value::UInt(128),
            Value::UInt(65_535),
            Value::UInt(4_294_967_296),
            Value::Int(-1),
            Value::Int(-33),
            Value::Int(-129),
            Value::Int(-40_000),
            Value::Int(-3_000_000_000),
            Value::Float(1.5),
            Value::Str(b"hi"),
            Value::Nil,
            Value::Bool(true),
            Value::Map(1),
            Value::Str(b"k"),
            Value::Bool(false),
        ];
        assert_eq!(read_all(&bytes), expected);
    }

    #[test]
    fn reads_binary_and_extensions() {
        // bin8 "ab", fixext8 type 0 (EventTime), ext8 of 8 bytes type 0, float32 0.5.
        let bytes = [
            0xc4, 0x02, b'a', b'b', //
            0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 2, //
            0xc7, 0x08, 0x00, 0, 0, 0, 3, 0, 0, 0, 4, //
            0xca, 0x3f, 0x00, 0x00, 0x00,
        ];
        let items = read_all(&bytes);
        assert_eq!(items[0], Value::Bin(b"ab"));
        assert_eq!(items[1], Value::Ext(0, &[0, 0, 0, 1, 0, 0, 0, 2]));
        assert_eq!(items[2], Value::Ext(0, &[0, 0, 0, 3, 0, 0, 0, 4]));
        assert_eq!(items[3], Value::Float(0.5));
    }

    #[test]
    fn read_raw_skips_nested_values() {
        let bytes = rmp_serde::to_vec(&serde_json::json!([{"a": [1, 2]}, "next"])).unwrap();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.read(), Ok(Value::Array(2)));
        let raw = reader.read_raw().expect("complete value");
        assert_eq!(raw, rmp_serde::to_vec(&serde_json::json!({"a": [1, 2]})).unwrap());
        assert_eq!(reader.read(), Ok(Value::Str(b"next")));
    }

    #[test]
    fn read_raw_takes_flat_and_nested_records_whole() {
        for record in [
            serde_json::json!({"log": "x".repeat(300), "n": 1, "t": true}),
            serde_json::json!({"log": "x", "labels": {"team": "web"}, "after": "y"}),
        ] {
            let mut bytes = rmp_serde::to_vec(&record).unwrap();
            let len = bytes.len();
            bytes.push(0xc0);
            let mut reader = Reader::new(&bytes);
            assert_eq!(reader.read_raw().map(<[u8]>::len), Ok(len));
            assert_eq!(reader.read(), Ok(Value::Nil));
            // Cut anywhere, the record is incomplete.
            for cut in 1..len {
                assert_eq!(Reader::new(&bytes[..cut]).read_raw(), Err(ReadError::Truncated));
            }
        }
    }

    /// Maps whose layouts are checked: flat, nested, keys of every kind, over the pair limit,
    /// with a 16-bit header.
    fn maps() -> Vec<Vec<u8>> {
        let mut maps: Vec<Vec<u8>> = [
            serde_json::json!({}),
            serde_json::json!({"log": "x".repeat(300), "source": "stdout", "n": 1}),
            serde_json::json!({"log": "x", "labels": {"team": "web"}, "list": [1, [2, 3]]}),
            serde_json::json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8}),
            serde_json::json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8,
                               "i": 9}),
        ]
        .iter()
        .map(|map| rmp_serde::to_vec(map).unwrap())
        .collect();
        // Keys that are not strings: an integer, a binary, an array.
        maps.push(vec![0x83, 0x07, 0xa1, b'x', 0xc4, 0x01, b'k', 0xc0, 0x91, 0x01, 0xc3]);
        // map16 with one pair.
        maps.push(vec![0xde, 0x00, 0x01, 0xa1, b'k', 0x05]);
        maps
    }

    #[test]
    fn read_map_takes_what_read_raw_takes_and_notes_where_each_pair_lies() {
        for map in maps() {
            let mut bytes = map.clone();
            bytes.push(0xc0);
            let mut reader = Reader::new(&bytes);
            let (raw, layout) = reader.read_map().expect("a complete map");
            assert_eq!(raw, &map[..]);
            assert_eq!(reader.read(), Ok(Value::Nil));

            // The same pairs, found the slow way.
            let mut walk = Reader::new(&map);
            let Ok(Value::Map(pairs)) = walk.read() else { panic!("a map") };
            let offset = |walk: &Reader<'_>| map.len() - walk.remaining().len();
            let mut expected = Vec::new();
            for _ in 0..pairs {
                let key_start = offset(&walk);
                let name = match walk.clone().read() {
                    Ok(Value::Str(name) | Value::Bin(name)) => Some(name),
                    _ => None,
                };
                walk.read_raw().unwrap();
                let value_start = offset(&walk);
                walk.read_raw().unwrap();
                expected.push((key_start..value_start, name, value_start..offset(&walk)));
            }
            let Some(layout) = layout else {
                assert!(pairs as usize > MAX_LAID_OUT_PAIRS, "{map:?} has a layout");
                continue;
            };
            let found: Vec<_> = layout
                .pairs()
                .map(|pair| (pair.key, pair.name.map(|name| &map[name]), pair.value))
                .collect();
            assert_eq!(found, expected, "{map:?}");
        }
    }

    #[test]
    fn read_map_of_a_cut_map_is_truncated_and_of_other_values_is_read_raw() {
        for map in maps() {
            for cut in 1..map.len() {
                assert_eq!(Reader::new(&map[..cut]).read_map(), Err(ReadError::Truncated));
            }
        }
        let bytes = rmp_serde::to_vec(&serde_json::json!(["not", "a", "map"])).unwrap();
        assert_eq!(Reader::new(&bytes).read_map(), Ok((&bytes[..], None)));
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert_eq!(Reader::new(&[0xa5, b'a']).read(), Err(ReadError::Truncated));
        assert_eq!(Reader::new(&[0xcd, 0x01]).read(), Err(ReadError::Truncated));
        assert_eq!(Reader::new(&[0x92, 0x01]).read_raw(), Err(ReadError::Truncated));
        for truncated in [&[0xd9][..], &[0xd9, 5, b'a'], &[0xce, 0, 0], &[0xd7, 0x00, 1, 2]] {
            assert_eq!(Reader::new(truncated).read(), Err(ReadError::Truncated), "{truncated:?}");
        }
    }

    #[test]
    fn reads_str8_whole_and_leaves_what_follows() {
        let text = "x".repeat(200);
        let mut bytes = rmp_serde::to_vec(&text).unwrap();
        assert_eq!(&bytes[..2], &[0xd9, 200]);
        bytes.push(0xc0);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.read(), Ok(Value::Str(text.as_bytes())));
        assert_eq!(reader.read(), Ok(Value::Nil));
        assert!(reader.is_empty());
    }
}
