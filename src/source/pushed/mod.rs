//! `kind = "push"`: the directory is what identity providers pushed to idsync's
//! SCIM endpoint ([`crate::push`]). A run with no position reads every stored user
//! (a complete read: the reconcile the schedule runs); a run from a position reads
//! only the users queued after it (a change set, whose deleted users are its
//! removals) and returns the queue's new position, which the run keeps only once
//! it did everything it planned, so a failing gateway never loses a push.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::normalize::{self, ListedEmail};
use super::{Cursor, Delivery, Directory, Read, Scope, SourceError};
use crate::config::PushConfig;
use crate::model::{DirectoryUser, Subject};
use crate::push::{Kind, PushStore, StoreError};

/// Users handed to the planner at once.
const CHUNK: usize = 1000;

pub struct PushedDirectory {
    store: Arc<PushStore>,
    path: PathBuf,
}

impl PushedDirectory {
    /// The directory in the store `config` names (the one already open, if any).
    pub fn open(config: &PushConfig) -> Result<Self, SourceError> {
        let store = PushStore::open(&config.store_path)
            .map_err(|err| unreadable(&config.store_path, err))?;
        Ok(Self {
            store,
            path: config.store_path.clone(),
        })
    }

    fn read_all(&self, delivery: &Delivery) -> Result<Read, SourceError> {
        let head = self.store.head();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut entries = 0;
        for user in self.store.all(Kind::User) {
            let user = user.map_err(|err| unreadable(&self.path, err))?;
            chunk.push(self.directory_user(&user)?);
            entries += 1;
            if chunk.len() == CHUNK {
                delivery.deliver(std::mem::take(&mut chunk));
            }
        }
        delivery.deliver(chunk);
        Ok(Read {
            entries,
            unusable: Vec::new(),
            scope: Scope::Complete,
            cursor: Some(head.to_string()),
            groups: Some(self.group_names()?),
            ..Read::default()
        })
    }

    /// Every pushed group's name, members or not.
    fn group_names(&self) -> Result<Vec<String>, SourceError> {
        let mut names = Vec::new();
        for group in self.store.all(Kind::Group) {
            let group = group.map_err(|err| unreadable(&self.path, err))?;
            if let Some(name) = group.get("displayName").and_then(Value::as_str) {
                names.extend(normalize::group_name_text(name).map(str::to_owned));
            }
        }
        Ok(names)
    }

    fn read_changes(&self, delivery: &Delivery, done: u64) -> Result<Read, SourceError> {
        let fail = |err| unreadable(&self.path, err);
        self.store.done_up_to(done).map_err(fail)?;
        let queued = self.store.queued_after(done).map_err(fail)?;
        let position = queued.last().map_or(done, |q| q.position);
        let subjects: BTreeSet<String> = queued.into_iter().map(|q| q.user_id).collect();
        let (mut users, mut removed) = (Vec::new(), Vec::new());
        for id in subjects {
            match self.store.get(Kind::User, &id).map_err(fail)? {
                Some(user) => users.push(self.directory_user(&user)?),
                None => removed.push(Subject::new(id)),
            }
        }
        let entries = users.len();
        for chunk in users.chunks(CHUNK) {
            delivery.deliver(chunk.to_vec());
        }
        Ok(Read {
            entries,
            unusable: Vec::new(),
            scope: Scope::Changes { removed },
            cursor: Some(position.to_string()),
            groups: Some(self.group_names()?),
            ..Read::default()
        })
    }

    /// A stored SCIM user as the planner sees it, with the groups it is in.
    fn directory_user(&self, user: &Value) -> Result<DirectoryUser, SourceError> {
        fn text(value: Option<&Value>) -> Option<&str> {
            value.and_then(Value::as_str)
        }
        let id = text(user.get("id")).unwrap_or_default();
        let emails = user
            .get("emails")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let listed = emails.iter().filter_map(|email| {
            Some(ListedEmail {
                value: text(email.get("value"))?,
                primary: email.get("primary") == Some(&Value::Bool(true)),
                work: text(email.get("type")).is_some_and(|t| t.eq_ignore_ascii_case("work")),
            })
        });
        let name = user.get("name");
        let mut groups: Vec<_> = self
            .store
            .groups_of(id)
            .map_err(|err| unreadable(&self.path, err))?
            .iter()
            .filter_map(|(_, group)| normalize::group_name(group))
            .collect();
        groups.sort();
        groups.dedup();
        Ok(DirectoryUser {
            subject: Subject::new(id),
            active: user.get("active") != Some(&Value::Bool(false)),
            email: normalize::choose_email(listed, text(user.get("userName"))),
            name: normalize::choose_name(
                text(user.get("displayName")),
                text(name.and_then(|n| n.get("formatted"))),
                text(name.and_then(|n| n.get("givenName"))),
                text(name.and_then(|n| n.get("familyName"))),
            ),
            groups,
            slack_id: None,
            picture: None,
        })
    }
}

fn unreadable(path: &std::path::Path, err: StoreError) -> SourceError {
    SourceError::File {
        path: path.display().to_string(),
        reason: err.to_string(),
    }
}

impl Directory for PushedDirectory {
    fn read<'a>(
        &'a self,
        _shutdown: &'a CancellationToken,
        delivery: Delivery,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move {
            // A position that is not a number (or none) reads everything.
            let read = match cursor.and_then(|c| c.position.parse::<u64>().ok()) {
                Some(done) => self.read_changes(&delivery, done),
                None => self.read_all(&delivery),
            };
            crate::push::queue_figures(&self.store);
            read
        })
    }

    fn reads_changes(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("push {}", self.path.display())
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let users = self.store.all(Kind::User).count();
            let groups = self.store.all(Kind::Group).count();
            Ok(format!(
                "{users} users and {groups} groups pushed, in {}",
                self.path.display()
            ))
        })
    }

    fn cursor_kept(&self, cursor: &str) {
        if let Ok(done) = cursor.parse::<u64>() {
            if let Err(err) = self.store.done_up_to(done) {
                tracing::warn!(error = %err, "Could not trim the push queue; the next run does.");
            }
            crate::push::queue_figures(&self.store);
        }
    }

    fn wakeups(&self) -> Option<Arc<Notify>> {
        Some(self.store.changed())
    }
}
