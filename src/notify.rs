//! The systemd notify protocol (sd_notify(3)): `READY=1`, `STATUS=…`, `WATCHDOG=1`,
//! `STOPPING=1` as datagrams to `$NOTIFY_SOCKET`. Silent when not run by systemd.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Where to send notifications; `None` outside systemd's `Type=notify`.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<PathBuf>,
    /// `STOPPING=1` was sent. The watchdog ticks on its own task; this lock orders
    /// its last `WATCHDOG=1` before `STOPPING=1`, never after.
    stopping: Arc<Mutex<bool>>,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self::at(std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from))
    }

    fn at(socket: Option<PathBuf>) -> Self {
        Self {
            socket,
            stopping: Arc::default(),
        }
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn status(&self, status: &str) {
        // One line: the protocol is newline-separated assignments.
        self.send(&format!("STATUS={}", status.replace('\n', " ")));
    }

    pub fn stopping(&self) {
        let mut stopping = self.stopping.lock().unwrap_or_else(PoisonError::into_inner);
        *stopping = true;
        self.send("STOPPING=1");
    }

    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when systemd asks
    /// for it (and `$WATCHDOG_PID`, when set, is us).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
        {
            if pid != std::process::id() {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        Some(Duration::from_micros(usec / 2)).filter(|d| !d.is_zero())
    }

    /// `WATCHDOG=1`, until `STOPPING=1` was sent.
    pub fn watchdog(&self) {
        let stopping = self.stopping.lock().unwrap_or_else(PoisonError::into_inner);
        if !*stopping {
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, message: &str) {
        let Some(path) = &self.socket else { return };
        let sent = UnixDatagram::unbound().and_then(|socket| {
            // Never block the runtime on a slow reader: a dropped STATUS is harmless.
            socket.set_nonblocking(true)?;
            // A leading '@' names a socket in the abstract namespace.
            match path.to_str().and_then(|p| p.strip_prefix('@')) {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    socket.send_to_addr(message.as_bytes(), &address)
                }
                None => socket.send_to(message.as_bytes(), path),
            }
        });
        if let Err(err) = sent {
            tracing::debug!(error = %err, "Could not notify systemd.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_on_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::at(Some(path));
        notifier.ready();
        notifier.status("next sync 12:15\nlast: 3 created");
        let mut buffer = [0u8; 256];
        let n = receiver.recv(&mut buffer).expect("recv");
        assert_eq!(&buffer[..n], b"READY=1");
        let n = receiver.recv(&mut buffer).expect("recv");
        assert_eq!(&buffer[..n], b"STATUS=next sync 12:15 last: 3 created");
    }

    #[test]
    fn no_watchdog_after_stopping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        receiver.set_nonblocking(true).expect("nonblocking");
        let notifier = Notifier::at(Some(path));
        notifier.watchdog();
        notifier.clone().stopping();
        notifier.watchdog();
        let mut buffer = [0u8; 64];
        let mut received = Vec::new();
        while let Ok(n) = receiver.recv(&mut buffer) {
            received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        assert_eq!(received, ["WATCHDOG=1", "STOPPING=1"]);
    }

    #[test]
    fn silent_without_a_socket() {
        Notifier::at(None).ready();
    }
}
