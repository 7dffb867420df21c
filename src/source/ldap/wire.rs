//! LDAP messages on the wire (RFC 4511): the few requests idsync sends, encoded
//! with `lber`, and the server's answers, framed and decoded straight from the
//! bytes read. The client crate built a BER tree of every message and copied it
//! before idsync decoded it again, which was most of a full read's CPU.

use bytes::BytesMut;
use futures::FutureExt;
use ldap3::asn1::{
    write, ASNTag, Boolean, Enumerated, Integer, Null, OctetString, Sequence, StructureTag, Tag,
    TagClass,
};
use ldap3::controls::RawControl;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ber::{self, tag, Element, Reader};
use super::entry::Entry;

/// A message larger than this is refused instead of buffered (a group of a
/// million members is about 60 MB).
const MAX_MESSAGE: usize = 256 << 20;
/// How much is asked of the socket at a time while a message is incomplete.
const READ_AHEAD: usize = 64 << 10;

/// The protocol operations idsync reads.
mod op {
    pub const BIND_RESPONSE: u8 = 1;
    pub const SEARCH_ENTRY: u8 = 4;
    pub const SEARCH_DONE: u8 = 5;
    pub const SEARCH_REFERENCE: u8 = 19;
    pub const EXTENDED_RESPONSE: u8 = 24;
    pub const INTERMEDIATE: u8 = 25;
}

/// One side of an LDAP session: the stream and what was read of it but not yet
/// decoded.
pub struct Wire<S> {
    stream: S,
    buffer: BytesMut,
    last_id: i32,
}

/// An answer from the server.
pub struct Message {
    pub id: i32,
    pub answer: Answer,
    pub controls: Vec<RawControl>,
}

pub enum Answer {
    Entry(Entry),
    Reference(Vec<String>),
    /// RFC 4533 SyncInfo and other intermediate responses, still encoded.
    Intermediate(StructureTag),
    /// The end of an operation (bind, search, extended).
    Done(Outcome),
}

