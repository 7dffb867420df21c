//! Reading a SCIM ListResponse page (RFC 7644 §3.4.2): its header, and its
//! resources parsed one by one into what a listing yields.
//!
//! A page is read whole when it is small. A large one (a group page can be tens
//! of MB, most of it member lists that are digested and dropped as they are read)
//! is split into its header and its resources while the body arrives, so that it
//! is never held whole. The splitter only frames the JSON (strings, escapes,
//! nesting); the resources are parsed by serde, which rejects anything malformed
//! inside them.

use memchr::memchr2;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// What a ListResponse says besides its resources.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListHeader {
    pub total_results: usize,
    pub items_per_page: Option<usize>,
}

impl ListHeader {
    /// Reads the header of a page, ignoring its resources.
    pub fn read(body: &[u8]) -> Result<Self, PageError> {
        serde_json::from_slice(body).map_err(PageError::NotAList)
    }
}

/// Why a page cannot be read. Each says what is wrong in its text, and so does
/// not offer its cause as a `source`.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("the page is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("not a SCIM ListResponse: {0}")]
    NotAList(serde_json::Error),
    #[error("the page is not a JSON object")]
    NotAnObject,
    #[error("there is more after the ListResponse object")]
    MoreAfter,
    #[error("the page ended before its JSON did")]
    EndedEarly,
    #[error("Resources[{index}] is not a JSON object")]
    EntryNotAnObject { index: usize },
    /// serde's reason, as text: a visitor only knows its error type as generic.
    #[error("Resources[{index}] is not a SCIM {kind}: {reason}")]
    NotAResource {
        index: usize,
        kind: String,
        reason: String,
    },
    /// A resource larger than the bound: the read would grow without one.
    #[error("Resources[{index}] is over source.max_resource_bytes = {max}")]
    TooLarge { index: usize, max: usize },
    /// A resource that the decoder's `map` refused, and why.
    #[error("Resources[{index}]: {reason}")]
    Refused { index: usize, reason: String },
}

/// For the callers that report a page's errors as text.
impl From<PageError> for String {
    fn from(err: PageError) -> Self {
        err.to_string()
    }
}

/// Parsing a byte slice, serde_json checks each string for UTF-8 on its own; one
/// check of the whole text first, and parsing it as text, costs several times less.
fn utf8(json: &[u8]) -> Result<&str, PageError> {
    std::str::from_utf8(json).map_err(PageError::NotUtf8)
}

fn not_a(index: usize, kind: &str, err: impl std::fmt::Display) -> PageError {
    PageError::NotAResource {
        index,
        kind: kind.to_owned(),
        reason: err.to_string(),
    }
}

/// A page's resources as a decoder gets them: a whole page, or a batch of the
/// complete resources split from a page that arrives in parts.
#[derive(Clone, Copy)]
pub enum Resources<'a> {
    Page(&'a [u8]),
    Batch(&'a Batch),
}

impl<'a> Resources<'a> {
    /// Parses each resource as a SCIM `kind` with `seed` (`PhantomData` for a type
    /// that needs none) and maps it. An error names the first resource that is not
    /// one, or that `map` refused, by its place on the page. A whole page also
    /// yields its header.
    pub fn decode<S: DeserializeSeed<'a> + Copy, T>(
        self,
        kind: &str,
        seed: S,
        mut map: impl FnMut(S::Value) -> Result<T, String>,
    ) -> Result<(Option<ListHeader>, Vec<T>), PageError> {
        match self {
            Resources::Page(body) => {
                let mut refused = None;
                let page = PageVisitor {
                    resources: Each {
                        kind,
                        map,
                        refused: &mut refused,
                        seed,
                    },
                };
                let mut reader = serde_json::Deserializer::from_str(utf8(body)?);
                let read = serde::Deserializer::deserialize_map(&mut reader, page)
                    .and_then(|page| reader.end().map(|()| page));
                match (read, refused) {
                    (_, Some(reason)) => Err(reason),
                    (Ok((header, resources)), None) => Ok((Some(header), resources)),
                    (Err(err), None) => Err(PageError::NotAList(err)),
                }
            }
            Resources::Batch(batch) => {
                let resources = batch
                    .resources()
                    .map(|(index, text)| {
                        let mut reader = serde_json::Deserializer::from_str(utf8(text)?);
                        let resource = seed
                            .deserialize(&mut reader)
                            .and_then(|resource| reader.end().map(|()| resource))
                            .map_err(|err| not_a(index, kind, err))?;
                        map(resource).map_err(|reason| PageError::Refused { index, reason })
                    })
                    .collect::<Result<_, _>>()?;
                Ok((None, resources))
            }
        }
    }
}

