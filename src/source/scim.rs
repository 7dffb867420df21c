//! SCIM 2.0 (RFC 7643/7644) directory: pages through `/Users` and `/Groups`.
//!
//! Pages are parsed straight into the few fields idsync needs and normalized at
//! once, so memory holds the normalized users, never the JSON pages.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::roster::{Roster, RosterError};
use super::{Listing, SourceError};
use crate::auth::TokenSource;
use crate::config::{AttributeMap, AttributePath, SourceConfig, SubjectAttribute};
use crate::error_chain;
use crate::events;
use crate::model::{DirectoryUser, Email, GroupName, IdDigest, IdKeys, Subject, UnusableEntry};
use crate::retry::{self, Backoff, Class};

const SCIM_JSON: &str = "application/scim+json, application/json";

/// Users read before the group listing is complete wait for it in memory; beyond
/// this many, no more user pages are requested until it is.
const MAX_WAITING_USERS: usize = 20_000;

/// A group page is not requested while the group pages downloaded and not yet
/// decoded hold more than this. A few department-wide groups can make one page
/// tens of MB (85 MB at a million users), and decoding is slower than loopback
/// downloading: without a bound, the next pages pile up behind it. The user
/// listing keeps the download slots busy meanwhile.
const MAX_UNDECODED_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// Transient directory failures are retried briefly; a longer outage fails the run,
/// and the next scheduled run tries again.
const BACKOFF: Backoff = Backoff {
    max_attempts: 3,
    base: Duration::from_millis(500),
    cap: Duration::from_secs(5),
};

/// Cheap to clone: the page fetches run as tasks of their own.
#[derive(Clone)]
pub struct ScimSource {
    base: Url,
    page_size: u32,
    parallel_pages: usize,
    subject_attribute: SubjectAttribute,
    attributes: AttributeMap,
    http: reqwest::Client,
    tokens: Arc<TokenSource>,
}

impl ScimSource {
    pub fn new(config: &SourceConfig, http: reqwest::Client, tokens: TokenSource) -> Self {
        Self {
            base: config.url.clone(),
            page_size: config.page_size.get(),
            parallel_pages: config.parallel_pages.get(),
            attributes: config.attributes.clone(),
            subject_attribute: config.subject_attribute,
            http,
            tokens: Arc::new(tokens),
        }
    }

    /// Obtains a token and reads one user: checks the IdP credentials and the
    /// directory's URL. Returns the directory's `totalResults`.
    pub async fn probe(&self) -> Result<usize, SourceError> {
        let mut url = self.page_url("Users", 1);
        url.query_pairs_mut()
            .clear()
            .append_pair("startIndex", "1")
            .append_pair("count", "1");
        let page: ListResponse<serde::de::IgnoredAny> = self.get_json(&url).await?;
        Ok(page.total_results)
    }

