//! A real Active Directory for the tests: Samba's AD domain controller (Debian
//! `samba-ad-dc`), provisioned into a temporary directory and started on loopback
//! with only its LDAP service, TLS from a CA made for the run (as for slapd).
//!
//! Samba's LDAP ports are fixed (389 and 636), so one instance runs at a time on a
//! machine: the tests that use it live in one test binary and share one server.
//! People and groups are loaded offline with `ldbadd` before the server starts
//! (a few hundred milliseconds, where `ldapadd` costs ~30 ms an entry).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tempfile::TempDir;

use super::slapd::{make_certificates, run};

pub const BASE: &str = "DC=example,DC=test";
pub const PEOPLE: &str = "OU=People,DC=example,DC=test";
pub const GROUPS: &str = "OU=Groups,DC=example,DC=test";
/// An ordinary domain user: what AD lets any authenticated account read is enough.
pub const READER_DN: &str = "CN=idsync,CN=Users,DC=example,DC=test";
pub const READER_PASSWORD: &str = "Reader-secret-1";
const ADMIN_DN: &str = "CN=Administrator,CN=Users,DC=example,DC=test";
/// Samba's default password policy wants three character classes.
const ADMIN_PASSWORD: &str = "Admin-secret-1";
const URL: &str = "ldaps://127.0.0.1";

pub struct Samba {
    dir: TempDir,
    child: Option<Child>,
    /// How long provisioning, loading `ldif` and the start took.
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub provision: Duration,
    pub load: Duration,
    pub start: Duration,
}

impl Samba {
    /// A new domain holding the people and groups OUs, the reader account and
    /// the entries of `ldif`, answering on ldaps://127.0.0.1.
    pub fn start(ldif: &str) -> Self {
        ports_are_free();
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(dir.path());
        // Samba refuses a key others can read.
        let key = dir.path().join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let clock = Instant::now();
        provision(dir.path());
        let provision = clock.elapsed();
        let clock = Instant::now();
        let mut samba = Self {
            dir,
            child: None,
            timings: Timings {
                provision,
                load: Duration::ZERO,
                start: Duration::ZERO,
            },
        };
        samba.load(&format!("{}{ldif}", base_ldif()));
        samba.timings.load = clock.elapsed();
        let clock = Instant::now();
        samba.launch();
        samba.timings.start = clock.elapsed();
        samba
    }

    fn domain(&self) -> PathBuf {
        self.dir.path().join("domain")
    }

    /// Adds entries straight to the directory's database (the server is not running).
    fn load(&self, ldif: &str) {
        let path = self.write_ldif(ldif);
        let sam = self.domain().join("private/sam.ldb");
        run(Command::new("ldbadd")
            .arg("-H")
            .arg(sam)
            .arg(path)
            .stdout(Stdio::null()));
    }

