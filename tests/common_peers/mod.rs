//! Real peers for the end-to-end tests: oidc-provider, scim2-server, the hoop gateway
//! stand-in behind Prism's validating proxy, and a plain Prism mock of hoop's spec.
//!
//! `Peers::up` runs `python3 tests/peers/peers.py up` (which installs the peers into
//! `.peers/` on first use) and `Drop` runs `peers.py down`. A peer that cannot be
//! installed or started panics with the script's output: the tests fail, never skip.
//!
//! Use it from a test file with `mod common_peers;`.
#![allow(dead_code)] // each test file uses only part of it

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/peers/peers.py`.
pub fn peers_script() -> PathBuf {
    repo_root().join("tests").join("peers").join("peers.py")
}

/// The gateway stand-in example that `cargo test` builds beside the test binaries:
/// `target/debug/deps/<test>` → `target/debug/examples/hoop_standin`.
pub fn standin_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    profile_dir.join("examples").join("hoop_standin")
}

/// What to start.
#[derive(Clone, Debug)]
pub struct PeersOptions {
    /// Directory JSON (`{"users": [...], "groups": [...]}`) to seed scim2-server with.
    pub directory: Option<PathBuf>,
    /// The OIDC client's secret (client id `idsync`).
    pub client_secret: String,
    /// The hoop_standin binary to start, with the Prism validating proxy in front of it.
    pub standin: Option<PathBuf>,
    /// Also start a plain `prism mock` of the hoop spec.
    pub prism_mock: bool,
}

impl PeersOptions {
    pub fn new(client_secret: &str) -> Self {
        Self {
            directory: None,
            client_secret: client_secret.to_owned(),
            standin: None,
            prism_mock: false,
        }
    }
}

/// Running peers; stopped on drop.
pub struct Peers {
    /// The state file written by `peers.py up` (URLs, secrets, PIDs, logs).
    pub state: Value,
    pub state_path: PathBuf,
    /// Holds the state file and anything else a test puts there.
    pub dir: tempfile::TempDir,
}

impl Peers {
    /// Starts oidc-provider and scim2-server (seeded from `directory`) and, with
    /// `with_standin`, the gateway stand-in behind the Prism validating proxy. Panics
    /// with the script's output if anything fails. (The plain Prism mock costs ~2 s of
    /// CPU to start: ask for it with [`Peers::up_with`] and `prism_mock: true`.)
    pub fn up(
        directory_json_path: Option<&Path>,
        client_secret: &str,
        with_standin: bool,
    ) -> Peers {
        let mut opts = PeersOptions::new(client_secret);
        opts.directory = directory_json_path.map(Path::to_path_buf);
        if with_standin {
            opts.standin = Some(standin_binary());
        }
        Self::up_with(&opts)
    }

    /// Like [`Peers::up`], with every option.
    pub fn up_with(opts: &PeersOptions) -> Peers {
        match Self::try_up(opts) {
            Ok(peers) => peers,
            Err(report) => panic!("the test peers did not start:\n{report}"),
        }
    }

    /// Starts the peers, or returns everything `peers.py up` printed.
    pub fn try_up(opts: &PeersOptions) -> Result<Peers, String> {
        let dir = tempfile::Builder::new()
            .prefix("idsync-peers-")
            .tempdir()
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let state_path = dir.path().join("state.json");
        let mut cmd = Command::new("python3");
        cmd.arg(peers_script())
            .arg("up")
            .arg("--out")
            .arg(&state_path)
            .arg("--client-secret")
            .arg(&opts.client_secret)
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .current_dir(repo_root());
        if let Some(directory) = &opts.directory {
            cmd.arg("--directory").arg(directory);
        }
        if let Some(standin) = &opts.standin {
            if !standin.exists() {
                return Err(format!(
                    "the gateway stand-in {} does not exist: build it with `cargo build --example hoop_standin` \
                     (`cargo test` builds it)",
                    standin.display()
                ));
            }
            cmd.arg("--standin").arg(standin);
        }
        if !opts.prism_mock {
            cmd.arg("--no-prism-mock");
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run python3 {}: {e}", peers_script().display()))?;
        if !out.status.success() {
            // peers.py has stopped whatever it had started; a state file may remain.
            if state_path.exists() {
                let _ = down(&state_path);
            }
            return Err(format!(
                "python3 tests/peers/peers.py up exited with {}\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = std::fs::read_to_string(&state_path).map_err(|e| {
            format!(
                "peers.py up wrote no state file {}: {e}",
                state_path.display()
            )
        })?;
        let state: Value =
            serde_json::from_str(&text).map_err(|e| format!("bad state file: {e}"))?;
        Ok(Peers {
            state,
            state_path,
            dir,
        })
    }

    fn str_field(&self, key: &str) -> &str {
        self.state[key]
            .as_str()
            .unwrap_or_else(|| panic!("the peers state has no {key:?} (was that peer started?)"))
    }

    /// `http://127.0.0.1:PORT` (discovery at `/.well-known/openid-configuration`).
    pub fn issuer(&self) -> &str {
        self.str_field("issuer")
    }
    pub fn token_endpoint(&self) -> &str {
        self.str_field("token_endpoint")
    }
    pub fn client_id(&self) -> &str {
        self.str_field("client_id")
    }
    pub fn client_secret(&self) -> &str {
        self.str_field("client_secret")
    }
    /// `http://127.0.0.1:PORT/v2`.
    pub fn scim_url(&self) -> &str {
        self.str_field("scim_url")
    }
    /// The stand-in itself, `http://127.0.0.1:PORT/api` (not validated by Prism).
    pub fn standin_url(&self) -> &str {
        self.str_field("standin_url")
    }
    pub fn api_key(&self) -> &str {
        self.str_field("standin_api_key")
    }
    /// Prism's validating proxy in front of the stand-in, `http://127.0.0.1:PORT/api`.
    pub fn prism_proxy_url(&self) -> &str {
        self.str_field("prism_proxy_url")
    }
    /// Plain Prism mock of the hoop spec, `http://127.0.0.1:PORT/api`.
    pub fn prism_mock_url(&self) -> &str {
        self.str_field("prism_mock_url")
    }
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(self.str_field("log_dir"))
    }
    /// The log of one peer: `oidc`, `scim`, `standin`, `prism_proxy`, `prism_mock`.
    pub fn log(&self, peer: &str) -> String {
        let path = self.state["logs"][peer]
            .as_str()
            .unwrap_or_else(|| panic!("no log for peer {peer:?}"));
        std::fs::read_to_string(path).unwrap_or_default()
    }
    /// The server-assigned SCIM id of a user or group, by its `id` in the directory file.
    pub fn scim_id(&self, file_id: &str) -> Option<&str> {
        self.state["scim_ids"][file_id].as_str()
    }

    /// Requests that Prism's validating proxy refused (422: the request breaks the hoop
    /// spec) or failed (500: the stand-in's answer breaks it), one log line each.
    pub fn prism_proxy_rejections(&self) -> Vec<String> {
        self.log("prism_proxy")
            .lines()
            .filter(|l| l.contains("Request terminated with error"))
            .map(str::to_owned)
            .collect()
    }

    /// `GET {standin}/users`: every user the stand-in holds.
    pub fn standin_users(&self) -> Vec<Value> {
        let (status, body) = http_get_json(
            &format!("{}/users", self.standin_url()),
            Some(self.api_key()),
        );
        assert_eq!(status, 200, "GET /api/users on the stand-in: {body}");
        match body {
            Value::Array(users) => users,
            Value::Null => Vec::new(),
            other => panic!("GET /api/users on the stand-in answered {other}"),
        }
    }

    /// A config for these peers, reading from scim2-server with a token from
    /// oidc-provider, writing to `target`. Adjust fields before `write`.
    pub fn config(&self, target: Target) -> IdsyncConfig {
        let target_url = match target {
            Target::Standin => self.standin_url().to_owned(),
            Target::PrismProxy => self.prism_proxy_url().to_owned(),
            Target::PrismMock => self.prism_mock_url().to_owned(),
        };
        let api_key = self.state["standin_api_key"]
            .as_str()
            .unwrap_or("hpk_prism_mock_accepts_any_key")
            .to_owned();
        IdsyncConfig {
            source_url: self.scim_url().to_owned(),
            page_size: 100,
            subject_attribute: "id".to_owned(),
            issuer: self.issuer().to_owned(),
            client_id: self.client_id().to_owned(),
            client_secret: self.client_secret().to_owned(),
            scopes: vec!["scim.read".to_owned()],
            target_url,
            api_key,
            api_key_header: "authorization".to_owned(),
            rate_limit_per_second: 1000,
            burst: 50,
            max_in_flight: 8,
            max_attempts: 6,
            timeout_secs: 30,
            cache_path: self.dir.path().join("cache"),
        }
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        if let Err(e) = down(&self.state_path) {
            eprintln!("stopping the test peers: {e}");
        }
    }
}