/// An operation's result code and the server's words about it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub code: u32,
    pub text: String,
    pub referrals: Vec<String>,
    /// The controls that came with the result (a search's paging cookie).
    pub controls: Vec<RawControl>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buffer: BytesMut::new(),
            last_id: 0,
        }
    }

    /// The stream back, for StartTLS: nothing may be left unread on it.
    pub fn into_stream(self) -> Result<S, String> {
        if self.buffer.is_empty() {
            Ok(self.stream)
        } else {
            Err("the server sent more than its StartTLS answer".into())
        }
    }

    /// Sends `request` with `controls`; returns its message id.
    pub async fn send(&mut self, request: Tag, controls: &[RawControl]) -> std::io::Result<i32> {
        self.last_id = self.last_id % i32::MAX + 1;
        let bytes = encode_message(i64::from(self.last_id), request, controls)?;
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        Ok(self.last_id)
    }

    /// Whether a whole message (or a broken one) waits in what was read, so
    /// that [`Wire::receive`] will not wait on the socket.
    pub fn holds_message(&self) -> bool {
        match ber::header(&self.buffer) {
            Ok(Some((_, header, length))) => self.buffer.len() >= header + length,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Whether the server sent nothing that was not asked for: an idle session
    /// the server closed, or ended with a notice, has something to read.
    pub fn is_quiet(&mut self) -> bool {
        self.buffer.is_empty() && self.receive().now_or_never().is_none() && self.buffer.is_empty()
    }

    /// The next whole message from the server.
    pub async fn receive(&mut self) -> Result<Message, String> {
        loop {
            let wanted = match ber::header(&self.buffer)? {
                Some((_, header, length)) if header + length > MAX_MESSAGE => {
                    return Err(format!("the server sent a message of {length} bytes"));
                }
                Some((_, header, length)) if self.buffer.len() >= header + length => {
                    let frame = self.buffer.split_to(header + length);
                    return Message::decode(&frame)
                        .map_err(|why| format!("a broken answer: {why}"));
                }
                Some((_, header, length)) => header + length - self.buffer.len(),
                None => READ_AHEAD,
            };
            self.buffer.reserve(wanted.max(READ_AHEAD));
            let read = self.stream.read_buf(&mut self.buffer).await;
            match read.map_err(|err| format!("reading from the server failed: {err}"))? {
                0 => return Err("the server closed the connection".into()),
                _ => continue,
            }
        }
    }

    /// Ends the session politely; the server answers nothing.
    pub async fn unbind(&mut self) {
        let unbind = Tag::Null(Null {
            id: 2,
            class: TagClass::Application,
            inner: (),
        });
        if self.send(unbind, &[]).await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }
}

impl Message {
    /// Decodes `LDAPMessage ::= SEQUENCE { messageID, protocolOp, controls [0] OPTIONAL }`.
    fn decode(frame: &[u8]) -> Result<Self, ber::Broken> {
        let mut outer = Reader::new(frame);
        let message = outer.expect(tag::SEQUENCE)?;
        let mut parts = outer.inside(&message);
        let id = parts.expect(tag::INTEGER)?;
        let id = i32::try_from(ber::unsigned(parts.contents(&id))?).map_err(|_| "a message id")?;
        let operation = parts.next()?;
        let answer = answer(&parts, &operation)?;
        // Active Directory puts an extended response's name after the operation.
        let _ = parts.next_if(tag::context_primitive(10))?;
        let controls = match parts.next_if(tag::context(0))? {
            Some(list) => controls(parts.inside(&list))?,
            None => Vec::new(),
        };
        Ok(Self {
            id,
            answer,
            controls,
        })
    }
}

fn answer(reader: &Reader, operation: &Element) -> Result<Answer, ber::Broken> {
    match operation.tag {
        t if t == tag::application(op::SEARCH_ENTRY) => {
            let contents = reader.contents(operation).to_vec();
            Entry::decode(contents)
                .map(Answer::Entry)
                .map_err(|_| "an entry")
        }
        t if t == tag::application(op::SEARCH_REFERENCE) => {
            texts(reader.inside(operation)).map(Answer::Reference)
        }
        t if t == tag::application(op::INTERMEDIATE) => {
            match ldap3::asn1::parse_tag(reader.whole(operation)) {
                Ok((_, parsed)) => Ok(Answer::Intermediate(parsed)),
                Err(_) => Err("an intermediate response"),
            }
        }
        t if [op::BIND_RESPONSE, op::SEARCH_DONE, op::EXTENDED_RESPONSE]
            .iter()
            .any(|n| t == tag::application(*n)) =>
        {
            outcome(reader.inside(operation)).map(Answer::Done)
        }
        _ => Err("an operation idsync does not ask for"),
    }
}

/// `LDAPResult ::= SEQUENCE { resultCode, matchedDN, diagnosticMessage, referral [3] OPTIONAL, ... }`.
fn outcome(mut parts: Reader) -> Result<Outcome, ber::Broken> {
    let code = parts.expect(tag::ENUMERATED)?;
    let code = ber::unsigned(parts.contents(&code))?;
    parts.expect(tag::OCTET_STRING)?;
    let text = parts.expect(tag::OCTET_STRING)?;
    let text = String::from_utf8_lossy(parts.contents(&text)).into_owned();
    let referrals = match parts.next_if(tag::context(3))? {
        Some(list) => texts(parts.inside(&list))?,
        None => Vec::new(),
    };
    Ok(Outcome {
        code,
        text,
        referrals,
        controls: Vec::new(),
    })
}

/// `Control ::= SEQUENCE { controlType, criticality BOOLEAN DEFAULT FALSE, controlValue OPTIONAL }`.
fn controls(mut list: Reader) -> Result<Vec<RawControl>, ber::Broken> {
    let mut controls = Vec::new();
    while !list.is_empty() {
        let control = list.expect(tag::SEQUENCE)?;
        let mut parts = list.inside(&control);
        let oid = parts.expect(tag::OCTET_STRING)?;
        let ctype = std::str::from_utf8(parts.contents(&oid)).map_err(|_| "a control's OID")?;
        let crit = match parts.next_if(tag::BOOLEAN)? {
            Some(flag) => parts.contents(&flag).first().is_some_and(|b| *b != 0),
            None => false,
        };
        let val = parts
            .next_if(tag::OCTET_STRING)?
            .map(|value| parts.contents(&value).to_vec());
        controls.push(RawControl {
            ctype: ctype.to_owned(),
            crit,
            val,
        });
    }
    Ok(controls)
}

/// A SEQUENCE OF OCTET STRING as text (referral URLs).
fn texts(mut list: Reader) -> Result<Vec<String>, ber::Broken> {
    let mut texts = Vec::new();
    while !list.is_empty() {
        let text = list.expect(tag::OCTET_STRING)?;
        texts.push(String::from_utf8_lossy(list.contents(&text)).into_owned());
    }
    Ok(texts)
}

/// `BindRequest`: version 3, simple authentication.
pub fn bind_request(dn: &str, password: &str) -> Tag {
    Tag::Sequence(Sequence {
        id: 0,
        class: TagClass::Application,
        inner: vec![
            integer(3),
            octets(dn.as_bytes()),
            Tag::OctetString(OctetString {
                id: 0,
                class: TagClass::Context,
                inner: password.as_bytes().to_vec(),
            }),
        ],
    })
}

/// The StartTLS extended request (RFC 4511 4.14).
pub fn start_tls_request() -> Tag {
    Tag::Sequence(Sequence {
        id: 23,
        class: TagClass::Application,
        inner: vec![Tag::OctetString(OctetString {
            id: 0,
            class: TagClass::Context,
            inner: b"1.3.6.1.4.1.1466.20037".to_vec(),
        })],
    })
}

/// How deep a search looks.
#[derive(Clone, Copy)]
pub enum Scope {
    BaseObject = 0,
    WholeSubtree = 2,
}

/// What a search asks for.
pub struct SearchRequest<'a> {
    pub base: &'a str,
    pub scope: Scope,
    pub size_limit: i64,
    pub filter: &'a str,
    pub attributes: &'a [&'a str],
}

