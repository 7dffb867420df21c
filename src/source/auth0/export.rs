//! The export path: create a user export job, poll it with bounded waits until
//! it completes, then download its gzip NDJSON file and decode it as it arrives.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::decode::USER_FIELDS;
use super::ndjson::ExportDecoder;
use super::{Auth0Source, CHUNK};
use crate::source::paged::{self, keep, Memberships, OffsetListing};
use crate::source::{Delivery, Read, SourceError};

/// What `POST /api/v2/jobs/users-exports` and `GET /api/v2/jobs/{id}` answer.
#[derive(Debug, Deserialize)]
struct Job {
    id: String,
    status: String,
    location: Option<String>,
    time_left_seconds: Option<u64>,
}

/// The longest wait between two polls of a job.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

pub(super) async fn read(
    source: &Auth0Source,
    shutdown: &CancellationToken,
    delivery: &Delivery,
    memberships: &Memberships,
) -> Result<Read, SourceError> {
    let fields: Vec<_> = USER_FIELDS
        .iter()
        .map(|name| json!({ "name": name }))
        .collect();
    let url = source.api("/jobs/users-exports");
    let response = source
        .http
        .post_json(&url, &json!({ "format": "json", "fields": fields }))
        .await?;
    let job: Job = paged::json_body(&url, response, source.limits.max_page_bytes).await?;
    tracing::info!(job = %job.id, "Created an Auth0 user export job.");
    let location = completed(source, shutdown, job).await?;
    download(source, &location, shutdown, delivery, memberships).await
}

/// Polls the job until it completes; its file's location.
async fn completed(
    source: &Auth0Source,
    shutdown: &CancellationToken,
    mut job: Job,
) -> Result<Url, SourceError> {
    let url = source.api(&format!("/jobs/{}", job.id));
    let deadline = Instant::now() + source.export_timeout;
    let mut wait = Duration::from_secs(1);
    loop {
        match job.status.as_str() {
            "completed" => return location(&url, job.location.as_deref()),
            "pending" | "processing" => {}
            other => {
                return Err(SourceError::Unavailable {
                    request: format!("GET {url}"),
                    reason: format!("the user export job ended {other:?}"),
                })
            }
        }
        if Instant::now() + wait > deadline {
            return Err(SourceError::Unavailable {
                request: format!("GET {url}"),
                reason: format!(
                    "the user export job did not complete within source.auth0.export_timeout_secs = {}",
                    source.export_timeout.as_secs()
                ),
            });
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Err(SourceError::Interrupted),
        }
        job = source.get(&url).await?;
        // Auth0's estimate when it gives one, else twice the last wait.
        let hint = job.time_left_seconds.map(Duration::from_secs);
        wait = hint
            .unwrap_or(wait * 2)
            .clamp(Duration::from_secs(1), MAX_POLL_WAIT);
    }
}

fn location(job_url: &Url, location: Option<&str>) -> Result<Url, SourceError> {
    let parsed = location.and_then(|text| Url::parse(text).ok());
    match parsed {
        Some(url) if matches!(url.scheme(), "https" | "http") => Ok(url),
        _ => Err(paged::inconsistent(
            job_url,
            "the completed export job gives no file location",
        )),
    }
}

/// Downloads the file without the token and hands its users on in chunks.
async fn download(
    source: &Auth0Source,
    location: &Url,
    shutdown: &CancellationToken,
    delivery: &Delivery,
    memberships: &Memberships,
) -> Result<Read, SourceError> {
    // The location is presigned: its query string is a credential, so neither the
    // request shown nor a transport error names it.
    let shown = format!("GET {}", without_query(location));
    let failed = |reason: String| SourceError::Unavailable {
        request: shown.clone(),
        reason,
    };
    let mut response = source
        .download
        .get(location.clone())
        .timeout(source.export_timeout)
        .send()
        .await
        .map_err(|err| failed(crate::error_chain(&err.without_url())))?;
    if !response.status().is_success() {
        return Err(failed(format!("answered {}", response.status())));
    }
    let mut decoder = ExportDecoder::new(source.limits.max_resource_bytes);
    let mut users = Users::new(source, memberships);
    while let Some(piece) = response
        .chunk()
        .await
        .map_err(|err| failed(crate::error_chain(&err.without_url())))?
    {
        if shutdown.is_cancelled() {
            return Err(SourceError::Interrupted);
        }
        let decoded = decoder.feed(&piece).map_err(&failed)?;
        users.take(decoded, delivery, &shown).await?;
    }
    let last = decoder.finish().map_err(&failed)?;
    users.take(last, delivery, &shown).await?;
    Ok(users.finish(delivery))
}

fn without_query(url: &Url) -> Url {
    let mut shown = url.clone();
    shown.set_query(None);
    shown
}

/// The users decoded so far, waiting to fill a chunk.
struct Users<'a> {
    memberships: &'a Memberships,
    listing: OffsetListing,
    read: Read,
    chunk: Vec<crate::model::DirectoryUser>,
}

impl<'a> Users<'a> {
    fn new(source: &Auth0Source, memberships: &'a Memberships) -> Self {
        Self {
            memberships,
            listing: OffsetListing::new(source.limits.max_directory_users),
            read: Read::default(),
            chunk: Vec::with_capacity(CHUNK),
        }
    }

    async fn take(
        &mut self,
        decoded: Vec<paged::Entry>,
        delivery: &Delivery,
        shown: &str,
    ) -> Result<(), SourceError> {
        for entry in decoded {
            let subject = entry.as_ref().ok().map(|user| &user.subject);
            self.listing
                .listed(subject)
                .map_err(|reason| SourceError::Unavailable {
                    request: shown.to_owned(),
                    reason,
                })?;
            keep(
                entry,
                self.memberships,
                &mut self.chunk,
                &mut self.read.unusable,
            );
            if self.chunk.len() >= CHUNK {
                delivery.deliver(std::mem::take(&mut self.chunk));
                delivery.room().await;
            }
        }
        Ok(())
    }

    fn finish(mut self, delivery: &Delivery) -> Read {
        delivery.deliver(std::mem::take(&mut self.chunk));
        self.read.entries = self.listing.entries();
        self.read
    }
}
