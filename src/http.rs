//! The one way idsync builds an HTTP client, for the directory and the gateway.

/// Sent with every request.
pub const USER_AGENT: &str = concat!("idsync/", env!("CARGO_PKG_VERSION"));

/// A client builder that trusts the system's CAs and `ca_pem`'s, and never follows
/// a redirect: tokens and API keys must not be sent on to another host.
pub fn client_builder(ca_pem: Option<&[u8]>) -> reqwest::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}