impl SearchRequest<'_> {
    /// The request, or why `filter` is not an RFC 4515 filter.
    pub fn encode(&self) -> Result<Tag, String> {
        let filter = ldap3::parse_filter(self.filter)
            .map_err(|()| format!("{} is not an LDAP filter", self.filter))?;
        let attributes = self.attributes.iter().map(|a| octets(a.as_bytes()));
        Ok(Tag::Sequence(Sequence {
            id: 3,
            class: TagClass::Application,
            inner: vec![
                octets(self.base.as_bytes()),
                enumerated(self.scope as i64),
                enumerated(0), // never dereference aliases
                integer(self.size_limit),
                integer(0), // no time limit
                Tag::Boolean(Boolean {
                    inner: false,
                    ..Default::default()
                }),
                filter,
                sequence(attributes.collect()),
            ],
        }))
    }
}

/// The value of an RFC 2696 paged results control.
pub fn paged_results_value(size: u32, cookie: &[u8]) -> std::io::Result<Vec<u8>> {
    let value = sequence(vec![integer(i64::from(size)), octets(cookie)]);
    Ok(encode(value)?.to_vec())
}

/// `LDAPMessage ::= SEQUENCE { messageID, protocolOp, controls [0] OPTIONAL }`.
fn encode_message(id: i64, operation: Tag, controls: &[RawControl]) -> std::io::Result<BytesMut> {
    let mut parts = vec![integer(id), operation];
    if !controls.is_empty() {
        parts.push(Tag::Sequence(Sequence {
            id: 0,
            class: TagClass::Context,
            inner: controls.iter().map(control).collect(),
        }));
    }
    encode(sequence(parts))
}

fn encode(tag: Tag) -> std::io::Result<BytesMut> {
    let mut bytes = BytesMut::new();
    write::encode_into(&mut bytes, tag.into_structure())?;
    Ok(bytes)
}

/// The cookie in the value of a paged results control the server answered with.
pub fn paged_results_cookie(value: &[u8]) -> Result<&[u8], ber::Broken> {
    let mut outer = Reader::new(value);
    let sequence = outer.expect(tag::SEQUENCE)?;
    let mut parts = outer.inside(&sequence);
    parts.expect(tag::INTEGER)?;
    let cookie = parts.expect(tag::OCTET_STRING)?;
    Ok(parts.contents(&cookie))
}

/// `AbandonRequest ::= [APPLICATION 16] MessageID`.
pub fn abandon_request(id: i32) -> Tag {
    Tag::Integer(Integer {
        id: 16,
        class: TagClass::Application,
        inner: i64::from(id),
    })
}

fn control(control: &RawControl) -> Tag {
    let mut parts = vec![octets(control.ctype.as_bytes())];
    if control.crit {
        parts.push(Tag::Boolean(Boolean {
            inner: true,
            ..Default::default()
        }));
    }
    parts.extend(control.val.as_deref().map(octets));
    sequence(parts)
}

fn sequence(inner: Vec<Tag>) -> Tag {
    Tag::Sequence(Sequence {
        inner,
        ..Default::default()
    })
}

fn octets(bytes: &[u8]) -> Tag {
    Tag::OctetString(OctetString {
        inner: bytes.to_vec(),
        ..Default::default()
    })
}

fn integer(value: i64) -> Tag {
    Tag::Integer(Integer {
        inner: value,
        ..Default::default()
    })
}

