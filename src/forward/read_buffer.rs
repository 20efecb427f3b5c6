//! The read buffer of one connection, sized by how busy the connection is.
//!
//! Docker keeps one connection open per container, most of them quiet, so a connection starts
//! with a small buffer. A connection whose reads fill all the room they are given has more
//! waiting in the socket: its room doubles, up to [`MAX_ROOM_BYTES`], so that a busy container
//! costs fewer system calls (and fewer TCP acknowledgements) per line. Once a connection's reads
//! come back short again, its room shrinks, and a drained buffer larger than the room is
//! replaced by a small one, so quiet connections give the memory back.

use bytes::BytesMut;

/// Room given to a quiet connection's reads.
pub(crate) const MIN_ROOM_BYTES: usize = 8 * 1024;
/// Most room given to one read; more buys little, as loopback and LAN segments are smaller.
pub(crate) const MAX_ROOM_BYTES: usize = 64 * 1024;

/// A connection's read buffer and the room its next read gets.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    bytes: BytesMut,
    /// Free bytes the next read gets at least, between the two limits.
    room: usize,
    /// Free bytes before the last read, to tell whether it filled them.
    offered: usize,
}

impl ReadBuffer {
    /// A small buffer holding `first_bytes`, read before (during the handshake).
    pub(crate) fn new(first_bytes: &[u8]) -> Self {
        let mut bytes = BytesMut::with_capacity(MIN_ROOM_BYTES.max(first_bytes.len()));
        bytes.extend_from_slice(first_bytes);
        Self { bytes, room: MIN_ROOM_BYTES, offered: 0 }
    }

    /// The bytes read and not consumed yet.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.bytes
    }

    /// Drops the first `len` bytes, which have been decoded.
    pub(crate) fn consume(&mut self, len: usize) {
        bytes::Buf::advance(&mut self.bytes, len);
    }

    /// The buffer to read into, with room for the next read. A request larger than the room
    /// grows the buffer as it arrives, doubling, so that it is copied a few times at most.
    pub(crate) fn for_reading(&mut self) -> &mut BytesMut {
        if self.bytes.capacity() - self.bytes.len() < self.room / 2 {
            // Takes back the room of the bytes consumed, or doubles the buffer.
            self.bytes.reserve(self.bytes.len().max(self.room));
        }
        if self.bytes.is_empty() && self.bytes.capacity() > 2 * self.room {
            self.bytes = BytesMut::with_capacity(self.room);
        }
        self.offered = self.bytes.capacity() - self.bytes.len();
        &mut self.bytes
    }

    /// Adjusts the room after a read of `len` bytes into [`Self::for_reading`].
    pub(crate) fn read_done(&mut self, len: usize) {
        if len >= self.offered {
            self.room = (self.room * 2).min(MAX_ROOM_BYTES);
        } else if len < self.room / 8 {
            self.room = (self.room / 2).max(MIN_ROOM_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    /// Reads `len` bytes, or as many as the room allows, and returns how many were read.
    fn read(buffer: &mut ReadBuffer, len: usize) -> usize {
        let target = buffer.for_reading();
        let len = len.min(target.capacity() - target.len());
        target.put_bytes(b'x', len);
        buffer.read_done(len);
        len
    }

    #[test]
    fn a_busy_connection_gets_more_room_up_to_the_limit() {
        let mut buffer = ReadBuffer::new(b"");
        let mut sizes = Vec::new();
        for _ in 0..8 {
            let got = read(&mut buffer, usize::MAX);
            sizes.push(got);
            buffer.consume(got);
        }
        assert_eq!(sizes[0], MIN_ROOM_BYTES);
        assert!(sizes.windows(2).all(|pair| pair[1] >= pair[0]), "{sizes:?}");
        let last = *sizes.last().unwrap();
        assert!((MAX_ROOM_BYTES..=2 * MAX_ROOM_BYTES).contains(&last), "{sizes:?}");
    }

    #[test]
    fn a_quiet_connection_gives_the_memory_back() {
        let mut buffer = ReadBuffer::new(b"");
        let mut busy_read = 0;
        for _ in 0..8 {
            busy_read = read(&mut buffer, usize::MAX);
            buffer.consume(busy_read);
        }
        assert!(busy_read >= MAX_ROOM_BYTES);
        for _ in 0..8 {
            let got = read(&mut buffer, 100);
            buffer.consume(got);
        }
        let quiet_read = read(&mut buffer, usize::MAX);
        assert!(quiet_read < 2 * MIN_ROOM_BYTES, "a quiet connection read {quiet_read} bytes");
    }

    #[test]
    fn a_large_request_is_kept_whole_while_it_arrives() {
        let mut buffer = ReadBuffer::new(b"");
        let request = 1 << 20;
        let mut arrived = 0;
        while arrived < request {
            arrived += read(&mut buffer, request - arrived);
        }
        assert_eq!(buffer.filled().len(), request);
        buffer.consume(request);
        assert!(buffer.filled().is_empty());
    }

    #[test]
    fn keeps_the_bytes_read_before() {
        let buffer = ReadBuffer::new(b"helo");
        assert_eq!(buffer.filled(), b"helo");
    }
}
