//! SCIM 2.0 (RFC 7643/7644) directory: pages through `/Users` and `/Groups`.
//!
//! Each resource is parsed straight into the few fields idsync needs and
//! normalized at once, so memory holds the normalized users, not the JSON. A small
//! page is read whole; a large one (group pages run to tens of MB) is split into
//! its resources as it downloads, and is never held whole.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

mod list_response;
mod membership_index;

use super::http::DirectoryHttp;
use super::normalize::{self, ListedEmail};
use super::{Delivery, Directory, Read, SourceError};
use super::auth::TokenSource;
use crate::config::{AttributeMap, AttributePath, ScimConfig, SubjectAttribute};
use crate::error_chain;
use crate::events;
use crate::model::{
    DirectoryUser, Email, EmailError, GroupName, IdDigest, IdKeys, Subject, UnusableEntry,
};
use list_response::{ListHeader, ListSplitter, PageError, Resources};
use membership_index::{MembershipIndex, MembershipIndexError};

const SCIM_JSON: &str = "application/scim+json, application/json";

/// Users read before the group listing is complete wait for it in memory; beyond
/// this many, or [`WAITING_SHARE`] of the directory if that is more, no more user
/// pages are requested until it is.
const MAX_WAITING_USERS: usize = 20_000;

/// The group listing's decoding grows with the directory, and so must the users
/// read meanwhile to keep the download slots busy (docs/performance.md).
const WAITING_SHARE: usize = 20;

/// How many users may wait for the group listing in a directory of `total`.
fn max_waiting(total: usize) -> usize {
    MAX_WAITING_USERS.max(total / WAITING_SHARE)
}

/// A group page's download pauses, and gives its slot to the other pages, while
/// the group listing's bytes downloaded and not yet decoded reach this. A few
/// department-wide groups can make one page tens of MB, and decoding is slower than loopback downloading: without a bound, the page
/// would pile up in memory ahead of its decoding. The user listing keeps the
/// download slots busy meanwhile.
const MAX_UNDECODED_GROUP_BYTES: usize = 4 * 1024 * 1024;

/// Cheap to clone: the page fetches run as tasks of their own.
#[derive(Clone)]
pub struct ScimSource {
    base: Url,
    page_size: u32,
    parallel_pages: usize,
    subject_attribute: SubjectAttribute,
    attributes: AttributeMap,
    http: DirectoryHttp,
}

impl Directory for ScimSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        _cursor: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move { self.pull(shutdown, &delivery).await })
    }

    fn name(&self) -> String {
        format!("scim {}", self.base)
    }

    fn probe(&self) -> futures::future::BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let total = self.count_users().await?;
            Ok(format!("token accepted; {total} users at {}", self.base))
        })
    }
}

impl ScimSource {
    pub fn new(
        config: &ScimConfig,
        attributes: &AttributeMap,
        http: reqwest::Client,
        tokens: TokenSource,
    ) -> Self {
        Self {
            base: config.url.clone(),
            page_size: config.page_size.get(),
            parallel_pages: config.parallel_pages.get(),
            attributes: attributes.clone(),
            subject_attribute: config.subject_attribute,
            http: DirectoryHttp::new(http, Arc::new(tokens), SCIM_JSON),
        }
    }

    /// Obtains a token and reads one user: checks the IdP credentials and the
    /// directory's URL. Returns the directory's `totalResults`.
    pub async fn count_users(&self) -> Result<usize, SourceError> {
        let mut url = self.page_url("Users", 1);
        url.query_pairs_mut()
            .clear()
            .append_pair("startIndex", "1")
            .append_pair("count", "1");
        let body = self.get_response(&url).await?.bytes().await;
        let body = body.map_err(|err| unavailable(&url, &err))?;
        let header = ListHeader::read(&body).map_err(|reason| inconsistent(&url, reason))?;
        Ok(header.total_results)
    }

    /// Reads the whole directory: the users, and the groups for their memberships.
    /// Complete users go to `delivery` in directory order as they are read, a page
    /// or so at a time; what the run does with them stands only once this returns
    /// `Ok`.
    ///
    /// The two listings share the download slots. The groups ask first, so they get
    /// the slots first; the users fill them whenever a group page waits for its
    /// decoding. A user read before the groups are complete must be held until they
    /// are, so the users stop requesting pages while more than `max_waiting` wait.
    pub async fn pull(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
    ) -> Result<Read, SourceError> {
        let listings = Listings {
            keys: IdKeys::new(),
            downloads: Arc::new(Semaphore::new(self.parallel_pages)),
            assembly: Mutex::new(Assembly::default()),
            groups_complete: tokio::sync::watch::Sender::new(false),
        };
        tokio::try_join!(
            self.pull_groups(shutdown, &listings),
            self.pull_users(shutdown, &listings, delivery)
        )?;
        let mut assembly = listings
            .assembly
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        delivery.deliver(std::mem::take(&mut assembly.ready));
        Ok(assembly.listing)
    }

    /// The group listing, into the assembly; then closes it.
    async fn pull_groups(
        &self,
        shutdown: &CancellationToken,
        listings: &Listings,
    ) -> Result<(), SourceError> {
        self.for_each_page(
            "Groups",
            shutdown,
            &listings.downloads,
            group_decoder(listings.keys.clone()),
            |groups, _total| {
                let mut assembly = listings.assembled();
                groups
                    .into_iter()
                    .try_for_each(|group| assembly.add_group(group))
            },
            ListingPace {
                before_next: || std::future::ready(()),
                max_undecoded_bytes: MAX_UNDECODED_GROUP_BYTES,
            },
        )
        .await?;
        // Before the close, whose tables would add to what the decoders freed, and
        // after it, for the member lists it frees.
        crate::memory::return_freed_memory();
        listings.assembled().close_groups();
        crate::memory::return_freed_memory();
        listings.groups_complete.send_replace(true);
        Ok(())
    }

    /// The user listing: each page into the assembly, and the users complete by
    /// then to `delivery`.
    async fn pull_users(
        &self,
        shutdown: &CancellationToken,
        listings: &Listings,
        delivery: &Delivery,
    ) -> Result<(), SourceError> {
        let decode = user_decoder(
            listings.keys.clone(),
            self.subject_attribute,
            self.attributes.clone(),
        );
        let visit = |users, total| {
            let ready = listings.assembled().add_users(users, total)?;
            delivery.deliver(ready);
            Ok(())
        };
        let before_next = || {
            let too_many_waiting = listings.assembled().too_many_waiting();
            let mut completed = listings.groups_complete.subscribe();
            async move {
                if too_many_waiting {
                    // Closed: the group listing failed, and so does the read.
                    let _ = completed.wait_for(|complete| *complete).await;
                }
                delivery.room().await;
            }
        };
        let pace = ListingPace {
            before_next,
            max_undecoded_bytes: usize::MAX,
        };
        self.for_each_page("Users", shutdown, &listings.downloads, decode, visit, pace)
            .await
    }

