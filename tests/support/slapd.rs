//! A real OpenLDAP server (Debian's `slapd`) for the tests: started on loopback
//! from a temporary directory with the `memberof`, `refint` and `syncprov`
//! overlays (with a session log), TLS from a CA made for the run, and a size limit of 500 that
//! forces paged results, except for the `sync` account (no limit, as the README
//! says to give the account incremental reads use).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const SUFFIX: &str = "dc=example,dc=com";
pub const PEOPLE: &str = "ou=people,dc=example,dc=com";
pub const GROUPS: &str = "ou=groups,dc=example,dc=com";
/// Bound by the server's size limit of 500: must page.
pub const READER_DN: &str = "cn=reader,dc=example,dc=com";
pub const READER_PASSWORD: &str = "reader-secret";
/// No size limit: can read by content synchronisation.
pub const SYNC_DN: &str = "cn=sync,dc=example,dc=com";
pub const SYNC_PASSWORD: &str = "sync-secret";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const ADMIN_PASSWORD: &str = "admin-secret";

pub struct Slapd {
    dir: TempDir,
    pub port: u16,
    pub tls_port: u16,
    child: Option<Child>,
}

/// Two free ports, held at once while chosen so that they differ.
fn free_ports() -> (u16, u16) {
    let listen = || TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (first, second) = (listen(), listen());
    let port = |listener: &TcpListener| listener.local_addr().expect("address").port();
    (port(&first), port(&second))
}

/// Launches on fresh ports again when slapd exits before it serves: a port
/// chosen free can be taken by another test's server before slapd binds it.
const LAUNCH_ATTEMPTS: usize = 3;

/// Runs a command to its end; panics with its output when it fails.
pub fn run(command: &mut Command) {
    let output = command.output().expect("the command runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Slapd {
    /// Starts an empty directory with the base entries and the two accounts.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(dir.path());
        std::fs::create_dir(dir.path().join("db")).expect("db dir");
        std::fs::write(dir.path().join("slapd.conf"), config(dir.path())).expect("config");
        std::fs::write(dir.path().join("freeipa.schema"), FREEIPA_SCHEMA).expect("schema");
        let (port, tls_port) = free_ports();
        let mut slapd = Self {
            dir,
            port,
            tls_port,
            child: None,
        };
        let mut attempts = 1;
        while !slapd.launch() {
            assert!(
                attempts < LAUNCH_ATTEMPTS,
                "slapd did not start: {}",
                slapd.log()
            );
            attempts += 1;
            (slapd.port, slapd.tls_port) = free_ports();
        }
        slapd.add(&base_ldif());
        slapd
    }

    /// Starts slapd on its ports: true once both accept connections and slapd
    /// still runs; false if it exited first (`child` stays `None`).
    fn launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log");
        let listen = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.port, self.tls_port
        );
        // -d 256: stay in the foreground and log each operation's result (stats).
        let mut child = Command::new("/usr/sbin/slapd")
            .args(["-d", "256", "-h", &listen, "-f"])
            .arg(self.dir.path().join("slapd.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd starts (apt-get install slapd ldap-utils)");
        let accepts = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Checked after the connections: a slapd that could not bind its
            // second port exits, while another process may answer on it.
            let serving = accepts(self.port) && accepts(self.tls_port);
            if child.try_wait().expect("slapd's status").is_some() {
                return false;
            }
            if serving {
                self.child = Some(child);
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Adds the entries of `ldif` as the administrator.
    pub fn add(&self, ldif: &str) {
        self.ldap_tool("ldapadd", ldif);
    }

    /// Applies an LDIF of changes (`changetype: modify`, `delete`, …).
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ldif);
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        let path = self.dir.path().join("change.ldif");
        std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(ldif.as_bytes()))
            .expect("ldif");
        run(Command::new(tool)
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(&path)
            .stdout(Stdio::null()));
    }

    /// The member values of the group `dn`, read as the administrator.
    pub fn members(&self, dn: &str) -> Vec<String> {
        let output = Command::new("ldapsearch")
            .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &self.url()])
            .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-s", "base", "-b", dn])
            .arg("member")
            .output()
            .expect("ldapsearch runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("member: "))
            .map(str::to_owned)
            .collect()
    }

    pub fn delete(&self, dn: &str) {
        run(Command::new("ldapdelete").args([
            "-x",
            "-H",
            &self.url(),
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
            dn,
        ]));
    }

    /// Stops the server at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, to stop or continue it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// How many times `dn` bound, from the server's log (`BIND dn="…" mech=…`,
    /// a line a bind accepted).
    pub fn binds(&self, dn: &str) -> usize {
        let bind = format!(" BIND dn=\"{dn}\" mech=").to_ascii_lowercase();
        let log = self.log();
        log.lines()
            .filter(|line| line.to_ascii_lowercase().contains(&bind))
            .count()
    }

    /// The number of entries each search of `base` with `filter` returned, in
    /// order, from the server's log (`SRCH base="…" … filter="…"`, then `SEARCH
    /// RESULT … nentries=N`).
    pub fn entries_returned(&self, base: &str, filter: &str) -> Vec<usize> {
        let log = self.log();
        let mut searches: std::collections::HashMap<String, bool> = Default::default();
        let mut counts = Vec::new();
        for line in log.lines() {
            let Some(op) = operation(line) else { continue };
            if let Some(rest) = line.split(" SRCH base=\"").nth(1) {
                let searched = rest.split('"').next().unwrap_or_default();
                let filtered = line
                    .split(" filter=\"")
                    .nth(1)
                    .and_then(|f| f.strip_suffix('"'));
                searches.insert(
                    op,
                    searched.eq_ignore_ascii_case(base) && filtered == Some(filter),
                );
            } else if line.contains(" SEARCH RESULT ") && searches.remove(&op) == Some(true) {
                let entries = line
                    .split("nentries=")
                    .nth(1)
                    .and_then(|n| n.split(' ').next());
                counts.push(entries.and_then(|n| n.parse().ok()).unwrap_or(0));
            }
        }
        counts
    }
}

