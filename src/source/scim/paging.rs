//! Paging through a listing: the pages at fixed offsets, each downloaded and
//! decoded (split as it arrives when large), checked against the first page's
//! total.

use super::*;

impl ScimSource {
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
    pub(super) async fn for_each_page<T: Send + 'static, Paced: Future<Output = ()>>(
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
        if total > self.max_directory_users {
            return Err(inconsistent(
                &first_url,
                format!(
                    "totalResults = {total} is over source.max_directory_users = {}",
                    self.max_directory_users
                ),
            ));
        }
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
                    request: format!("GET {}", self.page_url(resource, start)),
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
    pub(super) async fn read_page<T: Send + 'static>(
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
        let too_large = |url: &Url| {
            let max = self.max_page_bytes;
            inconsistent(
                url,
                format!("the page is over source.max_page_bytes = {max}"),
            )
        };
        let part_bytes = match response.content_length() {
            Some(bytes) if bytes > self.max_page_bytes as u64 => {
                return (url.clone(), Err(too_large(&url)))
            }
            Some(bytes) if bytes as usize <= WHOLE_PAGE_BYTES => bytes as usize,
            _ => BODY_PART_BYTES,
        };
        let mut part = undecoded.part(part_bytes);
        let mut decoder = PageDecoder::new(decode, self.max_resource_bytes);
        let mut received = 0usize;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return (url.clone(), Err(unavailable(&url, &err))),
            };
            received = received.saturating_add(chunk.len());
            if received > self.max_page_bytes {
                // The decoder stops once its parts stop coming.
                return (url.clone(), Err(too_large(&url)));
            }
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
                request: format!("GET {url}"),
                reason: format!("the decoding task failed: {err}"),
            }),
        };
        (url, page)
    }
}

/// A page whose body is at most this large is read whole, as one part, the
/// cheapest way to parse it.
pub(super) const WHOLE_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A larger page arrives in parts of this size, each split into its resources and
/// decoded while the next downloads.
pub(super) const BODY_PART_BYTES: usize = 1024 * 1024;

/// Decodes a page read whole.
pub(super) fn decode_whole<T>(decode: &Decoder<T>, page: &BodyPart) -> Result<Page<T>, String> {
    let (header, resources) = decode(Resources::Page(&page.bytes))?;
    let header = header.ok_or("the page has no ListResponse header")?;
    Ok(Page::new(header, resources))
}

/// Decodes a page: whole once it is read, unless it outgrows one part; then a
/// worker on the blocking pool decodes its parts as they are handed over (a
/// worker for every page, small ones included, was slower).
pub(super) struct PageDecoder<T> {
    pub(super) decode: Decoder<T>,
    pub(super) worker: Option<PartsWorker<T>>,
    /// A resource larger than this makes the page unusable.
    pub(super) max_resource_bytes: usize,
}

pub(super) struct PartsWorker<T> {
    pub(super) parts: std::sync::mpsc::Sender<BodyPart>,
    pub(super) decoded: tokio::task::JoinHandle<Result<Page<T>, String>>,
}

impl<T: Send + 'static> PageDecoder<T> {
    pub(super) fn new(decode: Decoder<T>, max_resource_bytes: usize) -> Self {
        Self {
            decode,
            worker: None,
            max_resource_bytes,
        }
    }

    /// Hands a part of the page to the worker, starting it with the first. False
    /// once the worker has stopped early: it found the page unusable, and says why.
    pub(super) fn hand_over(&mut self, part: BodyPart) -> bool {
        let worker = self.worker.get_or_insert_with(|| {
            let (parts, arriving) = std::sync::mpsc::channel();
            let decode = self.decode.clone();
            let max = self.max_resource_bytes;
            let decoded = tokio::task::spawn_blocking(move || decode_parts(arriving, &decode, max));
            PartsWorker { parts, decoded }
        });
        worker.parts.send(part).is_ok()
    }

    /// Decodes the rest of the page, `last` being its last part.
    pub(super) async fn finish(
        mut self,
        last: BodyPart,
    ) -> Result<Result<Page<T>, String>, tokio::task::JoinError> {
        // A whole page larger than a resource may be is split, which checks each.
        if self.worker.is_none() && last.bytes.len() > self.max_resource_bytes {
            self.hand_over(last);
            return self.finish_worker().await;
        }
        let Some(worker) = self.worker else {
            let decode = self.decode;
            return tokio::task::spawn_blocking(move || decode_whole(&decode, &last)).await;
        };
        // Refused only by a worker that stopped early.
        let _ = worker.parts.send(last);
        drop(worker.parts);
        worker.decoded.await
    }

    /// The worker's page, once every part is handed over.
    async fn finish_worker(self) -> Result<Result<Page<T>, String>, tokio::task::JoinError> {
        match self.worker {
            Some(worker) => {
                drop(worker.parts);
                worker.decoded.await
            }
            None => Ok(Err("the page has no parts".into())),
        }
    }
}

