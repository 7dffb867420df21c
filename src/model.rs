//! The typed identities every stage agrees on.
//!
//! No bare `String` keys travel between the source, the planner and the cache: a
//! [`Subject`] is the IdP's immutable id, an [`Email`] is always trimmed and lower-cased
//! (the gateway compares e-mails case-sensitively, its OIDC login lower-cases them), and
//! a [`GroupName`] is shared, so a million users in five groups hold five strings.

use std::fmt;
use std::hash::Hasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

mod counts;
mod gateway;

pub use counts::Counts;
pub use gateway::{GatewayUser, Profile};

/// The gateway's column limits (characters); exceeding one makes it answer 500.
pub mod limits {
    pub const EMAIL: usize = 255;
    pub const NAME: usize = 255;
    pub const GROUP_NAME: usize = 180;
    pub const SLACK_ID: usize = 50;
    pub const PICTURE: usize = 2048;

    /// More than `limit` characters; counted only when the bytes could be that many.
    pub fn longer_than(text: &str, limit: usize) -> bool {
        text.len() > limit && text.chars().count() > limit
    }
}

/// The IdP's immutable key of a user (SCIM `id` or `externalId`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject(Box<str>);

impl Subject {
    pub fn new(value: impl Into<Box<str>>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bare e-mail address, trimmed and lower-cased on construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Email(Box<str>);

impl Email {
    /// Accepts what both the gateway (Go's `net/mail`) and its published contract
    /// (`format: email`) accept: an ASCII `local@domain` in dot-atom form whose domain
    /// has at least one dot. Display-name forms such as `Jane <j@x.com>` are refused,
    /// because the gateway would store them verbatim and never match them at login.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let value = raw.trim().to_ascii_lowercase();
        if value.is_empty() {
            return Err(EmailError::Empty);
        }
        if limits::longer_than(&value, limits::EMAIL) {
            return Err(EmailError::TooLong);
        }
        let invalid = || EmailError::NotBare(raw.trim().to_owned());
        let (local, domain) = value.rsplit_once('@').ok_or_else(invalid)?;
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        let dot_atom = |part: &str, allowed: &dyn Fn(char) -> bool| {
            !part.is_empty()
                && part
                    .split('.')
                    .all(|atom| !atom.is_empty() && atom.chars().all(allowed))
        };
        let label = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if !dot_atom(local, &atext) || !dot_atom(domain, &label) || !domain.contains('.') {
            return Err(invalid());
        }
        Ok(Self(value.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a user has no e-mail address idsync can create them with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("e-mail is empty")]
    Empty,
    #[error("e-mail is longer than the gateway's {} characters", limits::EMAIL)]
    TooLong,
    #[error("{0:?} is not a bare e-mail address")]
    NotBare(String),
    /// No address listed; the login, if any, is not one either.
    #[error("has no e-mail address (none listed{})", match login {
        Some(login) => format!(", and the login {login:?} is not an address"),
        None => String::new(),
    })]
    Missing { login: Option<String> },
}

/// A group's name as the gateway will see it; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(Arc<str>);

