//! How a source hands its users to the planner while it reads: in chunks, through
//! a channel, with a bound on how far the read may run ahead of the planning (the
//! planner starts once the cache is loaded, and a fast directory must not pile
//! up users in memory meanwhile).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::model::DirectoryUser;

/// Users read and not planned yet.
#[derive(Default)]
struct Backlog {
    users: AtomicUsize,
    planned: tokio::sync::Notify,
}

impl Backlog {
    /// Users the read may run ahead of the planner (a page or two more at times).
    const ROOM: usize = 50_000;

    fn added(&self, users: usize) {
        self.users.fetch_add(users, Ordering::Relaxed);
    }

    fn planned(&self, users: usize) {
        self.users.fetch_sub(users, Ordering::Relaxed);
        self.planned.notify_waiters();
    }

    /// Returns once the planner has caught up to within [`Backlog::ROOM`].
    async fn room(&self) {
        loop {
            // Created before the check, so no wake-up in between is missed.
            let planned = self.planned.notified();
            if self.users.load(Ordering::Relaxed) <= Self::ROOM {
                return;
            }
            planned.await;
        }
    }
}

/// The source's end: owned by the read, so the planner's end sees the last chunk
/// once the read is over.
pub struct Delivery {
    users: UnboundedSender<Vec<DirectoryUser>>,
    backlog: Arc<Backlog>,
    reading: CancellationToken,
}

/// The planner's end.
pub struct Arrivals {
    users: UnboundedReceiver<Vec<DirectoryUser>>,
    backlog: Arc<Backlog>,
}

/// A delivery for one read. Cancelling `reading` releases a read waiting for room.
pub fn channel(reading: CancellationToken) -> (Delivery, Arrivals) {
    let (sender, receiver) = unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    let delivery = Delivery {
        users: sender,
        backlog: backlog.clone(),
        reading,
    };
    let arrivals = Arrivals {
        users: receiver,
        backlog,
    };
    (delivery, arrivals)
}

impl Delivery {
    /// Hands complete users to the planner, in directory order.
    pub fn deliver(&self, users: Vec<DirectoryUser>) {
        if users.is_empty() {
            return;
        }
        self.backlog.added(users.len());
        // The planner only goes away after an error that also cancelled the read.
        let _ = self.users.send(users);
    }

    /// Returns once the planner has room for more users, or the read is cancelled.
    /// A source awaits it before each request for more users.
    pub async fn room(&self) {
        tokio::select! {
            () = self.backlog.room() => {}
            () = self.reading.cancelled() => {}
        }
    }
}

impl Arrivals {
    /// The next users read; `None` once the read is over.
    pub async fn next(&mut self) -> Option<Vec<DirectoryUser>> {
        self.users.recv().await
    }

    /// `users` of those handed out are planned: the read may go on.
    pub fn planned(&self, users: usize) {
        self.backlog.planned(users);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{DirectoryUser, Email, Subject};

    fn users(n: usize) -> Vec<DirectoryUser> {
        (0..n)
            .map(|i| DirectoryUser {
                subject: Subject::new(i.to_string()),
                active: true,
                email: Email::parse(&format!("u{i}@example.com")),
                name: None,
                groups: Vec::new(),
                slack_id: None,
                picture: None,
            })
            .collect()
    }

    #[tokio::test]
    async fn the_read_waits_while_the_planner_is_behind() {
        let (delivery, mut arrivals) = channel(CancellationToken::new());
        delivery.deliver(users(Backlog::ROOM));
        tokio::time::timeout(Duration::from_millis(50), delivery.room())
            .await
            .expect("a full allowance still has room");
        delivery.deliver(users(1_000));
        let mut waiting = std::pin::pin!(delivery.room());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err(),
            "over the allowance, the read waits"
        );
        let first = arrivals.next().await.expect("the first chunk");
        arrivals.planned(first.len());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("planning wakes the read");
    }

    #[tokio::test]
    async fn a_cancelled_read_never_waits_for_room() {
        let reading = CancellationToken::new();
        let (delivery, _arrivals) = channel(reading.clone());
        delivery.deliver(users(Backlog::ROOM + 1));
        reading.cancel();
        tokio::time::timeout(Duration::from_secs(5), delivery.room())
            .await
            .expect("released by the cancellation");
    }

    #[tokio::test]
    async fn the_arrivals_end_when_the_read_drops_its_delivery() {
        let (delivery, mut arrivals) = channel(CancellationToken::new());
        delivery.deliver(users(2));
        delivery.deliver(Vec::new());
        drop(delivery);
        assert_eq!(arrivals.next().await.map(|chunk| chunk.len()), Some(2));
        assert!(arrivals.next().await.is_none());
    }
}
