//! The shared [`SyncWorld`] around a vendor fake that holds its own users and
//! groups (Okta, Entra): the fake, read straight or through Prism on the
//! vendor's own OpenAPI document, and the `[source]` table that reads it.

use std::ops::Deref;

use idsync::config::Config;

use super::fake_entra::{EntraFaults, FakeEntra};
use super::fake_okta::{FakeOkta, OktaFaults};
use super::prism::{vendor_spec, Prism};
use super::sync_world::SyncWorld;

/// What the world needs to know of a vendor's fake.
pub trait VendorFake {
    /// `source.kind`, and the name of the `[source.KIND]` table.
    const KIND: &'static str;
    /// The vendor's document in `tests/peers/vendor-openapi/`.
    const SPEC: &'static str;
    fn url(&self) -> &str;
    /// Where the fake's next links point: Prism, when idsync reads through it.
    fn set_public_url(&self, url: &str);
    /// `users` people in `groups` groups of the fake's own making.
    fn seed(&self, users: usize, groups: usize);
    /// From now on every user page past the first `pages` the fake has served
    /// answers 500.
    fn fail_user_pages_after(&self, pages: usize);
}

impl VendorFake for FakeOkta {
    const KIND: &'static str = "okta";
    const SPEC: &'static str = "okta";

    fn url(&self) -> &str {
        FakeOkta::url(self)
    }

    fn set_public_url(&self, url: &str) {
        FakeOkta::set_public_url(self, url)
    }

    fn seed(&self, users: usize, groups: usize) {
        FakeOkta::seed(self, users, groups)
    }

    fn fail_user_pages_after(&self, pages: usize) {
        self.set_faults(OktaFaults {
            fail_user_pages_after: Some(pages),
            ..OktaFaults::default()
        })
    }
}

impl VendorFake for FakeEntra {
    const KIND: &'static str = "entra";
    const SPEC: &'static str = "msgraph";

    fn url(&self) -> &str {
        FakeEntra::url(self)
    }

    fn set_public_url(&self, url: &str) {
        FakeEntra::set_public_url(self, url)
    }

    fn seed(&self, users: usize, groups: usize) {
        FakeEntra::seed(self, users, groups)
    }

    fn fail_user_pages_after(&self, pages: usize) {
        self.set_faults(EntraFaults {
            fail_user_pages_after: Some(pages),
            ..EntraFaults::default()
        })
    }
}

/// The shared [`SyncWorld`] with a vendor's fake `directory`, behind Prism
/// where the test asks for it.
pub struct VendorWorld<F> {
    world: SyncWorld,
    pub directory: F,
    prism: Option<Prism>,
}

impl<F> Deref for VendorWorld<F> {
    type Target = SyncWorld;

    fn deref(&self) -> &SyncWorld {
        &self.world
    }
}

impl<F: VendorFake> VendorWorld<F> {
    pub async fn start(directory: F, through_prism: bool) -> Self {
        let prism = match through_prism {
            true => {
                let prism = Prism::proxy(&vendor_spec(F::SPEC), directory.url()).await;
                directory.set_public_url(prism.url());
                Some(prism)
            }
            false => None,
        };
        Self {
            world: SyncWorld::start().await,
            directory,
            prism,
        }
    }

    /// The `[source]` table reading the directory (through Prism when there is
    /// one), `table` being the lines of its `[source.KIND]` table.
    pub fn source(&self, incremental: bool, table: &str) -> String {
        let url = self.prism.as_ref().map_or(self.directory.url(), Prism::url);
        format!(
            "[source]\nkind = \"{kind}\"\nurl = \"{url}\"\nincremental = {incremental}\n[source.{kind}]\n{table}\n",
            kind = F::KIND,
        )
    }

    /// `users` in `groups` synced with `config`; then the user pages fail past
    /// the first `pages` the fake served, and the next run aborts on the 500,
    /// writes nothing and leaves all `users` active.
    pub async fn assert_a_500_part_way_deactivates_nobody(
        &self,
        config: &str,
        (users, groups): (usize, usize),
        pages: usize,
    ) {
        self.directory.seed(users, groups);
        self.run(config).await.expect("first run");
        self.directory.fail_user_pages_after(pages);
        let cut = format!("user pages fail past the first {pages}");
        let aborted = self.assert_cut_off_run_writes_nothing(config, &cut).await;
        assert!(
            aborted.error.to_string().contains("500"),
            "{}",
            aborted.error
        );
        assert_eq!(self.active().len(), users);
    }

    /// With Prism in front: every request went through it and neither a request
    /// nor an answer broke the vendor's document.
    pub fn assert_no_violations(&self) {
        if let Some(prism) = &self.prism {
            assert!(prism.violations().is_empty(), "{}", prism.log_text());
            assert!(prism.requests() > 0, "the requests went through Prism");
        }
    }
}

/// Whether idsync takes a config whose `[source]` table for `kind` holds the
/// `source` lines and whose `[source.KIND]` table holds `table`; what it says
/// when it does not.
pub fn parse_source_tables(kind: &str, source: &str, table: &str) -> Result<(), String> {
    let text = format!(
        "[source]\nkind = \"{kind}\"\n{source}\n[source.{kind}]\n{table}\n[target]\nurl = \"https://hoop.example.com\"\napi_key = \"k\"\n"
    );
    Config::parse(&text, "test", &|_| None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
