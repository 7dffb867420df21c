//! The users of a directory API's full read, handed to the planner page by page
//! with the groups read before them (Google, Keycloak). A user listed twice
//! means the listing shifted or broke while it was paged: the read is not trusted.

use std::collections::{HashMap, HashSet};

use super::{Delivery, Read, Scope};
use crate::model::{DirectoryUser, GroupName, IdDigest, IdKeys, Subject, UnusableEntry};

pub struct UserPages<'a> {
    delivery: &'a Delivery,
    /// Each member's groups, sorted.
    memberships: &'a HashMap<Subject, Vec<GroupName>>,
    keys: IdKeys,
    /// Digests of the subjects delivered so far.
    seen: HashSet<IdDigest>,
    read: Read,
}

impl<'a> UserPages<'a> {
    pub fn new(delivery: &'a Delivery, memberships: &'a HashMap<Subject, Vec<GroupName>>) -> Self {
        Self {
            delivery,
            memberships,
            keys: IdKeys::new(),
            seen: HashSet::new(),
            read: Read::default(),
        }
    }

    /// Delivers a page's users, each `normalize`d and given its groups, and
    /// waits until the planner has room for more. Returns the subject listed a
    /// second time, if one was.
    pub async fn deliver<T>(
        &mut self,
        page: Vec<T>,
        normalize: impl Fn(T) -> Result<DirectoryUser, UnusableEntry>,
    ) -> Result<(), Subject> {
        let mut users = Vec::with_capacity(page.len());
        for entry in page {
            self.read.entries += 1;
            match normalize(entry) {
                Ok(user) if !self.seen.insert(self.keys.digest(user.subject.as_str())) => {
                    return Err(user.subject);
                }
                Ok(mut user) => {
                    if let Some(groups) = self.memberships.get(&user.subject) {
                        user.groups = groups.clone();
                    }
                    users.push(user);
                }
                Err(unusable) => self.read.unusable.push(unusable),
            }
        }
        self.delivery.deliver(users);
        self.delivery.room().await;
        Ok(())
    }

    /// The read, complete: every user was delivered.
    pub fn complete(self) -> Read {
        Read {
            scope: Scope::Complete,
            ..self.read
        }
    }
}
