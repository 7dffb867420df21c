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

mod assembly;
mod decode;
mod list_response;
mod membership_index;
mod paging;

use super::auth::TokenSource;
use super::http::DirectoryHttp;
use super::normalize::{self, ListedEmail};
use super::{Cursor, Delivery, Directory, Read, SourceError};
use crate::config::{AttributeMap, AttributePath, ScimConfig, SubjectAttribute};
use crate::error_chain;
use crate::events;
use crate::model::{
    DirectoryUser, Email, EmailError, GroupName, IdDigest, IdKeys, Subject, UnusableEntry,
};
use assembly::*;
use decode::*;
use list_response::{ListHeader, ListSplitter, PageError, Resources};
use membership_index::{MembershipIndex, MembershipIndexError, RESERVED_AHEAD};
use paging::*;

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
    /// A listing whose `totalResults` is larger is refused.
    max_directory_users: usize,
    /// A page whose body is larger is refused, and so is a larger resource.
    max_page_bytes: usize,
    max_resource_bytes: usize,
}

impl Directory for ScimSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        _cursor: Option<&'a Cursor>,
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
            http: DirectoryHttp::new(http, Arc::new(tokens), SCIM_JSON, config.max_retry_after),
            max_directory_users: config.max_directory_users,
            max_page_bytes: config.max_page_bytes,
            max_resource_bytes: config.max_resource_bytes,
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
        let mut read = assembly.listing;
        read.groups = Some(assembly.memberships.group_names());
        Ok(read)
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
        let split = decode_parts(arriving, decode, usize::MAX);
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

    /// Serves `app` on a free port of 127.0.0.1; returns the SCIM source reading it,
    /// with `settings` added to its `[source]` table.
    async fn source_serving(app: axum::Router, settings: &str) -> ScimSource {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = format!("[source]\nkind = \"scim\"\nurl = \"http://{address}/scim/v2\"\nbearer_token = \"t\"\n{settings}\n[target]\nurl = \"https://y.com/api\"\napi_key = \"k\"\n");
        let config = crate::config::Config::parse(&config, "t", &|_| None).expect("config");
        let crate::config::SourceKind::Scim(scim) = &config.source.kind else {
            panic!("a SCIM source");
        };
        let http = reqwest::Client::new();
        let tokens = TokenSource::new(&scim.auth, http.clone());
        ScimSource::new(scim, &config.source.attributes, http, tokens)
    }

    /// A whole read, its users planned as they arrive; it must end within 30 s.
    async fn read_all(source: &ScimSource) -> Result<Read, SourceError> {
        let (delivery, mut arrivals) = crate::source::delivery::channel(CancellationToken::new());
        tokio::spawn(async move {
            while let Some(users) = arrivals.next().await {
                arrivals.planned(users.len());
            }
        });
        let stop = CancellationToken::new();
        tokio::time::timeout(Duration::from_secs(30), source.pull(&stop, &delivery))
            .await
            .expect("the read ends")
    }

    fn list_response(total: u64, resources: &str) -> String {
        format!(r#"{{"totalResults":{total},"itemsPerPage":1,"Resources":[{resources}]}}"#)
    }

    #[tokio::test]
    async fn a_directory_announcing_a_trillion_users_is_refused_without_reserving_for_them() {
        let users = list_response(1_000_000_000_000, r#"{"id":"u1","userName":"ann@x.com"}"#);
        let app = axum::Router::new()
            .route(
                "/scim/v2/Users",
                axum::routing::get(move || std::future::ready(users.clone())),
            )
            .route(
                "/scim/v2/Groups",
                axum::routing::get(|| std::future::ready(list_response(0, ""))),
            );
        let source = source_serving(app, "").await;
        let err = read_all(&source).await.expect_err("refused");
        let said = "totalResults = 1000000000000 is over source.max_directory_users = 5000000";
        assert!(err.to_string().contains(said), "{err}");
    }

    /// 64 KiB of a member list: `{"value":"member-id-0000000000"},` over and over.
    static MEMBERS: std::sync::LazyLock<&'static [u8]> = std::sync::LazyLock::new(|| {
        let members = r#"{"value":"member-id-0000000000"},"#.repeat(2048);
        Box::leak(members.into_bytes().into_boxed_slice())
    });

    /// A body that starts with `start`, then repeats `chunk` for ever.
    fn endless(start: &'static [u8], chunk: &'static [u8]) -> axum::body::Body {
        use futures::StreamExt;
        let start = futures::stream::once(std::future::ready(bytes::Bytes::from_static(start)));
        let chunks = futures::stream::repeat_with(move || bytes::Bytes::from_static(chunk));
        axum::body::Body::from_stream(start.chain(chunks).map(Ok::<_, std::io::Error>))
    }

    #[tokio::test]
    async fn a_page_that_never_ends_is_refused_at_its_bound() {
        // A header, then padding for ever: no resource, only the page grows.
        let app = axum::Router::new()
            .route(
                "/scim/v2/Groups",
                axum::routing::get(|| {
                    let start = br#"{"totalResults":1,"Resources":[], "x":"#;
                    std::future::ready(endless(start, &[b' '; 65536]))
                }),
            )
            .route(
                "/scim/v2/Users",
                axum::routing::get(|| std::future::ready(list_response(0, ""))),
            );
        let source = source_serving(app, "max_page_bytes = 8388608").await;
        let err = read_all(&source).await.expect_err("refused");
        assert!(
            err.to_string()
                .contains("over source.max_page_bytes = 8388608"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_resource_that_never_ends_is_refused_at_its_bound() {
        // One group whose member list goes on for ever.
        let app = axum::Router::new()
            .route(
                "/scim/v2/Groups",
                axum::routing::get(|| {
                    let start =
                        br#"{"totalResults":1,"Resources":[{"id":"g","displayName":"g","members":["#;
                    std::future::ready(endless(start, *MEMBERS))
                }),
            )
            .route(
                "/scim/v2/Users",
                axum::routing::get(|| std::future::ready(list_response(0, ""))),
            );
        let source = source_serving(app, "max_resource_bytes = 4194304").await;
        let err = read_all(&source).await.expect_err("refused");
        assert!(
            err.to_string()
                .contains("over source.max_resource_bytes = 4194304"),
            "{err}"
        );
    }
}