/// `peers.py down STATE`.
pub fn down(state_path: &Path) -> Result<(), String> {
    let out = Command::new("python3")
        .arg(peers_script())
        .arg("down")
        .arg(state_path)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run peers.py down: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Where idsync sends users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Straight to the stand-in.
    Standin,
    /// Through Prism's validating proxy to the stand-in.
    PrismProxy,
    /// To Prism's plain mock (accepts valid requests, remembers nothing).
    PrismMock,
}

/// An idsync config file (the format of the spec), for the peers.
#[derive(Clone, Debug)]
pub struct IdsyncConfig {
    pub source_url: String,
    pub page_size: u32,
    pub subject_attribute: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub target_url: String,
    pub api_key: String,
    pub api_key_header: String,
    pub rate_limit_per_second: u32,
    pub burst: u32,
    pub max_in_flight: u32,
    pub max_attempts: u32,
    pub timeout_secs: u64,
    pub cache_path: PathBuf,
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

impl IdsyncConfig {
    pub fn to_toml(&self) -> String {
        let scopes: Vec<String> = self.scopes.iter().map(|s| toml_str(s)).collect();
        format!(
            "[source]\n\
             kind = \"scim\"\n\
             url = {source_url}\n\
             page_size = {page_size}\n\
             subject_attribute = {subject_attribute}\n\
             \n\
             [source.oidc]\n\
             issuer = {issuer}\n\
             client_id = {client_id}\n\
             client_secret = {client_secret}\n\
             scopes = [{scopes}]\n\
             auth_method = \"client_secret_basic\"\n\
             \n\
             [target]\n\
             url = {target_url}\n\
             api_key = {api_key}\n\
             api_key_header = {api_key_header}\n\
             rate_limit_per_second = {rate}\n\
             burst = {burst}\n\
             max_in_flight = {max_in_flight}\n\
             max_attempts = {max_attempts}\n\
             timeout_secs = {timeout_secs}\n\
             \n\
             [sync]\n\
             schedule = \"0 */15 * * * *\"\n\
             run_on_start = true\n\
             \n\
             [cache]\n\
             path = {cache_path}\n",
            source_url = toml_str(&self.source_url),
            page_size = self.page_size,
            subject_attribute = toml_str(&self.subject_attribute),
            issuer = toml_str(&self.issuer),
            client_id = toml_str(&self.client_id),
            client_secret = toml_str(&self.client_secret),
            scopes = scopes.join(", "),
            target_url = toml_str(&self.target_url),
            api_key = toml_str(&self.api_key),
            api_key_header = toml_str(&self.api_key_header),
            rate = self.rate_limit_per_second,
            burst = self.burst,
            max_in_flight = self.max_in_flight,
            max_attempts = self.max_attempts,
            timeout_secs = self.timeout_secs,
            cache_path = toml_str(&self.cache_path.to_string_lossy()),
        )
    }

