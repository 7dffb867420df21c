use std::path::Path;

use super::*;
use crate::config::FileFormat;
use crate::model::EmailError;
use crate::source::delivery;

fn export(dir: &Path, name: &str, text: &str) -> ExportFile {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let format = if name.ends_with(".csv") {
        FileFormat::Csv
    } else {
        FileFormat::JsonLines
    };
    ExportFile { path, format }
}

fn source(users: ExportFile, groups: Option<ExportFile>) -> FileSource {
    FileSource {
        users,
        groups,
        slack_id: Some("slack".into()),
        picture: None,
        max_line_bytes: 4096,
    }
}

/// Reads `source` to its end: the chunks of users it delivered, and what the
/// read says.
async fn read_chunks(source: &FileSource) -> (Vec<Vec<DirectoryUser>>, Result<Read, SourceError>) {
    let (delivery, mut arrivals) = delivery::channel(CancellationToken::new());
    let shutdown = CancellationToken::new();
    let read = source.read(&shutdown, delivery, None);
    let collect = async {
        let mut chunks = Vec::new();
        while let Some(chunk) = arrivals.next().await {
            arrivals.planned(chunk.len());
            chunks.push(chunk);
        }
        chunks
    };
    let (read, chunks) = tokio::join!(read, collect);
    (chunks, read)
}

/// Reads `source` to its end: its users, and what the read says.
async fn read_all(source: &FileSource) -> (Vec<DirectoryUser>, Result<Read, SourceError>) {
    let (chunks, read) = read_chunks(source).await;
    (chunks.into_iter().flatten().collect(), read)
}

fn groups_of(user: &DirectoryUser) -> Vec<&str> {
    user.groups.iter().map(GroupName::as_str).collect()
}

const USERS_JSONL: &str = r#"{"id": "u1", "email": "Ann@Example.com", "name": "Ann Lee", "groups": ["sre"], "slack": "U1"}
{"id": "u2", "email": "bob@example.com", "given_name": "Bob", "family_name": "Ray", "active": false}

{"id": 3, "email": "not an address"}
{"email": "nobody@example.com"}
"#;

#[tokio::test]
async fn json_lines_users_are_normalized_and_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let source = source(export(dir.path(), "users.jsonl", USERS_JSONL), None);
    let (users, read) = read_all(&source).await;
    let read = read.expect("a complete read");
    assert_eq!(read.entries, 4);
    assert_eq!(read.scope, Scope::Complete);
    assert_eq!(read.unusable.len(), 1);
    assert_eq!(read.unusable[0].label, "nobody@example.com");
    let [ann, bob, third] = &users[..] else {
        panic!("three keyed users: {users:?}")
    };
    assert_eq!(
        ann.email.as_ref().map(|e| e.as_str()),
        Ok("ann@example.com")
    );
    assert_eq!(
        (ann.name.as_deref(), groups_of(ann)),
        (Some("Ann Lee"), vec!["sre"])
    );
    assert_eq!(ann.slack_id.as_deref(), Some("U1"));
    assert_eq!((bob.name.as_deref(), bob.active), (Some("Bob Ray"), false));
    assert_eq!(third.subject.as_str(), "3");
    assert!(matches!(third.email, Err(EmailError::NotBare(_))));
}

#[tokio::test]
async fn csv_users_take_their_groups_from_a_column_and_from_nested_groups() {
    let dir = tempfile::tempdir().unwrap();
    let users = export(
        dir.path(),
        "users.csv",
        "id,email,name,active,groups,slack\nu1,ann@example.com,\"Lee, Ann\",yes,dba; ops,\nu2,bob@example.com,Bob,0,,U2\n",
    );
    let groups = export(
        dir.path(),
        "groups.csv",
        "name,members,groups\nengineering,,platform\nplatform,u1;u2,\nsales,u2,\n",
    );
    let (users, read) = read_all(&source(users, Some(groups))).await;
    assert_eq!(read.expect("complete").entries, 2);
    assert_eq!(users[0].name.as_deref(), Some("Lee, Ann"));
    assert_eq!(
        groups_of(&users[0]),
        ["dba", "engineering", "ops", "platform"]
    );
    assert_eq!(groups_of(&users[1]), ["engineering", "platform", "sales"]);
    assert_eq!(
        (users[1].active, users[1].slack_id.as_deref()),
        (false, Some("U2"))
    );
}

