//! `kind = "ldap"` with `preset = "active_directory"` against a real Active
//! Directory: Samba's AD domain controller (tests/support/samba.rs) on loopback,
//! read over ldaps as an ordinary domain user.
//!
//! Samba's LDAP ports are fixed, so this binary has a single test that starts one
//! server and runs the scenarios against it in order, each with a gateway and a
//! cache of its own.
//!
//! Samba 4.17 does not enforce Active Directory's page limit (`MaxPageSize` of the
//! Default Query Policy is read but not applied: a paged search asking for 2,000
//! entries gets all of them in one page), so the reads here ask for pages of 50
//! from 120 people, and cross page boundaries as they would cross Windows' limit
//! of 1,000.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idsync::cache::Cache;
use idsync::model::Subject;
use support::ldap_company::Company;
use support::samba::{self, group_dn, user_dn, Samba, GROUPS, PEOPLE};
use support::sync_world::SyncWorld;

const PEOPLE_COUNT: usize = 120;
const PAGE_SIZE: usize = 50;
/// Disabled (userAccountControl 514) from the start.
const DISABLED: usize = 7;
/// Has no `mail`: its address is its login, the userPrincipalName.
const NO_MAIL: usize = 119;

fn login(i: usize) -> String {
    format!("u{i:04}")
}

fn name(i: usize) -> String {
    format!("User {i}")
}

/// The address idsync gives person `i`.
fn mail(i: usize) -> String {
    if i == NO_MAIL {
        format!("{}@example.test", login(i))
    } else {
        format!("{}@example.com", login(i))
    }
}

const COMPANY: Company = Company {
    people: PEOPLE_COUNT,
};

fn company_ldif() -> String {
    let mut ldif: String = (0..PEOPLE_COUNT)
        .map(|i| {
            let address = (i != NO_MAIL).then(|| mail(i));
            samba::user_ldif(&login(i), &name(i), address.as_deref(), i == DISABLED)
        })
        .collect();
    // A workstation's account is objectClass user too; the preset's filter leaves it out.
    ldif += &samba::computer_ldif("WS01");
    for (cn, members) in COMPANY.groups(|i| user_dn(&name(i)), group_dn) {
        ldif += &samba::group_ldif(cn, &members);
    }
    ldif
}