    /// Calls `visit` with every page of `/{resource}`'s resources, in order, checking
    /// that the pages add up to `totalResults`. `decode` turns a page's resources
    /// into what the listing yields, on the blocking pool (a large page's while it
    /// downloads); `visit` returns an error text when the data is unusable, and gets
    /// `totalResults` to size its collections. `pacing` keeps step with the other
    /// listing.
    ///
    /// Only the first page is read before the other pages are requested: it tells
    /// the total and the server's page size, and the rest sit at fixed offsets
    /// (SCIM's `startIndex` paging allows it). A download holds one of `downloads`
    /// (`parallel_pages` of them) until its body is read, and one more page may be
    /// finishing its decoding or waiting, so the next download runs while this page
    /// is visited.
    async fn for_each_page<T: Send + 'static, Paced: Future<Output = ()>>(
        &self,
        resource: &str,
        shutdown: &CancellationToken,
        downloads: &Arc<Semaphore>,
        decode: Decoder<T>,
        mut visit: impl FnMut(Vec<T>, usize) -> Result<(), String>,
        pacing: ListingPace<impl Fn() -> Paced>,
    ) -> Result<(), SourceError> {
        let undecoded = Arc::new(DecodeBacklog::new(pacing.max_undecoded_bytes));
        let read = |start: usize| {
            let url = self.page_url(resource, start);
            let (downloads, decode) = (downloads.clone(), decode.clone());
            self.clone()
                .read_page(url, downloads, decode, undecoded.clone())
        };
        let (first_url, first) = read(1).await;
        let first = first?;
        let total = first.total_results;
        let page_len = first.resources.len();
        // The server decides the page size (`itemsPerPage`); our `count` is a wish.
        let promised = first.items_per_page.unwrap_or(self.page_size as usize);
        check_page(&first_url, total, page_len, 1, total, promised, false)?;
        let mut starts = (1 + page_len..=total).step_by(page_len.max(1));
        let fetch = |start: usize| (start, AbortOnDrop(tokio::spawn(read(start))));
        let mut pending: VecDeque<_> = starts
            .by_ref()
            .take(self.parallel_pages + 1)
            .map(fetch)
            .collect();
        visit(first.resources, total).map_err(|reason| inconsistent(&first_url, reason))?;
        while let Some((start, mut task)) = pending.pop_front() {
            let (url, page) = (&mut task.0)
                .await
                .map_err(|err| SourceError::Unavailable {
                    url: self.page_url(resource, start).to_string(),
                    reason: format!("the page task failed: {err}"),
                })?;
            let page = page?;
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            (pacing.before_next)().await;
            pending.extend(starts.next().map(fetch));
            // Pages sit at fixed offsets: any other size would skip or repeat entries.
            let received = page.resources.len();
            check_page(
                &url,
                page.total_results,
                received,
                start,
                total,
                page_len,
                true,
            )?;
            visit(page.resources, total).map_err(|reason| inconsistent(&url, reason))?;
        }
        Ok(())
    }

    /// Downloads one page and decodes it. A page that outgrows one part is decoded
    /// as it arrives, by a worker on the blocking pool that splits it into its
    /// resources. Should the listing's undecoded bytes reach their limit, the
    /// download gives its slot to the other pages until the decoding catches up:
    /// this bounds the memory a large page takes without idling the connection.
    async fn read_page<T: Send + 'static>(
        self,
        url: Url,
        downloads: Arc<Semaphore>,
        decode: Decoder<T>,
        undecoded: Arc<DecodeBacklog>,
    ) -> (Url, Result<Page<T>, SourceError>) {
        let acquire = || async {
            undecoded.room().await;
            // Never closed.
            downloads.clone().acquire_owned().await.ok()
        };
        let mut slot = acquire().await;
        let mut response = match self.get_response(&url).await {
            Ok(response) => response,
            Err(err) => return (url, Err(err)),
        };
        let part_bytes = match response.content_length() {
            Some(bytes) if bytes as usize <= WHOLE_PAGE_BYTES => bytes as usize,
            _ => BODY_PART_BYTES,
        };
        let mut part = undecoded.part(part_bytes);
        let mut decoder = PageDecoder::new(decode);
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return (url.clone(), Err(unavailable(&url, &err))),
            };
            if part.is_full_for(chunk.len()) {
                let full = std::mem::replace(&mut part, undecoded.part(part_bytes));
                if !decoder.hand_over(full) {
                    break;
                }
            }
            part.extend(&chunk);
            if !undecoded.has_room() {
                // All that the limit counts must be with a decoder before waiting
                // for the decoders, or the wait could be for bytes held here.
                let held = std::mem::replace(&mut part, undecoded.part(part_bytes));
                if !decoder.hand_over(held) {
                    break;
                }
                drop(slot.take());
                slot = acquire().await;
            }
        }
        // The connection goes back to the pool with the response, for the next page.
        drop((response, slot));
        let decoded = decoder.finish(part).await;
        let page = match decoded {
            Ok(page) => page.map_err(|reason| inconsistent(&url, reason)),
            Err(err) => Err(SourceError::Unavailable {
                url: url.to_string(),
                reason: format!("the decoding task failed: {err}"),
            }),
        };
        (url, page)
    }

    fn page_url(&self, resource: &str, start_index: usize) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/{resource}", self.base.path()));
        url.query_pairs_mut()
            .append_pair("startIndex", &start_index.to_string())
            .append_pair("count", &self.page_size.to_string());
        url
    }

    /// One GET with the directory's retry policy and one token refresh on 401;
    /// returns the successful response with its body unread.
    async fn get_response(&self, url: &Url) -> Result<reqwest::Response, SourceError> {
        self.http.get(url).await
    }
}

/// A page whose body is at most this large is read whole, as one part, the
/// cheapest way to parse it.
const WHOLE_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A larger page arrives in parts of this size, each split into its resources and
/// decoded while the next downloads.
const BODY_PART_BYTES: usize = 1024 * 1024;

