//! The text of a log line: UTF-8 bytes that share their allocation with the other lines a
//! connection rendered around the same time.
//!
//! A connection renders lines one after another into one [`LineArena`] chunk and hands out
//! slices of it, so a line costs no allocation of its own, and the pusher that drops a delivered
//! batch releases whole chunks instead of freeing every line on another thread's heap.

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};

/// Bytes of a fresh arena chunk; a longer line gets a chunk of its own size.
const ARENA_CHUNK_BYTES: usize = 16 * 1024;

/// A log line. Always valid UTF-8: every way to make one starts from UTF-8 text.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Line(Bytes);

impl Line {
    /// The line's bytes, UTF-8.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The line as text. Checks the bytes again (a line is always UTF-8, so it cannot fail);
    /// for tests and checks, not for the push path.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a line is UTF-8")
    }

    /// The line as text, never failing. Checks the bytes again, so it is meant for tests, printing and the
    /// disk buffer, not for the push path, which uses [`Self::as_bytes`].
    pub fn to_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// Bytes of the line.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the line is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Cuts the line to at most `max_bytes`, at a character boundary.
    pub fn truncate(&mut self, max_bytes: usize) {
        if self.0.len() <= max_bytes {
            return;
        }
        let mut end = max_bytes;
        // UTF-8 continuation bytes are 0b10xx_xxxx: back up to the start of a character.
        while end > 0 && self.0[end] & 0b1100_0000 == 0b1000_0000 {
            end -= 1;
        }
        self.0.truncate(end);
    }
}

impl From<&str> for Line {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl From<String> for Line {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl PartialEq<str> for Line {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other.as_bytes()
    }
}

impl PartialEq<&str> for Line {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == *other.as_bytes()
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.to_text(), f)
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Where a connection's lines are stored: chunks of [`ARENA_CHUNK_BYTES`], each shared by the
/// lines cut from it and freed when the last of them is dropped.
#[derive(Debug, Default)]
pub struct LineArena {
    chunk: BytesMut,
}

impl LineArena {
    /// Copies `text` into the arena and returns it as a line. `text` must be UTF-8; the
    /// renderers only produce UTF-8, which debug builds check.
    pub(crate) fn line(&mut self, text: &[u8]) -> Line {
        debug_assert!(std::str::from_utf8(text).is_ok(), "lines are UTF-8");
        if self.chunk.capacity() < text.len() {
            // The old chunk stays alive for as long as its lines do.
            self.chunk = BytesMut::with_capacity(text.len().max(ARENA_CHUNK_BYTES));
        }
        self.chunk.extend_from_slice(text);
        Line(self.chunk.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_character_boundaries() {
        let mut line = Line::from("aé€😀");
        line.truncate(100);
        assert_eq!(line, "aé€😀");
        line.truncate(5); // inside '€' (bytes 3..6)
        assert_eq!(line, "aé");
        line.truncate(2); // inside 'é' (bytes 1..3)
        assert_eq!(line, "a");
        line.truncate(0);
        assert!(line.is_empty());
    }

    #[test]
    fn arena_lines_share_chunks_and_survive_them() {
        let mut arena = LineArena::default();
        let first = arena.line(b"first");
        let second = arena.line(b"second");
        assert_eq!((first.as_bytes(), second.as_bytes()), (&b"first"[..], &b"second"[..]));
        assert_eq!(
            first.as_bytes().as_ptr().wrapping_add(5),
            second.as_bytes().as_ptr(),
            "consecutive lines sit side by side in one chunk"
        );
        let long = "x".repeat(ARENA_CHUNK_BYTES + 1);
        let big = arena.line(long.as_bytes());
        drop(arena);
        assert_eq!((first, big.len()), ("first".into(), long.len()));
    }
}
