//! The systemd notify protocol (sd_notify(3)) through the `sd-notify` crate:
//! `READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1` as datagrams to
//! `$NOTIFY_SOCKET`. Silent when not run by systemd.
//!
//! The crate reads `$NOTIFY_SOCKET` at each message, ends each assignment with a
//! newline, sends with a blocking socket and takes the variable as a path: an
//! abstract-namespace name (`@…`) is not reached. systemd's own socket is a path
//! that it reads promptly.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to `$NOTIFY_SOCKET`, when systemd's `Type=notify` set it.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `STOPPING=1` was sent. The watchdog ticks on its own task; this lock orders
    /// its last `WATCHDOG=1` before `STOPPING=1`, never after.
    stopping: Arc<Mutex<bool>>,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            stopping: Arc::default(),
        }
    }

    pub fn ready(&self) {
        send(NotifyState::Ready);
    }

    pub fn status(&self, status: &str) {
        // One line: the protocol is newline-separated assignments.
        send(NotifyState::Status(&status.replace('\n', " ")));
    }

    pub fn stopping(&self) {
        let mut stopping = self.stopping.lock().unwrap_or_else(PoisonError::into_inner);
        *stopping = true;
        send(NotifyState::Stopping);
    }

    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when systemd asks
    /// for it (and `$WATCHDOG_PID`, when set, is us).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let usec = u64::try_from(sd_notify::watchdog_enabled()?.as_micros()).ok()?;
        Some(Duration::from_micros(usec / 2)).filter(|d| !d.is_zero())
    }

    /// `WATCHDOG=1`, until `STOPPING=1` was sent.
    pub fn watchdog(&self) {
        let stopping = self.stopping.lock().unwrap_or_else(PoisonError::into_inner);
        if !*stopping {
            send(NotifyState::Watchdog);
        }
    }
}

fn send(state: NotifyState<'_>) {
    if let Err(err) = sd_notify::notify(&[state]) {
        tracing::debug!(error = %err, "Could not notify systemd.");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::path::Path;
    use std::sync::MutexGuard;

    use super::*;

    const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

    /// The process's environment is shared by the tests running in parallel: one
    /// test at a time sets the notify variables, and they are cleared around it.
    static ENV: Mutex<()> = Mutex::new(());

    struct Env(#[allow(dead_code)] MutexGuard<'static, ()>);

    impl Env {
        fn lock() -> Self {
            let guard = ENV.lock().unwrap_or_else(PoisonError::into_inner);
            clear();
            Self(guard)
        }

        fn set(&self, name: &str, value: impl AsRef<std::ffi::OsStr>) {
            std::env::set_var(name, value);
        }
    }

    impl Drop for Env {
        fn drop(&mut self) {
            clear();
        }
    }

    fn clear() {
        for name in VARIABLES {
            std::env::remove_var(name);
        }
    }

    /// A socket for systemd's end, and a way to read what reached it.
    fn listen(path: &Path) -> UnixDatagram {
        let receiver = UnixDatagram::bind(path).expect("bind");
        receiver.set_nonblocking(true).expect("nonblocking");
        receiver
    }

    fn received(receiver: &UnixDatagram) -> Vec<String> {
        let mut buffer = [0u8; 256];
        let mut messages = Vec::new();
        while let Ok(n) = receiver.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        messages
    }

    #[test]
    fn messages_arrive_on_the_socket() {
        let env = Env::lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let receiver = listen(&dir.path().join("notify"));
        env.set("NOTIFY_SOCKET", dir.path().join("notify"));
        let notifier = Notifier::from_env();
        notifier.ready();
        notifier.status("next sync 12:15\nlast: 3 created");
        notifier.stopping();
        assert_eq!(
            received(&receiver),
            [
                "READY=1\n",
                "STATUS=next sync 12:15 last: 3 created\n",
                "STOPPING=1\n"
            ]
        );
    }

    #[test]
    fn no_watchdog_after_stopping() {
        let env = Env::lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let receiver = listen(&dir.path().join("notify"));
        env.set("NOTIFY_SOCKET", dir.path().join("notify"));
        let notifier = Notifier::from_env();
        notifier.watchdog();
        notifier.clone().stopping();
        notifier.watchdog();
        assert_eq!(received(&receiver), ["WATCHDOG=1\n", "STOPPING=1\n"]);
    }

    #[test]
    fn nothing_is_sent_without_notify_socket() {
        let env = Env::lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let receiver = listen(&dir.path().join("notify"));
        env.set("WATCHDOG_USEC", "400000");
        let notifier = Notifier::from_env();
        notifier.ready();
        notifier.status("syncing");
        notifier.watchdog();
        notifier.stopping();
        assert_eq!(notifier.watchdog_interval(), None);
        assert_eq!(received(&receiver), Vec::<String>::new());
    }

    #[test]
    fn a_socket_nobody_listens_on_is_not_an_error() {
        let env = Env::lock();
        let dir = tempfile::tempdir().expect("tempdir");
        env.set("NOTIFY_SOCKET", dir.path().join("gone"));
        let notifier = Notifier::from_env();
        notifier.ready();
        notifier.watchdog();
        notifier.stopping();
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_this_process() {
        let env = Env::lock();
        let notifier = Notifier::from_env();
        env.set("NOTIFY_SOCKET", "/run/systemd/notify");
        assert_eq!(notifier.watchdog_interval(), None, "no WATCHDOG_USEC");
        env.set("WATCHDOG_USEC", "400000");
        assert_eq!(
            notifier.watchdog_interval(),
            Some(Duration::from_millis(200))
        );
        env.set("WATCHDOG_PID", std::process::id().to_string());
        assert_eq!(
            notifier.watchdog_interval(),
            Some(Duration::from_millis(200))
        );
        env.set("WATCHDOG_PID", (std::process::id() + 1).to_string());
        assert_eq!(notifier.watchdog_interval(), None, "another process's");
        env.set("WATCHDOG_PID", std::process::id().to_string());
        env.set("WATCHDOG_USEC", "1");
        assert_eq!(notifier.watchdog_interval(), None, "half of 1 µs is 0");
        env.set("WATCHDOG_USEC", "soon");
        assert_eq!(notifier.watchdog_interval(), None, "not a number");
    }
}