    fn write_ldif(&self, ldif: &str) -> PathBuf {
        let path = self.dir.path().join("change.ldif");
        std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(ldif.as_bytes()))
            .expect("ldif");
        path
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("log");
        // -M single: one process to kill, no prefork workers.
        let child = Command::new("/usr/sbin/samba")
            .args(["-i", "-M", "single", "-s"])
            .arg(self.domain().join("etc/smb.conf"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("samba starts (apt-get install samba-ad-dc samba-ad-provision ldb-tools)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "samba exited ({exited:?}): {}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "samba did not answer: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a search of the root DSE over ldaps succeeds.
    fn answers(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", 636)).is_ok()
            && self
                .ldap_tool("ldapsearch")
                .args(["-b", "", "-s", "base", "namingContexts"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
    }

    pub fn url(&self) -> &'static str {
        URL
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("samba.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// An OpenLDAP client tool bound as the domain's administrator over ldaps.
    fn ldap_tool(&self, tool: &str) -> Command {
        let mut command = Command::new(tool);
        command.env("LDAPTLS_CACERT", self.ca_file()).args([
            "-x",
            "-H",
            URL,
            "-D",
            ADMIN_DN,
            "-w",
            ADMIN_PASSWORD,
        ]);
        command
    }

    /// Applies an LDIF of changes over LDAP, as an administrator would.
    pub fn modify(&self, ldif: &str) {
        let path = self.write_ldif(ldif);
        run(self
            .ldap_tool("ldapmodify")
            .arg("-f")
            .arg(path)
            .stdout(Stdio::null()));
    }

    /// Runs `ldapsearch` as the administrator with `args`; its output as LDIF.
    pub fn search(&self, args: &[&str]) -> String {
        let output = self
            .ldap_tool("ldapsearch")
            .args(args)
            .output()
            .expect("ldapsearch runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The entry's objectGUID as Samba's `ldbsearch` prints it (GUID text), read
    /// from the database beside the running server.
    pub fn guid_text(&self, dn: &str) -> String {
        let sam = self.domain().join("private/sam.ldb");
        let output = Command::new("ldbsearch")
            .arg("-H")
            .arg(sam)
            .args(["-b", dn, "-s", "base", "objectGUID"])
            .output()
            .expect("ldbsearch runs");
        let text = String::from_utf8_lossy(&output.stdout);
        let guid = text
            .lines()
            .find_map(|line| line.strip_prefix("objectGUID: "));
        guid.unwrap_or_else(|| panic!("no objectGUID for {dn}: {text}"))
            .to_owned()
    }

    pub fn delete(&self, dn: &str) {
        run(self.ldap_tool("ldapdelete").arg(dn));
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Samba's LDAP ports are fixed; say so plainly when something holds them.
fn ports_are_free() {
    for port in [389, 636] {
        if let Err(err) = TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "port {port} on 127.0.0.1 is not free ({err}): the Active Directory tests start \
                 Samba, whose LDAP ports are fixed at 389 and 636 — stop the server holding it \
                 (a system slapd or samba, or a Samba left over from an interrupted test run) \
                 and run them as root"
            );
        }
    }
}

/// A new domain EXAMPLE.TEST in `dir/domain`, serving LDAP alone on loopback.
fn provision(dir: &Path) {
    let domain = dir.join("domain");
    let path = |name: &str| dir.join(name).display().to_string();
    let options = [
        "interfaces=lo".to_owned(),
        "bind interfaces only=yes".to_owned(),
        "server services=ldap".to_owned(),
        // Everything it writes in the temporary directory: /run/samba may not exist
        // where the package's services never ran.
        format!("pid directory={}", path("domain")),
        format!("ncalrpc dir={}", path("domain/ncalrpc")),
        format!("winbindd socket directory={}", path("domain/winbindd")),
        format!("tls keyfile={}", path("server.key")),
        format!("tls certfile={}", path("server.pem")),
        format!("tls cafile={}", path("ca.pem")),
    ];
    let mut command = Command::new("samba-tool");
    command
        .args(["domain", "provision", "--use-rfc2307", "--dns-backend=NONE"])
        .args(["--realm=EXAMPLE.TEST", "--domain=EXAMPLE"])
        .arg(format!("--adminpass={ADMIN_PASSWORD}"))
        .arg(format!("--targetdir={}", domain.display()));
    for option in options {
        command.arg(format!("--option={option}"));
    }
    run(command.stdout(Stdio::null()));
}

fn base_ldif() -> String {
    // unicodePwd: the password in double quotes, UTF-16LE, base64 in LDIF.
    let quoted: Vec<u8> = format!("\"{READER_PASSWORD}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    format!(
        "dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: People\n\n\
         dn: {GROUPS}\nobjectClass: organizationalUnit\nou: Groups\n\n\
         dn: {READER_DN}\nobjectClass: user\nsAMAccountName: idsync\nuserAccountControl: 512\n\
         unicodePwd:: {}\n\n",
        STANDARD.encode(quoted)
    )
}

/// A user of the people OU: `userAccountControl` 512 (a normal account) or 514
/// (the same, disabled); `mail` when given (else AD's login, the UPN, stands in).
pub fn user_ldif(login: &str, name: &str, mail: Option<&str>, disabled: bool) -> String {
    let control = if disabled { 514 } else { 512 };
    let mut ldif = format!(
        "dn: {}\nobjectClass: user\nsAMAccountName: {login}\nuserPrincipalName: {login}@example.test\n\
         displayName: {name}\nuserAccountControl: {control}\n",
        user_dn(name)
    );
    if let Some(mail) = mail {
        ldif.push_str(&format!("mail: {mail}\n"));
    }
    ldif.push('\n');
    ldif
}

/// A security group of the groups OU whose members are the given DNs.
pub fn group_ldif(cn: &str, members: &[String]) -> String {
    let mut ldif = format!(
        "dn: {}\nobjectClass: group\nsAMAccountName: {cn}\n",
        group_dn(cn)
    );
    for member in members {
        ldif.push_str(&format!("member: {member}\n"));
    }
    ldif.push('\n');
    ldif
}

/// A workstation's account: objectClass user too, but not a person.
pub fn computer_ldif(name: &str) -> String {
    format!(
        "dn: CN={name},{PEOPLE}\nobjectClass: computer\nsAMAccountName: {name}$\nuserAccountControl: 4096\n\n"
    )
}

pub fn user_dn(name: &str) -> String {
    format!("CN={name},{PEOPLE}")
}

pub fn group_dn(cn: &str) -> String {
    format!("CN={cn},{GROUPS}")
}
