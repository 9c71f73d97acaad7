//! An LDAP directory or Active Directory as a password source (`ldap:`): the login form's
//! password is checked by binding to the directory as the user — after finding them with a
//! service account (search, then bind), or directly with a DN template or UPN. Over LDAPS
//! or StartTLS, trusting only the configured authorities when `ca_file` is set; on at most
//! `pool_size` connections kept between sign-ins ([`super::ldap_pool`]).
//!
//! The username never changes a filter or a DN: it is escaped (RFC 4515 for filters,
//! RFC 4514 for DNs), and one with control characters is refused outright. An empty
//! password is refused before the directory is asked (an LDAP bind with an empty password
//! is an anonymous bind, which "succeeds"). A directory that cannot be reached, or answers
//! with anything but success or "invalid credentials", fails closed: [`DirectoryError::Unavailable`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ldap3::{dn_escape, ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use stepgate_config::identity::LdapConfig;
use stepgate_store::AttributeValue;

use super::ldap_pool::{Bound, Conn, Pool};
use super::{resolve, UpstreamIdentity};

/// LDAP result code 49: invalid credentials.
const INVALID_CREDENTIALS: u32 = 49;
/// Longest username sent to the directory.
const MAX_USERNAME: usize = 256;

/// Why the directory did not vouch for a user.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Wrong password, unknown user, or a username that cannot be one: never told apart.
    #[error("the directory did not accept the credentials")]
    InvalidCredentials,
    /// The directory could not be asked (down, TLS failure, timeout, service account
    /// refused, an unexpected answer): the sign-in is refused.
    #[error("the directory is unavailable: {0}")]
    Unavailable(String),
}

/// A configured directory: its settings, TLS configuration and pool of connections.
pub struct Directory {
    cfg: LdapConfig,
    base_dir: std::path::PathBuf,
    tls: Option<Arc<rustls::ClientConfig>>,
    pool: Pool,
    user_binds: std::sync::atomic::AtomicU64,
}

/// Why one attempt on a connection did not give an identity.
enum Failed {
    /// The directory's answer, on a connection still fit to keep (wrong password, no such
    /// user).
    Answer(DirectoryError),
    /// The connection failed (closed, reset, timed out) or answered something unexpected:
    /// it is dropped. `transport`: it was closed under us — on a kept connection, worth
    /// one more try on a new one.
    Broken { detail: String, transport: bool },
}