impl GroupName {
    pub fn new(value: &str) -> Self {
        Self(Arc::from(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Identifies this shared name (not its text): clones compare equal, two
    /// separately made names with the same text do not.
    pub fn address(&self) -> *const u8 {
        Arc::as_ptr(&self.0).cast()
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One person as the directory describes them, after normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub subject: Subject,
    pub active: bool,
    /// The address to create the user with, or why the directory gave none usable.
    pub email: Result<Email, EmailError>,
    pub name: Option<String>,
    /// Sorted and free of duplicates, so equal memberships fingerprint equally.
    pub groups: Vec<GroupName>,
    /// Only when mapped from a directory attribute (`source.attributes`).
    pub slack_id: Option<String>,
    pub picture: Option<String>,
}

impl DirectoryUser {
    /// What identifies this user in logs and reports: the e-mail when usable,
    /// else the subject and, when known, the name.
    pub fn label(&self) -> String {
        match (&self.email, &self.name) {
            (Ok(email), _) => email.to_string(),
            (Err(_), Some(name)) => format!("subject {} ({name})", self.subject),
            (Err(_), None) => format!("subject {}", self.subject),
        }
    }

    /// A stable digest of everything idsync sends for this user, so the planner can
    /// tell whether a record the gateway once rejected has changed since.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut hasher = fnv::FnvHasher::default();
        let mut feed = |part: &str| {
            hasher.write(part.as_bytes());
            // Ends each field, so "ab"+"c" and "a"+"bc" differ; never in UTF-8.
            hasher.write_u8(0xff);
        };
        feed(self.email.as_ref().map(Email::as_str).unwrap_or(""));
        feed(self.name.as_deref().unwrap_or(""));
        feed(self.slack_id.as_deref().unwrap_or(""));
        feed(self.picture.as_deref().unwrap_or(""));
        for group in &self.groups {
            feed(group.as_str());
        }
        Fingerprint(hasher.finish())
    }
}

/// Where a change-reading source's next read starts, as the last successful
/// run left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The position ([`Read::cursor`](crate::source::Read::cursor)), written by every run.
    pub position: String,
    /// What the position stands on that seldom changes and can be large (an LDAP
    /// directory's group listing), kept apart so that a run that changed little
    /// writes little ([`Read::cursor_base`](crate::source::Read::cursor_base)).
    pub base: Option<Arc<str>>,
}

impl Cursor {
    /// A position that stands on no base.
    pub fn at(position: impl Into<String>) -> Self {
        Self {
            position: position.into(),
            base: None,
        }
    }
}

/// A directory entry that cannot even be keyed (e.g. no `externalId` when that is
/// the subject attribute); reported and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableEntry {
    /// Whatever identifies the entry to a human: its SCIM id or userName.
    pub label: String,
    pub reason: String,
}

/// FNV-1a over the user's synced fields: stable across builds and Rust versions,
/// unlike `std`'s hasher, because it is stored in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// Recorded for a user idsync found in the gateway without comparing its data,
    /// so that `update_existing` compares it at the next run.
    pub const UNVERIFIED: Fingerprint = Fingerprint(0);
}

/// Digests ids (directory ids, subjects) for one run, so that they can be
/// compared and indexed without a copy of their text. The digest is SipHash-1-3
/// with a 128-bit output, keyed at random for every run, so no directory content
/// can be crafted to make two ids collide; by chance they collide with a
/// probability of about n²/2¹²⁹. One 128-bit pass, because a steady run digests
/// every id and membership (docs/performance.md).
/// Cheap to clone into page decoders.
#[derive(Debug, Clone)]
pub struct IdKeys(SipHasher13);

impl IdKeys {
    pub fn new() -> Self {
        Self(SipHasher13::new_with_keys(rand::random(), rand::random()))
    }

    pub fn digest(&self, id: &str) -> IdDigest {
        let mut hasher = self.0;
        hasher.write(id.as_bytes());
        let digest = hasher.finish128();
        IdDigest(digest.h1, digest.h2)
    }
}

