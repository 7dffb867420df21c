//! Fakes and fixtures shared by the integration tests. Each test crate uses a
//! different subset, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

pub mod directory;
pub mod fake_auth0;
pub mod fake_entra;
pub mod fake_gateway;
pub mod fake_google;
pub mod fake_idp;
pub mod fake_jumpcloud;
pub mod fake_keycloak;
pub mod fake_okta;
pub mod jwt;
pub mod ldap_company;
pub mod org;
pub mod org_world;
pub mod prism;
pub mod samba;
pub mod shared_state;
pub mod slapd;
pub mod sync_world;
pub mod vendor_world;

use std::path::Path;

/// An idsync config for the fakes: `source` and `target` lines go into those
/// tables, `sections` (whole tables such as `[sync]`) at the end.
pub fn idsync_toml(
    idp: &fake_idp::FakeIdp,
    gateway: &fake_gateway::FakeGateway,
    cache: &Path,
    source: &str,
    target: &str,
    sections: &str,
) -> String {
    format!(
        r#"
[source]
kind = "scim"
url = "{scim}"
{source}
[source.oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{secret}"
scopes = ["scim.read"]
[target]
url = "{target_url}"
api_key = "{key}"
{target}
[cache]
path = "{cache}"
{sections}
"#,
        scim = idp.scim_url(),
        issuer = idp.issuer(),
        client_id = idp.client_id(),
        secret = idp.client_secret(),
        target_url = gateway.url(),
        key = gateway.admin_key(),
        cache = cache.display(),
    )
}