impl Directory {
    /// Reads the CA file (relative paths against `base_dir`); the service account's
    /// password is read at each bind as the service account (a rotated file counts).
    pub fn new(cfg: &LdapConfig, base_dir: &Path) -> Result<Self, String> {
        let path = cfg.ca_file.as_deref().map(|f| resolve(base_dir, f));
        let tls = match path {
            Some(path) => {
                use rustls_pki_types::pem::PemObject as _;
                let mut roots = rustls::RootCertStore::empty();
                let certs = rustls_pki_types::CertificateDer::pem_file_iter(&path)
                    .map_err(|e| format!("ldap.ca_file {}: {e}", path.display()))?;
                for c in certs {
                    let c = c.map_err(|e| format!("ldap.ca_file {}: {e}", path.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("ldap.ca_file {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "ldap.ca_file {} holds no certificate",
                        path.display()
                    ));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("ldap TLS: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(config))
            }
            None => None,
        };
        Ok(Directory {
            cfg: cfg.clone(),
            base_dir: base_dir.to_path_buf(),
            tls,
            pool: Pool::new(cfg.pool_size),
            user_binds: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &LdapConfig {
        &self.cfg
    }

    /// How many binds with a user's password this directory has attempted (one per
    /// [`Directory::authenticate`] that got as far as the directory, whether the user
    /// exists or not).
    pub fn user_binds(&self) -> u64 {
        self.user_binds.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_user_bind(&self) {
        self.user_binds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The service account's password, read now.
    fn service_password(&self) -> Result<String, String> {
        match &self.cfg.bind_password {
            None => Ok(String::new()),
            Some(source) => super::read_secret(source, &self.base_dir, "ldap.bind_password"),
        }
    }

    /// An entry under `user_base` that no directory holds, for an unknown user's bind.
    fn dummy_dn(&self) -> String {
        let base = self.cfg.user_base.as_deref().unwrap_or_default();
        let rdn = format!(
            "cn=stepgate-no-such-user-{}",
            crate::app::signer::random_id()
        );
        if base.is_empty() {
            rdn
        } else {
            format!("{rdn},{base}")
        }
    }

    /// A new connection to the directory (TLS as configured), bound as no one.
    async fn connect(&self) -> Result<Conn, DirectoryError> {
        let cfg = &self.cfg;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(cfg.timeout.0)
            .set_starttls(cfg.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, cfg.url.as_str())
            .await
            .map_err(|e| {
                DirectoryError::Unavailable(format!("connecting ({}): {e}", cfg.url.as_str()))
            })?;
        ldap3::drive!(conn);
        Ok(Conn {
            ldap,
            bound: Bound::NotService,
        })
    }

    /// Checks `password` for `username` by binding as them; who they are in the directory.
    /// On one of the pool's connections (waiting at most `timeout` for one): a kept one the
    /// directory closed meanwhile is replaced by a new one, once.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &str,
    ) -> Result<UpstreamIdentity, DirectoryError> {
        if password.is_empty()
            || username.is_empty()
            || username.len() > MAX_USERNAME
            || username.chars().any(char::is_control)
        {
            return Err(DirectoryError::InvalidCredentials);
        }
        let Some(_slot) = self.pool.slot(self.cfg.timeout.0).await else {
            return Err(DirectoryError::Unavailable(format!(
                "all {} connections to the directory ({}) stayed busy for {:?}",
                self.pool.size(),
                self.cfg.url.as_str(),
                self.cfg.timeout.0
            )));
        };
        let (mut conn, kept) = match self.pool.idle() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let mut result = self.attempt(&mut conn, username, password).await;
        if kept
            && matches!(
                result,
                Err(Failed::Broken {
                    transport: true,
                    ..
                })
            )
        {
            self.pool.clear();
            conn = self.connect().await?;
            result = self.attempt(&mut conn, username, password).await;
        }
        match result {
            Ok(who) => {
                self.pool.put(conn);
                Ok(who)
            }
            Err(Failed::Answer(e)) => {
                self.pool.put(conn);
                Err(e)
            }
            Err(Failed::Broken { detail, .. }) => Err(DirectoryError::Unavailable(detail)),
        }
    }

    /// One sign-in on `conn`: the user found (as the service account), their password
    /// bound, their entry read.
    async fn attempt(
        &self,
        conn: &mut Conn,
        username: &str,
        password: &str,
    ) -> Result<UpstreamIdentity, Failed> {
        let dn = match &self.cfg.dn_template {
            Some(t) => t.replace("{username}", &dn_escape(username)),
            None => match self.find_user(conn, username).await? {
                Some(dn) => dn,
                None => return Err(self.bind_as_no_one(conn, password).await),
            },
        };
        self.bind_as_user(conn, &dn, password).await?;
        self.describe(&mut conn.ldap, &dn, username).await
    }

    /// Binds `conn` as the service account, unless it is bound so already.
    async fn bind_as_service(&self, conn: &mut Conn) -> Result<(), Failed> {
        if conn.bound == Bound::Service {
            return Ok(());
        }
        let service = self.cfg.bind_dn.as_deref().unwrap_or_default();
        let pw = self.service_password().map_err(|detail| Failed::Broken {
            detail,
            transport: false,
        })?;
        conn.ldap
            .with_timeout(self.cfg.timeout.0)
            .simple_bind(service, &pw)
            .await
            .and_then(|r| r.success())
            .map_err(|e| broken(&self.cfg, "binding as the service account", e))?;
        conn.bound = Bound::Service;
        Ok(())
    }

    /// The DN of the one entry the user filter finds for `username` (as the service
    /// account); none when it finds none, or several (an ambiguous filter).
    async fn find_user(&self, conn: &mut Conn, username: &str) -> Result<Option<String>, Failed> {
        self.bind_as_service(conn).await?;
        let cfg = &self.cfg;
        let filter = format!(
            "(&{}({}={}))",
            cfg.user_filter,
            cfg.username_attribute,
            ldap_escape(username)
        );
        let base = cfg.user_base.as_deref().unwrap_or_default();
        let (entries, _) = conn
            .ldap
            .with_timeout(cfg.timeout.0)
            .search(base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| broken(cfg, "searching for the user", e))?;
        if entries.len() != 1 {
            return Ok(None);
        }
        Ok(entries
            .into_iter()
            .next()
            .map(|e| SearchEntry::construct(e).dn))
    }

    /// No one to bind as: the password is still tried, against an entry that does not
    /// exist, so an unknown name costs the directory round trip a wrong password does (no
    /// username probing by timing); whatever that bind answers, the answer is "invalid
    /// credentials".
    async fn bind_as_no_one(&self, conn: &mut Conn, password: &str) -> Failed {
        let dummy = self.dummy_dn();
        self.count_user_bind();
        conn.bound = Bound::NotService;
        let bound = conn
            .ldap
            .with_timeout(self.cfg.timeout.0)
            .simple_bind(&dummy, password)
            .await;
        match bound {
            Ok(_) => Failed::Answer(DirectoryError::InvalidCredentials),
            Err(e) => broken(&self.cfg, "binding as the user", e),
        }
    }

    /// Binds `conn` as the user `dn` with `password`.
    async fn bind_as_user(&self, conn: &mut Conn, dn: &str, password: &str) -> Result<(), Failed> {
        self.count_user_bind();
        // From here on the connection is no longer the service account's, whatever the
        // bind answers: the next sign-in binds it as the service account again.
        conn.bound = Bound::NotService;
        let bound = conn
            .ldap
            .with_timeout(self.cfg.timeout.0)
            .simple_bind(dn, password)
            .await;
        match bound {
            Ok(r) if r.rc == 0 => Ok(()),
            Ok(r) if r.rc == INVALID_CREDENTIALS => {
                Err(Failed::Answer(DirectoryError::InvalidCredentials))
            }
            Ok(r) => Err(Failed::Broken {
                detail: format!("binding as the user: result code {} {}", r.rc, r.text),
                transport: false,
            }),
            Err(e) => Err(broken(&self.cfg, "binding as the user", e)),
        }
    }

    /// The user's entry (as the user, who may read it) and groups.
    async fn describe(
        &self,
        ldap: &mut ldap3::Ldap,
        dn: &str,
        username: &str,
    ) -> Result<UpstreamIdentity, Failed> {
        let cfg = &self.cfg;
        let entry = self.read_entry(ldap, dn).await?;
        let first = |a: &str| values(&entry, a).and_then(|v| v.first().cloned());
        let group_dns = match &cfg.group_base {
            Some(base) => self.group_dns(ldap, base, dn).await?,
            None => values(&entry, &cfg.groups_attribute)
                .cloned()
                .unwrap_or_default(),
        };
        let groups = super::claims::prefixed_groups(
            group_dns.iter().filter_map(|g| group_name(g)),
            &cfg.groups_prefix,
        );
        let mut attributes = BTreeMap::new();
        for (name, attr) in &cfg.attributes {
            if let Some(v) = values(&entry, attr) {
                attributes.insert(name.clone(), attribute_value(v));
            }
        }
        // A stable subject: the entry's UUID where the directory has one, else its DN.
        let sub = first("entryUUID").unwrap_or_else(|| dn.to_string());
        Ok(UpstreamIdentity {
            sub,
            username: username.to_string(),
            name: first(&cfg.name_attribute),
            email: first(&cfg.email_attribute),
            email_verified: false,
            groups,
            attributes,
            amr: Vec::new(),
            acr: None,
            auth_time: None,
        })
    }

    /// The attributes of the entry `dn` that [`Directory::describe`] reads.
    async fn read_entry(&self, ldap: &mut ldap3::Ldap, dn: &str) -> Result<SearchEntry, Failed> {
        let cfg = &self.cfg;
        let mut wanted: Vec<&str> = vec![
            "entryUUID",
            "objectGUID",
            &cfg.name_attribute,
            &cfg.email_attribute,
            &cfg.groups_attribute,
        ];
        wanted.extend(cfg.attributes.values().map(String::as_str));
        let (entries, _) = ldap
            .with_timeout(cfg.timeout.0)
            .search(dn, Scope::Base, "(objectClass=*)", wanted)
            .await
            .and_then(|r| r.success())
            .map_err(|e| broken(cfg, "reading the user's entry", e))?;
        entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| Failed::Broken {
                detail: "the user's entry cannot be read".into(),
                transport: false,
            })
    }

    /// The DNs of the groups under `base` the group filter finds for the user `dn`.
    async fn group_dns(
        &self,
        ldap: &mut ldap3::Ldap,
        base: &str,
        dn: &str,
    ) -> Result<Vec<String>, Failed> {
        let filter = self.cfg.group_filter.replace("{dn}", &ldap_escape(dn));
        let (groups, _) = ldap
            .with_timeout(self.cfg.timeout.0)
            .search(base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| broken(&self.cfg, "searching for the user's groups", e))?;
        Ok(groups
            .into_iter()
            .map(|g| SearchEntry::construct(g).dn)
            .collect())
    }
}

/// A directory attribute's values as a user attribute: one, or several.
fn attribute_value(v: &[String]) -> AttributeValue {
    match v {
        [one] => AttributeValue::One(one.clone()),
        many => AttributeValue::Many(many.to_vec()),
    }
}

/// The values of the entry's attribute `name` (attribute names are case-insensitive).
fn values<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e Vec<String>> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// An operation that failed: the connection is dropped; `transport` when it was closed
/// under us (not an answer, not a timeout).
fn broken(cfg: &LdapConfig, what: &str, e: ldap3::LdapError) -> Failed {
    use ldap3::LdapError as E;
    let transport = matches!(
        e,
        E::Io { .. }
            | E::OpSend { .. }
            | E::ResultRecv { .. }
            | E::IdScrubSend { .. }
            | E::MiscSend { .. }
            | E::EndOfStream
    );
    Failed::Broken {
        detail: format!("{what} ({}): {e}", cfg.url.as_str()),
        transport,
    }
}

/// A group's name: the value of its DN's first RDN (`cn=admins,ou=groups,…` → `admins`).
pub fn group_name(dn: &str) -> Option<String> {
    let rdn = dn.split(',').next()?;
    let (_, value) = rdn.split_once('=')?;
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_named_by_its_first_rdn() {
        assert_eq!(
            group_name("cn=admins,ou=groups,dc=corp").as_deref(),
            Some("admins")
        );
        assert_eq!(
            group_name("CN=Domain Users,CN=Users,DC=corp").as_deref(),
            Some("Domain Users")
        );
        assert_eq!(group_name("nonsense"), None);
    }

    #[test]
    fn usernames_are_escaped_for_filters_and_dns() {
        assert_eq!(ldap_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(ldap_escape("a\\00b"), "a\\5c00b");
        assert_eq!(dn_escape("a,b=c"), "a\\2cb\\3dc");
    }
}
