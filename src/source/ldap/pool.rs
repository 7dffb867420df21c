//! The bound connections a daemon keeps between its reads: a change read
//! every few seconds then spends no time connecting and binding, which is
//! about 1 ms of a 12 ms run on loopback (docs/performance.md). A one-shot run
//! keeps nothing.
//!
//! A kept connection is used again only if its last read ended less than
//! [`KEEP_FOR`] ago and the server sent nothing since: a server that closed it,
//! restarted, or said it is ending the session has left something to read.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::connection::Connection;
use crate::source::SourceError;

/// How long an idle connection is kept: longer than a frequent schedule's
/// interval, shorter than the idle limits servers and firewalls commonly set.
const KEEP_FOR: Duration = Duration::from_secs(60);
/// A change read uses two connections at once (see `changes::refresh_both`).
const MAX_KEPT: usize = 2;

#[derive(Default)]
pub struct Pool {
    keeps: AtomicBool,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

impl Pool {
    /// From now on, connections given back are kept for the next read.
    pub fn enable(&self) {
        self.keeps.store(true, Ordering::Relaxed);
    }

    /// A kept connection still fit for use, else the one `open` makes.
    pub async fn take(
        &self,
        open: impl Future<Output = Result<Connection, SourceError>>,
    ) -> Result<Connection, SourceError> {
        while let Some((mut connection, since)) = self.pop() {
            if since.elapsed() < KEEP_FOR && connection.is_quiet() {
                return Ok(connection);
            }
            connection.close().await;
        }
        open.await
    }

    /// Keeps `connection` for the next read after `result` succeeded, when the
    /// pool keeps connections; closes it otherwise. Returns `result`.
    pub async fn settle<T>(
        &self,
        connection: Connection,
        result: Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let refused = if result.is_ok() && self.keeps.load(Ordering::Relaxed) {
            self.keep(connection)
        } else {
            Some(connection)
        };
        if let Some(connection) = refused {
            connection.close().await;
        }
        result
    }

    /// The connection back when the pool is full, or a search broke it.
    fn keep(&self, connection: Connection) -> Option<Connection> {
        if !connection.is_intact() {
            return Some(connection);
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= MAX_KEPT {
            return Some(connection);
        }
        idle.push((connection, Instant::now()));
        None
    }

    fn pop(&self) -> Option<(Connection, Instant)> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.pop()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::source::ldap::wire::tests::done;

    /// A bound connection, and the server's end of it.
    fn bound() -> (Connection, DuplexStream) {
        let (client, server) = tokio::io::duplex(1 << 12);
        (Connection::over(client), server)
    }

    /// Whether the pool gave out a kept connection rather than opening one.
    async fn reuses(pool: &Pool) -> bool {
        let opened = pool.take(async { Err(SourceError::Interrupted) }).await;
        opened.is_ok()
    }

    async fn keeping(connection: Connection) -> Pool {
        let pool = Pool::default();
        pool.enable();
        pool.settle(connection, Ok(())).await.expect("kept");
        pool
    }

    #[tokio::test]
    async fn a_daemon_keeps_a_connection_after_a_read_and_a_process_does_not() {
        let (connection, _server) = bound();
        assert!(reuses(&keeping(connection).await).await);

        let (connection, _server) = bound();
        let pool = Pool::default();
        pool.settle(connection, Ok(())).await.expect("settled");
        assert!(!reuses(&pool).await, "not enabled: closed");
    }

    #[tokio::test]
    async fn a_connection_is_not_kept_after_a_failed_read_or_beyond_two() {
        let pool = Pool::default();
        pool.enable();
        let (failed, _server) = bound();
        let settled = pool
            .settle::<()>(failed, Err(SourceError::Interrupted))
            .await;
        assert!(settled.is_err());
        assert!(!reuses(&pool).await, "closed after the failure");

        let mut servers = Vec::new();
        for _ in 0..3 {
            let (connection, server) = bound();
            pool.settle(connection, Ok(())).await.expect("settled");
            servers.push(server);
        }
        assert!(reuses(&pool).await && reuses(&pool).await);
        assert!(!reuses(&pool).await, "the third was closed");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_or_ended_is_not_used_again() {
        let (connection, server) = bound();
        let pool = keeping(connection).await;
        drop(server);
        assert!(!reuses(&pool).await, "closed by the server");

        let (connection, mut server) = bound();
        let pool = keeping(connection).await;
        // Anything not asked for, as a notice of disconnection would be.
        server.write_all(&done(0, 52, "bye", &[])).await.unwrap();
        assert!(!reuses(&pool).await, "a notice waits unread");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_for_a_minute_is_not_used_again() {
        let (connection, _server) = bound();
        let pool = keeping(connection).await;
        tokio::time::advance(KEEP_FOR - Duration::from_secs(1)).await;
        assert!(reuses(&pool).await);
        let (connection, _server) = bound();
        let pool = keeping(connection).await;
        tokio::time::advance(KEEP_FOR).await;
        assert!(!reuses(&pool).await);
    }
}