    /// Reads the whole directory: the users, and the groups for their memberships.
    /// Complete users are handed to `deliver` in directory order as they are read,
    /// a page or so at a time; what the run does with them stands only once this
    /// returns `Ok`. `room` is awaited before each users page is requested, so the
    /// receiver can make the read wait for it.
    pub async fn pull<Room: Future<Output = ()>>(
        &self,
        shutdown: &CancellationToken,
        mut deliver: impl FnMut(Vec<DirectoryUser>),
        room: impl Fn() -> Room,
    ) -> Result<Listing, SourceError> {
        let keys = IdKeys::new();
        // The groups are read first. A user read before they are complete must be
        // held until they are, so the users join in only once every group page has
        // been requested, sharing the download slots, and stop requesting pages
        // while more than `MAX_WAITING_USERS` wait for the groups.
        let downloads = Arc::new(Semaphore::new(self.parallel_pages));
        let groups_requested = tokio::sync::Notify::new();
        let (groups_complete, groups_completed) = tokio::sync::watch::channel(false);
        let gathering = Mutex::new(Gathering::default());
        let gathered = || gathering.lock().unwrap_or_else(PoisonError::into_inner);
        let decode_groups = group_decoder(keys.clone());
        let groups = async {
            self.for_each_page(
                "Groups",
                shutdown,
                &downloads,
                decode_groups,
                |groups, _total| {
                    let mut gathering = gathered();
                    groups
                        .into_iter()
                        .try_for_each(|group| gathering.add_group(group))
                },
                Pacing {
                    requested_all: || groups_requested.notify_one(),
                    before_next: || std::future::ready(()),
                    max_undecoded_bytes: MAX_UNDECODED_GROUP_BYTES,
                },
            )
            .await?;
            gathered().close_groups();
            groups_complete.send_replace(true);
            Ok(())
        };
        let users = async {
            groups_requested.notified().await;
            self.for_each_page(
                "Users",
                shutdown,
                &downloads,
                user_decoder(keys, self.subject_attribute, self.attributes.clone()),
                |users, total| {
                    let ready = gathered().add_users(users, total)?;
                    if !ready.is_empty() {
                        deliver(ready);
                    }
                    Ok(())
                },
                Pacing {
                    requested_all: || (),
                    before_next: || {
                        let waiting = gathered().waiting.len();
                        let mut completed = groups_completed.clone();
                        let room = room();
                        async move {
                            if waiting > MAX_WAITING_USERS {
                                // Closed: the group listing failed, and so does the read.
                                let _ = completed.wait_for(|complete| *complete).await;
                            }
                            room.await;
                        }
                    },
                    max_undecoded_bytes: usize::MAX,
                },
            )
            .await
        };
        tokio::try_join!(groups, users)?;
        let mut gathering = gathering
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let ready = std::mem::take(&mut gathering.ready);
        if !ready.is_empty() {
            deliver(ready);
        }
        Ok(gathering.listing)
    }

