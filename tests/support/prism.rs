//! Prism's validating proxy in front of an in-process fake: every request idsync
//! sends to a vendor is checked against the vendor's published OpenAPI document
//! (`prism proxy --errors`), and so is the fake's answer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long Prism may take to load a document; the cut-down vendor documents
/// load in seconds, a cold `node` start included.
const READY_WITHIN: Duration = Duration::from_secs(90);

pub struct Prism {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Prism {
    /// `prism proxy --errors SPEC UPSTREAM` on a free loopback port, once it
    /// listens. Prism comes from `tests/peers/peers.py install`.
    pub async fn proxy(spec: &Path, upstream: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("prism.log");
        let port = free_port();
        let out = std::fs::File::create(&log).expect("prism log");
        let child = Command::new(prism_binary())
            .args([
                "proxy",
                "--errors",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .arg(spec)
            .arg(upstream)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("start prism (run: python3 tests/peers/peers.py install)");
        let prism = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        prism.wait_until_listening().await;
        prism
    }

    /// The proxy's root: the vendor document's paths go after it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests Prism refused (422: the request breaks the vendor's document) or
    /// failed (500: the fake's answer breaks it), one log line each, once the log
    /// has settled: Prism may write a request's line after answering it.
    pub fn violations(&self) -> Vec<String> {
        self.settled_log()
            .lines()
            .filter(|line| line.contains("Request terminated with error"))
            .map(str::to_owned)
            .collect()
    }

    /// How many requests Prism forwarded to the fake.
    pub fn requests(&self) -> usize {
        self.settled_log()
            .lines()
            .filter(|line| line.contains("Request received"))
            .count()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it has not grown for a moment (at most a few seconds).
    fn settled_log(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut text = self.log_text();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.log_text();
            if now.len() == text.len() || Instant::now() > deadline {
                return now;
            }
            text = now;
        }
    }

    async fn wait_until_listening(&self) {
        let started = Instant::now();
        let address = self.url.trim_start_matches("http://").to_owned();
        while started.elapsed() < READY_WITHIN {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "prism did not listen within {READY_WITHIN:?}; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of a vendor's cut-down document, in `tests/peers/vendor-openapi/`.
pub fn vendor_spec(vendor: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/vendor-openapi")
        .join(vendor)
        .join("directory.json")
}

fn prism_binary() -> PathBuf {
    let peers = std::env::var_os("IDSYNC_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers"));
    peers.join("node/node_modules/.bin/prism")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
