//! `kind = "ldap"` against a real OpenLDAP server (tests/support/slapd.rs): 2,000
//! people in nested groups, paged full reads over ldaps, incremental reads by
//! content synchronisation over StartTLS, and the failures that must abort a run.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, Syncer};
use support::fake_gateway::{FakeGateway, GatewayOptions};
use support::ldap_company::Company;
use support::slapd::{self, group_dn, user_dn, Slapd, GROUPS, PEOPLE};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const PEOPLE_COUNT: usize = 2_000;
/// The preset's user filter, as the server logs it.
const USERS: &str = "(objectClass=inetOrgPerson)";

fn uid(i: usize) -> String {
    format!("u{i:04}")
}

fn mail(i: usize) -> String {
    format!("u{i:04}@example.com")
}

const COMPANY: Company = Company {
    people: PEOPLE_COUNT,
};

fn expected_groups(i: usize) -> Vec<String> {
    COMPANY.expected_groups(i)
}

/// The people and groups, groups after the groups nested in them, so that the
/// memberof overlay fills in every `memberOf`.
fn company_ldif() -> String {
    let mut ldif: String = (0..PEOPLE_COUNT)
        .map(|i| slapd::person_ldif(&uid(i), &format!("User {i}"), &mail(i)))
        .collect();
    for (cn, members) in COMPANY.groups(|i| user_dn(&uid(i)), group_dn) {
        ldif += &slapd::group_ldif(cn, &members);
    }
    ldif
}

#[derive(Clone, Copy)]
enum Access {
    /// Paged reads over ldaps, as the size-limited reader.
    PagedOverLdaps,
    /// Incremental reads over StartTLS, as the unlimited sync account.
    IncrementalOverStartTls,
    /// Incremental reads asked for, as the size-limited reader.
    IncrementalButLimited,
    /// FreeIPA's shape ([`ipa_ldif`]) read with the `freeipa` preset and
    /// `memberUid` groups, paged over ldaps.
    FreeIpaShaped,
}

struct World {
    slapd: Slapd,
    gateway: FakeGateway,
    dir: TempDir,
    access: Access,
}

impl World {
    async fn start(access: Access) -> Self {
        let ldif = match access {
            Access::FreeIpaShaped => ipa_ldif(),
            _ => company_ldif(),
        };
        let slapd = tokio::task::spawn_blocking(move || {
            let slapd = Slapd::start();
            slapd.add(&ldif);
            slapd
        })
        .await
        .expect("slapd");
        Self {
            slapd,
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            dir: tempfile::tempdir().expect("tempdir"),
            access,
        }
    }

    fn config_text(&self, page_size: usize, password: &str) -> String {
        let (url, start_tls, incremental, dn) = match self.access {
            Access::PagedOverLdaps | Access::FreeIpaShaped => {
                (self.slapd.ldaps_url(), false, false, slapd::READER_DN)
            }
            Access::IncrementalOverStartTls => (self.slapd.url(), true, true, slapd::SYNC_DN),
            Access::IncrementalButLimited => {
                (self.slapd.ldaps_url(), false, true, slapd::READER_DN)
            }
        };
        format!(
            r#"
[source]
kind = "ldap"
url = "{url}"
ca_file = "{ca}"
page_size = {page_size}
incremental = {incremental}
timeout_secs = 10
[source.ldap]
start_tls = {start_tls}
bind_dn = "{dn}"
bind_password = "{password}"
user_base = "{PEOPLE}"
group_base = "{GROUPS}"
{shape}
[target]
url = "{gateway}"
api_key = "{key}"
rate_limit_per_second = 5000
burst = 500
[cache]
path = "{cache}"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 10
"#,
            ca = self.slapd.ca_file().display(),
            shape = match self.access {
                Access::FreeIpaShaped =>
                    "preset = \"freeipa\"\nmember_attribute = \"memberUid\"\n\
                                          group_filter = \"(objectClass=posixGroup)\"",
                _ => "inactive_filter = \"(employeeType=disabled)\"",
            },
            gateway = self.gateway.url(),
            key = self.gateway.admin_key(),
            cache = self.dir.path().join("cache").display(),
        )
    }