    /// Calls `visit` with every page of `/{resource}`'s resources, in order, checking
    /// that the pages add up to `totalResults`. `decode` turns a page's bytes into
    /// resources on the page's own task, so parsing runs beside downloading and
    /// visiting; `visit` returns an error text when the data is unusable, and gets
    /// `totalResults` to size its collections. `pacing` keeps step with the other
    /// listing.
    ///
    /// Only the first page's header is read before the other pages are requested: it
    /// tells the total and the server's page size, and the rest sit at fixed offsets
    /// (SCIM's `startIndex` paging allows it). A download holds one of `downloads`
    /// (`parallel_pages` of them), and one more page may be parsed or waiting, so
    /// the next download runs while this page is visited.
    async fn for_each_page<T: Send + 'static, Paced: Future<Output = ()>>(
        &self,
        resource: &str,
        shutdown: &CancellationToken,
        downloads: &Arc<Semaphore>,
        decode: Decoder<T>,
        mut visit: impl FnMut(Vec<T>, usize) -> Result<(), String>,
        pacing: Pacing<impl FnOnce(), impl Fn() -> Paced>,
    ) -> Result<(), SourceError> {
        let first_url = self.page_url(resource, 1);
        let first_body = {
            let _download = downloads.acquire().await;
            self.get_bytes(&first_url).await?
        };
        // Off this task, like all parsing: the other listing shares it.
        let (first_body, header) = {
            let url = first_url.clone();
            on_blocking_pool(&first_url, move || {
                let header = parse::<ListHeader>(&url, &first_body);
                (first_body, header)
            })
            .await?
        };
        let header = header?;
        let undecoded = Arc::new(Undecoded::new(pacing.max_undecoded_bytes));
        let total = header.total_results;
        let page_len = header.resources.0;
        // The server decides the page size (`itemsPerPage`); our `count` is a wish.
        let promised = header.items_per_page.unwrap_or(self.page_size as usize);
        check_page(&first_url, total, page_len, 1, total, promised, false)?;
        let mut starts = (1 + page_len..=total).step_by(page_len.max(1)).peekable();
        let fetch = |start: usize| {
            let (source, url) = (self.clone(), self.page_url(resource, start));
            let (downloads, decode) = (downloads.clone(), decode.clone());
            let undecoded = undecoded.clone();
            let task = tokio::spawn(async move {
                undecoded.room().await;
                let body = {
                    let _download = downloads.acquire_owned().await;
                    source.get_bytes(&url).await
                };
                match body {
                    Ok(body) => undecoded.decode(decode, url, body).await,
                    Err(err) => (url, Err(err)),
                }
            });
            (start, AbortOnDrop(task))
        };
        // The first page is decoded like the others, while they download; with it,
        // `parallel_pages + 1` pages are pending.
        let first = {
            let (decode, undecoded) = (decode.clone(), undecoded.clone());
            let task =
                tokio::spawn(async move { undecoded.decode(decode, first_url, first_body).await });
            (1, AbortOnDrop(task))
        };
        let mut pending: VecDeque<_> = std::iter::once(first)
            .chain(starts.by_ref().take(self.parallel_pages).map(fetch))
            .collect();
        let Pacing {
            requested_all,
            before_next,
            ..
        } = pacing;
        let mut requested_all = Some(requested_all);
        while let Some((start, mut task)) = pending.pop_front() {
            if starts.peek().is_none() {
                if let Some(announce) = requested_all.take() {
                    announce();
                }
            }
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
            before_next().await;
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
        // A listing of one page.
        if let Some(announce) = requested_all {
            announce();
        }
        Ok(())
    }

    fn page_url(&self, resource: &str, start_index: usize) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/{resource}", self.base.path()));
        url.query_pairs_mut()
            .append_pair("startIndex", &start_index.to_string())
            .append_pair("count", &self.page_size.to_string());
        url
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &Url) -> Result<T, SourceError> {
        let body = self.get_bytes(url).await?;
        parse(url, &body)
    }

    /// One GET with the directory's retry policy and one token refresh on 401.
    async fn get_bytes(&self, url: &Url) -> Result<Vec<u8>, SourceError> {
        let mut token = self.tokens.bearer().await?;
        let mut refreshed = false;
        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .get(url.clone())
                .header(ACCEPT, SCIM_JSON)
                .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
                .send()
                .await;
            let (failure, wait_at_least) = match sent {
                Err(err) => (error_chain(&err), None),
                Ok(response) => {
                    let status = response.status();
                    match retry::classify(status) {
                        Class::Success => {
                            return read_body(response).await.map_err(|err| {
                                SourceError::Unavailable {
                                    url: url.to_string(),
                                    reason: error_chain(&err),
                                }
                            });
                        }
                        Class::Unauthorized
                            if status.as_u16() == 401
                                && !refreshed
                                && self.tokens.can_refresh() =>
                        {
                            tracing::info!("The directory refused the token; getting a fresh one.");
                            token = self.tokens.refresh(&token).await?;
                            refreshed = true;
                            continue;
                        }
                        Class::Unauthorized => {
                            return Err(SourceError::Refused {
                                url: url.to_string(),
                                status: status.as_u16(),
                            })
                        }
                        Class::Rejected => {
                            return Err(SourceError::Unavailable {
                                url: url.to_string(),
                                reason: format!("answered {status}"),
                            })
                        }
                        Class::Transient => (
                            format!("answered {status}"),
                            retry::retry_after(response.headers(), SystemTime::now()),
                        ),
                    }
                }
            };
            if attempt >= BACKOFF.max_attempts {
                return Err(SourceError::Unavailable {
                    url: url.to_string(),
                    reason: format!("{failure} (after {attempt} attempts)"),
                });
            }
            attempt += 1;
            let wait = BACKOFF.delay(attempt, wait_at_least);
            tracing::warn!(%url, %failure, wait_ms = wait.as_millis() as u64, "Directory request failed; retrying.");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Decodes a page on the blocking pool. A page takes milliseconds of CPU, and on
/// the runtime it would also hold back the task its download just woke (the next
/// page's), which waits in the same worker's slot until this one yields.
async fn decode_page<T: Send + 'static>(
    decode: Decoder<T>,
    url: Url,
    body: Vec<u8>,
) -> (Url, Result<ListResponse<T>, SourceError>) {
    let page = on_blocking_pool(&url, move || decode(&body))
        .await
        .and_then(|page| page.map_err(|reason| inconsistent(&url, reason)));
    (url, page)
}