/// Reads a whole ListResponse, mapping each resource as it is parsed.
struct PageVisitor<'k, S, F> {
    resources: Each<'k, S, F>,
}

/// Maps each resource of a `Resources` array; a refusal is kept in `refused`,
/// whose reason is the run's error (serde's would only say where it stopped).
struct Each<'k, S, F> {
    kind: &'k str,
    map: F,
    refused: &'k mut Option<PageError>,
    seed: S,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    TotalResults,
    ItemsPerPage,
    #[serde(rename = "Resources")]
    Resources,
    #[serde(other)]
    Other,
}

impl<'de, S: DeserializeSeed<'de> + Copy, T, F: FnMut(S::Value) -> Result<T, String>> Visitor<'de>
    for PageVisitor<'_, S, F>
{
    type Value = (ListHeader, Vec<T>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a ListResponse object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Self::Value, A::Error> {
        let (mut total_results, mut items_per_page) = (None, None);
        let mut each = Some(self.resources);
        let mut resources = Vec::new();
        while let Some(field) = fields.next_key()? {
            match field {
                Field::TotalResults => total_results = Some(fields.next_value()?),
                Field::ItemsPerPage => items_per_page = fields.next_value()?,
                Field::Resources => match each.take() {
                    Some(each) => resources = fields.next_value_seed(each)?,
                    None => return Err(A::Error::duplicate_field("Resources")),
                },
                Field::Other => {
                    fields.next_value::<IgnoredAny>()?;
                }
            }
        }
        let total_results = total_results.ok_or_else(|| A::Error::missing_field("totalResults"))?;
        let header = ListHeader {
            total_results,
            items_per_page,
        };
        Ok((header, resources))
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy, T, F: FnMut(S::Value) -> Result<T, String>>
    DeserializeSeed<'de> for Each<'_, S, F>
{
    type Value = Vec<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, resources: D) -> Result<Vec<T>, D::Error> {
        // `null` is as good as no resources, as the split pages have it.
        resources.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy, T, F: FnMut(S::Value) -> Result<T, String>> Visitor<'de>
    for Each<'_, S, F>
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of resources")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, array: D) -> Result<Vec<T>, D::Error> {
        array.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut array: A) -> Result<Vec<T>, A::Error> {
        let mut resources = Vec::with_capacity(array.size_hint().unwrap_or(0));
        loop {
            let index = resources.len();
            let resource = match array.next_element_seed(self.seed) {
                Ok(Some(resource)) => resource,
                Ok(None) => return Ok(resources),
                Err(err) => {
                    *self.refused = Some(not_a(index, self.kind, &err));
                    return Err(err);
                }
            };
            match (self.map)(resource) {
                Ok(mapped) => resources.push(mapped),
                Err(reason) => {
                    *self.refused = Some(PageError::Refused { index, reason });
                    return Err(A::Error::custom("refused"));
                }
            }
        }
    }
}

/// Complete resources of one page, back to back, in page order.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// Where each resource ends in `bytes`.
    ends: Vec<usize>,
    /// The page position of the first resource, to name a bad one.
    first_index: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Each resource's position on the page and its JSON text.
    pub fn resources(&self) -> impl Iterator<Item = (usize, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .enumerate()
            .map(|(n, (start, &end))| (self.first_index + n, &self.bytes[start..end]))
    }
}

/// Where the splitter is in the page's JSON. It decides where the bytes go: the
/// header keeps everything but the `Resources` array's entries (so it reads
/// `"Resources":[]`), the entries go to the batch, and the commas and blanks
/// between them nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the page's object.
    Start,
    /// At the top level of the page's object, where a key comes next.
    Key,
    /// In a top-level key (a string); its text starts at `header[start]`.
    KeyName { start: usize },
    /// At the top level after a key, before or in its value; `resources` when the
    /// key is `Resources` and its value has not begun.
    Value { resources: bool },
    /// `depth` levels into a top-level value that is an object or an array.
    Nested { depth: usize },
    /// In the `Resources` array, before or between its entries.
    Between,
    /// `depth` levels into an entry of `Resources` (1 in the entry's own object).
    Entry { depth: usize },
    /// After the page's object.
    Done,
}