    fn password(&self) -> &'static str {
        match self.access {
            Access::IncrementalOverStartTls => slapd::SYNC_PASSWORD,
            _ => slapd::READER_PASSWORD,
        }
    }

    /// A run as `--sync-now` makes it: a syncer of its own.
    async fn run(&self) -> Result<Summary, Aborted> {
        self.syncer().run_once(&CancellationToken::new()).await
    }

    /// A syncer, as a process builds it; a daemon makes each run with the same.
    fn syncer(&self) -> Syncer {
        let text = self.config_text(200, self.password());
        let config = Config::parse(&text, "test", &|_| None).expect("config");
        Syncer::new(&config, RunMode::default()).expect("syncer")
    }

    fn write_config(&self, page_size: usize, password: &str) -> PathBuf {
        let path = self.dir.path().join("idsync.toml");
        std::fs::write(&path, self.config_text(page_size, password)).expect("config");
        path
    }

    /// e-mail → (groups, status).
    fn held(&self) -> BTreeMap<String, (Vec<String>, String)> {
        self.gateway
            .users()
            .into_iter()
            .map(|user| {
                let mut groups = user.groups.clone();
                groups.sort();
                (user.email, (groups, user.status))
            })
            .collect()
    }

    fn writes(&self) -> usize {
        self.gateway
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }

    /// The files in the cache that hold a cursor's base.
    fn cursor_base_files(&self) -> Vec<String> {
        let cache = self.dir.path().join("cache");
        let mut names: Vec<String> = std::fs::read_dir(cache)
            .expect("cache directory")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("name")
            })
            .filter(|name| name.starts_with("cursor-base."))
            .collect();
        names.sort();
        names
    }

    /// Applies a modify LDIF off the async runtime's thread.
    async fn change(&self, ldif: String) {
        let slapd = &self.slapd;
        tokio::task::block_in_place(|| slapd.modify(&ldif));
    }

    /// Renames sales to sales-team, and waits for the server's refint overlay
    /// to rename it among all-staff's members: it does so in a thread of its
    /// own, after the rename is answered.
    async fn rename_sales(&self) {
        let rename = "dn: cn=sales,ou=groups,dc=example,dc=com\nchangetype: modrdn\nnewrdn: cn=sales-team\ndeleteoldrdn: 1\n";
        self.change(rename.into()).await;
        let renamed = slapd::group_dn("sales-team");
        for _ in 0..200 {
            let members =
                tokio::task::block_in_place(|| self.slapd.members(&slapd::group_dn("all-staff")));
            if members.iter().any(|m| m.eq_ignore_ascii_case(&renamed)) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("all-staff never named sales-team");
    }
}

fn assert_company(world: &World, first: &Summary) {
    assert_eq!(first.counts.created, PEOPLE_COUNT, "{:?}", first.counts);
    assert_eq!(first.directory_users, PEOPLE_COUNT);
    let held = world.held();
    assert_eq!(held.len(), PEOPLE_COUNT);
    for i in [0, 5, 150, 999, 1000, 1199, 1200, 1999] {
        let (groups, status) = &held[&mail(i)];
        assert_eq!(groups, &expected_groups(i), "u{i:04}");
        assert_eq!(status, "invited");
    }
    let creates = world.gateway.count("POST", "/api/users");
    assert_eq!(creates, PEOPLE_COUNT, "each person is created exactly once");
}

/// A joiner (in sre), a leaver, a rename, a disabled user, and a move from
/// platform to sales.
const CHANGES: &str = "dn: uid=u2000,ou=people,dc=example,dc=com
changetype: add
objectClass: inetOrgPerson
uid: u2000
cn: Joiner
sn: u2000
displayName: Joiner
mail: u2000@example.com

dn: cn=sre,ou=groups,dc=example,dc=com
changetype: modify
add: member
member: uid=u2000,ou=people,dc=example,dc=com

dn: uid=u0005,ou=people,dc=example,dc=com
changetype: delete

dn: uid=u0006,ou=people,dc=example,dc=com
changetype: modify
replace: displayName
displayName: Renamed Six

dn: uid=u0007,ou=people,dc=example,dc=com
changetype: modify
replace: employeeType
employeeType: disabled

