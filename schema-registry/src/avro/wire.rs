//! Reading Avro's binary primitives: zig-zag varints, length-prefixed bytes and strings.

sluice_core::reason_error!(
    /// A datum (Avro bytes, or a JSON envelope) that does not decode as its schema says.
    pub DatumError
);

pub(super) struct Cursor<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DatumError> {
        if self.bytes.len() < n {
            return Err("the datum is truncated".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(super) fn long(&mut self) -> Result<i64, DatumError> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }

    pub(super) fn len(&mut self) -> Result<usize, DatumError> {
        usize::try_from(self.long()?).map_err(|_| "a negative length".into())
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], DatumError> {
        let n = self.len()?;
        self.take(n)
    }

    pub(super) fn string(&mut self) -> Result<&'a str, DatumError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a string is not UTF-8".into())
    }

    /// A union's branch index.
    pub(super) fn branch(&mut self) -> Result<usize, DatumError> {
        usize::try_from(self.long()?).map_err(|_| "a negative union index".into())
    }
}
