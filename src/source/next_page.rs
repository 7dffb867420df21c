//! A listing's link to its next page (Okta's `Link` header, Graph's
//! `@odata.nextLink`) is followed only to the server the listing came from: the
//! request carries our credential.

use url::Url;

use super::SourceError;

/// `link` resolved against `current`, when it points at the same origin.
pub fn same_origin(current: &Url, link: &str) -> Result<Url, SourceError> {
    let inconsistent = |reason: String| SourceError::Inconsistent {
        url: current.to_string(),
        reason,
    };
    let next = current
        .join(link)
        .map_err(|err| inconsistent(format!("its next link {link:?} is not a URL: {err}")))?;
    if next.origin() != current.origin() {
        return Err(inconsistent(format!(
            "its next link points at another server: {}",
            next.origin().ascii_serialization()
        )));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_link_to_another_server_is_refused() {
        let current: Url = "https://acme.okta.com/api/v1/users".parse().unwrap();
        assert!(same_origin(&current, "https://acme.okta.com/api/v1/users?after=x").is_ok());
        let err = same_origin(&current, "https://evil.example/api/v1/users").unwrap_err();
        assert!(err.to_string().contains("another server"), "{err}");
    }
}