dn: cn=platform,ou=groups,dc=example,dc=com
changetype: modify
delete: member
member: uid=u0150,ou=people,dc=example,dc=com

dn: cn=sales,ou=groups,dc=example,dc=com
changetype: modify
add: member
member: uid=u0150,ou=people,dc=example,dc=com
";

fn assert_converged(world: &World, run: &Summary) {
    let c = &run.counts;
    assert_eq!((c.created, c.deactivated), (1, 2), "{c:?}");
    let held = world.held();
    let status = |i: usize| held[&mail(i)].1.clone();
    assert_eq!(
        held["u2000@example.com"].0,
        ["all-staff", "engineering", "sre"]
    );
    assert_eq!(
        (status(5), status(7)),
        ("inactive".into(), "inactive".into())
    );
    assert_eq!(held[&mail(150)].0, ["all-staff", "oncall", "sales"]);
    let six = world.gateway.user_by_email(&mail(6)).expect("u0006");
    assert_eq!(six.name, "Renamed Six");
    assert_eq!(status(8), "invited", "others are untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_full_reads_sync_2000_people_once_and_converge_on_changes() {
    let world = World::start(Access::PagedOverLdaps).await;
    let first = world.run().await.expect("first run");
    assert_company(&world, &first);
    let pages = world.slapd.entries_returned(PEOPLE, USERS);
    assert!(
        pages.iter().all(|&n| n <= 200) && pages.iter().sum::<usize>() == PEOPLE_COUNT,
        "the users came in pages of at most 200: {pages:?}"
    );

    world.gateway.clear_requests();
    let again = world.run().await.expect("second run");
    assert_eq!(again.counts.unchanged, PEOPLE_COUNT);
    assert_eq!(world.writes(), 0, "a second run writes nothing");

    world.change(CHANGES.into()).await;
    let third = world.run().await.expect("third run");
    assert_converged(&world, &third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_reads_ask_only_for_the_changes_and_converge() {
    let world = World::start(Access::IncrementalOverStartTls).await;
    let first = world.run().await.expect("first run");
    assert_company(&world, &first);
    let refreshes = |world: &World| world.slapd.entries_returned(PEOPLE, USERS);
    assert_eq!(
        refreshes(&world),
        [PEOPLE_COUNT],
        "one refresh read every user"
    );
    let first_base = world.cursor_base_files();
    assert_eq!(first_base.len(), 1, "the group listing: {first_base:?}");

    world.gateway.clear_requests();
    world.run().await.expect("second run");
    assert_eq!(world.writes(), 0, "a second run writes nothing");
    assert_eq!(refreshes(&world).last(), Some(&0), "and reads no user");

    world.change(CHANGES.into()).await;
    let third = world.run().await.expect("third run");
    assert_converged(&world, &third);
    // The refresh sent the joiner, the renamed and the disabled user; the leaver
    // came as a deleted entryUUID. The moved user's entry did not change: the
    // groups' refresh told, and it alone was read again.
    assert_eq!(
        refreshes(&world).last(),
        Some(&3),
        "{:?}",
        refreshes(&world)
    );
    assert_eq!(third.directory_users, 4);

    // A renamed group changes users' groups without changing their entries: a full read.
    world.rename_sales().await;
    let fourth = world.run().await.expect("fourth run");
    assert_eq!(fourth.counts.updated, 801, "{:?}", fourth.counts);
    assert_eq!(refreshes(&world).last(), Some(&PEOPLE_COUNT));
    assert_eq!(world.held()[&mail(1501)].0, ["all-staff", "sales-team"]);
    let fourth_base = world.cursor_base_files();
    assert_eq!(fourth_base.len(), 1, "{fourth_base:?}");
    assert_ne!(
        fourth_base, first_base,
        "the full read's listing replaced the first"
    );
}

/// A daemon makes every run with one syncer, which keeps the records' summaries
/// in memory between runs; its change reads converge, and a process started
/// later continues from the cursor it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_reading_changes_converges_and_a_later_process_continues_from_it() {
    let world = World::start(Access::IncrementalOverStartTls).await;
    let refreshes = |world: &World| world.slapd.entries_returned(PEOPLE, USERS);
    let binds = |world: &World| world.slapd.binds(slapd::SYNC_DN);
    let daemon = world.syncer();
    let stop = CancellationToken::new();
    let first = daemon.run_once(&stop).await.expect("first run");
    assert_company(&world, &first);
    assert_eq!(binds(&world), 1, "a full read binds once");
    world.gateway.clear_requests();
    daemon.run_once(&stop).await.expect("second run");
    assert_eq!(world.writes(), 0, "a second run writes nothing");
    assert_eq!(refreshes(&world).last(), Some(&0), "and reads no user");
    assert_eq!(
        binds(&world),
        2,
        "its users' refresh, on a second connection"
    );

    world.change(CHANGES.into()).await;
    let third = daemon.run_once(&stop).await.expect("third run");
    assert_converged(&world, &third);
    assert_eq!(third.directory_users, 4, "the changes only");
    world.gateway.clear_requests();
    daemon.run_once(&stop).await.expect("fourth run");
    assert_eq!(world.writes(), 0, "the moved user's groups were kept");
    assert_eq!(
        binds(&world),
        2,
        "the two connections were kept between runs"
    );

    world.rename_sales().await;
    let fifth = daemon.run_once(&stop).await.expect("fifth run");
    assert_eq!(fifth.counts.updated, 801, "{:?}", fifth.counts);
    assert_eq!(world.held()[&mail(1501)].0, ["all-staff", "sales-team"]);
    // The summaries stayed in memory: the file is still the one the first run's
    // walk of the empty store wrote, until the daemon's cache closes.
    let summaries = world.dir.path().join("cache").join("summaries.bin");
    let size = || std::fs::metadata(&summaries).expect("summaries file").len();
    assert!(size() < 100, "no record in the file yet: {} bytes", size());
    drop(daemon);
    assert!(
        size() > 2_000 * 10,
        "every record at close: {} bytes",
        size()
    );

    world.gateway.clear_requests();
    world.run().await.expect("a later process's run");
    assert_eq!(world.writes(), 0);
    assert_eq!(
        refreshes(&world).last(),
        Some(&0),
        "it read the changes since the daemon's last run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_cut_short_by_a_size_limit_falls_back_to_paged_reads() {
    let world = World::start(Access::IncrementalButLimited).await;
    let first = world.run().await.expect("first run");
    assert_company(&world, &first);
    let searches = world.slapd.entries_returned(PEOPLE, USERS);
    assert_eq!(
        searches[0], 500,
        "the refresh stopped at the size limit: {searches:?}"
    );
    assert_eq!(
        searches[1..].iter().sum::<usize>(),
        PEOPLE_COUNT,
        "then pages"
    );

    world.gateway.clear_requests();
    world.run().await.expect("second run");
    assert_eq!(world.writes(), 0);
    world.change(CHANGES.into()).await;
    let third = world.run().await.expect("third run");
    assert_converged(&world, &third);
}

fn idsync(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("idsync runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_mid_read_is_exit_3_and_deactivates_nobody() {
    let mut world = World::start(Access::PagedOverLdaps).await;
    world.run().await.expect("first run");
    world.gateway.clear_requests();
    // Pages of 2: the read takes 1,000 round trips, long enough to be cut.
    let config = world.write_config(2, slapd::READER_PASSWORD);
    let before = world.slapd.entries_returned(PEOPLE, USERS).len();
    let running = tokio::task::spawn_blocking(move || idsync(&["--sync-now"], &config));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while world.slapd.entries_returned(PEOPLE, USERS).len() < before + 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    world.slapd.kill();
    let done = running.await.expect("task");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("LDAP directory"), "{stderr}");
    assert_eq!(world.writes(), 0, "nothing written, nobody deactivated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_bind_password_is_exit_3_naming_the_dn_and_check_config_connect_reads_each_base() {
    let world = World::start(Access::PagedOverLdaps).await;
    let config = world.write_config(200, "not-the-password");
    let done = tokio::task::spawn_blocking(move || idsync(&["--sync-now"], &config))
        .await
        .expect("task");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(slapd::READER_DN),
        "names the bind DN: {stderr}"
    );
    assert!(
        !stderr.contains("not-the-password"),
        "never the password: {stderr}"
    );
    assert_eq!(world.writes(), 0);

    let config = world.write_config(200, slapd::READER_PASSWORD);
    let checked =
        tokio::task::spawn_blocking(move || idsync(&["check-config", "--connect"], &config))
            .await
            .expect("task");
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("bound as {}", slapd::READER_DN)),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{PEOPLE}: readable")), "{stdout}");
    assert!(stdout.contains(&format!("{GROUPS}: readable")), "{stdout}");
}

/// FreeIPA's subject: its `ipaUniqueID`, UUID text.
fn ipa_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-{i:012x}")
}

/// Twelve people as FreeIPA keeps them (an `ipaUniqueID` each; u0003 locked by
/// `nsAccountLock`) in posixGroups listing members by `memberUid`, one of which
/// names a login nobody has.
fn ipa_ldif() -> String {
    let mut ldif = String::new();
    for i in 0..12 {
        let person = slapd::person_ldif(&uid(i), &format!("User {i}"), &mail(i));
        let lock = if i == 3 { "nsAccountLock: TRUE\n" } else { "" };
        ldif += &person.replacen(
            "\n\n",
            &format!(
                "\nobjectClass: idsyncTestIpaAccount\nipaUniqueID: {}\n{lock}\n",
                ipa_id(i)
            ),
            1,
        );
    }
    for (cn, gid, members) in [
        ("admins", 1000, &["u0000", "u0001"][..]),
        ("devs", 1001, &["u0001", "u0002", "u0003", "u0004"]),
        ("ops", 1002, &["u0010", "nobody"]),
    ] {
        ldif +=
            &format!("dn: cn={cn},{GROUPS}\nobjectClass: posixGroup\ncn: {cn}\ngidNumber: {gid}\n");
        ldif.extend(members.iter().map(|m| format!("memberUid: {m}\n")));
        ldif.push('\n');
    }
    ldif
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freeipa_preset_keys_by_ipa_unique_id_locks_by_ns_account_lock_and_reads_member_uid() {
    let world = World::start(Access::FreeIpaShaped).await;
    let first = world.run().await.expect("first run");
    assert_eq!(
        first.counts.created, 11,
        "all but the locked u0003: {:?}",
        first.counts
    );
    let held = world.held();
    assert!(
        !held.contains_key(&mail(3)),
        "a locked account is not created"
    );
    let groups = |i: usize| held[&mail(i)].0.clone();
    assert_eq!(groups(0), ["admins"]);
    assert_eq!(groups(1), ["admins", "devs"]);
    assert_eq!(groups(10), ["ops"]);
    assert!(groups(11).is_empty());
    let cache = idsync::cache::Cache::open(&world.dir.path().join("cache")).expect("cache");
    let records = cache.subjects_in_background(false).await.expect("records");
    for i in [0, 11] {
        let subject = idsync::model::Subject::new(ipa_id(i));
        let record = records.record(&subject).expect("kept by ipaUniqueID");
        assert_eq!(record.email.as_str(), mail(i));
    }
    drop((records, cache));

    world
        .change(format!(
            "dn: {}\nchangetype: modify\nadd: nsAccountLock\nnsAccountLock: TRUE\n\n\
             dn: cn=devs,{GROUPS}\nchangetype: modify\ndelete: memberUid\nmemberUid: u0001\n\n\
             dn: cn=ops,{GROUPS}\nchangetype: modify\nadd: memberUid\nmemberUid: u0006\n",
            user_dn(&uid(2))
        ))
        .await;
    let second = world.run().await.expect("second run");
    assert_eq!(
        (second.counts.deactivated, second.counts.created),
        (1, 0),
        "{:?}",
        second.counts
    );
    let held = world.held();
    assert_eq!(held[&mail(2)].1, "inactive", "locked since the last run");
    assert_eq!(held[&mail(1)].0, ["admins"]);
    assert_eq!(held[&mail(6)].0, ["ops"]);
    assert_eq!(
        held[&mail(4)],
        (vec!["devs".to_owned()], "invited".to_owned())
    );
}