/// `conn=1000 op=2` of a stats log line.
fn operation(line: &str) -> Option<String> {
    let at = line.find("conn=")?;
    let mut words = line[at..].split(' ');
    Some(format!("{} {}", words.next()?, words.next()?))
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) in `dir`.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=idsync test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

fn config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include {dir}/freeipa.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload syncprov
moduleload refint
pidfile {dir}/slapd.pid
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key
sizelimit size.soft=500 size.hard=500 size.pr=500 size.prtotal=unlimited
database mdb
maxsize 1073741824
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {dir}/db
index objectClass eq
index entryCSN,entryUUID eq
limits dn.exact="{SYNC_DN}" size=unlimited
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
overlay memberof
overlay refint
refint_attributes member
overlay syncprov
syncprov-sessionlog 10000
"#
    )
}

/// The two FreeIPA attributes the `freeipa` preset reads, with FreeIPA's names,
/// OIDs and matching rules, and an auxiliary class (OpenLDAP's experimental OID
/// arc) that lets an inetOrgPerson carry them, as FreeIPA's user classes do.
const FREEIPA_SCHEMA: &str = "\
attributetype ( 2.16.840.1.113730.3.8.3.1 NAME 'ipaUniqueID' EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 2.16.840.1.113730.3.1.610 NAME 'nsAccountLock' EQUALITY caseIgnoreMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.4203.666.11.99.1 NAME 'idsyncTestIpaAccount' AUXILIARY
  MAY ( ipaUniqueID $ nsAccountLock ) )
";

fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: {READER_DN}\nobjectClass: person\ncn: reader\nsn: reader\nuserPassword: {READER_PASSWORD}\n\n\
         dn: {SYNC_DN}\nobjectClass: person\ncn: sync\nsn: sync\nuserPassword: {SYNC_PASSWORD}\n"
    )
}

/// One person's entry.
pub fn person_ldif(uid: &str, name: &str, mail: &str) -> String {
    format!(
        "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\nsn: {uid}\ndisplayName: {name}\nmail: {mail}\nemployeeType: staff\n\n"
    )
}

/// A groupOfNames whose members are the given DNs (users or groups).
pub fn group_ldif(cn: &str, members: &[String]) -> String {
    let mut ldif = format!("dn: cn={cn},{GROUPS}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for member in members {
        ldif.push_str(&format!("member: {member}\n"));
    }
    ldif.push('\n');
    ldif
}

pub fn user_dn(uid: &str) -> String {
    format!("uid={uid},{PEOPLE}")
}

pub fn group_dn(cn: &str) -> String {
    format!("cn={cn},{GROUPS}")
}