/// Whether the next byte is JSON code, or in a string (whose quotes and brackets
/// are not structure), or escaped in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Code,
    String,
    Escape,
}

/// Where a run of code inside a value ends.
enum Stop {
    /// At the quote that opens a string.
    Quote(usize),
    /// At the bracket that closes the value.
    Closed(usize),
    /// At the end of the chunk.
    End,
}

/// A chunk being framed, and how much of it went to its place's sink.
struct Chunk<'a> {
    bytes: &'a [u8],
    sent: usize,
}

/// Feed it a body's chunks in order ([`ListSplitter::feed`]), take complete
/// resources whenever convenient ([`ListSplitter::take`]), and
/// [`ListSplitter::finish`] at the end.
#[derive(Debug)]
pub struct ListSplitter {
    header: Vec<u8>,
    ready: Batch,
    taken: usize,
    place: Place,
    lex: Lex,
    /// The largest resource accepted.
    max_resource_bytes: usize,
    /// The page position of a complete resource over the bound.
    too_large: Option<usize>,
}

impl Default for ListSplitter {
    fn default() -> Self {
        Self::with_max_resource_bytes(usize::MAX)
    }
}

impl ListSplitter {
    /// A splitter that refuses a resource larger than `max_resource_bytes`, as
    /// soon as that many of its bytes have arrived.
    pub fn with_max_resource_bytes(max_resource_bytes: usize) -> Self {
        Self {
            header: Vec::new(),
            ready: Batch::default(),
            taken: 0,
            place: Place::Start,
            lex: Lex::Code,
            max_resource_bytes,
            too_large: None,
        }
    }

