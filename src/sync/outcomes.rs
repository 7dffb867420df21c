//! The outcomes of the sends, handed to the recording in batches while the next
//! requests go out.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;

/// Outcomes recorded in one write to the cache (one flush), at most.
const RECORD_BATCH: usize = 1024;
/// How long an outcome waits for more to share its write. A change run's few
/// outcomes, sent within milliseconds, take one write once the sends end, not one
/// for every few that come in, each competing with the sends for the CPU; a long
/// run is recorded at least this often.
const RECORD_EVERY: Duration = Duration::from_millis(100);
/// Outcomes sent and not yet recorded. Near the end of a large first import,
/// sled's writes fall behind the gateway's pace, and an unbounded queue
/// would hold every outcome sent meanwhile.
const MAX_UNRECORDED_OUTCOMES: usize = 4 * RECORD_BATCH;

/// Drives `outcomes` ahead of their recording, which takes them in batches: while
/// one batch is flushed to disk, requests keep going out at the limiter's pace
/// instead of stalling and then bursting. Should the recording fall behind for
/// good, `outcomes` waits for it once [`MAX_UNRECORDED_OUTCOMES`] wait, rather than
/// pile them up in memory. Once the batches are dropped (the recording failed),
/// what `outcomes` still yields is dropped unrecorded.
pub(super) fn send_ahead<T>(
    outcomes: impl Stream<Item = T>,
) -> (impl Future<Output = ()>, Batches<T>) {
    let (sent, settled) = tokio::sync::mpsc::channel(MAX_UNRECORDED_OUTCOMES);
    let send = async move {
        let mut outcomes = std::pin::pin!(outcomes);
        while let Some(outcome) = outcomes.next().await {
            // Fails once the batches are dropped.
            let _ = sent.send(outcome).await;
        }
    };
    (send, Batches(settled))
}

/// The outcomes sent, for recording.
pub(super) struct Batches<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> Batches<T> {
    /// Up to [`RECORD_BATCH`] outcomes: those that come within [`RECORD_EVERY`] of
    /// the first, or until the sends end; `None` after the last.
    pub(super) async fn next(&mut self) -> Option<Vec<T>> {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        if self.0.recv_many(&mut batch, RECORD_BATCH).await == 0 {
            return None;
        }
        let due = Instant::now() + RECORD_EVERY;
        while batch.len() < RECORD_BATCH {
            let room = RECORD_BATCH - batch.len();
            // `recv_many` is cancel-safe: what it took before the deadline is in `batch`.
            match tokio::time::timeout_at(due, self.0.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// The items a stream of `0..n` has given out so far.
    fn counted(n: usize) -> (Arc<AtomicUsize>, impl Stream<Item = usize>) {
        let given = Arc::new(AtomicUsize::new(0));
        let counter = given.clone();
        let stream = futures::stream::iter(0..n).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (given, stream)
    }

    #[tokio::test]
    async fn outcomes_are_recorded_in_order_in_batches() {
        let (_, outcomes) = counted(3 * RECORD_BATCH + 5);
        let (send, mut batches) = send_ahead(outcomes);
        let record = async {
            let mut recorded = Vec::new();
            while let Some(batch) = batches.next().await {
                assert!(!batch.is_empty() && batch.len() <= RECORD_BATCH);
                recorded.extend(batch);
            }
            recorded
        };
        let ((), recorded) = tokio::join!(send, record);
        assert_eq!(recorded, (0..3 * RECORD_BATCH + 5).collect::<Vec<_>>());
    }

    /// Outcomes sent `every` apart, each the time it was sent.
    fn sent_every(every: Duration, n: usize) -> impl Stream<Item = Instant> {
        futures::stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Instant::now()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_run_is_recorded_in_one_write_once_its_sends_end() {
        let (send, mut batches) = send_ahead(sent_every(Duration::from_millis(5), 10));
        let record = async {
            let mut sizes = Vec::new();
            while let Some(batch) = batches.next().await {
                sizes.push(batch.len());
            }
            sizes
        };
        let ((), sizes) = tokio::join!(send, record);
        assert_eq!(sizes, [10]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_outcome_of_a_long_run_waits_longer_than_record_every() {
        let (send, mut batches) = send_ahead(sent_every(Duration::from_millis(30), 40));
        let record = async {
            let (mut waited, mut writes) = (Duration::ZERO, 0);
            while let Some(batch) = batches.next().await {
                waited = waited.max(batch[0].elapsed());
                writes += 1;
            }
            (waited, writes)
        };
        let ((), (waited, writes)) = tokio::join!(send, record);
        assert!(waited <= RECORD_EVERY, "an outcome waited {waited:?}");
        // 1.2 s of sends: a write every 100 ms or so, not one per outcome.
        assert!((10..=14).contains(&writes), "{writes} writes");
    }

    #[tokio::test]
    async fn a_slow_recording_holds_the_sends_back() {
        let (given, outcomes) = counted(100 * RECORD_BATCH);
        let (send, mut batches) = send_ahead(outcomes);
        let record = async {
            let mut most_ahead = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
            while let Some(batch) = batches.next().await {
                most_ahead = most_ahead.max(given.load(Ordering::SeqCst) - batch[0]);
            }
            most_ahead
        };
        let ((), most_ahead) = tokio::join!(send, record);
        // The batch being recorded, those queued, and the one the stream holds.
        assert!(
            most_ahead <= RECORD_BATCH + MAX_UNRECORDED_OUTCOMES + 1,
            "{most_ahead} outcomes were sent ahead of the recording"
        );
    }

    #[tokio::test]
    async fn once_the_recording_fails_no_send_waits_for_room() {
        // Many more outcomes than room for them, still coming after the failure.
        let (given, outcomes) = counted(100 * RECORD_BATCH);
        let (send, mut batches) = send_ahead(outcomes);
        let record = async move {
            batches.next().await.expect("a first batch");
            // Fails: `batches` is dropped with this block.
        };
        let ((), ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(send, record)
        })
        .await
        .expect("the sends ran to their end");
        assert_eq!(given.load(Ordering::SeqCst), 100 * RECORD_BATCH);
    }
}
