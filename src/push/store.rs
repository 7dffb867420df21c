//! The durable store of what identity providers pushed: their users and groups as
//! SCIM resources, and a queue of the users whose gateway state may have changed.
//!
//! Every write is one sled transaction (resource, name index, memberships and queue
//! together), made under one lock so that queue positions follow commit order: a
//! reader that has seen position `n` has seen every change before it. The caller
//! answers the IdP only after [`PushStore::flush`], so an acknowledged push survives
//! `kill -9`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde_json::Value;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use tokio::sync::Notify;

/// What a pushed resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    fn prefix(self) -> &'static [u8] {
        match self {
            Kind::User => b"u/",
            Kind::Group => b"g/",
        }
    }

    /// The attribute that must be unique, case-insensitively, among resources of the kind.
    pub fn unique_attribute(self) -> &'static str {
        match self {
            Kind::User => "userName",
            Kind::Group => "displayName",
        }
    }
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another resource of the kind has the same unique name: the IdP gets 409.
    #[error("{attribute} {value:?} is already taken")]
    Taken {
        attribute: &'static str,
        value: String,
    },
    /// The disk store failed; the push is not acknowledged (503), so the IdP retries.
    #[error("the push store at {path} failed: {reason}")]
    Disk { path: String, reason: String },
}

/// A store of pushed resources, shared by the SCIM endpoint and the directory the
/// runs read. sled lets one handle open a path per process, so [`PushStore::open`]
/// hands out the one already open (a config reload builds a new directory on it).
pub struct PushStore {
    path: PathBuf,
    db: sled::Db,
    resources: Tree,
    names: Tree,
    members: Tree,
    queue: Tree,
    meta: Tree,
    /// The next queue position; held while a write commits, so positions follow commit order.
    writer: Mutex<u64>,
    /// The last queue position a run started from (done up to there).
    done_up_to: AtomicU64,
    changed: Arc<Notify>,
}

/// One queued change: where it is and when it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub position: u64,
    pub user_id: String,
    pub queued_at_ms: u64,
}

const HEAD: &[u8] = b"head";

static OPEN: Mutex<Vec<(PathBuf, Weak<PushStore>)>> = Mutex::new(Vec::new());

