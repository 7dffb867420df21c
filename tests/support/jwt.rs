//! What the fakes' token endpoints check of a JWT assertion (RFC 7523 §3): an
//! RS256 signature by the client's key, the expected issuer, subject and
//! audience, an expiry not passed, and a `jti`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The test-only key pair (`tests/fixtures/README.md`).
pub const TEST_PRIVATE_KEY: &str = include_str!("../fixtures/test-rsa-key.pem");
pub const TEST_PUBLIC_KEY: &str = include_str!("../fixtures/test-rsa-public.pem");
pub const TEST_CERTIFICATE: &str = include_str!("../fixtures/test-rsa-cert.pem");

pub struct Expected<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub audience: &'a str,
}

/// The assertion's header and claims when it passes every check, else why not,
/// as a token endpoint would say it.
pub fn verify_assertion(
    jwt: &str,
    public_pem: &str,
    expect: &Expected,
) -> Result<(jsonwebtoken::Header, Value), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|err| format!("not a JWT: {err}"))?;
    let key = DecodingKey::from_rsa_pem(public_pem.as_bytes())
        .map_err(|err| format!("the fake's public key: {err}"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[expect.audience]);
    validation.set_issuer(&[expect.issuer]);
    validation.sub = Some(expect.subject.to_owned());
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|err| format!("the assertion is invalid: {err}"))?
        .claims;
    if claims.get("jti").and_then(Value::as_str).is_none() {
        return Err("the assertion has no jti".to_owned());
    }
    Ok((header, claims))
}
