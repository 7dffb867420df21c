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

/// What is sent where: the header keeps everything but the `Resources` array's
/// entries (so it reads `"Resources":[]`), the entries go to the batch, and the
/// commas and blanks between them nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Header,
    Resource,
    Nowhere,
}

/// Feed it a body's chunks in order ([`ListSplitter::feed`]), take complete
/// resources whenever convenient ([`ListSplitter::take`]), and
/// [`ListSplitter::finish`] at the end.
#[derive(Debug)]
pub struct ListSplitter {
    header: Vec<u8>,
    ready: Batch,
    taken: usize,
    sink: Sink,
    /// Open objects and arrays, outside strings.
    depth: usize,
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// At the top level, the next string is a key.
    expecting_key: bool,
    /// Where the top-level key being read starts in `header`.
    key_start: Option<usize>,
    /// The last top-level key was `Resources`, and its value has not started.
    resources_next: bool,
    /// Inside the `Resources` array.
    in_resources: bool,
    /// The top-level object has closed.
    done: bool,
}

impl Default for ListSplitter {
    fn default() -> Self {
        Self {
            header: Vec::new(),
            ready: Batch::default(),
            taken: 0,
            sink: Sink::Nowhere,
            depth: 0,
            in_string: false,
            escaped: false,
            expecting_key: false,
            key_start: None,
            resources_next: false,
            in_resources: false,
            done: false,
        }
    }
}

impl ListSplitter {
    /// Frames the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), PageError> {
        let mut run_start = 0;
        let mut at = 0;
        while at < chunk.len() {
            if self.in_string {
                if std::mem::take(&mut self.escaped) {
                    at += 1;
                    continue;
                }
                // Strings are most of the bytes: jump to the next quote or backslash.
                let Some(offset) = memchr2(b'"', b'\\', &chunk[at..]) else {
                    break;
                };
                at += offset;
                if chunk[at] == b'\\' {
                    self.escaped = true;
                } else {
                    self.in_string = false;
                    if let Some(start) = self.key_start.take() {
                        self.flush(chunk, &mut run_start, at + 1);
                        self.resources_next = self.header[start..] == *b"\"Resources\"";
                    }
                }
                at += 1;
                continue;
            }
            let byte = chunk[at];
            if byte.is_ascii_whitespace() {
                at += 1;
                continue;
            }
            if self.done {
                return Err(PageError::MoreAfter);
            }
            if self.depth == 0 && byte != b'{' {
                return Err(PageError::NotAnObject);
            }
            if self.in_resources && self.depth == 2 && !matches!(byte, b'{' | b']' | b',') {
                let index = self.ready.first_index + self.ready.len();
                return Err(PageError::EntryNotAnObject { index });
            }
            match byte {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 && self.expecting_key {
                        self.expecting_key = false;
                        self.flush(chunk, &mut run_start, at);
                        self.key_start = Some(self.header.len());
                    }
                }
                b'{' | b'[' => {
                    if self.depth == 0 {
                        self.switch(Sink::Header, chunk, &mut run_start, at);
                        self.expecting_key = true;
                    } else if self.in_resources && self.depth == 2 {
                        self.switch(Sink::Resource, chunk, &mut run_start, at);
                    } else if self.depth == 1
                        && std::mem::take(&mut self.resources_next)
                        && byte == b'['
                    {
                        self.switch(Sink::Nowhere, chunk, &mut run_start, at + 1);
                        self.in_resources = true;
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    // At depth 0 only `{` gets this far.
                    self.depth -= 1;
                    if self.in_resources && self.depth == 2 {
                        self.switch(Sink::Nowhere, chunk, &mut run_start, at + 1);
                        self.ready.ends.push(self.ready.bytes.len());
                    } else if self.in_resources && self.depth == 1 {
                        self.switch(Sink::Header, chunk, &mut run_start, at);
                        self.in_resources = false;
                    } else if self.depth == 0 {
                        self.switch(Sink::Nowhere, chunk, &mut run_start, at + 1);
                        self.done = true;
                    }
                }
                b',' if self.depth == 1 => {
                    self.expecting_key = true;
                    self.resources_next = false;
                }
                b':' => {}
                _ if self.depth == 1 => self.resources_next = false,
                _ => {}
            }
            at += 1;
        }
        self.flush(chunk, &mut run_start, chunk.len());
        Ok(())
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
        if !self.done {
            return Err(PageError::EndedEarly);
        }
        let last = self.take();
        Ok((self.header, last))
    }

    /// Sends `chunk[run_start..to]` to the current sink.
    fn flush(&mut self, chunk: &[u8], run_start: &mut usize, to: usize) {
        let run = &chunk[*run_start..to];
        match self.sink {
            Sink::Header => self.header.extend_from_slice(run),
            Sink::Resource => self.ready.bytes.extend_from_slice(run),
            Sink::Nowhere => {}
        }
        *run_start = to;
    }

    /// Sends the bytes before `at` to the current sink, and those from `at` to `sink`.
    fn switch(&mut self, sink: Sink, chunk: &[u8], run_start: &mut usize, at: usize) {
        self.flush(chunk, run_start, at);
        self.sink = sink;
    }
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