impl Default for IdKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`IdKeys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdDigest(u64, u64);

impl IdDigest {
    /// The top `bits` bits: uniformly spread, since the keys are random.
    pub fn top_bits(self, bits: u32) -> usize {
        top_bits(self.0, bits)
    }

    /// A word of the digest that [`HashBuckets`] can bucket by.
    pub fn spread_word(self) -> u64 {
        self.0
    }
}

fn top_bits(hash: u64, bits: u32) -> usize {
    hash.checked_shr(64 - bits).unwrap_or(0) as usize
}

/// Where the sorted hashes of a table start, by their top bits: with about one
/// hash a bucket, a lookup reads one bucket instead of searching the whole
/// table, which costs a cache miss a step once the table outgrows the caches.
/// The hashes must be uniformly spread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashBuckets {
    /// The hashes whose top bits are `b` are at `starts[b]..starts[b + 1]`.
    starts: Vec<u32>,
}

impl HashBuckets {
    /// For `len` hashes in ascending order, of which `hash_at(i)` is the i-th.
    /// Positions are `u32`: a table of 2^32 would not fit in memory.
    pub fn of_sorted(len: usize, hash_at: impl Fn(usize) -> u64) -> Self {
        let bits = len.next_power_of_two().trailing_zeros();
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for bucket in 0..1usize << bits {
            while at < len && top_bits(hash_at(at), bits) < bucket {
                at += 1;
            }
            starts.push(at as u32);
        }
        starts.push(len as u32);
        Self { starts }
    }

    /// The positions where `hash` may be; none in a table never bucketed.
    pub fn candidates(&self, hash: u64) -> std::ops::Range<usize> {
        let Some(buckets) = self.starts.len().checked_sub(1) else {
            return 0..0;
        };
        let bucket = top_bits(hash, buckets.trailing_zeros());
        self.starts[bucket] as usize..self.starts[bucket + 1] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_buckets_find_every_hash_among_few_candidates() {
        let mut hashes: Vec<u64> = (0..5_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        hashes.extend([0, 0, u64::MAX, u64::MAX, 1 << 63]);
        hashes.sort_unstable();
        let buckets = HashBuckets::of_sorted(hashes.len(), |at| hashes[at]);
        for (at, hash) in hashes.iter().enumerate() {
            let candidates = buckets.candidates(*hash);
            assert!(
                candidates.contains(&at),
                "{hash:#x} at {at}: {candidates:?}"
            );
            assert!(candidates.len() < 16, "{candidates:?}");
        }
        let never = HashBuckets::default();
        assert_eq!(never.candidates(7), 0..0);
        let empty = HashBuckets::of_sorted(0, |_| unreachable!());
        assert_eq!(empty.candidates(u64::MAX), 0..0);
    }

    #[test]
    fn a_user_without_a_usable_email_is_labelled_with_its_name_when_known() {
        let mut user = DirectoryUser {
            subject: Subject::new("u5"),
            active: true,
            email: Email::parse("not-an-email"),
            name: Some("Eve Adams".into()),
            groups: Vec::new(),
            slack_id: None,
            picture: None,
        };
        assert_eq!(user.label(), "subject u5 (Eve Adams)");
        user.name = None;
        assert_eq!(user.label(), "subject u5");
    }

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let email = Email::parse("  John.Doe@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "john.doe@example.com");
    }

    #[test]
    fn email_refuses_what_the_gateway_or_its_contract_would_mangle() {
        for bad in [
            "",
            "not-an-email",
            "Jane <jane@x.com>",
            "a@b",
            "a..b@x.com",
            ".a@x.com",
            "a@x..com",
            "jané@x.com",
            "a b@x.com",
            "@x.com",
            "a@",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).unwrap_err().to_string().contains("255"));
    }

    #[test]
    fn email_accepts_plus_tags_and_subdomains() {
        assert!(Email::parse("ops+idsync@mail.corp.example.org").is_ok());
    }

    fn user(name: Option<&str>, groups: &[&str]) -> DirectoryUser {
        DirectoryUser {
            subject: Subject::new("s1"),
            active: true,
            email: Email::parse("a@x.com"),
            name: name.map(str::to_owned),
            groups: groups.iter().map(|g| GroupName::new(g)).collect(),
            slack_id: None,
            picture: None,
        }
    }

    #[test]
    fn fingerprint_follows_every_synced_field() {
        let base = user(Some("Ann"), &["dba", "sre"]).fingerprint();
        assert_eq!(base, user(Some("Ann"), &["dba", "sre"]).fingerprint());
        assert_ne!(base, user(Some("Anne"), &["dba", "sre"]).fingerprint());
        assert_ne!(base, user(Some("Ann"), &["dba"]).fingerprint());
        let mut with_slack = user(Some("Ann"), &["dba", "sre"]);
        with_slack.slack_id = Some("U123".into());
        assert_ne!(base, with_slack.fingerprint());
        // Field boundaries count: "ab"+"c" must differ from "a"+"bc".
        assert_ne!(
            user(Some("ab"), &["c"]).fingerprint(),
            user(Some("a"), &["bc"]).fingerprint()
        );
    }

    /// Fingerprints are stored in users' caches: a change of these values would make
    /// every managed user look changed after an upgrade.
    #[test]
    fn fingerprints_keep_their_stored_values() {
        let mut full = user(Some("Zoë Ann"), &["dba", "sre", "équipe/ops"]);
        full.slack_id = Some("U123".into());
        full.picture = Some("https://x.com/p.png".into());
        assert_eq!(full.fingerprint(), Fingerprint(0x8515_c5e7_bfa9_84af));
        let mut bare = user(None, &[]);
        bare.email = Err(EmailError::Missing { login: None });
        assert_eq!(bare.fingerprint(), Fingerprint(0x994f_7665_3e2a_3951));
    }

    #[test]
    fn digests_depend_on_the_text_and_on_the_read() {
        let keys = IdKeys::new();
        assert_eq!(keys.digest("abc"), keys.clone().digest("abc"));
        assert_ne!(keys.digest("abc"), keys.digest("abd"));
        assert_ne!(keys.digest("abc"), IdKeys::new().digest("abc"));
    }
}
