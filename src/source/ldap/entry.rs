//! One search result entry, decoded straight from the bytes the server sent (a
//! broken one is an error, never a panic), and the value
//! conversions LDAP directories need: DNs compared as keys, Active Directory's
//! binary `objectGUID` as text, its `userAccountControl` disabled bit.

use std::ops::Range;

use super::ber::{tag, Reader};

/// An entry's DN and the attributes the search asked for, kept as the server sent
/// them: one buffer, and where each name and value lies in it.
#[derive(Debug, Default)]
pub struct Entry {
    pub dn: String,
    bytes: Vec<u8>,
    attributes: Vec<Attribute>,
    values: Vec<Range<usize>>,
}

#[derive(Debug)]
struct Attribute {
    name: Range<usize>,
    /// Which of the entry's `values` are this attribute's.
    values: Range<usize>,
}

impl Entry {
    /// Decodes the contents of a SearchResultEntry
    /// (`[APPLICATION 4] SEQUENCE { objectName, attributes }`).
    pub fn decode(bytes: Vec<u8>) -> Result<Self, String> {
        let broken = |what: &str| format!("a search result entry is broken: {what}");
        let mut entry = Self {
            bytes,
            ..Self::default()
        };
        let mut reader = Reader::new(&entry.bytes);
        let dn = reader.expect(tag::OCTET_STRING).map_err(broken)?;
        entry.dn = std::str::from_utf8(reader.contents(&dn))
            .map_err(|_| broken("the DN is not UTF-8"))?
            .to_owned();
        let list = reader.expect(tag::SEQUENCE).map_err(broken)?;
        let mut list = reader.inside(&list);
        while !list.is_empty() {
            let attribute = list.expect(tag::SEQUENCE).map_err(broken)?;
            let mut attribute = list.inside(&attribute);
            let name = attribute.expect(tag::OCTET_STRING).map_err(broken)?;
            let set = attribute.expect(tag::SET).map_err(broken)?;
            let mut set = attribute.inside(&set);
            let first = entry.values.len();
            while !set.is_empty() {
                let value = set.expect(tag::OCTET_STRING).map_err(broken)?;
                entry.values.push(value.contents);
            }
            entry.attributes.push(Attribute {
                name: name.contents,
                values: first..entry.values.len(),
            });
        }
        Ok(entry)
    }

    /// The values of `name` (attribute names compare without case).
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a [u8]> + Clone {
        let found = self
            .attributes
            .iter()
            .find(|a| self.bytes[a.name.clone()].eq_ignore_ascii_case(name.as_bytes()));
        let values = found.map_or(&[][..], |a| &self.values[a.values.clone()]);
        values.iter().map(|range| &self.bytes[range.clone()])
    }

    /// The values of `name` that are text.
    pub fn texts<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + Clone {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// The first text value of `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.texts(name).next()
    }

    /// An entry with these text attributes.
    #[cfg(test)]
    pub fn for_tests(dn: &str, attributes: &[(&str, &[&str])]) -> Self {
        let attributes: Vec<(&str, Vec<&[u8]>)> = attributes
            .iter()
            .map(|(name, values)| (*name, values.iter().map(|v| v.as_bytes()).collect()))
            .collect();
        Self::decode(tests::encoded(dn, &attributes)).expect("decodes")
    }

    /// The entry with `name` holding `values` instead of what it held, and
    /// without the ranges of it the server sent ([`super::ranges`]).
    pub fn with_values(mut self, name: &str, values: &[Vec<u8>]) -> Self {
        let range_of = format!("{name};range=").to_ascii_lowercase();
        self.attributes.retain(|a| {
            let held = self.bytes[a.name.clone()].to_ascii_lowercase();
            held != name.to_ascii_lowercase().as_bytes() && !held.starts_with(range_of.as_bytes())
        });
        let name_at = self.push_bytes(name.as_bytes());
        let first = self.values.len();
        for value in values {
            let at = self.push_bytes(value);
            self.values.push(at);
        }
        self.attributes.push(Attribute {
            name: name_at,
            values: first..self.values.len(),
        });
        self
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        start..self.bytes.len()
    }

    /// An attribute sent in ranges (Active Directory's answer for more values than
    /// it sends at once, e.g. `member;range=0-1499`), if any.
    pub fn ranged_attribute(&self) -> Option<&str> {
        self.attributes
            .iter()
            .filter_map(|a| std::str::from_utf8(&self.bytes[a.name.clone()]).ok())
            .find(|name| name.to_ascii_lowercase().contains(";range="))
    }
}

/// A DN as a key: lower-cased, without the spaces allowed around `,` `=` and `+`,
/// so that a member value and the entry's own DN compare equal however each was
/// written. (Escaped characters are kept as written.)
pub fn dn_key(dn: &str) -> String {
    let mut key = String::with_capacity(dn.len());
    let (mut escaped, mut after_separator) = (false, false);
    for c in dn.trim().chars() {
        if escaped {
            // The group listing keeps keys one a line: a line break is kept as
            // its hex escape (the backslash is in already).
            match c {
                '\n' => key.push_str("0a"),
                c => key.push(c),
            }
            (escaped, after_separator) = (false, false);
            continue;
        }
        match c {
            '\n' => key.push_str("\\0a"),
            ' ' if after_separator => continue,
            ',' | '=' | '+' => {
                while key.ends_with(' ') && !key.ends_with("\\ ") {
                    key.pop();
                }
                key.push(c);
                after_separator = true;
                continue;
            }
            '\\' => {
                escaped = true;
                key.push(c);
            }
            c if c.is_ascii() => key.push(c.to_ascii_lowercase()),
            c => key.extend(c.to_lowercase()),
        }
        after_separator = false;
    }
    key
}

