//! Encoded keys and values are carved out of one growing buffer: a record costs a copy into the
//! arena instead of an allocation of its own.

use bytes::{Bytes, BytesMut};

/// Bytes the arena grows by.
const CHUNK: usize = 256 * 1024;

#[derive(Default)]
pub(crate) struct Arena {
    bytes: BytesMut,
}

impl Clone for Arena {
    /// A clone starts empty: arenas are scratch space, not state.
    fn clone(&self) -> Arena {
        Arena::default()
    }
}

impl Arena {
    /// Copies `data` into the arena and hands it out as shared bytes.
    pub(crate) fn take(&mut self, data: &[u8]) -> Bytes {
        if self.bytes.capacity() < data.len() {
            self.bytes.reserve(CHUNK.max(data.len()));
        }
        self.bytes.extend_from_slice(data);
        self.bytes.split().freeze()
    }
}
