//! What an incremental read continues from ([`State`], kept in the cursor),
//! and the last one this process wrote, kept in memory ([`LastState`]).

use std::sync::{Mutex, PoisonError};

use super::groups::GroupListing;

/// What an incremental read continues from, kept in the cursor: the server's
/// cookies for the users and the groups (hex: a cookie is bytes), and the group
/// listing, to tell who left a group that changed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct State {
    users: String,
    groups: String,
    pub listing: GroupListing,
}

/// The first line of a [`State`]'s text.
const STATE_HEADER: &str = "ldap-state/2";

impl State {
    pub fn new(users: &[u8], groups: &[u8], listing: GroupListing) -> Self {
        Self {
            users: hex(users),
            groups: hex(groups),
            listing,
        }
    }

    /// A header line, the two cookies on a line, then the listing (see
    /// [`GroupListing::write`]): lines, read without escapes, because the
    /// listing is megabytes for a large directory and is read and written at
    /// every run (docs/performance.md). `listing_text` is the listing's text
    /// when it is at hand already.
    pub fn encode(&self, listing_text: Option<&str>) -> String {
        let mut text = format!("{STATE_HEADER}\n{} {}\n", self.users, self.groups);
        match listing_text {
            Some(listing) => text.push_str(listing),
            None => self.listing.write(&mut text),
        }
        text
    }

    /// The cookie the users' refresh continues from.
    pub fn users_cookie(&self) -> Option<Vec<u8>> {
        unhex(&self.users)
    }

    /// The cookie the groups' refresh continues from.
    pub fn groups_cookie(&self) -> Option<Vec<u8>> {
        unhex(&self.groups)
    }

    /// Where the listing begins in a text [`encode`](Self::encode) wrote.
    fn listing_at(text: &str) -> Option<usize> {
        memchr::memchr_iter(b'\n', text.as_bytes())
            .nth(1)
            .map(|at| at + 1)
    }

    /// The state [`encode`](Self::encode) wrote; `None` for anything else,
    /// including the JSON of versions before it.
    pub fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(STATE_HEADER)?.strip_prefix('\n')?;
        let (cookies, listing) = rest.split_once('\n')?;
        let (users, groups) = cookies.split_once(' ')?;
        unhex(users)?;
        unhex(groups)?;
        Some(Self {
            users: users.to_owned(),
            groups: groups.to_owned(),
            listing: GroupListing::read(listing)?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// The state the last read ended with, and the cursor it went out in, kept in
/// memory: a daemon's next read is given that same cursor, and continues from
/// this state instead of decoding the cursor's text; a listing no group changed
/// is then written by copying its text (docs/performance.md).
#[derive(Default)]
pub(super) struct LastState(Mutex<Option<Last>>);

pub(super) struct Last {
    pub state: State,
    cursor: String,
    /// Where the listing's text begins in `cursor`.
    listing_at: usize,
    /// The run kept the cursor (see `Directory::cursor_kept`).
    kept: bool,
}

impl Last {
    /// The state, and its listing's text as the cursor had it.
    pub fn into_parts(self) -> (State, ListingText) {
        let text = ListingText {
            cursor: self.cursor,
            at: self.listing_at,
        };
        (self.state, text)
    }
}

/// A listing's text, the end of a cursor.
pub(super) struct ListingText {
    cursor: String,
    at: usize,
}

impl ListingText {
    pub fn as_str(&self) -> &str {
        &self.cursor[self.at..]
    }
}

impl LastState {
    /// The state `cursor` holds, if it is the last one written and its run kept it.
    pub fn take(&self, cursor: &str) -> Option<Last> {
        let last = self.lock().take()?;
        (last.kept && last.cursor == cursor).then_some(last)
    }

    /// Remembers `state`, written as the last `token_len` bytes of `cursor`.
    pub fn wrote(&self, state: State, cursor: &str, token_len: usize) {
        let token_at = cursor.len() - token_len;
        let Some(listing_at) = cursor.get(token_at..).and_then(State::listing_at) else {
            return;
        };
        *self.lock() = Some(Last {
            state,
            listing_at: token_at + listing_at,
            cursor: cursor.to_owned(),
            kept: false,
        });
    }

    /// The run kept `cursor`.
    pub fn kept(&self, cursor: &str) {
        if let Some(last) = self.lock().as_mut() {
            last.kept |= last.cursor == cursor;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Last>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &[u8] = b"rid=000,csn=20261205054546.134084Z#000000#000#000000";

    fn state() -> State {
        let mut listing = GroupListing::new("ou=People, dc=x");
        let group = crate::source::ldap::entry::Entry::for_tests(
            "cn=sre,ou=groups,dc=x",
            &[
                ("cn", &["sre"]),
                (
                    "member",
                    &["uid=ann,ou=people,dc=x", "cn=db,ou=groups,dc=x"],
                ),
            ],
        );
        let member = crate::config::MemberAttribute::Dn("member".into());
        listing.add(&group, "cn", &member).expect("added");
        State::new(COOKIE, b"g", listing)
    }

    #[test]
    fn the_state_keeps_both_cookies_and_the_listing() {
        let state = state();
        // Members under the user base are kept without it; members, one a line.
        let text = state.encode(None);
        assert!(
            text.ends_with("\n=cn=db,ou=groups,dc=x\n~uid=ann\n"),
            "{text}"
        );
        let decoded = State::decode(&text).expect("decodes");
        assert_eq!(decoded.users_cookie().as_deref(), Some(COOKIE));
        assert_eq!(decoded, state);
        // A listing cut short (in a group, or after one), a bad cookie, the
        // JSON of earlier versions.
        assert_eq!(State::decode(&text[..text.len() - 10]), None);
        assert_eq!(
            State::decode(&text.replacen("1 groups", "2 groups", 1)),
            None
        );
        assert_eq!(State::decode(&text.replacen(" 67\n", " 6g\n", 1)), None);
        assert_eq!(
            State::decode(r#"{"users":"","groups":"","suffix":"","listing":{"groups":{}}}"#),
            None
        );
        assert_eq!(State::decode("https://x"), None);
    }

    #[test]
    fn the_last_state_is_given_back_only_for_the_cursor_its_run_kept() {
        let token = state().encode(None);
        let cursor = format!("position line\n{token}");
        let last = LastState::default();
        last.wrote(state(), &cursor, token.len());
        assert!(last.take(&cursor).is_none(), "not kept yet");

        last.wrote(state(), &cursor, token.len());
        last.kept("another cursor");
        assert!(last.take(&cursor).is_none(), "another cursor was kept");

        last.wrote(state(), &cursor, token.len());
        last.kept(&cursor);
        assert!(last.take("another cursor").is_none(), "asked from another");
        last.wrote(state(), &cursor, token.len());
        last.kept(&cursor);
        let (state, listing) = last.take(&cursor).expect("kept").into_parts();
        assert_eq!(state.encode(Some(listing.as_str())), token);
        assert!(last.take(&cursor).is_none(), "given once");
    }
}
