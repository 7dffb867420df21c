//! The `[push]` table: where idsync serves SCIM 2.0 for identity providers that
//! provision by pushing (`[source] kind = "push"`), and how it guards that door.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{count, invalid, optional_secret, ConfigError, Secret};

/// The environment variable that may carry the token the IdP must present.
pub const ENV_PUSH_BEARER_TOKEN: &str = "IDSYNC_PUSH_BEARER_TOKEN";

/// The shortest token accepted: a guessable one would let anyone provision users.
const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPush {
    listen: Option<String>,
    bearer_token: Option<Secret>,
    bearer_token_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    max_body_bytes: Option<i64>,
    store_path: Option<PathBuf>,
}

/// The checked `[push]` table.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Where the SCIM endpoint listens; its base path is `/scim/v2`.
    pub listen: SocketAddr,
    /// What the IdP sends as `Authorization: Bearer …`.
    pub bearer_token: Secret,
    /// Certificate chain and key, PEM; plain HTTP (behind an ingress) without.
    pub tls: Option<TlsFiles>,
    /// A request body over this gets 413.
    pub max_body_bytes: usize,
    /// The sled store of what was pushed (default `<cache.path>/push`).
    pub store_path: PathBuf,
}

/// The endpoint's certificate chain and private key, as PEM read at start-up.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Secret,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

impl RawPush {
    pub(super) fn validate(
        self,
        cache_path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PushConfig, ConfigError> {
        let listen_text = self.listen.as_deref().unwrap_or("0.0.0.0:8443");
        let listen = listen_text.trim().parse().map_err(|_| {
            invalid(
                "push.listen",
                format!("must be an address and port such as listen = \"0.0.0.0:8443\"; got {listen_text:?}"),
            )
        })?;
        let bearer_token = optional_secret(
            "push.bearer_token",
            self.bearer_token,
            self.bearer_token_file.as_deref(),
            ENV_PUSH_BEARER_TOKEN,
            env,
        )?
        .ok_or_else(|| {
            invalid(
                "push.bearer_token",
                format!("is missing: set bearer_token_file = \"/run/secrets/idsync_scim_token\" or the environment variable {ENV_PUSH_BEARER_TOKEN}"),
            )
        })?;
        if bearer_token.expose().chars().count() < MIN_TOKEN_CHARS {
            return Err(invalid(
                "push.bearer_token",
                format!("is shorter than {MIN_TOKEN_CHARS} characters; generate one such as `openssl rand -hex 32`"),
            ));
        }
        let max_body_bytes = count(
            "push.max_body_bytes",
            self.max_body_bytes.unwrap_or(1024 * 1024),
            "1048576",
        )?;
        Ok(PushConfig {
            listen,
            bearer_token,
            tls: tls_files(self.tls_cert_file.as_deref(), self.tls_key_file.as_deref())?,
            max_body_bytes,
            store_path: self.store_path.unwrap_or_else(|| cache_path.join("push")),
        })
    }
}

/// Both files or neither; each must be readable PEM now, not at the first handshake.
fn tls_files(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsFiles>, ConfigError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => {
            return Err(invalid(
                "push.tls_key_file",
                "is missing: tls_cert_file needs its key, such as tls_key_file = \"/etc/idsync/tls/tls.key\"",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "push.tls_cert_file",
                "is missing: tls_key_file needs its certificate, such as tls_cert_file = \"/etc/idsync/tls/tls.crt\"",
            ))
        }
    };
    let cert_pem = pem_file(
        "push.tls_cert_file",
        cert,
        "CERTIFICATE",
        "/etc/idsync/tls/tls.crt",
    )?;
    let key_pem = pem_file(
        "push.tls_key_file",
        key,
        "PRIVATE KEY",
        "/etc/idsync/tls/tls.key",
    )?;
    Ok(Some(TlsFiles {
        cert_pem,
        key_pem: Secret::new(String::from_utf8_lossy(&key_pem).into_owned()),
    }))
}