impl PushStore {
    /// The store at `path`, created when missing, or the handle this process already has.
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|(_, store)| store.strong_count() > 0);
        if let Some(store) = open
            .iter()
            .find(|(at, _)| at == path)
            .and_then(|(_, store)| store.upgrade())
        {
            return Ok(store);
        }
        let store = Arc::new(Self::open_new(path)?);
        open.push((path.to_owned(), Arc::downgrade(&store)));
        Ok(store)
    }

    fn open_new(path: &Path) -> Result<Self, StoreError> {
        let disk = |err: sled::Error| disk_error(path, &err);
        let db = crate::cache::open_sled(&sled::Config::new().path(path)).map_err(disk)?;
        let tree = |name: &str| db.open_tree(name).map_err(disk);
        let (resources, names, members) = (tree("resources")?, tree("names")?, tree("members")?);
        let (queue, meta) = (tree("queue")?, tree("meta")?);
        let head = meta.get(HEAD).map_err(disk)?.map_or(0, |v| be_u64(&v));
        let done_up_to = queue
            .first()
            .map_err(disk)?
            .map_or(head, |(key, _)| be_u64(&key).saturating_sub(1));
        Ok(Self {
            path: path.to_owned(),
            db,
            resources,
            names,
            members,
            queue,
            meta,
            writer: Mutex::new(head + 1),
            done_up_to: AtomicU64::new(done_up_to),
            changed: Arc::new(Notify::new()),
        })
    }

    fn disk(&self, err: &sled::Error) -> StoreError {
        disk_error(&self.path, err)
    }

    /// Makes every write so far durable; answer the IdP only after it. A blocking
    /// flush on the blocking pool: sled's `flush_async` was seen to hang with
    /// several requests flushing at once (8 concurrent clients in
    /// `tests/push_crash.rs`).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        let flushed = tokio::task::spawn_blocking(move || db.flush()).await;
        match flushed {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(self.disk(&err)),
            Err(join) => Err(StoreError::Disk {
                path: self.path.display().to_string(),
                reason: join.to_string(),
            }),
        }
    }

    #[cfg(test)]
    fn flush_blocking(&self) {
        self.db.flush().unwrap();
    }

    /// Fires after each committed write, for the worker that syncs pushes.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// The resource with `id`, as last stored.
    pub fn get(&self, kind: Kind, id: &str) -> Result<Option<Value>, StoreError> {
        let found = self
            .resources
            .get(key(kind, id))
            .map_err(|e| self.disk(&e))?;
        Ok(found.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// The id of the resource whose unique name is `name` (case-insensitive).
    pub fn id_by_name(&self, kind: Kind, name: &str) -> Result<Option<String>, StoreError> {
        let found = self
            .names
            .get(name_key(kind, name))
            .map_err(|e| self.disk(&e))?;
        Ok(found.map(|id| String::from_utf8_lossy(&id).into_owned()))
    }

    /// Every resource of `kind`, in id order.
    pub fn all(&self, kind: Kind) -> impl Iterator<Item = Result<Value, StoreError>> + '_ {
        self.resources
            .scan_prefix(kind.prefix())
            .filter_map(|item| match item {
                Ok((_, bytes)) => serde_json::from_slice(&bytes).ok().map(Ok),
                Err(err) => Some(Err(self.disk(&err))),
            })
    }

    /// The ids and display names of the groups `user_id` is a member of.
    pub fn groups_of(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        // Each membership holds its group's name, so a user's groups are read
        // without parsing groups that may list thousands of members.
        let mut names = Vec::new();
        for item in self.members.scan_prefix(member_prefix(user_id)) {
            let (member_key, name) = item.map_err(|e| self.disk(&e))?;
            let group_id = String::from_utf8_lossy(&member_key[user_id.len() + 1..]).into_owned();
            names.push((group_id, String::from_utf8_lossy(&name).into_owned()));
        }
        Ok(names)
    }

    /// Writes what `build` makes of the stored resource `id` (`None`: absent), all
    /// under the write lock so no other write comes between the read and the write.
    /// `build` returning `Ok(None)` deletes the resource. Returns what was stored.
    pub fn write<E: From<StoreError>>(
        &self,
        kind: Kind,
        id: &str,
        build: impl FnOnce(Option<Value>) -> Result<Option<Value>, E>,
    ) -> Result<Option<Value>, E> {
        let mut next = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let before = self.get(kind, id)?;
        let after = build(before.clone())?;
        let change = Change::new(self, kind, id, before.as_ref(), after.as_ref())?;
        let queued = change.commit(self, *next)?;
        *next += queued;
        drop(next);
        if queued > 0 {
            self.changed.notify_one();
        }
        Ok(after)
    }

    /// The queue after `position`, oldest first.
    pub fn queued_after(&self, position: u64) -> Result<Vec<Queued>, StoreError> {
        self.queue
            .range((position + 1).to_be_bytes()..)
            .map(|item| {
                let (at, value) = item.map_err(|e| self.disk(&e))?;
                Ok(Queued {
                    position: be_u64(&at),
                    queued_at_ms: be_u64(&value),
                    user_id: String::from_utf8_lossy(value.get(8..).unwrap_or_default())
                        .into_owned(),
                })
            })
            .collect()
    }

    /// The last queue position given out.
    pub fn head(&self) -> u64 {
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .saturating_sub(1)
    }

    /// Forgets the queue up to `position`, which a successful run has done.
    pub fn done_up_to(&self, position: u64) -> Result<(), StoreError> {
        self.done_up_to.fetch_max(position, Ordering::Relaxed);
        for item in self.queue.range(..=position.to_be_bytes()) {
            let (at, _) = item.map_err(|e| self.disk(&e))?;
            self.queue.remove(at).map_err(|e| self.disk(&e))?;
        }
        Ok(())
    }

    /// The queue for `/readyz`: depth and the oldest change's age in seconds.
    pub fn figures(&self) -> Value {
        let (depth, oldest_ms) = self.backlog(now_ms());
        serde_json::json!({"depth": depth, "oldest_age_seconds": oldest_ms as f64 / 1000.0})
    }

    /// Changes queued and not yet done, and the age of the oldest in milliseconds.
    pub fn backlog(&self, now_ms: u64) -> (u64, u64) {
        let done = self.done_up_to.load(Ordering::Relaxed);
        let depth = self.head().saturating_sub(done);
        let oldest = match self.queue.range((done + 1).to_be_bytes()..).next() {
            Some(Ok((_, value))) => now_ms.saturating_sub(be_u64(&value)),
            _ => 0,
        };
        (depth, oldest)
    }
}

/// What one write changes in the trees, computed before the transaction.
struct Change {
    resource: (Vec<u8>, Option<Vec<u8>>),
    names: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Membership key and the group's name, or `None` to remove it.
    members: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Groups whose member lists lose a deleted user.
    groups: Vec<(Vec<u8>, Vec<u8>)>,
    queue: BTreeSet<String>,
}