/// Decodes a page read whole.
fn decode_whole<T>(decode: &Decoder<T>, page: &BodyPart) -> Result<Page<T>, String> {
    let (header, resources) = decode(Resources::Page(&page.bytes))?;
    let header = header.ok_or("the page has no ListResponse header")?;
    Ok(Page::new(header, resources))
}

/// Decodes a page: whole once it is read, unless it outgrows one part; then a
/// worker on the blocking pool decodes its parts as they are handed over (a
/// worker for every page, small ones included, was slower).
struct PageDecoder<T> {
    decode: Decoder<T>,
    worker: Option<PartsWorker<T>>,
}

struct PartsWorker<T> {
    parts: std::sync::mpsc::Sender<BodyPart>,
    decoded: tokio::task::JoinHandle<Result<Page<T>, String>>,
}

impl<T: Send + 'static> PageDecoder<T> {
    fn new(decode: Decoder<T>) -> Self {
        Self {
            decode,
            worker: None,
        }
    }

    /// Hands a part of the page to the worker, starting it with the first. False
    /// once the worker has stopped early: it found the page unusable, and says why.
    fn hand_over(&mut self, part: BodyPart) -> bool {
        let worker = self.worker.get_or_insert_with(|| {
            let (parts, arriving) = std::sync::mpsc::channel();
            let decode = self.decode.clone();
            let decoded = tokio::task::spawn_blocking(move || decode_parts(arriving, &decode));
            PartsWorker { parts, decoded }
        });
        worker.parts.send(part).is_ok()
    }

    /// Decodes the rest of the page, `last` being its last part.
    async fn finish(
        self,
        last: BodyPart,
    ) -> Result<Result<Page<T>, String>, tokio::task::JoinError> {
        let Some(worker) = self.worker else {
            let decode = self.decode;
            return tokio::task::spawn_blocking(move || decode_whole(&decode, &last)).await;
        };
        // Refused only by a worker that stopped early.
        let _ = worker.parts.send(last);
        drop(worker.parts);
        worker.decoded.await
    }
}

/// Decodes a page as its parts arrive: each part's complete resources are decoded
/// before the next part is taken.
fn decode_parts<T>(
    arriving: std::sync::mpsc::Receiver<BodyPart>,
    decode: &Decoder<T>,
) -> Result<Page<T>, String> {
    let mut splitter = ListSplitter::default();
    let mut resources = Vec::new();
    for part in arriving {
        splitter.feed(&part.bytes)?;
        resources.extend(decode(Resources::Batch(&splitter.take()))?.1);
    }
    let (header, last) = splitter.finish()?;
    resources.extend(decode(Resources::Batch(&last))?.1);
    Ok(Page::new(ListHeader::read(&header)?, resources))
}

/// A page's resources, decoded.
struct Page<T> {
    total_results: usize,
    items_per_page: Option<usize>,
    resources: Vec<T>,
}

impl<T> Page<T> {
    fn new(header: ListHeader, resources: Vec<T>) -> Self {
        Self {
            total_results: header.total_results,
            items_per_page: header.items_per_page,
            resources,
        }
    }
}

fn unavailable(url: &Url, err: &reqwest::Error) -> SourceError {
    SourceError::Unavailable {
        url: url.to_string(),
        reason: error_chain(err),
    }
}