/// Runs parsing work for the page at `url` on the blocking pool.
async fn on_blocking_pool<R: Send + 'static>(
    url: &Url,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| SourceError::Unavailable {
            url: url.to_string(),
            reason: format!("the decoding task failed: {err}"),
        })
}

/// Reads a body into one buffer sized from `Content-Length`: a page can be tens of
/// MB, and a buffer grown by doubling would briefly hold up to three times that.
async fn read_body(mut response: reqwest::Response) -> reqwest::Result<Vec<u8>> {
    /// A lying header must not reserve memory the page will never fill.
    const MAX_RESERVE: u64 = 256 * 1024 * 1024;
    let announced = response.content_length().unwrap_or(0).min(MAX_RESERVE);
    let mut body = Vec::with_capacity(announced as usize);
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse<T: DeserializeOwned>(url: &Url, body: &[u8]) -> Result<T, SourceError> {
    read_list(body).map_err(|reason| inconsistent(url, reason))
}

/// A page fetch that stops when the read is abandoned (an error, a shutdown).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn inconsistent(url: &Url, reason: String) -> SourceError {
    SourceError::Inconsistent {
        url: url.to_string(),
        reason,
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

/// How a listing keeps step with the other: `requested_all` is called once every
/// page has been requested, and `before_next` is awaited before each request after
/// the first `parallel_pages + 1` pages. A page waits to be downloaded while the
/// listing's pages downloaded and not decoded hold `max_undecoded_bytes` or more.
struct Pacing<Announce, Wait> {
    requested_all: Announce,
    before_next: Wait,
    max_undecoded_bytes: usize,
}

/// The bytes of a listing's pages downloaded and not yet decoded.
struct Undecoded {
    bytes: tokio::sync::watch::Sender<usize>,
    limit: usize,
}

impl Undecoded {
    fn new(limit: usize) -> Self {
        Self {
            bytes: tokio::sync::watch::Sender::new(0),
            limit,
        }
    }

    /// Returns once the pages waiting to be decoded hold less than the limit.
    async fn room(&self) {
        let mut bytes = self.bytes.subscribe();
        // The sender lives as long as `self`.
        let _ = bytes.wait_for(|&held| held < self.limit).await;
    }

    /// Decodes a page, counting its bytes until it is decoded.
    async fn decode<T: Send + 'static>(
        &self,
        decode: Decoder<T>,
        url: Url,
        body: Vec<u8>,
    ) -> (Url, Result<ListResponse<T>, SourceError>) {
        let held = body.len();
        self.bytes.send_modify(|bytes| *bytes += held);
        let decoded = decode_page(decode, url, body).await;
        self.bytes.send_modify(|bytes| *bytes -= held);
        decoded
    }
}

/// Turns one page's bytes into its resources, or says why it cannot.
type Decoder<T> = Arc<dyn Fn(&[u8]) -> Result<ListResponse<T>, String> + Send + Sync>;

/// A SCIM ListResponse, or the part of one that `T` reads, from a page's bytes.
fn read_list<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|err| format!("not a SCIM ListResponse: {err}"))
}

/// A user as read from a page: normalized, with what the roster needs.
struct PulledUser {
    id: IdDigest,
    /// The SCIM id, to name a duplicate.
    scim_id: Box<str>,
    user: Result<DirectoryUser, UnusableEntry>,
    /// Memberships the user lists itself (`User.groups`).
    listed_groups: Vec<ScimRef>,
}

