//! Avro binary primitives (Avro 1.11 spec, "Binary Encoding"), written directly
//! so the per-event codec needs no intermediate `Value` tree.

use super::DecodeError;

/// Appends a zig-zag varint `long` (also used for `int`, enum indexes, union
/// branches, lengths and block counts).
#[inline]
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

#[inline]
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Appends the `bytes` form of a decimal: the unscaled value as minimal
/// big-endian two's complement, as Java's `BigInteger.toByteArray` (and
/// apache-avro) write it.
#[inline]
pub fn put_decimal(out: &mut Vec<u8>, unscaled: i64) {
    let be = unscaled.to_be_bytes();
    // Drop leading bytes that only repeat the sign, keeping one sign bit.
    let mut start = 0;
    while start < 7 {
        let (b, next) = (be[start], be[start + 1]);
        let redundant = (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        start += 1;
    }
    put_bytes(out, &be[start..]);
}

/// A cursor over one Avro datum. Every read checks bounds and names the field
/// being read in its error.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn long(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::Truncated { field });
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(DecodeError::corrupt(field, "varint longer than 64 bits"));
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(DecodeError::corrupt(field, "varint longer than 64 bits"));
            }
        }
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    /// A non-negative length or count that must fit in what is left.
    pub fn len(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let n = self.long(field)?;
        if n < 0 {
            return Err(DecodeError::corrupt(field, "negative length"));
        }
        let n = n as usize;
        if n > self.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        Ok(n)
    }

    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(field)?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::corrupt(field, "string is not UTF-8"))
    }

    pub fn boolean(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        let Some(&b) = self.buf.get(self.pos) else {
            return Err(DecodeError::Truncated { field });
        };
        self.pos += 1;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::corrupt(field, "boolean byte is neither 0 nor 1")),
        }
    }

    /// An index into `0..n` (enum symbol or union branch).
    pub fn index(&mut self, field: &'static str, n: usize) -> Result<usize, DecodeError> {
        let i = self.long(field)?;
        if i < 0 || i as usize >= n {
            return Err(DecodeError::corrupt(field, "index out of range"));
        }
        Ok(i as usize)
    }

    /// The unscaled value of a `bytes` decimal. Writers may sign-extend beyond
    /// the minimal length; any value that needs more than 64 bits is refused
    /// (decimal(18,8) needs at most 60).
    pub fn decimal(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let mut b = self.bytes(field)?;
        if b.is_empty() {
            return Err(DecodeError::corrupt(field, "decimal has no bytes"));
        }
        let fill = if b[0] & 0x80 != 0 { 0xff } else { 0x00 };
        while b.len() > 8 {
            // Only a byte that repeats the sign, followed by one with the same
            // top bit, can be dropped without changing the value.
            if b[0] != fill || (b[1] & 0x80) != (fill & 0x80) {
                return Err(DecodeError::corrupt(field, "decimal does not fit 64 bits"));
            }
            b = &b[1..];
        }
        let mut be = [fill; 8];
        be[8 - b.len()..].copy_from_slice(b);
        Ok(i64::from_be_bytes(be))
    }

    /// The item count of the next array or map block, 0 at the end. A negative
    /// count is followed by the block's size in bytes, which is read and dropped.
    pub fn block_count(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let n = self.long(field)?;
        if n >= 0 {
            return Ok(n as usize);
        }
        let _size = self.long(field)?;
        n.checked_neg().map(|n| n as usize).ok_or_else(|| DecodeError::corrupt(field, "block count out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 35, -(1 << 35)] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            assert_eq!(Reader::new(&out).long("x").unwrap(), v, "{v}");
        }
    }

    #[test]
    fn decimals_are_minimal_twos_complement() {
        let enc = |v| {
            let mut out = Vec::new();
            put_decimal(&mut out, v);
            out
        };
        assert_eq!(enc(0), [2, 0x00]);
        assert_eq!(enc(127), [2, 0x7f]);
        assert_eq!(enc(128), [4, 0x00, 0x80]);
        assert_eq!(enc(-1), [2, 0xff]);
        assert_eq!(enc(-129), [4, 0xff, 0x7f]);
        for v in [0, 1, 127, 128, 255, 256, -1, -128, -129, 99_999_999_999_999_999] {
            assert_eq!(Reader::new(&enc(v)).decimal("x").unwrap(), v);
        }
        // Sign-extended beyond the minimum (as some writers pad): same values.
        assert_eq!(Reader::new(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]).decimal("x").unwrap(), 5);
        assert_eq!(
            Reader::new(&[20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).decimal("x").unwrap(),
            -2
        );
        assert!(Reader::new(&[18, 1, 0, 0, 0, 0, 0, 0, 0, 0]).decimal("x").is_err());
        assert!(Reader::new(&[0]).decimal("x").is_err());
    }

    #[test]
    fn truncation_and_overlong_varints_are_reported() {
        assert!(matches!(Reader::new(&[0x80]).long("f"), Err(DecodeError::Truncated { field: "f" })));
        assert!(Reader::new(&[0xff; 11]).long("f").is_err());
        assert!(matches!(Reader::new(&[10, b'a']).str("s"), Err(DecodeError::Truncated { field: "s" })));
    }
}