fn enumerated(value: i64) -> Tag {
    Tag::Enumerated(Enumerated {
        inner: value,
        ..Default::default()
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An LDAPMessage with `id`, the operation `[APPLICATION number] contents`
    /// and, when given, controls.
    fn message(id: i64, number: u64, contents: Vec<Tag>, controls: &[RawControl]) -> Vec<u8> {
        let operation = Tag::Sequence(Sequence {
            id: number,
            class: TagClass::Application,
            inner: contents,
        });
        encode_message(id, operation, controls)
            .expect("encodes")
            .to_vec()
    }

    pub fn done(id: i64, code: i64, text: &str, controls: &[RawControl]) -> Vec<u8> {
        let result = vec![enumerated(code), octets(b""), octets(text.as_bytes())];
        message(id, u64::from(op::SEARCH_DONE), result, controls)
    }

    pub fn entry(id: i64, dn: &str, mail: &str) -> Vec<u8> {
        entry_with(id, dn, &[("mail", &[mail])])
    }

    pub fn entry_with(id: i64, dn: &str, attributes: &[(&str, &[&str])]) -> Vec<u8> {
        let attribute = |(name, values): &(&str, &[&str])| {
            let values = Tag::Set(ldap3::asn1::Set {
                inner: values.iter().map(|v| octets(v.as_bytes())).collect(),
                ..Default::default()
            });
            sequence(vec![octets(name.as_bytes()), values])
        };
        let attributes = sequence(attributes.iter().map(attribute).collect());
        let contents = vec![octets(dn.as_bytes()), attributes];
        message(id, u64::from(op::SEARCH_ENTRY), contents, &[])
    }

    #[tokio::test]
    async fn messages_are_framed_however_the_bytes_arrive() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut wire = Wire::new(client);
        let first = entry(7, "uid=ann,dc=x", "ann@example.com");
        let paged = RawControl {
            ctype: "1.2.840.113556.1.4.319".into(),
            crit: false,
            val: Some(paged_results_value(0, b"next").unwrap()),
        };
        let second = done(7, 4, "size limit", std::slice::from_ref(&paged));
        // The first message cut in two, the second sent with the rest of it.
        let (head, tail) = first.split_at(5);
        server.write_all(head).await.unwrap();
        let mut rest = tail.to_vec();
        rest.extend(&second);
        let reading = tokio::spawn(async move {
            let one = wire.receive().await;
            let two = wire.receive().await;
            (one, two)
        });
        tokio::task::yield_now().await;
        server.write_all(&rest).await.unwrap();
        let (one, two) = reading.await.unwrap();
        let one = one.expect("the entry");
        let Answer::Entry(entry) = one.answer else {
            panic!("not an entry")
        };
        assert_eq!((one.id, entry.text("MAIL")), (7, Some("ann@example.com")));
        let two = two.expect("the result");
        let Answer::Done(outcome) = two.answer else {
            panic!("not a result")
        };
        assert_eq!((outcome.code, outcome.text.as_str()), (4, "size limit"));
        assert_eq!(two.controls[0].ctype, paged.ctype);
        assert_eq!(two.controls[0].val, paged.val);
    }

    #[tokio::test]
    async fn a_closed_connection_or_a_broken_message_is_an_error() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut wire = Wire::new(client);
        let mut cut = done(1, 0, "", &[]);
        cut.truncate(cut.len() - 1);
        server.write_all(&cut).await.unwrap();
        drop(server);
        let said = wire.receive().await.err().expect("an error");
        assert!(said.contains("closed the connection"), "{said}");

        let (client, mut server) = tokio::io::duplex(1024);
        let mut wire = Wire::new(client);
        // A result whose code is a string instead of an ENUMERATED.
        let broken = message(1, u64::from(op::SEARCH_DONE), vec![octets(b"0")], &[]);
        server.write_all(&broken).await.unwrap();
        let said = wire.receive().await.err().expect("an error");
        assert!(said.contains("broken answer"), "{said}");
    }

    #[tokio::test]
    async fn a_sent_request_is_one_message_with_its_id_and_controls() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut sender = Wire::new(client);
        let request = SearchRequest {
            base: "dc=x",
            scope: Scope::WholeSubtree,
            size_limit: 0,
            filter: "(&(objectClass=person)(!(uid=a*)))",
            attributes: &["mail"],
        };
        let control = RawControl {
            ctype: "1.2.3".into(),
            crit: true,
            val: None,
        };
        let tag = request.encode().expect("a filter");
        assert_eq!(sender.send(tag.clone(), &[]).await.unwrap(), 1);
        assert_eq!(sender.send(tag, &[control]).await.unwrap(), 2);
        drop(sender);
        let mut bytes = Vec::new();
        let mut server = server;
        server.read_to_end(&mut bytes).await.unwrap();
        let mut reader = Reader::new(&bytes);
        for (id, with_controls) in [(1, false), (2, true)] {
            let message = reader.expect(tag::SEQUENCE).unwrap();
            let mut parts = reader.inside(&message);
            let sent_id = parts.expect(tag::INTEGER).unwrap();
            assert_eq!(ber::unsigned(parts.contents(&sent_id)), Ok(id));
            parts.expect(tag::application(3)).unwrap();
            assert_eq!(
                parts.next_if(tag::context(0)).unwrap().is_some(),
                with_controls
            );
        }
        assert!(reader.is_empty());

        let bad = SearchRequest {
            filter: "(uid=a",
            ..request
        };
        assert!(bad.encode().unwrap_err().contains("(uid=a"));
    }
}
