//! `kind = "file"`: a directory exported to disk, as JSON Lines or CSV — what HR
//! systems hand over, and what air-gapped sites carry in. Users come from
//! `source.path`, groups (optional, nested ones flattened) from
//! `source.groups_path`. A file that cannot be read completely aborts the run:
//! a cut-off export must never look like a directory people have left.

mod line_bound;
mod rows;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read as _, Seek, SeekFrom};

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::membership::{self, ListedGroup};
use super::paged::Memberships;
use super::{Cursor, Delivery, Directory, Read, Scope, SourceError};
use crate::config::{AttributeMap, ExportFile, FileConfig};
use crate::model::{DirectoryUser, GroupName, Subject, UnusableEntry};
use rows::{Row, Rows};

/// Users handed to the planner at a time.
const CHUNK: usize = 1000;

#[derive(Debug, Clone)]
pub struct FileSource {
    users: ExportFile,
    groups: Option<ExportFile>,
    /// The columns mapped to `slack_id` and `picture`, if any.
    slack_id: Option<String>,
    picture: Option<String>,
    /// `source.max_resource_bytes`: the longest line read.
    max_line_bytes: usize,
}

impl FileSource {
    pub fn new(config: &FileConfig, attributes: &AttributeMap) -> Self {
        let column = |path: &Option<crate::config::AttributePath>| {
            path.as_ref().and_then(|p| p.segments.first().cloned())
        };
        Self {
            users: config.users.clone(),
            groups: config.groups.clone(),
            slack_id: column(&attributes.slack_id),
            picture: column(&attributes.picture),
            max_line_bytes: config.max_resource_bytes,
        }
    }

    /// Reads the whole export on the calling (blocking) thread, handing users to
    /// `send` a chunk at a time; `send` says whether to go on.
    fn read_blocking(
        &self,
        mut send: impl FnMut(Vec<DirectoryUser>) -> bool,
    ) -> Result<Read, SourceError> {
        let (memberships, mut group_names) = match &self.groups {
            Some(groups) => read_groups(groups, self.max_line_bytes)?,
            None => (HashMap::new(), BTreeSet::new()),
        };
        let mut rows = Rows::open(&self.users, self.max_line_bytes)?;
        let mut read = Read::default();
        let mut seen = HashSet::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.next_row()? {
            read.entries += 1;
            let active = row.active().map_err(|reason| rows.broken(reason))?;
            match self.user(&row, active, &memberships, rows.line()) {
                Ok(user) if !seen.insert(user.subject.clone()) => {
                    return Err(
                        rows.broken(format!("id {:?} is listed twice", user.subject.as_str()))
                    );
                }
                Ok(user) => {
                    group_names.extend(user.groups.iter().map(ToString::to_string));
                    chunk.push(user);
                }
                Err(unusable) => read.unusable.push(unusable),
            }
            if chunk.len() == CHUNK && !send(std::mem::take(&mut chunk)) {
                return Err(SourceError::Interrupted);
            }
        }
        if !chunk.is_empty() && !send(chunk) {
            return Err(SourceError::Interrupted);
        }
        read.scope = Scope::Complete;
        read.groups = Some(group_names.into_iter().collect());
        Ok(read)
    }

    /// One row as a directory user, with the groups that list it.
    fn user(
        &self,
        row: &Row,
        active: bool,
        memberships: &HashMap<Subject, Vec<GroupName>>,
        line: u64,
    ) -> Result<DirectoryUser, UnusableEntry> {
        let Some(id) = row.text("id") else {
            let label = row.text("email").unwrap_or_else(|| format!("line {line}"));
            return Err(UnusableEntry {
                label,
                reason: "has no id".into(),
            });
        };
        let subject = Subject::new(id);
        let mut groups: Vec<GroupName> = row
            .list("groups")
            .iter()
            .filter_map(|g| super::normalize::group_name(g))
            .collect();
        groups.extend(memberships.get(&subject).into_iter().flatten().cloned());
        groups.sort();
        groups.dedup();
        let text = |key: &str| row.text(key);
        Ok(DirectoryUser {
            active,
            email: super::normalize::choose_email(
                text("email")
                    .iter()
                    .map(|value| super::normalize::ListedEmail {
                        value,
                        primary: true,
                        work: false,
                    }),
                None,
            ),
            name: super::normalize::choose_name(
                text("name").as_deref(),
                None,
                text("given_name").as_deref(),
                text("family_name").as_deref(),
            ),
            groups,
            slack_id: self.slack_id.as_deref().and_then(text),
            picture: self.picture.as_deref().and_then(text),
            subject,
        })
    }
}

