//! The source seam from the run's side: a directory that reads changes. Its
//! position (and the base it stands on) is kept in the cache between runs, advanced only by a run that did
//! all it planned, and a change set deactivates only the users it removes.

mod support;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use idsync::config::Config;
use idsync::model::{DirectoryUser, Email, GroupName, Subject};
use idsync::source::{Cursor, Delivery, Directory, Read, Scope, SourceError};
use idsync::sync::{RunMode, Syncer};
use support::fake_gateway::{FakeGateway, Faults, GatewayOptions};
use tokio_util::sync::CancellationToken;

/// What the next read hands out, and the cursors the reads were given.
#[derive(Default)]
struct Script {
    users: Vec<DirectoryUser>,
    scope: Scope,
    next_cursor: Option<String>,
    next_base: Option<Arc<str>>,
    fail: bool,
    given: Vec<Option<Cursor>>,
}

#[derive(Clone, Default)]
struct ScriptedDirectory(Arc<Mutex<Script>>);

impl ScriptedDirectory {
    fn script(&self, users: Vec<DirectoryUser>, scope: Scope, next_cursor: &str) {
        let mut script = self.0.lock().unwrap();
        script.users = users;
        script.scope = scope;
        script.next_cursor = Some(next_cursor.to_owned());
        script.next_base = None;
        script.fail = false;
    }

    /// The next read also gives a new base for its cursor.
    fn with_base(&self, base: &str) {
        self.0.lock().unwrap().next_base = Some(Arc::from(base));
    }

    fn last_given(&self) -> Option<String> {
        self.last_cursor().map(|cursor| cursor.position)
    }

    fn last_base(&self) -> Option<String> {
        self.last_cursor()?.base.map(|base| base.to_string())
    }

    fn last_cursor(&self) -> Option<Cursor> {
        self.0.lock().unwrap().given.last().cloned().flatten()
    }
}

impl Directory for ScriptedDirectory {
    fn read<'a>(
        &'a self,
        _shutdown: &'a CancellationToken,
        delivery: Delivery,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        let mut script = self.0.lock().unwrap();
        script.given.push(cursor.cloned());
        let result = if script.fail {
            Err(SourceError::Unavailable {
                request: "GET script".into(),
                reason: "a bad minute".into(),
            })
        } else {
            delivery.deliver(script.users.clone());
            Ok(Read {
                entries: script.users.len(),
                unusable: Vec::new(),
                scope: script.scope.clone(),
                cursor: script.next_cursor.clone(),
                cursor_base: script.next_base.clone(),
                groups: None,
            })
        };
        Box::pin(async move { result })
    }

    fn reads_changes(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        "script".into()
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async { Ok("scripted".to_owned()) })
    }
}

fn person(id: &str, name: &str) -> DirectoryUser {
    DirectoryUser {
        subject: Subject::new(id),
        active: true,
        email: Email::parse(&format!("{id}@example.com")),
        name: Some(name.to_owned()),
        groups: vec![GroupName::new("sre")],
        slack_id: None,
        picture: None,
    }
}

fn config(gateway: &FakeGateway, cache: &std::path::Path) -> Config {
    let text = format!(
        r#"
[source]
kind = "file"
path = "/unused.jsonl"
[target]
url = "{}"
api_key = "{}"
rate_limit_per_second = 1000
burst = 50
max_attempts = 1
[cache]
path = "{}"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 5
"#,
        gateway.url(),
        gateway.admin_key(),
        cache.display()
    );
    Config::parse(&text, "test", &|_| None).expect("config")
}

#[tokio::test]
async fn a_change_set_moves_the_cursor_and_deactivates_only_its_removals() {
    let gateway = FakeGateway::start(GatewayOptions::default()).await;
    let cache = tempfile::tempdir().expect("tempdir");
    let directory = ScriptedDirectory::default();
    let run = || async {
        let syncer = Syncer::with_source(
            &config(&gateway, cache.path()),
            RunMode::default(),
            Box::new(directory.clone()),
        )
        .expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    };
    let everyone = vec![
        person("ann", "Ann"),
        person("bob", "Bob"),
        person("cy", "Cy"),
    ];

    directory.script(everyone, Scope::Complete, "c1");
    directory.with_base("base 1");
    let first = run().await.expect("a full read");
    assert_eq!((first.counts.created, directory.last_given()), (3, None));

    // Ann renamed, Bob removed; Cy is absent from the change set and stays.
    let removed = vec![Subject::new("bob")];
    directory.script(
        vec![person("ann", "Ann Lee")],
        Scope::Changes { removed },
        "c2",
    );
    let second = run().await.expect("a change set");
    assert_eq!(directory.last_given().as_deref(), Some("c1"));
    assert_eq!(directory.last_base().as_deref(), Some("base 1"));
    assert_eq!((second.counts.updated, second.counts.deactivated), (1, 1));
    let status = |id: &str| {
        gateway
            .user_by_email(&format!("{id}@example.com"))
            .expect(id)
            .status
    };
    assert_eq!(
        (status("bob"), status("cy")),
        ("inactive".into(), "invited".into())
    );

    // A failed read leaves the cursor where it was.
    directory.0.lock().unwrap().fail = true;
    run().await.expect_err("a bad minute");
    directory.script(
        Vec::new(),
        Scope::Changes {
            removed: Vec::new(),
        },
        "c3",
    );
    run().await.expect("an empty change set");
    assert_eq!(directory.last_given().as_deref(), Some("c2"));
    // A position given without a base stands on the base kept.
    assert_eq!(directory.last_base().as_deref(), Some("base 1"));

    // A run whose create failed keeps its cursor too, so the change is read again.
    gateway.set_faults(Faults {
        error_503_ratio: 1.0,
        ..Faults::default()
    });
    let dee = vec![person("dee", "Dee")];
    directory.script(
        dee.clone(),
        Scope::Changes {
            removed: Vec::new(),
        },
        "c4",
    );
    let failed = run().await.expect("a run with a failure");
    assert_eq!(failed.counts.failed, 1);
    gateway.set_faults(Faults::default());
    directory.script(
        dee,
        Scope::Changes {
            removed: Vec::new(),
        },
        "c5",
    );
    directory.with_base("base 2");
    let retried = run().await.expect("the change read again");
    assert_eq!(directory.last_given().as_deref(), Some("c3"));
    assert_eq!(retried.counts.created, 1);
    directory.script(
        Vec::new(),
        Scope::Changes {
            removed: Vec::new(),
        },
        "c6",
    );
    run().await.expect("a quiet run");
    assert_eq!(directory.last_given().as_deref(), Some("c5"));
    assert_eq!(directory.last_base().as_deref(), Some("base 2"));
}
