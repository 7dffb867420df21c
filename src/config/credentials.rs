//! How idsync proves itself to a directory's API: the forms the vendors use,
//! checked when the config is read so that a bad key stops idsync before it acts.

use std::path::Path;

use url::Url;

use super::{invalid, ConfigError, OidcConfig, Secret};

#[derive(Debug, Clone)]
pub enum SourceAuth {
    /// A fixed token issued out of band: `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// A token from the IdP's token endpoint, found by OIDC discovery
    /// (client-credentials grant).
    Oidc(OidcConfig),
    /// A fixed key in the vendor's own header.
    ApiKey(ApiKey),
    /// A token from a token endpoint at a known address.
    Grant(GrantConfig),
}

/// A fixed key sent as `<header>: [<scheme> ]<key>`: Okta's `Authorization: SSWS …`,
/// JumpCloud's `x-api-key: …`.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub header: &'static str,
    pub scheme: Option<&'static str>,
    pub key: Secret,
}

/// An OAuth 2.0 token endpoint and how to ask it for a token.
#[derive(Debug, Clone)]
pub struct GrantConfig {
    pub token_url: Url,
    /// Names the client in errors.
    pub client_id: String,
    pub method: GrantMethod,
    /// Further form fields of the request, such as `scope` or `audience`.
    pub params: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
pub enum GrantMethod {
    /// Client credentials, the secret in the form body (RFC 6749 §2.3.1).
    ClientSecret(Secret),
    /// Client credentials, authenticated by a signed assertion
    /// (`private_key_jwt`, RFC 7523 §2.2): `iss` = `sub` = the client id.
    ClientAssertion(SigningKey),
    /// The assertion is the grant (RFC 7523 §2.1), as for a Google service
    /// account acting as `subject` with `scope`.
    JwtBearer {
        key: SigningKey,
        issuer: String,
        subject: String,
        scope: String,
    },
}

/// An RSA private key that signs assertions (RS256), with what the JWT header
/// should say about it.
#[derive(Clone)]
pub struct SigningKey {
    key: jsonwebtoken::EncodingKey,
    /// The `kid` header: which of the client's keys signed.
    pub key_id: Option<String>,
    /// The `x5t` header: the SHA-1 thumbprint of the key's certificate.
    pub x5t: Option<String>,
}

impl SigningKey {
    /// A PKCS#1 or PKCS#8 PEM key; `key` names the config key in errors, which
    /// never show the key itself.
    pub fn from_pem(key: &'static str, pem: &Secret) -> Result<Self, ConfigError> {
        let unusable = || {
            invalid(
                key,
                "must hold an RSA private key in PEM (\"-----BEGIN PRIVATE KEY-----\" or \"-----BEGIN RSA PRIVATE KEY-----\")",
            )
        };
        let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose().as_bytes())
            .map_err(|_| unusable())?;
        // The PEM decoding does not parse the key itself: one signature does.
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jsonwebtoken::encode(&header, &serde_json::json!({}), &encoding).map_err(|_| unusable())?;
        Ok(Self {
            key: encoding,
            key_id: None,
            x5t: None,
        })
    }

    pub fn from_pem_file(key: &'static str, path: &Path) -> Result<Self, ConfigError> {
        let pem = std::fs::read_to_string(path).map_err(|err| {
            invalid(
                key,
                format!("file {} cannot be read: {err}", path.display()),
            )
        })?;
        Self::from_pem(key, &Secret::new(pem))
    }

    pub fn with_key_id(self, key_id: String) -> Self {
        Self {
            key_id: Some(key_id),
            ..self
        }
    }

    pub fn with_x5t(self, thumbprint: String) -> Self {
        Self {
            x5t: Some(thumbprint),
            ..self
        }
    }

    /// The compact JWS of `claims`, signed RS256.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        header.x5t.clone_from(&self.x5t);
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key", &"[redacted]")
            .field("key_id", &self.key_id)
            .field("x5t", &self.x5t)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_key_must_be_an_rsa_key_and_is_never_shown() {
        let pem = include_str!("../../tests/fixtures/test-rsa-key.pem");
        let key = SigningKey::from_pem("source.okta.private_key_file", &Secret::new(pem))
            .expect("the test key");
        assert!(!format!("{key:?}").contains("PRIVATE"));
        let public = include_str!("../../tests/fixtures/test-rsa-public.pem");
        for bad in ["not a key", public] {
            let err = SigningKey::from_pem("source.okta.private_key_file", &Secret::new(bad))
                .expect_err("refused");
            assert!(
                err.to_string()
                    .starts_with("source.okta.private_key_file must hold an RSA private key"),
                "{err}"
            );
        }
    }
}
