//! Reading BER (X.690) as LDAP sends it: definite lengths, one-octet tags. Each
//! element is handed out as its tag and the byte range of its contents within the
//! message, so a decoder can keep ranges into one buffer instead of copying every
//! value out.

use std::ops::Range;

/// Tags LDAP answers are made of (class, constructed bit and number in one octet).
pub mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const ENUMERATED: u8 = 0x0a;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;

    /// `[APPLICATION n]`, constructed: an LDAP protocol operation.
    pub const fn application(n: u8) -> u8 {
        0x60 | n
    }

    /// `[n]`, context-specific, constructed.
    pub const fn context(n: u8) -> u8 {
        0xa0 | n
    }

    /// `[n]`, context-specific, primitive.
    pub const fn context_primitive(n: u8) -> u8 {
        0x80 | n
    }
}

/// One element: its tag octet, where it starts and where its contents lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub tag: u8,
    pub start: usize,
    pub contents: Range<usize>,
}

/// The elements one after another within `bytes[at..end]`.
#[derive(Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    end: usize,
}

/// Why BER could not be read.
pub type Broken = &'static str;

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            end: bytes.len(),
        }
    }

    /// The elements inside `element`, with ranges still into the whole buffer.
    pub fn inside(&self, element: &Element) -> Self {
        Self {
            bytes: self.bytes,
            at: element.contents.start,
            end: element.contents.end,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.end
    }

    /// The contents of `element`.
    pub fn contents(&self, element: &Element) -> &'a [u8] {
        &self.bytes[element.contents.clone()]
    }

    /// The whole of `element`, its tag and length included.
    pub fn whole(&self, element: &Element) -> &'a [u8] {
        &self.bytes[element.start..element.contents.end]
    }

    /// The next element.
    pub fn next(&mut self) -> Result<Element, Broken> {
        let (tag, header, length) =
            header(&self.bytes[self.at..self.end])?.ok_or("an element is cut short")?;
        let (start, contents) = (self.at, self.at + header);
        let end = contents
            .checked_add(length)
            .filter(|end| *end <= self.end)
            .ok_or("an element is longer than what holds it")?;
        self.at = end;
        Ok(Element {
            tag,
            start,
            contents: contents..end,
        })
    }

    /// The next element, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Element, Broken> {
        let element = self.next()?;
        if element.tag == tag {
            Ok(element)
        } else {
            Err("an element has an unexpected tag")
        }
    }

    /// The next element if it has `tag`; nothing is taken otherwise.
    pub fn next_if(&mut self, tag: u8) -> Result<Option<Element>, Broken> {
        if self.is_empty() || self.bytes[self.at] != tag {
            return Ok(None);
        }
        self.next().map(Some)
    }
}

/// An element's tag, header length and contents length, or `None` while `bytes`
/// does not yet hold the whole header.
pub fn header(bytes: &[u8]) -> Result<Option<(u8, usize, usize)>, Broken> {
    let (Some(&tag), Some(&first)) = (bytes.first(), bytes.get(1)) else {
        return Ok(None);
    };
    if tag & 0x1f == 0x1f {
        return Err("a tag number above 30, which LDAP does not use");
    }
    if first < 0x80 {
        return Ok(Some((tag, 2, usize::from(first))));
    }
    let octets = usize::from(first & 0x7f);
    if octets == 0 || octets > 4 {
        return Err("an indefinite or oversized length");
    }
    let Some(length) = bytes.get(2..2 + octets) else {
        return Ok(None);
    };
    let length = length
        .iter()
        .fold(0usize, |n, b| (n << 8) | usize::from(*b));
    Ok(Some((tag, 2 + octets, length)))
}

/// A non-negative INTEGER or ENUMERATED of at most four octets.
pub fn unsigned(contents: &[u8]) -> Result<u32, Broken> {
    match contents {
        [] => Err("an empty integer"),
        [first, ..] if first & 0x80 != 0 => Err("a negative integer"),
        [0, rest @ ..] if rest.len() == 4 => Ok(fold(rest)),
        _ if contents.len() <= 4 => Ok(fold(contents)),
        _ => Err("an integer too large"),
    }
}

fn fold(octets: &[u8]) -> u32 {
    octets.iter().fold(0, |n, b| (n << 8) | u32::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend([7u8; 256]);
        long.extend([0x01, 0x01, 0xff]);
        let mut reader = Reader::new(&long);
        let string = reader.expect(tag::OCTET_STRING).unwrap();
        assert_eq!(string.contents, 4..260);
        let boolean = reader.next().unwrap();
        assert_eq!(
            (boolean.tag, reader.contents(&boolean)),
            (tag::BOOLEAN, &[0xff][..])
        );
        assert!(reader.is_empty());
    }

    #[test]
    fn reads_nested_elements_with_ranges_into_the_whole() {
        let bytes = [0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, b'x'];
        let mut outer = Reader::new(&bytes);
        let sequence = outer.expect(tag::SEQUENCE).unwrap();
        let mut inner = outer.inside(&sequence);
        let integer = inner.expect(tag::INTEGER).unwrap();
        assert_eq!(unsigned(inner.contents(&integer)), Ok(5));
        assert_eq!(inner.next_if(tag::BOOLEAN), Ok(None));
        assert_eq!(
            inner.next_if(tag::OCTET_STRING).unwrap().unwrap().contents,
            7..8
        );
        assert!(inner.is_empty() && outer.is_empty());
    }

    #[test]
    fn refuses_what_overruns_or_is_not_ldap() {
        assert!(Reader::new(&[0x04, 0x05, b'a']).next().is_err());
        assert!(Reader::new(&[0x30, 0x80, 0x00, 0x00]).next().is_err());
        assert!(Reader::new(&[0x1f, 0x81, 0x01, 0x00]).next().is_err());
        assert_eq!(
            header(&[0x30, 0x84, 0x00]),
            Ok(None),
            "the header is not all here"
        );
        assert_eq!(
            header(&[0x30, 0x84, 0, 1, 0, 0]),
            Ok(Some((0x30, 6, 65536)))
        );
    }

    #[test]
    fn reads_unsigned_integers() {
        assert_eq!(unsigned(&[0x00, 0xff, 0xff, 0xff, 0xff]), Ok(u32::MAX));
        assert_eq!(unsigned(&[0x10, 0x00]), Ok(4096));
        assert!(unsigned(&[0x80]).is_err());
        assert!(unsigned(&[1, 2, 3, 4, 5]).is_err());
        assert!(unsigned(&[]).is_err());
    }
}