/// Users pages, normalized on the page's task. Mapped attributes can sit anywhere
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
        return Arc::new(move |body| {
            let page: ListResponse<ScimUser> = read_list(body)?;
            page.try_map(|user| Ok(pulled(user, Mapped::default())))
        });
    }
    Arc::new(move |body| {
        let page: ListResponse<Value> = read_list(body)?;
        page.try_map(|value| {
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

/// Groups pages, decoded on the page's task; member ids are digested straight
/// from the page's bytes, never copied.
fn group_decoder(keys: IdKeys) -> Decoder<PulledGroup> {
    Arc::new(move |body| {
        let page: ListResponse<ScimGroup> = read_list(body)?;
        page.try_map(|group| {
            let members = match group.members {
                Some(members) => member_digests(members, &keys)
                    .map_err(|err| format!("group {:?} has unreadable members: {err}", group.id))?,
                None => Vec::new(),
            };
            Ok(PulledGroup {
                id: group.id.into_owned(),
                name: group
                    .display_name
                    .as_deref()
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
                members,
            })
        })
    })
}

/// The digests of a group's member ids, read one member at a time from the raw
/// `members` array: large groups hold most of a directory's bytes, and a list of
/// every member would briefly hold much of it again.
fn member_digests(members: &RawValue, keys: &IdKeys) -> serde_json::Result<Vec<IdDigest>> {
    struct Digests<'k>(&'k IdKeys);
    impl<'de> serde::de::Visitor<'de> for Digests<'_> {
        type Value = Vec<IdDigest>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of members")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<IdDigest>, A::Error> {
            let mut digests = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(member) = seq.next_element::<MemberRef<'de>>()? {
                digests.extend(member.value.map(|id| self.0.digest(&id)));
            }
            Ok(digests)
        }
    }
    let mut reader = serde_json::Deserializer::from_str(members.get());
    serde::Deserializer::deserialize_seq(&mut reader, Digests(keys))
}

/// Names what broke the roster, for the page's error.
fn roster_error(err: RosterError, id: &str) -> String {
    match err {
        RosterError::UserTwice => format!("user id {id:?} appears twice"),
        RosterError::GroupTwice => format!("group id {id:?} appears twice"),
        RosterError::TooLarge => "the directory lists more entries than idsync can hold".into(),
    }
}

/// Values of `source.attributes`, read from the raw resource.
#[derive(Debug, Default)]
struct Mapped {
    slack_id: Option<String>,
    picture: Option<String>,
}

/// The directory as its two listings arrive. Users wait for the group listing to
/// be complete, then leave with their groups.
#[derive(Default)]
struct Gathering {
    roster: Roster,
    listing: Listing,
    /// Users read before the group listing was complete, with the memberships
    /// they list themselves (`User.groups`).
    waiting: Vec<(DirectoryUser, Vec<ScimRef>)>,
    /// Complete users not handed out yet.
    ready: Vec<DirectoryUser>,
}

impl Gathering {
    /// Adds a page of users; returns the users that are complete now.
    fn add_users(
        &mut self,
        page: Vec<PulledUser>,
        total: usize,
    ) -> Result<Vec<DirectoryUser>, String> {
        events::users_pulled(page.len());
        if self.listing.entries == 0 {
            self.roster.expect_users(total);
        }
        for pulled in page {
            self.listing.entries += 1;
            let groups = self
                .roster
                .add_user(pulled.id, pulled.user.is_ok())
                .map_err(|err| roster_error(err, &pulled.scim_id))?;
            match (pulled.user, groups) {
                (Ok(mut user), Some(groups)) => {
                    user.groups = groups;
                    let user = with_listed_groups(&self.roster, user, pulled.listed_groups);
                    self.ready.push(user);
                }
                (Ok(user), None) => self.waiting.push((user, pulled.listed_groups)),
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
        self.roster
            .add_group(&group.id, GroupName::new(&name), &group.members)
            .map_err(|err| roster_error(err, &group.id))
    }

    /// The group listing is complete: the users read so far get their groups.
    fn close_groups(&mut self) {
        let so_far = self.roster.close_groups();
        for ((mut user, listed), groups) in self.waiting.drain(..).zip(so_far) {
            user.groups = groups;
            let user = with_listed_groups(&self.roster, user, listed);
            self.ready.push(user);
        }
    }
}

/// Adds the groups a user lists itself, once the group listing is complete.
fn with_listed_groups(
    roster: &Roster,
    mut user: DirectoryUser,
    listed: Vec<ScimRef>,
) -> DirectoryUser {
    let before = user.groups.len();
    user.groups.extend(listed.into_iter().filter_map(|group| {
        roster.listed_group(group.value.as_deref()?, group.display.as_deref())
    }));
    if user.groups.len() > before {
        user.groups.sort_unstable();
        user.groups.dedup();
    }
    user
}

/// What the first page's header tells before its resources are parsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListHeader {
    total_results: usize,
    items_per_page: Option<usize>,
    #[serde(default, rename = "Resources")]
    resources: Count,
}

/// The length of a JSON array, read without keeping its elements.
#[derive(Default)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> serde::de::Visitor<'de> for Counter {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Count, A::Error> {
                let mut count = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Count(count))
            }
        }
        deserializer.deserialize_seq(Counter)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse<T> {
    total_results: usize,
    items_per_page: Option<usize>,
    #[serde(default = "Vec::new", rename = "Resources")]
    resources: Vec<T>,
}