/// A readable file holding a PEM block whose label ends in `label`.
fn pem_file(
    key: &'static str,
    path: &Path,
    label: &str,
    example: &str,
) -> Result<Vec<u8>, ConfigError> {
    let file_name = key.rsplit('.').next().unwrap_or(key);
    let text = std::fs::read(path).map_err(|err| {
        invalid(
            key,
            format!("file {} cannot be read ({err}); give a PEM file such as {file_name} = \"{example}\"", path.display()),
        )
    })?;
    let has_block = String::from_utf8_lossy(&text)
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.ends_with(&format!("{label}-----")));
    if !has_block {
        return Err(invalid(
            key,
            format!(
                "file {} holds no PEM {label}; give a PEM file such as {file_name} = \"{example}\"",
                path.display()
            ),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, SourceKind};

    const PUSH: &str = r#"
        [source]
        kind = "push"
        [push]
        listen = "127.0.0.1:8443"
        bearer_token = "0123456789abcdef0123"
        [target]
        url = "https://use.hoop.dev/api"
        api_key = "hpk_secret"
        [cache]
        path = "/var/lib/idsync"
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &|name| {
            (name == super::ENV_PUSH_BEARER_TOKEN)
                .then(|| "from-the-environment-1234".to_owned())
                .filter(|_| text.contains("# env"))
        })
    }

    #[test]
    fn a_push_source_has_its_endpoint_and_a_store_in_the_cache_directory() {
        let config = parse(PUSH).expect("valid");
        let SourceKind::Push(push) = &config.source.kind else {
            panic!("a push source")
        };
        assert_eq!(push.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(push.max_body_bytes, 1024 * 1024);
        assert_eq!(
            push.store_path,
            std::path::Path::new("/var/lib/idsync/push")
        );
        assert!(push.tls.is_none());
        assert_eq!(format!("{:?}", push.bearer_token), "**redacted**");
        let from_env = parse(&format!("{PUSH}\n# env")).expect("valid");
        let SourceKind::Push(push) = &from_env.source.kind else {
            panic!("a push source")
        };
        assert_eq!(push.bearer_token.expose(), "from-the-environment-1234");
    }

    #[test]
    fn bad_push_keys_are_refused_by_name() {
        for (text, key) in [
            (PUSH.replace("127.0.0.1:8443", "localhost"), "push.listen"),
            (
                PUSH.replace("0123456789abcdef0123", "short"),
                "push.bearer_token",
            ),
            (
                PUSH.replace("bearer_token = \"0123456789abcdef0123\"", ""),
                "push.bearer_token",
            ),
            (format!("{PUSH}\n[push2]"), "unknown field"),
            (
                PUSH.replace("listen =", "max_body_bytes = 0\nlisten ="),
                "push.max_body_bytes",
            ),
            (
                PUSH.replace("listen =", "tls_cert_file = \"/nonexistent\"\nlisten ="),
                "push.tls_key_file",
            ),
            (
                PUSH.replace(
                    "listen =",
                    "tls_cert_file = \"/nonexistent\"\ntls_key_file = \"/nonexistent\"\nlisten =",
                ),
                "push.tls_cert_file",
            ),
            (
                PUSH.replace("kind = \"push\"", "kind = \"push\"\nurl = \"https://x\""),
                "source.url",
            ),
            (
                PUSH.replace("kind = \"push\"", "kind = \"file\"\npath = \"/x.jsonl\""),
                "push is used only",
            ),
        ] {
            let err = parse(&text).expect_err("refused").to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let missing = PUSH.split("[push]").next().unwrap_or_default().to_owned()
            + "[target]\nurl = \"https://use.hoop.dev/api\"\napi_key = \"hpk_secret\"\n";
        let err = parse(&missing).expect_err("refused").to_string();
        assert!(err.starts_with("push is missing"), "{err}");
    }
}
