//! Netlink attributes (rtattr / nlattr): a type, a length, a payload, 4-byte aligned.

use super::align;

const ATTR_HDRLEN: usize = 4;
/// The high bits of an attribute type are flags (nested, byte order), not part of the type.
const ATTR_TYPE_MASK: u16 = 0x3fff;

#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    pub kind: u16,
    pub payload: &'a [u8],
}

/// Why an attribute could not be read; callers turn it into a decode error with context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl<'a> Attr<'a> {
    pub fn u8(&self) -> Result<u8, Malformed> {
        self.payload
            .first()
            .copied()
            .ok_or_else(|| self.size_error(1))
    }

    pub fn u16(&self) -> Result<u16, Malformed> {
        self.fixed::<2>().map(u16::from_ne_bytes)
    }

    pub fn u32(&self) -> Result<u32, Malformed> {
        self.fixed::<4>().map(u32::from_ne_bytes)
    }

    /// A NUL-terminated string attribute (without the NUL).
    pub fn str(&self) -> Result<&'a str, Malformed> {
        let bytes = self.payload.split(|b| *b == 0).next().unwrap_or(&[]);
        std::str::from_utf8(bytes)
            .map_err(|_| Malformed(format!("attribute {} is not UTF-8", self.kind)))
    }

    fn fixed<const N: usize>(&self) -> Result<[u8; N], Malformed> {
        self.payload
            .get(..N)
            .map(|b| b.try_into().unwrap())
            .ok_or_else(|| self.size_error(N))
    }

    fn size_error(&self, want: usize) -> Malformed {
        Malformed(format!(
            "attribute {} has {} bytes, expected at least {want}",
            self.kind,
            self.payload.len()
        ))
    }
}

/// Iterates over the attributes in a buffer; a length that runs past the buffer is an
/// error, never a silent stop.
pub struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Attrs<'a> {
    pub fn new(data: &'a [u8]) -> Attrs<'a> {
        Attrs { rest: data }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        // Trailing padding shorter than a header is legal.
        if self.rest.len() < ATTR_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.rest[0], self.rest[1]]) as usize;
        let kind = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & ATTR_TYPE_MASK;
        if len < ATTR_HDRLEN || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Malformed(format!(
                "attribute {kind} claims {len} bytes"
            ))));
        }
        let attr = Attr {
            kind,
            payload: &self.rest[ATTR_HDRLEN..len],
        };
        self.rest = &self.rest[align(len).min(self.rest.len())..];
        Some(Ok(attr))
    }
}

/// Appends one attribute to a request buffer.
pub fn push(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = ATTR_HDRLEN + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + align(len) - len, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let mut buf = Vec::new();
        push(&mut buf, 1, &[7]);
        push(&mut buf, 2, &42u32.to_ne_bytes());
        assert_eq!(buf.len(), 8 + 8);
        let attrs: Vec<_> = Attrs::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs[0].kind, 1);
        assert_eq!(attrs[0].u8().unwrap(), 7);
        assert_eq!(attrs[1].u32().unwrap(), 42);
    }

    #[test]
    fn overlong_attribute_is_an_error() {
        let buf = [200u8, 0, 1, 0, 0, 0, 0, 0];
        let first = Attrs::new(&buf).next().unwrap();
        assert!(first.is_err());
    }

    #[test]
    fn short_payload_is_an_error() {
        let mut buf = Vec::new();
        push(&mut buf, 4, &[1, 2]);
        let attr = Attrs::new(&buf).next().unwrap().unwrap();
        assert!(attr.u32().is_err());
    }
}