    /// Frames the next chunk of the body.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), PageError> {
        let mut chunk = Chunk { bytes, sent: 0 };
        let mut at = 0;
        while at < bytes.len() {
            at = match self.lex {
                Lex::Code => self.code(&mut chunk, at)?,
                Lex::String => self.string(&mut chunk, at),
                Lex::Escape => {
                    self.lex = Lex::String;
                    at + 1
                }
            };
        }
        self.flush(&mut chunk, bytes.len());
        // The entry still arriving, after the complete ones.
        let arriving = self.ready.bytes.len() - self.ready_bytes();
        let index = self.ready.first_index + self.ready.len();
        match self.too_large {
            _ if arriving > self.max_resource_bytes => Err(self.too_large_at(index)),
            Some(index) => Err(self.too_large_at(index)),
            None => Ok(()),
        }
    }

    fn too_large_at(&self, index: usize) -> PageError {
        PageError::TooLarge {
            index,
            max: self.max_resource_bytes,
        }
    }

    /// Bytes of complete resources not yet taken.
    pub fn ready_bytes(&self) -> usize {
        self.ready.ends.last().copied().unwrap_or(0)
    }

    /// Takes the complete resources read so far; an entry still being read stays.
    pub fn take(&mut self) -> Batch {
        if self.ready.ends.is_empty() {
            return Batch {
                first_index: self.taken,
                ..Batch::default()
            };
        }
        let complete = self.ready_bytes();
        let rest = self.ready.bytes.split_off(complete);
        self.taken += self.ready.len();
        std::mem::replace(
            &mut self.ready,
            Batch {
                bytes: rest,
                ends: Vec::new(),
                first_index: self.taken,
            },
        )
    }

    /// The body is complete: returns the header's JSON (with an empty
    /// `Resources`) and the last resources.
    pub fn finish(mut self) -> Result<(Vec<u8>, Batch), PageError> {
        if self.place != Place::Done {
            return Err(PageError::EndedEarly);
        }
        let last = self.take();
        Ok((self.header, last))
    }

    /// Frames a string from `at` up to its closing quote; returns where to go on.
    fn string(&mut self, chunk: &mut Chunk, at: usize) -> usize {
        // Strings are most of the bytes: jump to the next quote or backslash.
        let Some(offset) = memchr2(b'"', b'\\', &chunk.bytes[at..]) else {
            return chunk.bytes.len();
        };
        let at = at + offset;
        if chunk.bytes[at] == b'\\' {
            self.lex = Lex::Escape;
            return at + 1;
        }
        self.lex = Lex::Code;
        if let Place::KeyName { start } = self.place {
            self.flush(chunk, at + 1);
            let resources = self.header[start..] == *b"\"Resources\"";
            self.place = Place::Value { resources };
        }
        at + 1
    }

    /// Frames JSON code from `at`; returns where to go on.
    fn code(&mut self, chunk: &mut Chunk, at: usize) -> Result<usize, PageError> {
        let byte = chunk.bytes[at];
        match self.place {
            Place::Entry { depth } => return Ok(self.entry(chunk, at, depth)),
            Place::Nested { depth } => return Ok(self.nested(chunk, at, depth)),
            _ if byte.is_ascii_whitespace() => {}
            Place::Start if byte == b'{' => self.enter(Place::Key, chunk, at),
            Place::Start => return Err(PageError::NotAnObject),
            // A key's place lasts only as long as its string.
            Place::Key | Place::KeyName { .. } | Place::Value { .. } => {
                self.top_level(chunk, at, byte);
            }
            Place::Between => self.between(chunk, at, byte)?,
            Place::Done => return Err(PageError::MoreAfter),
        }
        Ok(at + 1)
    }

    /// A byte of code at the top level of the page's object.
    fn top_level(&mut self, chunk: &mut Chunk, at: usize, byte: u8) {
        match (byte, self.place) {
            (b'"', Place::Key) => {
                self.flush(chunk, at);
                self.place = Place::KeyName {
                    start: self.header.len(),
                };
                self.lex = Lex::String;
            }
            (b'"', _) => {
                self.place = Place::Value { resources: false };
                self.lex = Lex::String;
            }
            (b'[', Place::Value { resources: true }) => self.enter(Place::Between, chunk, at + 1),
            (b'{' | b'[', _) => self.place = Place::Nested { depth: 1 },
            (b'}' | b']', _) => self.enter(Place::Done, chunk, at + 1),
            (b',', _) => self.place = Place::Key,
            (b':', _) => {}
            _ => self.place = Place::Value { resources: false },
        }
    }

    /// A byte of code in the `Resources` array outside its entries, which must
    /// be objects.
    fn between(&mut self, chunk: &mut Chunk, at: usize, byte: u8) -> Result<(), PageError> {
        match byte {
            b'{' => self.enter(Place::Entry { depth: 1 }, chunk, at),
            b']' => self.enter(Place::Value { resources: false }, chunk, at),
            b',' => {}
            _ => {
                let index = self.ready.first_index + self.ready.len();
                return Err(PageError::EntryNotAnObject { index });
            }
        }
        Ok(())
    }

    /// Code in an entry of `Resources`: complete once its object closes.
    fn entry(&mut self, chunk: &mut Chunk, at: usize, mut depth: usize) -> usize {
        let stop = scan(chunk.bytes, at, &mut depth);
        self.place = Place::Entry { depth };
        match stop {
            Stop::Quote(quote) => {
                self.lex = Lex::String;
                quote + 1
            }
            Stop::Closed(end) => {
                self.enter(Place::Between, chunk, end + 1);
                let start = self.ready_bytes();
                if self.ready.bytes.len() - start > self.max_resource_bytes {
                    let index = self.ready.first_index + self.ready.len();
                    self.too_large.get_or_insert(index);
                }
                self.ready.ends.push(self.ready.bytes.len());
                end + 1
            }
            Stop::End => chunk.bytes.len(),
        }
    }

    /// Code in a top-level object or array other than `Resources`.
    fn nested(&mut self, chunk: &mut Chunk, at: usize, mut depth: usize) -> usize {
        let stop = scan(chunk.bytes, at, &mut depth);
        self.place = Place::Nested { depth };
        match stop {
            Stop::Quote(quote) => {
                self.lex = Lex::String;
                quote + 1
            }
            Stop::Closed(end) => {
                self.place = Place::Value { resources: false };
                end + 1
            }
            Stop::End => chunk.bytes.len(),
        }
    }

    /// Sends the bytes before `cut` to the current place's sink, and those from
    /// `cut` on to `place`'s.
    fn enter(&mut self, place: Place, chunk: &mut Chunk, cut: usize) {
        self.flush(chunk, cut);
        self.place = place;
    }

    /// Sends the chunk's bytes before `to` that are not sent yet to the current
    /// place's sink: the header, the batch, or nowhere.
    fn flush(&mut self, chunk: &mut Chunk, to: usize) {
        let run = &chunk.bytes[chunk.sent..to];
        match self.place {
            Place::Start | Place::Between | Place::Done => {}
            Place::Entry { .. } => self.ready.bytes.extend_from_slice(run),
            Place::Key | Place::KeyName { .. } | Place::Value { .. } | Place::Nested { .. } => {
                self.header.extend_from_slice(run);
            }
        }
        chunk.sent = to;
    }
}