/// A page fetch that stops when the read is abandoned (an error, a shutdown).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn inconsistent(url: &Url, reason: impl std::fmt::Display) -> SourceError {
    SourceError::Inconsistent {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks that a page holds what the paging contract promises: `promised` resources
/// (fewer only at the end), the same `totalResults` as the first page.
fn check_page(
    url: &Url,
    page_total: usize,
    received: usize,
    start: usize,
    total: usize,
    promised: usize,
    exact: bool,
) -> Result<(), SourceError> {
    if page_total != total {
        return Err(inconsistent(url, format!(
            "totalResults changed from {total} to {page_total} while paging (the directory changed under the read; the next run will retry)"
        )));
    }
    let remaining = total.saturating_sub(start - 1);
    let expected = promised.min(remaining);
    if received < expected.max(usize::from(remaining > 0)) {
        return Err(inconsistent(url, format!(
            "page starting at {start} has {received} resources, but {remaining} of totalResults={total} are still missing"
        )));
    }
    if received > remaining || (exact && received != expected) {
        return Err(inconsistent(url, format!(
            "page starting at {start} has {received} resources where {expected} were due (totalResults={total})"
        )));
    }
    Ok(())
}

/// How a listing keeps step with the other: `before_next` is awaited before each
/// request after the first `parallel_pages + 2` pages. A page's download waits,
/// without its slot, while the listing's chunks downloaded and not yet decoded
/// hold `max_undecoded_bytes` or more.
struct ListingPace<Wait> {
    before_next: Wait,
    max_undecoded_bytes: usize,
}

/// The bytes of a listing's chunks downloaded and not yet decoded.
struct DecodeBacklog {
    held: Arc<PartPool>,
    limit: usize,
}

/// What the parts of a listing's pages share.
struct PartPool {
    bytes: tokio::sync::watch::Sender<usize>,
    /// Buffers of decoded parts, for the next parts: a fresh buffer of a page's
    /// size faults in every memory page it is written to (docs/performance.md).
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Spare buffers kept for a listing's next parts; more are freed.
const SPARE_PARTS: usize = 2;

impl DecodeBacklog {
    fn new(limit: usize) -> Self {
        Self {
            held: Arc::new(PartPool {
                bytes: tokio::sync::watch::Sender::new(0),
                spare: Mutex::new(Vec::with_capacity(SPARE_PARTS)),
            }),
            limit,
        }
    }

    fn has_room(&self) -> bool {
        *self.held.bytes.borrow() < self.limit
    }

    /// Returns once the chunks waiting to be decoded hold less than the limit.
    async fn room(&self) {
        let mut bytes = self.held.bytes.subscribe();
        // The sender lives as long as `self`.
        let _ = bytes.wait_for(|&held| held < self.limit).await;
    }

    /// An empty part of a page's body, for at least `capacity` bytes; its bytes
    /// count as undecoded until it is dropped.
    fn part(&self, capacity: usize) -> BodyPart {
        let spare = self.held.spare_buffer();
        let bytes = match spare {
            Some(buffer) if buffer.capacity() >= capacity => buffer,
            // Pages of one listing differ by a few KB: a little more room lets the
            // buffer serve the next ones.
            _ => Vec::with_capacity(capacity + capacity / 16),
        };
        BodyPart {
            bytes,
            held: self.held.clone(),
        }
    }
}

impl PartPool {
    fn spare_buffer(&self) -> Option<Vec<u8>> {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }
}

/// A part of a page's body, the chunks reqwest hands out copied into one buffer,
/// which the splitter and serde read as one slice.
struct BodyPart {
    bytes: Vec<u8>,
    held: Arc<PartPool>,
}

impl BodyPart {
    /// The part has bytes, and `more` would not fit in its buffer.
    fn is_full_for(&self, more: usize) -> bool {
        !self.bytes.is_empty() && self.bytes.len() + more > self.bytes.capacity()
    }

    fn extend(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        self.held.bytes.send_modify(|held| *held += chunk.len());
    }
}

impl Drop for BodyPart {
    fn drop(&mut self) {
        let decoded = self.bytes.len();
        self.held.bytes.send_modify(|held| *held -= decoded);
        let mut buffer = std::mem::take(&mut self.bytes);
        buffer.clear();
        let mut spare = self
            .held
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_PARTS {
            spare.push(buffer);
        }
    }
}

/// Turns a page's resources, whole or split, into what the listing yields, one
/// for each, or says why it cannot; with a whole page, also reads its header.
type Decoder<T> =
    Arc<dyn Fn(Resources<'_>) -> Result<(Option<ListHeader>, Vec<T>), PageError> + Send + Sync>;

/// A user as read from a page: normalized, with what the memberships needs.
struct PulledUser {
    id: IdDigest,
    /// The SCIM id, to name a duplicate.
    scim_id: Box<str>,
    user: Result<DirectoryUser, UnusableEntry>,
    /// Memberships the user lists itself (`User.groups`).
    listed_groups: Vec<ScimRef>,
}

/// Users pages, normalized by the page's worker. Mapped attributes can sit anywhere
/// (extension schemas), so with any mapped the whole resource is parsed first.
fn user_decoder(
    keys: IdKeys,
    subject_attribute: SubjectAttribute,
    attributes: AttributeMap,
) -> Decoder<PulledUser> {
    let pulled = move |mut user: ScimUser<'_>, mapped: Mapped| {
        let id = keys.digest(&user.id);
        let scim_id = user.id.as_ref().into();
        let listed_groups = std::mem::take(&mut user.groups);
        let user = normalize_user(user, subject_attribute).map(|mut normalized| {
            normalized.slack_id = mapped.slack_id;
            normalized.picture = mapped.picture;
            normalized
        });
        PulledUser {
            id,
            scim_id,
            user,
            listed_groups,
        }
    };
    if attributes.is_empty() {
        return Arc::new(move |resources| {
            resources.decode("User", PhantomData::<ScimUser>, |user| {
                Ok(pulled(user, Mapped::default()))
            })
        });
    }
    Arc::new(move |resources| {
        resources.decode("User", PhantomData::<Value>, |value| {
            let read =
                |path: &Option<AttributePath>| path.as_ref().and_then(|p| attribute(&value, p));
            let mapped = Mapped {
                slack_id: read(&attributes.slack_id),
                picture: read(&attributes.picture),
            };
            let user =
                ScimUser::deserialize(&value).map_err(|err| format!("not a SCIM User: {err}"))?;
            Ok(pulled(user, mapped))
        })
    })
}

/// A group as read from a page.
struct PulledGroup {
    id: String,
    /// The trimmed `displayName`, when it has one.
    name: Option<String>,
    members: Vec<IdDigest>,
}

/// Groups pages, decoded by the page's worker.
fn group_decoder(keys: IdKeys) -> Decoder<PulledGroup> {
    Arc::new(move |resources| {
        resources.decode("Group", GroupSeed(&keys), |group| {
            Ok(PulledGroup {
                id: group.id.into_owned(),
                name: group
                    .display_name
                    .as_deref()
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
                members: group.members,
            })
        })
    })
}

/// Names what broke the memberships, for the page's error.
fn membership_error(err: MembershipIndexError, id: &str) -> String {
    match err {
        MembershipIndexError::UserTwice => format!("user id {id:?} appears twice"),
        MembershipIndexError::GroupTwice => format!("group id {id:?} appears twice"),
        MembershipIndexError::TooLarge => {
            "the directory lists more entries than idsync can hold".into()
        }
    }
}

/// Values of `source.attributes`, read from the raw resource.
#[derive(Debug, Default)]
struct Mapped {
    slack_id: Option<String>,
    picture: Option<String>,
}

/// What the two listings of one read share.
struct Listings {
    keys: IdKeys,
    /// `parallel_pages` permits, one held by each page downloading.
    downloads: Arc<Semaphore>,
    assembly: Mutex<Assembly>,
    /// Set once the group listing is complete and closed.
    groups_complete: tokio::sync::watch::Sender<bool>,
}

impl Listings {
    fn assembled(&self) -> std::sync::MutexGuard<'_, Assembly> {
        self.assembly.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The directory as its two listings arrive. Users wait for the group listing to
/// be complete, then leave with their groups.
#[derive(Default)]
struct Assembly {
    memberships: MembershipIndex,
    listing: Read,
    /// Users read before the group listing was complete, with the memberships
    /// they list themselves (`User.groups`).
    waiting: Vec<(DirectoryUser, Vec<ScimRef>)>,
    /// Complete users not handed out yet.
    ready: Vec<DirectoryUser>,
    /// The users listing's `totalResults`, once its first page is in.
    users_total: usize,
}

impl Assembly {
    /// More users wait for the group listing than may be read ahead of it.
    fn too_many_waiting(&self) -> bool {
        self.waiting.len() > max_waiting(self.users_total)
    }

    /// Adds a page of users; returns the users that are complete now.
    fn add_users(
        &mut self,
        page: Vec<PulledUser>,
        total: usize,
    ) -> Result<Vec<DirectoryUser>, String> {
        events::users_pulled(page.len());
        if self.listing.entries == 0 {
            self.memberships.expect_users(total);
            self.users_total = total;
        }
        // Sized once for a full list: grown by doubling, it could take twice that.
        let most_waiting = (max_waiting(total) + page.len()).min(total);
        for pulled in page {
            self.listing.entries += 1;
            let groups = self
                .memberships
                .add_user(pulled.id, pulled.user.is_ok())
                .map_err(|err| membership_error(err, &pulled.scim_id))?;
            match (pulled.user, groups) {
                (Ok(mut user), Some(groups)) => {
                    user.groups = groups;
                    let user = with_listed_groups(&self.memberships, user, pulled.listed_groups);
                    self.ready.push(user);
                }
                (Ok(user), None) => {
                    if self.waiting.capacity() == 0 {
                        self.waiting.reserve_exact(most_waiting);
                    }
                    self.waiting.push((user, pulled.listed_groups));
                }
                (Err(unusable), _) => self.listing.unusable.push(unusable),
            }
        }
        Ok(std::mem::take(&mut self.ready))
    }

    fn add_group(&mut self, group: PulledGroup) -> Result<(), String> {
        let Some(name) = group.name else {
            tracing::warn!(group_id = %group.id, "Ignoring a group without displayName.");
            return Ok(());
        };
        self.memberships
            .add_group(&group.id, GroupName::new(&name), &group.members)
            .map_err(|err| membership_error(err, &group.id))
    }

    /// The group listing is complete: the users read so far get their groups.
    fn close_groups(&mut self) {
        let so_far = self.memberships.close_groups();
        let memberships = &self.memberships;
        // Collected in the waiting list's own buffer: it can hold tens of MB.
        let waited: Vec<DirectoryUser> = std::mem::take(&mut self.waiting)
            .into_iter()
            .zip(so_far)
            .map(|((mut user, listed), groups)| {
                user.groups = groups;
                with_listed_groups(memberships, user, listed)
            })
            .collect();
        if self.ready.is_empty() {
            self.ready = waited;
        } else {
            self.ready.extend(waited);
        }
    }
}

/// Adds the groups a user lists itself, once the group listing is complete.
fn with_listed_groups(
    memberships: &MembershipIndex,
    mut user: DirectoryUser,
    listed: Vec<ScimRef>,
) -> DirectoryUser {
    let before = user.groups.len();
    user.groups.extend(listed.into_iter().filter_map(|group| {
        memberships.listed_group(group.value.as_deref()?, group.display.as_deref())
    }));
    if user.groups.len() > before {
        user.groups.sort_unstable();
        user.groups.dedup();
    }
    user
}

/// A SCIM user's fields idsync reads; text borrows from the page where it can.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScimUser<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    external_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    user_name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    display_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<ScimName<'a>>,
    #[serde(default, borrow)]
    emails: Vec<ScimEmail<'a>>,
    active: Option<bool>,
    #[serde(default)]
    groups: Vec<ScimRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScimName<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    formatted: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    given_name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    family_name: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct ScimEmail<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    value: Option<Cow<'a, str>>,
    #[serde(rename = "type", default, borrow, deserialize_with = "borrowed_text")]
    kind: Option<Cow<'a, str>>,
    primary: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ScimRef {
    value: Option<String>,
    display: Option<String>,
}

/// A group's fields idsync reads, its members' ids already digested.
struct ScimGroup<'a> {
    id: Cow<'a, str>,
    display_name: Option<Cow<'a, str>>,
    members: Vec<IdDigest>,
}

/// Reads a group in one pass, digesting each member's id as it is parsed: member
/// lists hold most of a directory's bytes, so they are neither parsed twice (once
/// to find their end, once to read them) nor copied.
#[derive(Clone, Copy)]
struct GroupSeed<'k>(&'k IdKeys);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum GroupField {
    Id,
    DisplayName,
    Members,
    #[serde(other)]
    Other,
}

/// A text field, borrowed from the page unless escapes force a copy.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow, deserialize_with = "borrowed_text")] Option<Cow<'a, str>>);

impl<'de> DeserializeSeed<'de> for GroupSeed<'_> {
    type Value = ScimGroup<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, group: D) -> Result<Self::Value, D::Error> {
        group.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GroupSeed<'_> {
    type Value = ScimGroup<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a SCIM Group object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Self::Value, A::Error> {
        // Each field's value, once the field is met: a text field can be `null`.
        let (mut id, mut display_name, mut members) = (None, None, None);
        while let Some(field) = fields.next_key()? {
            match field {
                GroupField::Id => set_once(&mut id, "id", fields.next_value::<Text>()?.0)?,
                GroupField::DisplayName => {
                    let name = fields.next_value::<Text>()?.0;
                    set_once(&mut display_name, "displayName", name)?;
                }
                GroupField::Members => {
                    let digests = fields.next_value_seed(MemberDigests(self.0));
                    let digests = digests.map_err(|err| match &id {
                        Some(Some(id)) => {
                            A::Error::custom(format!("group {id:?} has unreadable members: {err}"))
                        }
                        _ => err,
                    })?;
                    set_once(&mut members, "members", digests)?;
                }
                GroupField::Other => {
                    fields.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ScimGroup {
            id: id.flatten().ok_or_else(|| A::Error::missing_field("id"))?,
            display_name: display_name.flatten(),
            members: members.unwrap_or_default(),
        })
    }
}

/// Keeps a field's value, refusing a field given twice.
fn set_once<T, E: serde::de::Error>(
    slot: &mut Option<T>,
    field: &'static str,
    value: T,
) -> Result<(), E> {
    match slot.replace(value) {
        None => Ok(()),
        Some(_) => Err(E::duplicate_field(field)),
    }
}

/// The digests of a group's member ids (`null` for none), read one member at a
/// time.
#[derive(Clone, Copy)]
struct MemberDigests<'k>(&'k IdKeys);

impl<'de> DeserializeSeed<'de> for MemberDigests<'_> {
    type Value = Vec<IdDigest>;

    fn deserialize<D: serde::Deserializer<'de>>(self, members: D) -> Result<Self::Value, D::Error> {
        members.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MemberDigests<'_> {
    type Value = Vec<IdDigest>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of members")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, members: D) -> Result<Self::Value, D::Error> {
        members.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut members: A) -> Result<Self::Value, A::Error> {
        let mut digests = Vec::with_capacity(members.size_hint().unwrap_or(0));
        while let Some(member) = members.next_element::<MemberRef<'de>>()? {
            digests.extend(member.value.map(|id| self.0.digest(&id)));
        }
        Ok(digests)
    }
}