/// The `[source]` table: the preset's defaults, only where to look and who reads.
fn source(samba: &Samba, incremental: bool) -> String {
    format!(
        r#"[source]
kind = "ldap"
url = "{url}"
ca_file = "{ca}"
page_size = {PAGE_SIZE}
incremental = {incremental}
timeout_secs = 10
[source.ldap]
preset = "active_directory"
bind_dn = "{reader}"
bind_password = "{password}"
user_base = "{PEOPLE}"
group_base = "{GROUPS}"
"#,
        url = samba.url(),
        ca = samba.ca_file().display(),
        reader = samba::READER_DN,
        password = samba::READER_PASSWORD,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_directory_preset_reads_a_real_active_directory() {
    let clock = Instant::now();
    let samba = tokio::task::spawn_blocking(|| Samba::start(&company_ldif()))
        .await
        .expect("samba");
    eprintln!(
        "samba: {:?}, ready after {:?}",
        samba.timings,
        clock.elapsed()
    );
    the_server_pages_as_asked(&samba);
    check_config_connect_binds_and_reads_each_base(&samba).await;
    incremental_reads_fall_back_to_full_reads_said_once(&samba).await;
    nested_groups_sync_once_and_leavers_are_deactivated(&samba).await;
}

/// The server's side of paging, apart from idsync: pages of at most 50 when 50
/// are asked, none when more than everyone is asked (no page limit in Samba).
fn the_server_pages_as_asked(samba: &Samba) {
    let pages = |size: usize| {
        let control = format!("pr={size}/noprompt");
        let answer = samba.search(&[
            "-E",
            &control,
            "-b",
            PEOPLE,
            "(objectCategory=person)",
            "dn",
        ]);
        answer.matches("\npagedresults: ").count()
    };
    assert_eq!(
        pages(PAGE_SIZE),
        PEOPLE_COUNT.div_ceil(PAGE_SIZE),
        "pages of 50"
    );
    assert_eq!(
        pages(2000),
        1,
        "Samba enforces no MaxPageSize; if it now does, update tests/peers/README.md"
    );
}

async fn check_config_connect_binds_and_reads_each_base(samba: &Samba) {
    let world = SyncWorld::start().await;
    let checked = world
        .idsync(&source(samba, true), &["check-config", "--connect"])
        .await;
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(0), "{stdout}{stderr}");
    for said in [
        format!("bound as {}", samba::READER_DN),
        format!("{PEOPLE}: readable"),
        format!("{GROUPS}: readable"),
        "content synchronisation (RFC 4533) not offered: every read will be a full read".into(),
    ] {
        assert!(stdout.contains(&said), "{said:?} in {stdout}");
    }
}

/// Active Directory offers no content synchronisation: with `incremental = true`
/// the daemon says so once and every run is a full read.
async fn incremental_reads_fall_back_to_full_reads_said_once(samba: &Samba) {
    let world = SyncWorld::start().await;
    let text = world
        .config_text(&source(samba, true))
        .replace("[sync]\n", "[sync]\nschedule = \"* * * * * *\"\n");
    let config = world.path("daemon.toml");
    std::fs::write(&config, text).expect("config");
    let log_path = world.path("daemon.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let daemon = Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("idsync daemon");
    let daemon = KillOnDrop(daemon);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_log().matches("Run finished.").count() < 3 {
        assert!(Instant::now() < deadline, "three runs: {}", read_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(daemon);
    let log = read_log();
    let fallback = "the server does not offer content synchronisation";
    assert_eq!(log.matches(fallback).count(), 1, "said once: {log}");
    assert!(!log.contains("Run aborted."), "{log}");
    let full_reads = log.matches("reading the whole directory").count();
    assert!(full_reads >= 3, "every run read everything: {log}");
    let expected = PEOPLE_COUNT - 1;
    assert_eq!(world.gateway.count("POST", "/api/users"), expected);
    let active = world
        .held()
        .values()
        .filter(|held| held.1 == "invited")
        .count();
    assert_eq!(
        active, expected,
        "every run read everyone: nobody deactivated"
    );
}

/// A process stopped when the test ends, whichever way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn nested_groups_sync_once_and_leavers_are_deactivated(samba: &Samba) {
    let world = SyncWorld::start().await;
    let source = source(samba, false);
    let first = world.run(&source).await.expect("first run");
    assert!(
        first.directory_users > PAGE_SIZE,
        "the read went past the first page: {first:?}"
    );
    assert_eq!(first.directory_users, PEOPLE_COUNT, "not the workstation");
    assert_eq!(first.counts.created, PEOPLE_COUNT - 1, "{:?}", first.counts);
    let creates = world.gateway.count("POST", "/api/users");
    assert_eq!(
        creates,
        PEOPLE_COUNT - 1,
        "each person is created exactly once"
    );
    let held = world.held();
    assert!(
        !held.contains_key(&mail(DISABLED)),
        "the disabled account is not created"
    );
    for i in [0, 5, 6, 59, 60, 71, 72, NO_MAIL] {
        let (groups, status) = &held[&mail(i)];
        assert_eq!(groups, &COMPANY.expected_groups(i), "{}", login(i));
        assert_eq!(status, "invited");
    }
    subjects_are_guid_text(&world, samba).await;

    world.gateway.clear_requests();
    let again = world.run(&source).await.expect("second run");
    assert_eq!(
        again.counts.unchanged,
        PEOPLE_COUNT - 1,
        "{:?}",
        again.counts
    );
    assert_eq!(world.writes(), 0, "a second run writes nothing");

    // Disabled after creation, and deleted (AD moves it to Deleted Objects).
    let disable = format!(
        "dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n",
        user_dn(&name(8))
    );
    tokio::task::block_in_place(|| {
        samba.modify(&disable);
        samba.delete(&user_dn(&name(9)));
    });
    let third = world.run(&source).await.expect("third run");
    assert_eq!(third.counts.deactivated, 2, "{:?}", third.counts);
    let held = world.held();
    assert_eq!(held[&mail(8)].1, "inactive");
    assert_eq!(held[&mail(9)].1, "inactive");
    assert_eq!(held[&mail(10)].1, "invited", "others are untouched");
}

/// Each user's subject (what idsync's cache keys it by) is its objectGUID as
/// canonical GUID text, as Samba's own tools print it.
async fn subjects_are_guid_text(world: &SyncWorld, samba: &Samba) {
    let cache = Cache::open(&world.path("cache")).expect("cache");
    let records = cache.subjects_in_background(false).await.expect("records");
    for i in [0, 80] {
        let guid = samba.guid_text(&user_dn(&name(i)));
        assert_eq!(guid.len(), 36, "{guid}");
        let record = records.record(&Subject::new(guid)).expect("kept by GUID");
        assert_eq!(record.email.as_str(), mail(i));
    }
}