/// Decodes a page as its parts arrive: each part's complete resources are decoded
/// before the next part is taken.
pub(super) fn decode_parts<T>(
    arriving: std::sync::mpsc::Receiver<BodyPart>,
    decode: &Decoder<T>,
    max_resource_bytes: usize,
) -> Result<Page<T>, String> {
    let mut splitter = ListSplitter::with_max_resource_bytes(max_resource_bytes);
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
pub(super) struct Page<T> {
    pub(super) total_results: usize,
    pub(super) items_per_page: Option<usize>,
    pub(super) resources: Vec<T>,
}

impl<T> Page<T> {
    pub(super) fn new(header: ListHeader, resources: Vec<T>) -> Self {
        Self {
            total_results: header.total_results,
            items_per_page: header.items_per_page,
            resources,
        }
    }
}

pub(super) fn unavailable(url: &Url, err: &reqwest::Error) -> SourceError {
    SourceError::Unavailable {
        request: format!("GET {url}"),
        reason: error_chain(err),
    }
}

/// A page fetch that stops when the read is abandoned (an error, a shutdown).
pub(super) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn inconsistent(url: &Url, reason: impl std::fmt::Display) -> SourceError {
    SourceError::Inconsistent {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks that a page holds what the paging contract promises: `promised` resources
/// (fewer only at the end), the same `totalResults` as the first page.
pub(super) fn check_page(
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
pub(super) struct ListingPace<Wait> {
    pub(super) before_next: Wait,
    pub(super) max_undecoded_bytes: usize,
}

/// The bytes of a listing's chunks downloaded and not yet decoded.
pub(super) struct DecodeBacklog {
    pub(super) held: Arc<PartPool>,
    pub(super) limit: usize,
}

/// What the parts of a listing's pages share.
pub(super) struct PartPool {
    pub(super) bytes: tokio::sync::watch::Sender<usize>,
    /// Buffers of decoded parts, for the next parts: a fresh buffer of a page's
    /// size faults in every memory page it is written to (docs/performance.md).
    pub(super) spare: Mutex<Vec<Vec<u8>>>,
}

/// Spare buffers kept for a listing's next parts; more are freed.
pub(super) const SPARE_PARTS: usize = 2;

impl DecodeBacklog {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            held: Arc::new(PartPool {
                bytes: tokio::sync::watch::Sender::new(0),
                spare: Mutex::new(Vec::with_capacity(SPARE_PARTS)),
            }),
            limit,
        }
    }

    pub(super) fn has_room(&self) -> bool {
        *self.held.bytes.borrow() < self.limit
    }

    /// Returns once the chunks waiting to be decoded hold less than the limit.
    pub(super) async fn room(&self) {
        let mut bytes = self.held.bytes.subscribe();
        // The sender lives as long as `self`.
        let _ = bytes.wait_for(|&held| held < self.limit).await;
    }

    /// An empty part of a page's body, for at least `capacity` bytes; its bytes
    /// count as undecoded until it is dropped.
    pub(super) fn part(&self, capacity: usize) -> BodyPart {
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
    pub(super) fn spare_buffer(&self) -> Option<Vec<u8>> {
        self.spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }
}

/// A part of a page's body, the chunks reqwest hands out copied into one buffer,
/// which the splitter and serde read as one slice.
pub(super) struct BodyPart {
    pub(super) bytes: Vec<u8>,
    pub(super) held: Arc<PartPool>,
}

impl BodyPart {
    /// The part has bytes, and `more` would not fit in its buffer.
    pub(super) fn is_full_for(&self, more: usize) -> bool {
        !self.bytes.is_empty() && self.bytes.len() + more > self.bytes.capacity()
    }

    pub(super) fn extend(&mut self, chunk: &[u8]) {
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