impl<T> ListResponse<T> {
    fn try_map<U>(
        self,
        each: impl FnMut(T) -> Result<U, String>,
    ) -> Result<ListResponse<U>, String> {
        Ok(ListResponse {
            total_results: self.total_results,
            items_per_page: self.items_per_page,
            resources: self
                .resources
                .into_iter()
                .map(each)
                .collect::<Result<_, _>>()?,
        })
    }
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

/// A group's fields idsync reads; `members` stays raw JSON until it is resolved
/// (see [`member_positions`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScimGroup<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_text")]
    display_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    members: Option<&'a RawValue>,
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
            reason: "has no externalId, which is the configured subject_attribute".into(),
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
fn pick_email(user: &ScimUser<'_>) -> Result<Email, String> {
    let listed =
        |email: &&ScimEmail<'_>| email.value.as_deref().is_some_and(|v| !v.trim().is_empty());
    let chosen = user
        .emails
        .iter()
        .filter(listed)
        .find(|e| e.primary == Some(true))
        .or_else(|| {
            user.emails.iter().filter(listed).find(|e| {
                e.kind
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("work"))
            })
        })
        .or_else(|| user.emails.iter().find(listed))
        .and_then(|e| e.value.as_deref());
    match chosen {
        Some(address) => Email::parse(address),
        None => user
            .user_name
            .as_deref()
            .and_then(|name| Email::parse(name).ok())
            .ok_or_else(|| match &user.user_name {
                Some(login) => format!(
                    "has no e-mail address (no emails, and userName {login:?} is not an address)"
                ),
                None => "has no e-mail address (no emails and no userName)".into(),
            }),
    }
}

/// `displayName`, else `name.formatted`, else given and family name.
fn pick_name(user: &ScimUser<'_>) -> Option<String> {
    let clean = |s: &Option<Cow<'_, str>>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let name = user.name.as_ref();
    clean(&user.display_name)
        .or_else(|| name.and_then(|n| clean(&n.formatted)))
        .or_else(|| {
            let name = name?;
            let parts: Vec<String> = [clean(&name.given_name), clean(&name.family_name)]
                .into_iter()
                .flatten()
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(value: &serde_json::Value) -> ScimUser<'_> {
        ScimUser::deserialize(value).expect("SCIM user")
    }

    fn email_of(value: serde_json::Value) -> Result<String, String> {
        pick_email(&user(&value)).map(|e| e.to_string())
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
    async fn a_page_waits_while_the_pages_before_it_are_still_undecoded() {
        let undecoded = Arc::new(Undecoded::new(10));
        undecoded.room().await;
        undecoded.bytes.send_modify(|bytes| *bytes += 10);
        let waiting = tokio::spawn({
            let undecoded = undecoded.clone();
            async move { undecoded.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "10 bytes undecoded is the limit");
        undecoded.bytes.send_modify(|bytes| *bytes -= 1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room once under the limit")
            .expect("task");
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
        let decoded = group_decoder(keys.clone())(page).expect("decodes");
        let groups: Vec<(String, Option<String>, Vec<IdDigest>)> = decoded
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
        let bad = br#"{"totalResults": 1, "Resources": [{"id": "g", "members": [{"value": 7}]}]}"#;
        let err = group_decoder(keys)(bad).map(|_| ()).unwrap_err();
        assert!(err.contains(r#"group "g" has unreadable members"#), "{err}");
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
        assert_eq!(missing.unwrap_err().label, "bob");
    }
}