/// How a login (`uid`, `memberUid`) is keyed: trimmed, a line break written as a
/// DN would escape it, since the group listing keeps keys one a line.
pub fn login_key(value: &str) -> String {
    value.trim().replace('\n', "\\0a")
}

/// A `uniqueMember` value may carry an optional `#'0101'B` UID after the DN.
pub fn member_dn(value: &str) -> &str {
    match value.rsplit_once("#'") {
        Some((dn, uid)) if uid.ends_with("'B") => dn,
        _ => value,
    }
}

/// The canonical text of a 16-byte GUID as Active Directory stores it
/// (`objectGUID`): the first three fields are little-endian.
pub fn guid_text(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The text of a 16-byte UUID in network order, as OpenLDAP writes `entryUUID`
/// and as content synchronisation sends it in binary.
pub fn uuid_text(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Active Directory's ACCOUNTDISABLE bit of `userAccountControl`.
pub fn account_disabled(user_account_control: &str) -> bool {
    const ACCOUNTDISABLE: i64 = 0x2;
    user_account_control
        .trim()
        .parse::<i64>()
        .is_ok_and(|flags| flags & ACCOUNTDISABLE != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{ASNTag, OctetString, Sequence, Set, Tag};

    fn octets(bytes: &[u8]) -> Tag {
        Tag::OctetString(OctetString {
            inner: bytes.to_vec(),
            ..Default::default()
        })
    }

    fn sequence(inner: Vec<Tag>) -> Tag {
        Tag::Sequence(Sequence {
            inner,
            ..Default::default()
        })
    }

    /// The contents of a SearchResultEntry: the DN and the attribute list.
    pub fn encoded(dn: &str, attributes: &[(&str, Vec<&[u8]>)]) -> Vec<u8> {
        let attribute = |(name, values): &(&str, Vec<&[u8]>)| {
            let set = Tag::Set(Set {
                inner: values.iter().map(|v| octets(v)).collect(),
                ..Default::default()
            });
            sequence(vec![octets(name.as_bytes()), set])
        };
        contents(vec![
            octets(dn.as_bytes()),
            sequence(attributes.iter().map(attribute).collect()),
        ])
    }

    /// The BER of `parts` one after another.
    fn contents(parts: Vec<Tag>) -> Vec<u8> {
        let mut buffer = bytes::BytesMut::new();
        for part in parts {
            ldap3::asn1::write::encode_into(&mut buffer, part.into_structure()).expect("encodes");
        }
        buffer.to_vec()
    }

    #[test]
    fn a_line_break_in_a_key_is_kept_as_its_hex_escape() {
        assert_eq!(dn_key("cn=a\nb,ou=X"), "cn=a\\0ab,ou=x");
        assert_eq!(dn_key("cn=a\\\nb"), "cn=a\\0ab");
        assert_eq!(login_key(" ann\nlee "), "ann\\0alee");
    }

    #[test]
    fn an_entry_decodes_text_and_binary_values_and_a_broken_one_is_an_error() {
        let entry = encoded(
            "uid=ann,ou=people,dc=example,dc=com",
            &[
                ("mail", vec![b"ann@example.com", b"a@example.com"]),
                ("objectGUID", vec![&[0xff; 16]]),
            ],
        );
        let entry = Entry::decode(entry).expect("decodes");
        assert_eq!(entry.dn, "uid=ann,ou=people,dc=example,dc=com");
        assert_eq!(
            entry.texts("MAIL").collect::<Vec<_>>(),
            ["ann@example.com", "a@example.com"]
        );
        assert_eq!(entry.values("objectguid").next().map(<[u8]>::len), Some(16));
        assert_eq!(entry.text("objectGUID"), None, "not UTF-8");
        assert_eq!(entry.values("cn").next(), None);

        let broken = contents(vec![octets(b"uid=x"), octets(b"not a list")]);
        assert!(Entry::decode(broken).is_err());
        let cut = encoded("uid=x", &[("cn", vec![b"x"])]);
        assert!(Entry::decode(cut[..cut.len() - 1].to_vec()).is_err());
    }

    #[test]
    fn dns_compare_without_case_and_separator_spaces() {
        assert_eq!(
            dn_key(" UID=Ann , ou=People,DC=example, dc=com"),
            "uid=ann,ou=people,dc=example,dc=com"
        );
        assert_eq!(dn_key(r"cn=Lee\, Ann,dc=x"), r"cn=lee\, ann,dc=x");
        assert_eq!(member_dn("uid=a,dc=x#'0101'B"), "uid=a,dc=x");
        assert_eq!(member_dn("uid=a#b,dc=x"), "uid=a#b,dc=x");
    }

    #[test]
    fn guids_and_uuids_have_their_canonical_text() {
        // The GUID {f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f} as AD's objectGUID bytes.
        let guid = [
            0xc3, 0xd2, 0xe1, 0xf0, 0xa5, 0xb4, 0x87, 0x96, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d,
            0x1e, 0x0f,
        ];
        assert_eq!(
            guid_text(&guid).as_deref(),
            Some("f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f")
        );
        assert_eq!(
            uuid_text(&guid).as_deref(),
            Some("c3d2e1f0-a5b4-8796-7869-5a4b3c2d1e0f")
        );
        assert_eq!(guid_text(&guid[..15]), None);
    }

    #[test]
    fn the_accountdisable_bit_marks_a_disabled_account() {
        assert!(account_disabled("514"));
        assert!(!account_disabled("512"));
        assert!(account_disabled("66050"));
        assert!(!account_disabled("66048"));
        assert!(!account_disabled("garbage"));
    }
}
