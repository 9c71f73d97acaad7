//! A real LDAP directory for the directory sign-in tests: Debian's OpenLDAP `slapd`
//! (installed by `.ci/run`), started on free ports with a generated configuration, a test
//! certificate authority for LDAPS and StartTLS, the `memberof` overlay, and a small
//! directory (people, groups) written over LDAP. A person may read only their own entry
//! (the service account, the directory's administrator, reads all): a search made on a
//! connection still bound as one user finds no one else.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use ldap3::{LdapConnAsync, Mod};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The directory's suffix.
pub const BASE: &str = "dc=corp,dc=example";
/// Its administrator (the service account of the tests' search-then-bind).
pub const ADMIN_DN: &str = "cn=admin,dc=corp,dc=example";
/// The administrator's password.
pub const ADMIN_PASSWORD: &str = "admin-secret";

fn slapd_binary() -> Option<PathBuf> {
    [
        "/usr/sbin/slapd",
        "/usr/local/libexec/slapd",
        "/usr/libexec/slapd",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// A running slapd; stopped when dropped (its files with it).
pub struct Slapd {
    child: tokio::process::Child,
    bin: PathBuf,
    conf: PathBuf,
    plain: u16,
    /// `ldap://127.0.0.1:<port>` (plain; StartTLS offered).
    pub ldap_url: String,
    /// `ldaps://127.0.0.1:<port>`.
    pub ldaps_url: String,
    /// The test CA's certificate (PEM file).
    pub ca_file: PathBuf,
    /// Its directory.
    pub dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Slapd {
    /// Starts slapd, or `None` when it is not installed (the test records a skip) unless
    /// `STEPGATE_REQUIRE_SLAPD` or `CI` says it must be.
    pub async fn start() -> Option<Slapd> {
        let Some(bin) = slapd_binary() else {
            if std::env::var_os("STEPGATE_REQUIRE_SLAPD").is_some()
                || std::env::var_os("CI").is_some()
            {
                panic!("the directory tests need slapd: .ci/run installs it (apt-get install slapd ldap-utils)");
            }
            super::skipped::record("slapd (OpenLDAP)", "apt-get install slapd ldap-utils");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let ca_file = write_certificates(d);
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             pidfile {d}/slapd.pid\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             database mdb\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {d}/db\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to dn.subtree=\"ou=people,{BASE}\" by self read by anonymous auth by * none\n\
             access to * by * read\n\
             overlay memberof\n\
             database monitor\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let (plain, tls) = (super::oidc_op::free_port(), super::oidc_op::free_port());
        let ldap_url = format!("ldap://127.0.0.1:{plain}");
        let ldaps_url = format!("ldaps://127.0.0.1:{tls}");
        let conf = d.join("slapd.conf");
        let child = spawn(&bin, &conf, &ldap_url, &ldaps_url);
        let s = Slapd {
            child,
            bin,
            conf,
            plain,
            ldap_url,
            ldaps_url,
            ca_file,
            dir,
        };
        s.wait_ready(plain).await;
        s.populate().await;
        Some(s)
    }

    async fn wait_ready(&self, port: u16) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("slapd did not start");
    }

    /// How many bind operations the directory has completed (its `cn=Monitor`, read
    /// anonymously, which binds nothing).
    pub async fn binds(&self) -> u64 {
        self.monitor("cn=Bind,cn=Operations,cn=Monitor", "monitorOpCompleted")
            .await
    }

    /// A connection bound as the administrator.
    pub async fn admin(&self) -> ldap3::Ldap {
        let (conn, mut ldap) = LdapConnAsync::new(&self.ldap_url).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(ADMIN_DN, ADMIN_PASSWORD)
            .await
            .unwrap()
            .success()
            .unwrap();
        ldap
    }

    /// People (alice in admins and staff, bob in staff, carol in none; each password is
    /// `<name>-pw`) and groups.
    async fn populate(&self) {
        let mut ldap = self.admin().await;
        let add = |dn: String, attrs: Vec<(&'static str, Vec<String>)>| (dn, attrs);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut entries = vec![
            add(
                BASE.into(),
                vec![
                    ("objectClass", set(&["dcObject", "organization"])),
                    ("dc", set(&["corp"])),
                    ("o", set(&["Corp"])),
                ],
            ),
            add(
                format!("ou=people,{BASE}"),
                vec![
                    ("objectClass", set(&["organizationalUnit"])),
                    ("ou", set(&["people"])),
                ],
            ),
            add(
                format!("ou=groups,{BASE}"),
                vec![
                    ("objectClass", set(&["organizationalUnit"])),
                    ("ou", set(&["groups"])),
                ],
            ),
        ];
        for (uid, name, dept) in [
            ("alice", "Alice Directory", "finance"),
            ("bob", "Bob Directory", "sales"),
            ("carol", "Carol Directory", "ops"),
        ] {
            entries.push(add(
                format!("uid={uid},ou=people,{BASE}"),
                vec![
                    ("objectClass", set(&["inetOrgPerson"])),
                    ("uid", set(&[uid])),
                    ("cn", set(&[name])),
                    ("sn", set(&["Directory"])),
                    ("displayName", set(&[name])),
                    ("mail", vec![format!("{uid}@corp.example")]),
                    ("departmentNumber", set(&[dept])),
                    ("userPassword", vec![format!("{uid}-pw")]),
                ],
            ));
        }
        let person = |uid: &str| format!("uid={uid},ou=people,{BASE}");
        for (cn, members) in [
            ("admins", vec![person("alice")]),
            ("staff", vec![person("alice"), person("bob")]),
        ] {
            entries.push(add(
                format!("cn={cn},ou=groups,{BASE}"),
                vec![
                    ("objectClass", set(&["groupOfNames"])),
                    ("cn", vec![cn.to_string()]),
                    ("member", members),
                ],
            ));
        }
        for (dn, attrs) in entries {
            let attrs: Vec<(&str, std::collections::HashSet<&str>)> = attrs
                .iter()
                .map(|(k, v)| (*k, v.iter().map(String::as_str).collect()))
                .collect();
            ldap.add(&dn, attrs).await.unwrap().success().unwrap();
        }
        let _ = ldap.unbind().await;
    }

    /// Changes `uid`'s password.
    pub async fn set_password(&self, uid: &str, password: &str) {
        let mut ldap = self.admin().await;
        let dn = format!("uid={uid},ou=people,{BASE}");
        let values = std::collections::HashSet::from([password]);
        ldap.modify(&dn, vec![Mod::Replace("userPassword", values)])
            .await
            .unwrap()
            .success()
            .unwrap();
    }

    /// How many connections the directory has accepted since it started (its
    /// `cn=Monitor`; the connection reading it is one of them).
    pub async fn connections_opened(&self) -> u64 {
        self.monitor("cn=Total,cn=Connections,cn=Monitor", "monitorCounter")
            .await
    }

    /// How many connections are open to the directory now (the one reading it among them).
    pub async fn connections_open(&self) -> u64 {
        self.monitor("cn=Current,cn=Connections,cn=Monitor", "monitorCounter")
            .await
    }

    async fn monitor(&self, dn: &str, attr: &str) -> u64 {
        let (conn, mut ldap) = LdapConnAsync::new(&self.ldap_url).await.unwrap();
        ldap3::drive!(conn);
        let (entries, _) = ldap
            .search(dn, ldap3::Scope::Base, "(objectClass=*)", vec![attr])
            .await
            .unwrap()
            .success()
            .unwrap();
        let e = ldap3::SearchEntry::construct(entries.into_iter().next().unwrap());
        let n = e.attrs[attr][0].parse().unwrap();
        let _ = ldap.unbind().await;
        n
    }

    /// Stops the directory and starts it again on the same ports with the same data
    /// (every connection open to it is closed).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.child = spawn(&self.bin, &self.conf, &self.ldap_url, &self.ldaps_url);
        self.wait_ready(self.plain).await;
    }

    /// Stops the directory (it is down for what follows).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// slapd with `conf`, listening on the two URLs.
fn spawn(bin: &Path, conf: &Path, ldap_url: &str, ldaps_url: &str) -> tokio::process::Child {
    tokio::process::Command::new(bin)
        .arg("-f")
        .arg(conf)
        .arg("-h")
        .arg(format!("{ldap_url}/ {ldaps_url}/"))
        .arg("-d")
        .arg("0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("slapd runs")
}

/// A CA and a certificate for 127.0.0.1 signed by it, in `d`; the CA's file.
fn write_certificates(d: &Path) -> PathBuf {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "stepgate test directory CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(d.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(d.join("server.key"), key.serialize_pem()).unwrap();
    d.join("ca.pem")
}