impl Change {
    fn new(
        store: &PushStore,
        kind: Kind,
        id: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<Self, StoreError> {
        let bytes = after.map(|v| v.to_string().into_bytes());
        let mut change = Self {
            resource: (key(kind, id), bytes),
            names: Vec::new(),
            members: Vec::new(),
            groups: Vec::new(),
            queue: BTreeSet::new(),
        };
        change.rename(store, kind, id, before, after)?;
        match kind {
            Kind::User => change.user(store, id, before, after)?,
            Kind::Group => change.group(id, before, after),
        }
        Ok(change)
    }

    fn rename(
        &mut self,
        store: &PushStore,
        kind: Kind,
        id: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<(), StoreError> {
        let attribute = kind.unique_attribute();
        let name =
            |v: Option<&Value>| v.and_then(|v| v.get(attribute)?.as_str().map(str::to_owned));
        let (old, new) = (name(before), name(after));
        let same = |a: &str, b: &str| name_key(kind, a) == name_key(kind, b);
        if let Some(new) = &new {
            if let Some(holder) = store.id_by_name(kind, new)? {
                if holder != id {
                    return Err(StoreError::Taken {
                        attribute,
                        value: new.clone(),
                    });
                }
            }
        }
        match (&old, &new) {
            (Some(old), Some(new)) if same(old, new) => {}
            _ => {
                if let Some(old) = &old {
                    self.names.push((name_key(kind, old), None));
                }
                if let Some(new) = &new {
                    self.names
                        .push((name_key(kind, new), Some(id.as_bytes().to_vec())));
                }
            }
        }
        Ok(())
    }

    fn user(
        &mut self,
        store: &PushStore,
        id: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<(), StoreError> {
        if before != after {
            self.queue.insert(id.to_owned());
        }
        if after.is_some() {
            return Ok(());
        }
        // A deleted user leaves every group, as a real directory's would.
        for item in store.members.scan_prefix(member_prefix(id)) {
            let (member_key, _) = item.map_err(|e| store.disk(&e))?;
            let group_id = String::from_utf8_lossy(&member_key[id.len() + 1..]).into_owned();
            self.members.push((member_key.to_vec(), None));
            if let Some(mut group) = store.get(Kind::Group, &group_id)? {
                if let Some(Value::Array(list)) = group.get_mut("members") {
                    list.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
                }
                self.groups
                    .push((key(Kind::Group, &group_id), group.to_string().into_bytes()));
            }
        }
        Ok(())
    }

    fn group(&mut self, id: &str, before: Option<&Value>, after: Option<&Value>) {
        let (old, new) = (member_ids(before), member_ids(after));
        let name =
            |g: Option<&Value>| g.and_then(|g| g.get("displayName")?.as_str().map(str::to_owned));
        let new_name = name(after).unwrap_or_default().into_bytes();
        let renamed = name(before) != name(after);
        for user in old.difference(&new) {
            self.members.push((member_key(user, id), None));
            self.queue.insert(user.clone());
        }
        let renamed_members = old.intersection(&new).filter(|_| renamed);
        for user in new.difference(&old).chain(renamed_members) {
            self.members
                .push((member_key(user, id), Some(new_name.clone())));
            self.queue.insert(user.clone());
        }
    }

    /// Commits the change with its queue entries from position `next`; returns how
    /// many were queued.
    fn commit(self, store: &PushStore, next: u64) -> Result<u64, StoreError> {
        let now = now_ms().to_be_bytes();
        let queued: Vec<(u64, Vec<u8>)> = self
            .queue
            .iter()
            .zip(next..)
            .map(|(user, at)| (at, [&now[..], user.as_bytes()].concat()))
            .collect();
        let head = queued.last().map(|(at, _)| *at);
        let trees = (
            &store.resources,
            &store.names,
            &store.members,
            &store.queue,
            &store.meta,
        );
        let result: Result<(), TransactionError<()>> =
            trees.transaction(|(resources, names, members, queue, meta)| {
                set(resources, &self.resource.0, self.resource.1.as_deref())?;
                for (group, bytes) in &self.groups {
                    resources.insert(group.as_slice(), bytes.as_slice())?;
                }
                for (name, id) in &self.names {
                    set(names, name, id.as_deref())?;
                }
                for (member, name) in &self.members {
                    set(members, member, name.as_deref())?;
                }
                for (at, value) in &queued {
                    queue.insert(&at.to_be_bytes(), value.as_slice())?;
                }
                if let Some(head) = head {
                    meta.insert(HEAD, &head.to_be_bytes())?;
                }
                Ok(())
            });
        result.map_err(|err| match err {
            TransactionError::Storage(err) => store.disk(&err),
            TransactionError::Abort(()) => store.disk(&sled::Error::Unsupported("aborted".into())),
        })?;
        Ok(queued.len() as u64)
    }
}

fn set(
    tree: &TransactionalTree,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(), ConflictableTransactionError<()>> {
    match value {
        Some(value) => tree.insert(key, value).map(drop),
        None => tree.remove(key).map(drop),
    }
    .map_err(ConflictableTransactionError::from)
}

/// The user ids a group lists as members.
fn member_ids(group: Option<&Value>) -> BTreeSet<String> {
    group
        .and_then(|g| g.get("members"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("value").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn key(kind: Kind, id: &str) -> Vec<u8> {
    [kind.prefix(), id.as_bytes()].concat()
}

/// Unique names compare case-insensitively (SCIM's `caseExact: false`).
fn name_key(kind: Kind, name: &str) -> Vec<u8> {
    [kind.prefix(), name.to_lowercase().as_bytes()].concat()
}

fn member_prefix(user_id: &str) -> Vec<u8> {
    [user_id.as_bytes(), b"\0"].concat()
}

fn member_key(user_id: &str, group_id: &str) -> Vec<u8> {
    [user_id.as_bytes(), b"\0", group_id.as_bytes()].concat()
}

fn be_u64(bytes: &[u8]) -> u64 {
    let mut array = [0u8; 8];
    let n = bytes.len().min(8);
    array[..n].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(array)
}

fn disk_error(path: &Path, err: &sled::Error) -> StoreError {
    StoreError::Disk {
        path: path.display().to_string(),
        reason: err.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(store: &PushStore, kind: Kind, id: &str, value: Value) -> Result<(), StoreError> {
        store
            .write(kind, id, |_| Ok::<_, StoreError>(Some(value)))
            .map(drop)
    }

    fn queued_users(store: &PushStore, after: u64) -> Vec<String> {
        let queued = store.queued_after(after).unwrap();
        queued.into_iter().map(|q| q.user_id).collect()
    }

    #[test]
    fn writes_queue_the_users_they_change_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("push");
        {
            let store = PushStore::open(&path).unwrap();
            put(&store, Kind::User, "u1", json!({"userName": "Ada"})).unwrap();
            put(&store, Kind::User, "u2", json!({"userName": "bob"})).unwrap();
            let taken = put(&store, Kind::User, "u3", json!({"userName": "ADA"}));
            assert!(matches!(taken, Err(StoreError::Taken { .. })));
            let ops = json!({"displayName": "ops", "members": [{"value": "u1"}, {"value": "u2"}]});
            put(&store, Kind::Group, "g1", ops).unwrap();
            assert_eq!(queued_users(&store, 0), ["u1", "u2", "u1", "u2"]);
            assert_eq!(
                store.groups_of("u1").unwrap(),
                [("g1".into(), "ops".into())]
            );
            put(
                &store,
                Kind::Group,
                "g1",
                json!({"displayName": "sre", "members": [{"value": "u2"}]}),
            )
            .unwrap();
            assert_eq!(queued_users(&store, 4), ["u1", "u2"], "left, and renamed");
            assert_eq!(
                store.groups_of("u2").unwrap(),
                [("g1".into(), "sre".into())]
            );
            assert!(store.groups_of("u1").unwrap().is_empty());
            store.flush_blocking();
        }
        let store = PushStore::open(&path).unwrap();
        assert_eq!(store.head(), 6, "positions go on after a restart");
        assert_eq!(
            store.id_by_name(Kind::User, "ada").unwrap().as_deref(),
            Some("u1")
        );
        store
            .write(Kind::User, "u2", |_| Ok::<_, StoreError>(None))
            .unwrap();
        let group = store.get(Kind::Group, "g1").unwrap().unwrap();
        assert_eq!(
            group["members"],
            json!([]),
            "a deleted user leaves its groups"
        );
        store.done_up_to(6).unwrap();
        assert_eq!(queued_users(&store, 0), ["u2"]);
        assert_eq!(store.backlog(now_ms()).0, 1);
    }

    #[test]
    fn one_store_per_path_is_shared_within_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let first = PushStore::open(&dir.path().join("push")).unwrap();
        let second = PushStore::open(&dir.path().join("push")).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }
}
