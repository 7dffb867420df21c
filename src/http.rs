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

/// At most `max_bytes` of a response's body, and whether there was more: enough to
/// read an error's message without letting a peer make us hold an unbounded body.
pub async fn body_up_to(mut response: reqwest::Response, max_bytes: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = max_bytes - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            return (body, true);
        }
    }
    (body, false)
}