    /// Writes `DIR/NAME.toml` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, self.to_toml()).expect("write the idsync config");
        path
    }
}

/// What one run of the idsync binary did.
#[derive(Debug)]
pub struct RunOutput {
    /// Exit code; -1 if killed by a signal (or by the timeout).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// The `--output json` summary: the JSON object on stdout.
    pub fn summary(&self) -> Value {
        let trimmed = self.stdout.trim();
        if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(trimmed) {
            return v;
        }
        trimmed
            .lines()
            .rev()
            .find_map(|l| match serde_json::from_str::<Value>(l.trim()) {
                Ok(v @ Value::Object(_)) => Some(v),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no JSON summary on stdout\n{self}"))
    }

    /// A summary counter (`created`, `failed`, ...).
    pub fn count(&self, field: &str) -> u64 {
        let summary = self.summary();
        summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no counter {field:?}: {summary}\n{self}"))
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the built idsync binary with `--config CONFIG` and `args`; kills it after `timeout`.
pub fn run_idsync_with_timeout(config: &Path, args: &[&str], timeout: Duration) -> RunOutput {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the idsync binary");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for idsync") {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for idsync");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let mut stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        stderr.push_str(&format!(
            "\n[test harness: idsync killed after {timeout:?}]\n"
        ));
    }
    RunOutput {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// Runs the built idsync binary with `--config CONFIG` and `args` (5 minutes at most).
pub fn run_idsync(config: &Path, args: &[&str]) -> RunOutput {
    run_idsync_with_timeout(config, args, Duration::from_secs(300))
}

/// A blocking `GET` returning the status and the JSON body (`Null` when empty or not JSON).
pub fn http_get_json(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut req = client.get(url);
        if let Some(key) = bearer {
            req = req.bearer_auth(key);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

/// Writes a small directory JSON file (users with `id`, `userName`, one work email,
/// `active`; groups by `displayName` with `members[].value` = the users' ids).
/// `users`: (id, userName, email or None, active); `groups`: (name, member ids).
pub fn write_directory(
    path: &Path,
    users: &[(&str, &str, Option<&str>, bool)],
    groups: &[(&str, &[&str])],
) {
    let users: Vec<Value> = users
        .iter()
        .map(|(id, user_name, email, active)| {
            let mut u = serde_json::json!({
                "id": id,
                "externalId": format!("ext-{id}"),
                "userName": user_name,
                "name": {"formatted": user_name},
                "active": active,
            });
            if let Some(email) = email {
                u["emails"] =
                    serde_json::json!([{"value": email, "type": "work", "primary": true}]);
            }
            u
        })
        .collect();
    let groups: Vec<Value> = groups
        .iter()
        .enumerate()
        .map(|(i, (name, members))| {
            serde_json::json!({
                "id": format!("g{i}"),
                "displayName": name,
                "members": members.iter().map(|m| serde_json::json!({"value": m})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = serde_json::json!({"users": users, "groups": groups});
    std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("json"))
        .expect("write the directory file");
}