/// A group member's `value` (the member's id) and nothing else.
#[derive(Debug, Deserialize)]
struct MemberRef<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    value: Option<Cow<'a, str>>,
}

/// Reads an optional text field without copying it unless JSON escapes force a
/// copy. serde's `borrow` attribute borrows only a bare `Cow<str>` field; an
/// `Option` of one always copies.
fn borrowed_text<'de, D: serde::Deserializer<'de>>(
    text: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'de>>::deserialize(text)?.map(|text| text.0))
}

/// Turns a SCIM user into idsync's view of it; the groups are filled in later.
fn normalize_user(
    user: ScimUser<'_>,
    subject_attribute: SubjectAttribute,
) -> Result<DirectoryUser, UnusableEntry> {
    let subject = match subject_attribute {
        SubjectAttribute::Id => Some(user.id.as_ref()),
        SubjectAttribute::ExternalId => user.external_id.as_deref(),
    };
    let Some(subject) = subject.filter(|s| !s.trim().is_empty()) else {
        return Err(UnusableEntry {
            label: user
                .user_name
                .as_deref()
                .map_or_else(|| format!("id {}", user.id), str::to_owned),
            reason: match subject_attribute {
                SubjectAttribute::Id => "has no id".into(),
                SubjectAttribute::ExternalId => {
                    "has no externalId, which is the configured subject_attribute".into()
                }
            },
        });
    };
    Ok(DirectoryUser {
        subject: Subject::new(subject),
        active: user.active.unwrap_or(true),
        email: pick_email(&user),
        name: pick_name(&user),
        groups: Vec::new(),
        slack_id: None,
        picture: None,
    })
}