/// Each of these exports is broken somewhere, and the read fails naming why.
#[tokio::test]
async fn an_export_that_cannot_be_read_completely_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let cut_off = &USERS_JSONL[..USERS_JSONL.len() - 10];
    for (name, text, why) in [
        ("cut.jsonl", cut_off, "does not end with a line break"),
        (
            "cut-line.jsonl",
            "{\"id\": \"u1\", \"em\n",
            "line 1: is not valid JSON",
        ),
        (
            "twice.jsonl",
            "{\"id\": \"u1\"}\n{\"id\": \"u1\"}\n",
            "line 2: id \"u1\" is listed twice",
        ),
        ("array.jsonl", "[1]\n", "is not a JSON object"),
        (
            "flag.jsonl",
            "{\"id\": \"u1\", \"active\": \"maybe\"}\n",
            "active must be true or false",
        ),
        ("empty.jsonl", "", "the file is empty"),
        (
            "long.jsonl",
            &format!("{{\"id\": \"u1\", \"name\": \"{}\"}}\n", "x".repeat(5000)),
            "a line is longer than source.max_resource_bytes = 4096",
        ),
        (
            "short.csv",
            "id,email\nu1,a@x.com\nu2\n",
            "is not valid CSV",
        ),
    ] {
        let source = source(export(dir.path(), name, text), None);
        let (_, read) = read_all(&source).await;
        let err = read.expect_err(name).to_string();
        assert!(err.contains(why), "{name}: {err}");
        assert!(
            err.contains(name),
            "{name}: the error names the file: {err}"
        );
    }
    let missing = ExportFile {
        path: dir.path().join("absent.jsonl"),
        format: FileFormat::JsonLines,
    };
    let (_, read) = read_all(&source(missing, None)).await;
    assert!(read
        .expect_err("absent")
        .to_string()
        .contains("absent.jsonl"));
}

#[tokio::test]
async fn a_broken_groups_export_fails_the_read_before_any_user_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let users = export(dir.path(), "users.jsonl", USERS_JSONL);
    let cycle = export(
        dir.path(),
        "groups.jsonl",
        "{\"name\": \"a\", \"groups\": [\"b\"]}\n{\"name\": \"b\", \"groups\": [\"a\"]}\n",
    );
    let (users, read) = read_all(&source(users, Some(cycle))).await;
    let err = read.expect_err("a cycle").to_string();
    assert!(err.contains("groups nest in a cycle: a → b → a"), "{err}");
    assert!(users.is_empty());
}

#[tokio::test]
async fn users_are_handed_out_in_chunks_as_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..CHUNK * 2 + 1)
        .map(|i| format!("{{\"id\": \"u{i}\", \"email\": \"u{i}@example.com\"}}\n"))
        .collect();
    let source = source(export(dir.path(), "many.jsonl", &text), None);
    let (chunks, read) = read_chunks(&source).await;
    let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
    assert_eq!(read.expect("complete").entries, CHUNK * 2 + 1);
    assert_eq!(sizes, [CHUNK, CHUNK, 1]);
}

#[tokio::test]
async fn the_probe_checks_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = export(dir.path(), "users.jsonl", USERS_JSONL);
    let groups = export(dir.path(), "groups.jsonl", "{\"name\": \"a\"}");
    let said = source(users.clone(), None).probe().await.expect("readable");
    assert!(said.contains("users.jsonl"), "{said}");
    let err = source(users, Some(groups))
        .probe()
        .await
        .expect_err("cut off");
    assert!(err.to_string().contains("groups.jsonl"), "{err}");
}