/// The groups export, as each member's groups.
/// Each user's groups by the groups file, and the name of every group in it.
fn read_groups(
    file: &ExportFile,
    max_line_bytes: usize,
) -> Result<(Memberships, BTreeSet<String>), SourceError> {
    let mut rows = Rows::open(file, max_line_bytes)?;
    let mut groups = Vec::new();
    while let Some(row) = rows.next_row()? {
        let Some(name) = row
            .text("name")
            .as_deref()
            .and_then(super::normalize::group_name_text)
            .map(str::to_owned)
        else {
            return Err(rows.broken("a group has no name".into()));
        };
        let nested = row.list("groups");
        groups.push(ListedGroup {
            name,
            members: row.list("members").into_iter().map(Subject::new).collect(),
            groups: nested
                .iter()
                .filter_map(|g| super::normalize::group_name_text(g))
                .map(str::to_owned)
                .collect(),
        });
    }
    let names = groups.iter().map(|group| group.name.clone()).collect();
    let memberships = membership::groups_of_members(groups).map_err(|err| SourceError::File {
        path: file.path.display().to_string(),
        reason: err.to_string(),
    })?;
    Ok((memberships, names))
}

/// Checks that `file` is there, not empty, and ends with a line break (an export
/// cut off mid-line does not); returns its size.
fn check_complete(file: &ExportFile) -> Result<u64, SourceError> {
    let broken = |reason: String| SourceError::File {
        path: file.path.display().to_string(),
        reason,
    };
    let mut opened = std::fs::File::open(&file.path).map_err(|err| broken(err.to_string()))?;
    let size = opened
        .seek(SeekFrom::End(0))
        .map_err(|err| broken(err.to_string()))?;
    if size == 0 {
        return Err(broken(
            "the file is empty; an export holds at least its users".into(),
        ));
    }
    let mut last = [0u8];
    opened
        .seek(SeekFrom::End(-1))
        .and_then(|_| opened.read_exact(&mut last))
        .map_err(|err| broken(err.to_string()))?;
    if last[0] != b'\n' {
        return Err(broken(
            "the file does not end with a line break: it looks cut off, so nothing is concluded from it".into(),
        ));
    }
    Ok(size)
}

impl Directory for FileSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        _cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move {
            let (chunks, mut arriving) = mpsc::channel(2);
            let source = self.clone();
            let reader = tokio::task::spawn_blocking(move || {
                source.read_blocking(|chunk| chunks.blocking_send(chunk).is_ok())
            });
            while let Some(chunk) = arriving.recv().await {
                if shutdown.is_cancelled() {
                    return Err(SourceError::Interrupted);
                }
                delivery.deliver(chunk);
                delivery.room().await;
            }
            reader.await.map_err(|err| SourceError::File {
                path: self.users.path.display().to_string(),
                reason: format!("the reading task failed: {err}"),
            })?
        })
    }

    fn name(&self) -> String {
        format!("file {}", self.users.path.display())
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let mut found = Vec::new();
            for file in std::iter::once(&self.users).chain(&self.groups) {
                let size = check_complete(file)?;
                found.push(format!("{} ({size} bytes)", file.path.display()));
            }
            Ok(format!("readable: {}", found.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests;