/// Scans code `depth` levels into a value from `at`, counting its brackets, up to
/// a string or the value's end. Only brackets and quotes matter in there: serde
/// checks the rest when it parses the value.
fn scan(bytes: &[u8], at: usize, depth: &mut usize) -> Stop {
    for (i, &byte) in bytes.iter().enumerate().skip(at) {
        match byte {
            b'"' => return Stop::Quote(i),
            b'{' | b'[' => *depth += 1,
            b'}' | b']' => {
                *depth -= 1;
                if *depth == 0 {
                    return Stop::Closed(i);
                }
            }
            _ => {}
        }
    }
    Stop::End
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;

    use super::*;

    /// Splits `body` fed in chunks of `size` bytes, taking batches as it goes.
    fn split(body: &str, size: usize) -> Result<(String, Vec<(usize, String)>), String> {
        let mut splitter = ListSplitter::default();
        let mut resources = Vec::new();
        let mut collect = |batch: Batch| {
            for (index, text) in batch.resources() {
                resources.push((index, String::from_utf8(text.to_vec()).unwrap()));
            }
        };
        for chunk in body.as_bytes().chunks(size) {
            splitter.feed(chunk)?;
            collect(splitter.take());
        }
        let (header, last) = splitter.finish()?;
        collect(last);
        Ok((String::from_utf8(header).unwrap(), resources))
    }

    const PAGE: &str = r#" {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 3, "Resources": [
          {"id": "a", "displayName": "brace } and \"quote\" and [", "members": [{"value": "u\\"}]},
          {"id": "b", "note": "Resources"} ,{"id":"c"}
        ], "itemsPerPage": 3, "startIndex": 1}
    "#;

    #[test]
    fn a_page_splits_into_its_header_and_resources_in_any_chunking() {
        let expected_resources = vec![
            (
                0,
                r#"{"id": "a", "displayName": "brace } and \"quote\" and [", "members": [{"value": "u\\"}]}"#.to_string(),
            ),
            (1, r#"{"id": "b", "note": "Resources"}"#.to_string()),
            (2, r#"{"id":"c"}"#.to_string()),
        ];
        for size in [1, 2, 3, 7, 64, PAGE.len()] {
            let (header, resources) = split(PAGE, size).expect("splits");
            let header: serde_json::Value = serde_json::from_str(&header).expect("header is JSON");
            assert_eq!(header["totalResults"], 3, "chunks of {size}");
            assert_eq!(header["itemsPerPage"], 3);
            assert_eq!(header["Resources"], serde_json::json!([]));
            assert_eq!(resources, expected_resources, "chunks of {size}");
        }
    }

    #[test]
    fn a_resource_over_the_bound_is_refused_however_it_arrives() {
        // Resources[0] is 88 bytes: refused at 87, whole or cut in any chunks.
        for size in [1, 7, 64, PAGE.len()] {
            let mut splitter = ListSplitter::with_max_resource_bytes(87);
            let refused = PAGE
                .as_bytes()
                .chunks(size)
                .find_map(|chunk| splitter.feed(chunk).err());
            assert_eq!(
                refused.map(|err| err.to_string()),
                Some("Resources[0] is over source.max_resource_bytes = 87".to_owned()),
                "chunks of {size}"
            );
            let mut splitter = ListSplitter::with_max_resource_bytes(88);
            for chunk in PAGE.as_bytes().chunks(size) {
                splitter.feed(chunk).expect("within the bound");
            }
        }
    }

    /// Splits `body` fed in the chunks that `cuts` (ascending offsets) make.
    fn split_at(body: &str, cuts: &[usize]) -> Result<(String, Vec<(usize, String)>), String> {
        let mut splitter = ListSplitter::default();
        let mut resources = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&body.len()]) {
            splitter.feed(&body.as_bytes()[from..to])?;
            from = to;
            for (index, text) in splitter.take().resources() {
                resources.push((index, String::from_utf8(text.to_vec()).unwrap()));
            }
        }
        let (header, last) = splitter.finish()?;
        assert_eq!(last.len(), 0, "every resource was taken");
        Ok((String::from_utf8(header).unwrap(), resources))
    }

    /// A page with something for every place of the splitter: blanks around the
    /// tokens, keys and values with escapes, brackets and the word `Resources` in
    /// strings, nested header values, entries with nested arrays.
    const TRICKY: &str = r#"
        { "we\"ird" : "x\\", "note": "Resources", "meta": {"a": ["]", "}", {"b": "\\"}],
          "Resources": 1}, "totalResults" : 2, "Resources"  :
          [ {"id": "a\"]", "members": [[], {"v": "\\\\"}], "n": -1.5e3, "t": true} ,
            {"id": "b}", "x": null} ] , "itemsPerPage": 2 }
    "#;

    #[test]
    fn every_place_of_the_splitter_survives_a_chunk_boundary() {
        let whole = split_at(TRICKY, &[]).expect("splits");
        let header: serde_json::Value = serde_json::from_str(&whole.0).expect("header is JSON");
        assert_eq!(header["Resources"], serde_json::json!([]));
        assert_eq!(header["meta"]["Resources"], 1);
        assert_eq!(header["we\"ird"], "x\\");
        let ids: Vec<serde_json::Value> = whole
            .1
            .iter()
            .map(|(_, text)| serde_json::from_str(text).expect("a resource is JSON"))
            .collect();
        assert_eq!(ids[0]["id"], "a\"]");
        assert_eq!(ids[0]["members"][1]["v"], "\\\\");
        assert_eq!(ids[1]["id"], "b}");
        for cut in 0..=TRICKY.len() {
            assert_eq!(
                split_at(TRICKY, &[cut]).expect("splits"),
                whole,
                "cut at {cut}"
            );
        }
        // The places named: a cut inside an escaped quote, inside `\\`, between
        // the `Resources` key and its `[`, and between two entries.
        let after = |text: &str| TRICKY.find(text).expect(text) + text.len();
        for cuts in [
            [after(r#""a\"#), after(r#"{"v": "\"#)],
            [after(r#""we\"#), after(r#""x\"#)],
            [after(r#""Resources""#), after(r#""Resources"  :"#)],
            [after(r#""t": true}"#), after(r#""t": true} ,"#)],
        ] {
            assert_eq!(split_at(TRICKY, &cuts).expect("splits"), whole, "{cuts:?}");
        }
    }

    #[test]
    fn a_page_that_ends_in_a_string_or_an_escape_ended_early() {
        for body in [
            r#"{"Resources": [{"id": "a"#,
            r#"{"Resources": [{"id": "a\"#,
        ] {
            let err = split(body, 3).unwrap_err();
            assert!(err.contains("ended before"), "{body}: {err}");
        }
    }

    /// Reads `body` whole, keeping each resource's `id`.
    fn read_whole(body: &str) -> Result<(ListHeader, Vec<String>), String> {
        #[derive(Deserialize)]
        struct Resource {
            id: String,
        }
        let (header, ids) =
            Resources::Page(body.as_bytes())
                .decode("Thing", PhantomData::<Resource>, |r| Ok(r.id))?;
        Ok((header.expect("a whole page has a header"), ids))
    }

    #[test]
    fn a_whole_page_gives_its_header_and_resources() {
        let (header, ids) = read_whole(PAGE).expect("reads");
        assert_eq!((header.total_results, header.items_per_page), (3, Some(3)));
        assert_eq!(ids, ["a", "b", "c"]);
        for body in [
            r#"{"totalResults": 0}"#,
            r#"{"Resources": null, "totalResults": 0}"#,
        ] {
            let (header, ids) = read_whole(body).expect(body);
            assert_eq!(header.total_results, 0);
            assert!(ids.is_empty(), "{body}");
        }
        for (body, reason) in [
            (r#"{"Resources": []}"#, "missing field `totalResults`"),
            (
                r#"{"totalResults": 1, "Resources": [{"id": 1}]}"#,
                "Resources[0] is not a SCIM Thing",
            ),
            (
                r#"{"totalResults": 1, "Resources": [], "Resources": []}"#,
                "duplicate field",
            ),
            (r#"{"totalResults": 1} x"#, "trailing characters"),
        ] {
            let err = read_whole(body).unwrap_err();
            assert!(err.contains(reason), "{body}: {err}");
        }
    }

    #[test]
    fn a_page_without_resources_has_none() {
        for body in [
            r#"{"totalResults": 0}"#,
            r#"{"totalResults": 0, "Resources": []}"#,
            r#"{"Resources": null, "totalResults": 0}"#,
            r#"{"totalResults": 0, "other": {"Resources": [{"id": "x"}]}}"#,
        ] {
            let (header, resources) = split(body, 5).expect(body);
            assert!(resources.is_empty(), "{body}");
            let header: serde_json::Value = serde_json::from_str(&header).expect(body);
            assert_eq!(header["totalResults"], 0);
        }
    }

    #[test]
    fn broken_pages_are_refused_with_a_reason() {
        for (body, reason) in [
            (
                r#"{"totalResults": 1, "Resources": [{"id": "a"}"#,
                "ended before",
            ),
            (r#"[{"id": "a"}]"#, "not a JSON object"),
            (
                r#"{"Resources": [{"id": "a"}, "b"]}"#,
                "Resources[1] is not a JSON object",
            ),
            (
                r#"{"Resources": [{"id": "a"}, 1]}"#,
                "Resources[1] is not a JSON object",
            ),
            (r#"{"Resources": [}"#, "Resources[0] is not a JSON object"),
            (r#"{"Resources": []}}"#, "more after"),
            (r#"{"Resources": []} x"#, "more after"),
            ("", "ended before"),
        ] {
            let err = split(body, 4).unwrap_err();
            assert!(err.contains(reason), "{body}: {err}");
        }
    }
}