/// The value at a configured attribute path. Multi-valued attributes give their
/// primary (else first) entry, and complex values their `value` sub-attribute.
/// SCIM attribute names are case-insensitive.
fn attribute(user: &Value, path: &AttributePath) -> Option<String> {
    let get = |value: &Value, name: &str| -> Option<Value> {
        let object = value.as_object()?;
        object
            .get(name)
            .or_else(|| {
                object
                    .iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .cloned()
    };
    let single = |value: Value| -> Value {
        match value {
            Value::Array(items) => {
                let primary = items
                    .iter()
                    .position(|item| item.get("primary") == Some(&Value::Bool(true)));
                items
                    .into_iter()
                    .nth(primary.unwrap_or(0))
                    .unwrap_or(Value::Null)
            }
            other => other,
        }
    };
    let mut current = match &path.schema {
        Some(schema) => get(user, schema)?,
        None => user.clone(),
    };
    for segment in &path.segments {
        current = single(get(&current, segment)?);
    }
    if current.is_object() {
        current = single(get(&current, "value")?);
    }
    match current {
        Value::String(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The primary e-mail, else the first `work` one, else the first, else `userName`
/// when it is an address.
fn pick_email(user: &ScimUser<'_>) -> Result<Email, EmailError> {
    let listed = user.emails.iter().filter_map(|email| {
        Some(ListedEmail {
            value: email.value.as_deref()?,
            primary: email.primary == Some(true),
            work: email
                .kind
                .as_deref()
                .is_some_and(|kind| kind.eq_ignore_ascii_case("work")),
        })
    });
    normalize::choose_email(listed, user.user_name.as_deref())
}

/// `displayName`, else `name.formatted`, else given and family name.
fn pick_name(user: &ScimUser<'_>) -> Option<String> {
    let name = user.name.as_ref();
    normalize::choose_name(
        user.display_name.as_deref(),
        name.and_then(|n| n.formatted.as_deref()),
        name.and_then(|n| n.given_name.as_deref()),
        name.and_then(|n| n.family_name.as_deref()),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use serde_json::json;

    fn user(value: &serde_json::Value) -> ScimUser<'_> {
        ScimUser::deserialize(value).expect("SCIM user")
    }

    fn email_of(value: serde_json::Value) -> Result<String, String> {
        pick_email(&user(&value))
            .map(|e| e.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn primary_email_wins_and_is_lower_cased() {
        let picked = email_of(json!({"id": "1", "emails": [
            {"value": "Home@X.com", "type": "home"},
            {"value": "Work@X.com", "type": "work"},
            {"value": " Main@X.COM ", "type": "other", "primary": true}
        ]}));
        assert_eq!(picked, Ok("main@x.com".into()));
    }

    #[test]
    fn first_work_email_then_first_email_then_user_name() {
        let work = email_of(json!({"id": "1", "emails": [
            {"value": "home@x.com", "type": "home"}, {"value": "work@x.com", "type": "work"}
        ]}));
        assert_eq!(work, Ok("work@x.com".into()));
        let first = email_of(json!({"id": "1", "emails": [
            {"value": "a@x.com", "type": "home"}, {"value": "b@x.com"}
        ]}));
        assert_eq!(first, Ok("a@x.com".into()));
        let login = email_of(json!({"id": "1", "userName": "Ann@X.com"}));
        assert_eq!(login, Ok("ann@x.com".into()));
    }

    #[test]
    fn no_usable_email_gives_a_reason() {
        let none = email_of(json!({"id": "1", "userName": "ann"}));
        assert!(none.unwrap_err().contains("no e-mail address"));
        let bad =
            email_of(json!({"id": "1", "emails": [{"value": "Ann <ann@x.com>", "primary": true}]}));
        assert!(bad.unwrap_err().contains("not a bare e-mail address"));
    }

    #[test]
    fn name_falls_back_from_display_to_formatted_to_parts() {
        let name = |v: serde_json::Value| pick_name(&user(&v));
        assert_eq!(
            name(json!({"id": "1", "displayName": "Ann A", "name": {"formatted": "F"}})),
            Some("Ann A".into())
        );
        assert_eq!(
            name(json!({"id": "1", "displayName": " ", "name": {"formatted": "Ann F"}})),
            Some("Ann F".into())
        );
        assert_eq!(
            name(json!({"id": "1", "name": {"givenName": "Ann", "familyName": "Lee"}})),
            Some("Ann Lee".into())
        );
        assert_eq!(
            name(json!({"id": "1", "name": {"familyName": "Lee"}})),
            Some("Lee".into())
        );
        assert_eq!(name(json!({"id": "1"})), None);
    }

    #[test]
    fn mapped_attributes_are_found_in_extensions_and_multi_valued_attributes() {
        let user = json!({
            "id": "1",
            "photos": [{"value": "https://pics/a.png", "type": "thumbnail"}, {"value": "https://pics/b.png", "primary": true}],
            "urn:example:params:scim:schemas:extension:slack:2.0:User": {"slackId": "U053ELZHB53"},
            "title": "SRE",
            "name": {"givenName": "Ann"}
        });
        let path = |text: &str| {
            let config = format!("[source]\nkind = \"scim\"\nurl = \"https://x.com\"\nbearer_token = \"t\"\n[source.attributes]\nslack_id = {text:?}\n[target]\nurl = \"https://y.com/api\"\napi_key = \"k\"\n");
            crate::config::Config::parse(&config, "t", &|_| None)
                .expect("config")
                .source
                .attributes
                .slack_id
                .expect("path")
        };
        let slack = path("urn:example:params:scim:schemas:extension:slack:2.0:User:slackId");
        assert_eq!(attribute(&user, &slack), Some("U053ELZHB53".into()));
        assert_eq!(
            attribute(&user, &path("photos")),
            Some("https://pics/b.png".into())
        );
        assert_eq!(attribute(&user, &path("Title")), Some("SRE".into()));
        assert_eq!(
            attribute(&user, &path("name.givenName")),
            Some("Ann".into())
        );
        assert_eq!(attribute(&user, &path("nickName")), None);
    }

    #[tokio::test]
    async fn a_page_waits_while_the_parts_before_it_are_still_undecoded() {
        let undecoded = Arc::new(DecodeBacklog::new(10));
        undecoded.room().await;
        let mut part = undecoded.part(10);
        part.extend(&[b' '; 10]);
        assert!(!undecoded.has_room());
        let waiting = tokio::spawn({
            let undecoded = undecoded.clone();
            async move { undecoded.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "10 bytes undecoded is the limit");
        drop(part);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room once the part is decoded")
            .expect("task");
    }

    #[test]
    fn decoded_parts_leave_their_buffers_to_the_next_parts() {
        let undecoded = DecodeBacklog::new(usize::MAX);
        let parts: Vec<BodyPart> = (0..SPARE_PARTS + 1).map(|_| undecoded.part(1000)).collect();
        let buffers: Vec<*const u8> = parts.iter().map(|part| part.bytes.as_ptr()).collect();
        drop(parts);
        let spare = undecoded.held.spare.lock().unwrap().len();
        assert_eq!(spare, SPARE_PARTS, "the rest are freed");

        let reused = undecoded.part(1000);
        assert!(buffers.contains(&reused.bytes.as_ptr()), "a spare buffer");
        assert!(reused.bytes.is_empty());
        let larger = undecoded.part(1_000_000);
        assert!(
            larger.bytes.capacity() >= 1_000_000,
            "a spare too small is not used"
        );
    }

    #[tokio::test]
    async fn a_large_page_is_decoded_part_by_part_as_it_downloads() {
        const GROUPS: usize = 10;
        const MEMBERS: usize = 10_000;
        let member_id = |g: usize, n: usize| format!("user-{g}-{n:06}");
        let groups: Vec<String> = (0..GROUPS)
            .map(|g| {
                let members: Vec<String> = (0..MEMBERS)
                    .map(|n| format!(r#"{{"value":"{}","display":"User {n}"}}"#, member_id(g, n)))
                    .collect();
                let members = members.join(",");
                format!(r#"{{"id":"g{g}","displayName":"group {g}","members":[{members}]}}"#)
            })
            .collect();
        let page = format!(
            r#"{{"totalResults":{GROUPS},"Resources":[{}]}}"#,
            groups.join(",")
        );
        assert!(page.len() > 3 * BODY_PART_BYTES, "{} bytes", page.len());
        // Streamed without a Content-Length, as a server that pages from a cursor.
        let page = bytes::Bytes::from(page);
        let app = axum::Router::new().route(
            "/scim/v2/Groups",
            axum::routing::get(move || {
                let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..page.len())
                    .step_by(64 * 1024)
                    .map(|at| Ok(page.slice(at..page.len().min(at + 64 * 1024))))
                    .collect();
                async move { axum::body::Body::from_stream(futures::stream::iter(chunks)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = format!("[source]\nkind = \"scim\"\nurl = \"http://{address}/scim/v2\"\nbearer_token = \"t\"\n[target]\nurl = \"https://y.com/api\"\napi_key = \"k\"\n");
        let config = crate::config::Config::parse(&config, "t", &|_| None).expect("config");
        let http = reqwest::Client::new();
        let crate::config::SourceKind::Scim(scim) = &config.source.kind else {
            panic!("a SCIM source");
        };
        let tokens = TokenSource::new(&scim.auth, http.clone());
        let source = ScimSource::new(scim, &config.source.attributes, http, tokens);
        let keys = IdKeys::new();
        let (batches, inner) = (Arc::new(Mutex::new(0)), group_decoder(keys.clone()));
        let decode: Decoder<PulledGroup> = Arc::new({
            let batches = batches.clone();
            move |resources| {
                if matches!(resources, Resources::Batch(_)) {
                    *batches.lock().expect("not poisoned") += 1;
                    // Slower than the download, whatever the machine.
                    std::thread::sleep(Duration::from_millis(10));
                }
                inner(resources)
            }
        });
        // Far less than the page: its download has to wait for the decoding.
        let undecoded = Arc::new(DecodeBacklog::new(256 * 1024));
        let url = source.page_url("Groups", 1);
        let slots = Arc::new(Semaphore::new(1));
        let reading = tokio::spawn(source.read_page(url, slots.clone(), decode, undecoded.clone()));
        while slots.available_permits() == 1 {
            tokio::task::yield_now().await;
        }
        // Another page gets the slot while this one waits for its decoding.
        let other_page = slots.acquire().await.expect("open");
        let decoded_by_then = *batches.lock().expect("not poisoned");
        drop(other_page);
        let (_, page) = reading.await.expect("task");
        let page = page.expect("decodes");
        let decoded = *batches.lock().expect("not poisoned");
        assert!(decoded > 3, "decoded part by part");
        assert!(
            decoded_by_then * 2 < decoded,
            "the slot came free early in the page: after {decoded_by_then} of {decoded} parts"
        );
        assert_eq!(page.total_results, GROUPS);
        for (g, group) in page.resources.iter().enumerate() {
            assert_eq!(group.name.as_deref(), Some(format!("group {g}").as_str()));
            let expected: Vec<IdDigest> = (0..MEMBERS)
                .map(|n| keys.digest(&member_id(g, n)))
                .collect();
            assert_eq!(group.members, expected, "group {g}");
        }
        assert_eq!(
            *undecoded.held.bytes.borrow(),
            0,
            "every part is accounted for"
        );
        assert_eq!(slots.available_permits(), 1, "the slot is back");
    }

    /// Decodes `page` both ways idsync reads pages: whole, and split from parts of
    /// 7 bytes.
    fn decode_both_ways<T>(decode: &Decoder<T>, page: &[u8]) -> [Result<Page<T>, String>; 2] {
        let undecoded = DecodeBacklog::new(usize::MAX);
        let part = |bytes: &[u8]| {
            let mut part = undecoded.part(bytes.len());
            part.extend(bytes);
            part
        };
        let whole = decode_whole(decode, &part(page));
        let (parts, arriving) = std::sync::mpsc::channel();
        for chunk in page.chunks(7) {
            parts.send(part(chunk)).expect("the receiver is here");
        }
        drop(parts);
        let split = decode_parts(arriving, decode);
        assert!(undecoded.has_room() && *undecoded.held.bytes.borrow() == 0);
        [whole, split]
    }

    #[test]
    fn text_is_borrowed_from_the_page_unless_escapes_force_a_copy() {
        let page = r#"{"id":"u1","userName":"plain","displayName":"Jos\u00e9","externalId":null}"#;
        let user: ScimUser = serde_json::from_str(page).expect("user");
        assert!(matches!(user.user_name, Some(Cow::Borrowed("plain"))));
        assert!(matches!(user.display_name.as_deref(), Some("José")));
        assert!(matches!(user.display_name, Some(Cow::Owned(_))));
        assert!(user.external_id.is_none() && user.name.is_none());
    }

    #[test]
    fn group_members_are_read_as_digests_of_their_ids() {
        let keys = IdKeys::new();
        let page = br#"{"totalResults": 2, "Resources": [
            {"id": "g1", "displayName": " sre ", "members": [
                {"value": "u1", "display": "Ann", "$ref": "https://x/Users/u1"},
                {"value": "a\u0062c", "type": "User"},
                {"display": "no value"}
            ]},
            {"id": "g2", "displayName": "empty", "members": null}
        ]}"#;
        for decoded in decode_both_ways(&group_decoder(keys.clone()), page) {
            let page = decoded.expect("decodes");
            assert_eq!((page.total_results, page.items_per_page), (2, None));
            let groups: Vec<(String, Option<String>, Vec<IdDigest>)> = page
                .resources
                .into_iter()
                .map(|g| (g.id, g.name, g.members))
                .collect();
            assert_eq!(
                groups,
                [
                    (
                        "g1".into(),
                        Some("sre".into()),
                        vec![keys.digest("u1"), keys.digest("abc")]
                    ),
                    ("g2".into(), Some("empty".into()), vec![]),
                ]
            );
        }
        let bad = br#"{"totalResults": 1, "Resources": [{"id": "g", "members": [{"value": 7}]}]}"#;
        for decoded in decode_both_ways(&group_decoder(keys.clone()), bad) {
            let err = decoded.map(|_| ()).unwrap_err();
            assert!(
                err.starts_with(
                    r#"Resources[0] is not a SCIM Group: group "g" has unreadable members"#
                ),
                "{err}"
            );
        }
        let twice = br#"{"totalResults": 1, "Resources": [{"id": "g", "members": [], "members": [{"value": "u1"}]}]}"#;
        for decoded in decode_both_ways(&group_decoder(keys.clone()), twice) {
            let err = decoded.map(|_| ()).unwrap_err();
            assert!(err.contains("duplicate field `members`"), "{err}");
        }
    }

    #[test]
    fn users_pages_read_the_same_whole_and_in_parts() {
        let page = br#"{"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "Resources": [
                {"id": "u1", "userName": "ann@x.com", "displayName": "Ann \"A\" {B}",
                 "urn:example:params:scim:schemas:extension:slack:2.0:User": {"slackId": "U1"}},
                {"id": "u2", "userName": "not an address"}
            ],
            "itemsPerPage": 2, "totalResults": 9, "startIndex": 1}"#;
        let config = "[source]\nkind = \"scim\"\nurl = \"https://x.com\"\nbearer_token = \"t\"\n[source.attributes]\nslack_id = \"urn:example:params:scim:schemas:extension:slack:2.0:User:slackId\"\n[target]\nurl = \"https://y.com/api\"\napi_key = \"k\"\n";
        let config = crate::config::Config::parse(config, "t", &|_| None).expect("config");
        let decoder = user_decoder(
            IdKeys::new(),
            SubjectAttribute::Id,
            config.source.attributes.clone(),
        );
        for decoded in decode_both_ways(&decoder, page) {
            let page = decoded.expect("decodes");
            assert_eq!((page.total_results, page.items_per_page), (9, Some(2)));
            let [ann, no_email] = &page.resources[..] else {
                panic!("two users");
            };
            let ann = ann.user.as_ref().expect("usable");
            assert_eq!(ann.name.as_deref(), Some(r#"Ann "A" {B}"#));
            assert_eq!(ann.slack_id.as_deref(), Some("U1"));
            assert_eq!(&*no_email.scim_id, "u2");
            assert!(no_email.user.as_ref().expect("keyed").email.is_err());
        }
        let broken = br#"{"totalResults": 1, "Resources": [{"id": 5}]}"#;
        for decoded in decode_both_ways(&decoder, broken) {
            let err = decoded.map(|_| ()).unwrap_err();
            assert!(
                err.starts_with("Resources[0]") && err.contains("not a SCIM User"),
                "{err}"
            );
        }
    }

    #[test]
    fn subject_follows_the_configured_attribute() {
        let scim =
            json!({"id": "abc", "externalId": "emp-7", "userName": "ann@x.com", "active": false});
        let by_id = normalize_user(user(&scim), SubjectAttribute::Id).expect("usable");
        assert_eq!(by_id.subject, Subject::new("abc"));
        assert!(!by_id.active);
        let by_external =
            normalize_user(user(&scim), SubjectAttribute::ExternalId).expect("usable");
        assert_eq!(by_external.subject, Subject::new("emp-7"));
        let missing = normalize_user(
            user(&json!({"id": "abc", "userName": "bob"})),
            SubjectAttribute::ExternalId,
        );
        let missing = missing.unwrap_err();
        assert_eq!(missing.label, "bob");
        assert!(missing.reason.contains("externalId"), "{}", missing.reason);
    }

    #[test]
    fn a_blank_id_is_reported_as_a_missing_id_not_a_missing_external_id() {
        let blank = normalize_user(
            user(&json!({"id": " ", "externalId": "emp-7", "userName": "bob"})),
            SubjectAttribute::Id,
        );
        assert_eq!(blank.unwrap_err().reason, "has no id");
    }
}
