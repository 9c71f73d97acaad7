//! Configuration: where the data lives (`store:`) and users declared in the file (`users:`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use stepgate_policy::HumanDuration;

use crate::error::StoreError;
use crate::model::AttributeValue;

/// Where durable data and hot state are kept (`store:` in the configuration).
///
/// With nothing set, both live in one embedded SQLite file, `stepgate.db` in the data
/// directory. Setting `postgres` moves durable data there; setting `redis` moves hot state
/// there (both needed for several stepgate nodes).
///
/// ```yaml
/// store:
///   sqlite:
///     path: ./data/stepgate.db
///   # postgres: { url: "postgres://stepgate@db/stepgate" }
///   # redis: { url: "redis://cache:6379" }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The embedded SQLite store, used for whatever `postgres`/`redis` do not take.
    #[serde(default)]
    pub sqlite: SqliteConfig,
    /// PostgreSQL for durable data (users, factors, devices, audit). Default: not used.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// Redis for hot state (sessions, counters, codes, replay guards). Default: not used.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// The embedded SQLite store (`store.sqlite`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; relative paths are against the data directory. Default: `stepgate.db`.
    #[serde(default = "default_sqlite_path")]
    pub path: PathBuf,
    /// How long a writer waits for another to finish before failing. Default: `5s`.
    #[serde(default = "default_busy_timeout")]
    pub busy_timeout: HumanDuration,
    /// How often expired hot-state entries are deleted. Default: `1m`.
    #[serde(default = "default_purge_interval")]
    pub purge_interval: HumanDuration,
    /// Connections in the pool (readers run in parallel; SQLite allows one writer). Default: `8`.
    #[serde(default = "default_sqlite_connections")]
    pub max_connections: u32,
}

fn default_sqlite_path() -> PathBuf {
    PathBuf::from("stepgate.db")
}
fn default_busy_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_purge_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_sqlite_connections() -> u32 {
    8
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: default_sqlite_path(),
            busy_timeout: default_busy_timeout(),
            purge_interval: default_purge_interval(),
            max_connections: default_sqlite_connections(),
        }
    }
}

impl SqliteConfig {
    /// The database file, resolved against `data_dir` when relative.
    pub fn resolve_path(&self, data_dir: &Path) -> PathBuf {
        if self.path.is_relative() {
            data_dir.join(&self.path)
        } else {
            self.path.clone()
        }
    }
}

/// PostgreSQL for durable data (`store.postgres`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL, `postgres://user:password@host:5432/database`. Required.
    pub url: String,
    /// The schema stepgate's tables live in (created if missing). Default: `public`.
    #[serde(default = "default_pg_schema")]
    pub schema: String,
    /// Connections in the pool. Default: `10`.
    #[serde(default = "default_pg_connections")]
    pub max_connections: u32,
    /// How long to wait for a connection. Default: `10s`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// What a node does with requests while PostgreSQL is unreachable: `closed` (default)
    /// refuses every request that needs a user or device record it cannot read; `cached`
    /// answers from the records it read within `cached_for` (sign-ins and every write are
    /// still refused).
    #[serde(default)]
    pub fail_mode: FailMode,
    /// With `fail_mode: cached`, how old a cached user or device record may be and still
    /// answer. Default: `5m`.
    #[serde(default = "default_cached_for")]
    pub cached_for: HumanDuration,
}

/// `store.postgres.fail_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Refuse (503) what needs a durable record that cannot be read.
    #[default]
    Closed,
    /// Answer from records read within `cached_for`.
    Cached,
}

fn default_pg_schema() -> String {
    "public".into()
}
fn default_pg_connections() -> u32 {
    10
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_cached_for() -> HumanDuration {
    HumanDuration::from_secs(300)
}

impl PostgresConfig {
    /// A config for `url` with every other key at its default.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: default_pg_schema(),
            max_connections: default_pg_connections(),
            connect_timeout: default_connect_timeout(),
            fail_mode: FailMode::default(),
            cached_for: default_cached_for(),
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("fail_mode", &self.fail_mode)
            .field("cached_for", &self.cached_for)
            .finish()
    }
}

/// Redis for hot state (`store.redis`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Connection URL: `redis://[:password@]host:6379[/db]` (or `rediss://` with TLS), Redis
    /// Sentinel `redis+sentinel://[[user]:password@]host:26379[,…]/<primary name>[/<db>]`, or
    /// Redis Cluster `redis+cluster://[[user]:password@]host:7000[,host:7001…]`. Required.
    pub url: String,
    /// Prefix of every key stepgate writes, so one Redis can serve several deployments.
    /// Default: `stepgate:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Environment variable holding the Redis password, so it is not written in `url`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Or a file holding it (relative to the configuration file; the loader resolves it).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn default_key_prefix() -> String {
    "stepgate:".into()
}

impl RedisConfig {
    /// A config for `url` with the default key prefix.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: default_key_prefix(),
            password_env: None,
            password_file: None,
        }
    }

    /// The password from `password_file` or `password_env`, when one is set: the file's
    /// text without its final line break, or the variable's value. A file that cannot be
    /// read, an empty one or an unset variable is an error naming the key.
    pub fn password(&self) -> Result<Option<String>, StoreError> {
        if let Some(p) = &self.password_file {
            let text = std::fs::read_to_string(p).map_err(|e| {
                StoreError::Config(format!(
                    "`store.redis.password_file`: cannot read `{}`: {e}",
                    p.display()
                ))
            })?;
            let pw = text.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                return Err(StoreError::Config(format!(
                    "`store.redis.password_file`: `{}` is empty",
                    p.display()
                )));
            }
            return Ok(Some(pw.to_string()));
        }
        match &self.password_env {
            Some(var) => std::env::var(var).map(Some).map_err(|_| {
                StoreError::Config(format!(
                    "`store.redis.password_env`: the environment variable `{var}` is not set"
                ))
            }),
            None => Ok(None),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// A URL with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (auth, host) = match rest.rfind('@') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => return url.to_owned(),
        };
        let user = auth.split_once(':').map_or(auth, |(u, _)| u);
        let masked = if auth.contains(':') {
            format!("{user}:***")
        } else {
            user.to_owned()
        };
        return format!("{scheme}://{masked}@{host}");
    }
    url.to_owned()
}

impl StoreConfig {
    /// Checks values that parse but cannot work, naming the key and the fix.
    pub fn validate(&self) -> Result<(), StoreError> {
        let s = &self.sqlite;
        if s.path.as_os_str().is_empty() {
            return Err(StoreError::Config(
                "`store.sqlite.path` is empty: give a file name such as `stepgate.db`".into(),
            ));
        }
        if s.max_connections == 0 {
            return Err(StoreError::Config(
                "`store.sqlite.max_connections` must be at least 1".into(),
            ));
        }
        if s.purge_interval.as_secs() == 0 {
            return Err(StoreError::Config(
                "`store.sqlite.purge_interval` must be at least 1s (e.g. `1m`)".into(),
            ));
        }
        if let Some(p) = &self.postgres {
            if !(p.url.starts_with("postgres://") || p.url.starts_with("postgresql://")) {
                return Err(StoreError::Config(format!(
                    "`store.postgres.url` must start with postgres:// or postgresql://, got `{}`",
                    redact_url(&p.url)
                )));
            }
            if !is_identifier(&p.schema) {
                return Err(StoreError::Config(format!(
                    "`store.postgres.schema` must be a plain identifier (lowercase letters, digits, _), got `{}`",
                    p.schema
                )));
            }
            if p.max_connections == 0 {
                return Err(StoreError::Config(
                    "`store.postgres.max_connections` must be at least 1".into(),
                ));
            }
            if p.fail_mode == FailMode::Cached && p.cached_for.as_secs() == 0 {
                return Err(StoreError::Config(
                    "`store.postgres.cached_for` must be at least 1s with `fail_mode: cached` (e.g. `5m`), or set `fail_mode: closed`".into(),
                ));
            }
        }
        if let Some(r) = &self.redis {
            const SCHEMES: [&str; 5] = [
                "redis://",
                "rediss://",
                "unix://",
                "redis+sentinel://",
                "redis+cluster://",
            ];
            if !SCHEMES.iter().any(|s| r.url.starts_with(s)) {
                return Err(StoreError::Config(format!(
                    "`store.redis.url` must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://, got `{}`",
                    redact_url(&r.url)
                )));
            }
            if r.key_prefix.is_empty() {
                return Err(StoreError::Config(
                    "`store.redis.key_prefix` must not be empty (the default is `stepgate:`)"
                        .into(),
                ));
            }
            if r.password_env.is_some() && r.password_file.is_some() {
                return Err(StoreError::Config(
                    "`store.redis`: set one of `password_env` and `password_file`, not both".into(),
                ));
            }
            if (r.password_env.is_some() || r.password_file.is_some())
                && redact_url(&r.url) != r.url
            {
                return Err(StoreError::Config(
                    "`store.redis.url` has a password and `password_env`/`password_file` is set: keep it in one place".into(),
                ));
            }
        }
        Ok(())
    }
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// A user declared in the configuration (`users:`), synced into the store on start by
/// [`crate::sync_users`]. For small set-ups; larger ones create users with the admin API.
///
/// ```yaml
/// users:
///   - username: alice
///     email: alice@example.com
///     groups: [staff, admins]
///     attributes: { department: engineering, regions: [eu, us] }
///     password_hash: "$argon2id$v=19$m=19456,t=2,p=1$…$…"   # stepgate user hash-password
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The sign-in name. Required.
    pub username: String,
    /// E-mail address. Default: none.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name. Default: none.
    #[serde(default)]
    pub name: Option<String>,
    /// Groups and roles. Default: none.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Attributes for policies: each a string or a list of strings. Default: none.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// A disabled user cannot sign in. Default: `false`.
    #[serde(default)]
    pub disabled: bool,
    /// The password as an argon2id PHC hash (from `stepgate user hash-password`), never in
    /// clear. Default: none (the user signs in with other factors).
    #[serde(default)]
    pub password_hash: Option<PasswordHash>,
}

impl UserSpec {
    /// A spec for `username` with every other key at its default.
    pub fn new(username: impl Into<String>) -> Self {
        UserSpec {
            username: username.into(),
            email: None,
            name: None,
            groups: Vec::new(),
            attributes: BTreeMap::new(),
            disabled: false,
            password_hash: None,
        }
    }
}

/// An argon2id password hash in PHC format (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
/// Anything else — a plain-text password above all — is rejected when the file is read.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Checks and wraps a PHC string.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let hint = "use `stepgate user hash-password` to make one; never put a plain-text password in the configuration";
        if !s.starts_with("$argon2id$") {
            return Err(format!(
                "password_hash must be an argon2id PHC string starting with `$argon2id$`; {hint}"
            ));
        }
        let parts: Vec<&str> = s.split('$').collect();
        // ["", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash] or without the version.
        let (params, salt, hash) = match parts.as_slice() {
            ["", "argon2id", v, p, salt, hash] if v.starts_with("v=") => (*p, *salt, *hash),
            ["", "argon2id", p, salt, hash] => (*p, *salt, *hash),
            _ => {
                return Err(format!(
                    "password_hash is not a complete argon2id PHC string; {hint}"
                ))
            }
        };
        let has = |k: &str| params.split(',').any(|kv| kv.starts_with(k));
        let b64 = |x: &str| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        };
        if !(has("m=") && has("t=") && has("p=") && b64(salt) && b64(hash)) {
            return Err(format!(
                "password_hash is not a well-formed argon2id PHC string (parameters m, t, p, salt and hash); {hint}"
            ));
        }
        Ok(PasswordHash(s.to_owned()))
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash($argon2id$…)")
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PasswordHash::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q6k4cTAzOyCq0QmNEQbCXoJ9bBC9ZJ+IJ+p1fWQBGcE";

    #[test]
    fn store_config_defaults_to_sqlite_in_the_data_dir() {
        let c: StoreConfig = marked_yaml::from_yaml(0, "{}").unwrap();
        assert_eq!(c, StoreConfig::default());
        assert_eq!(
            c.sqlite.resolve_path(Path::new("/var/lib/stepgate")),
            Path::new("/var/lib/stepgate/stepgate.db")
        );
        assert!(c.postgres.is_none() && c.redis.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn store_config_from_yaml() {
        let y = "sqlite:\n  path: ./data/stepgate.db\n  busy_timeout: 10s\n  purge_interval: 5m\n  max_connections: 4\n\
                 postgres:\n  url: postgres://stepgate:pw@db/stepgate\n  schema: sg\n  max_connections: 20\n  connect_timeout: 3s\n\
                 redis:\n  url: redis://cache:6379\n  key_prefix: \"sg1:\"\n";
        let c: StoreConfig = marked_yaml::from_yaml(0, y).unwrap();
        assert_eq!(c.sqlite.path, Path::new("./data/stepgate.db"));
        assert_eq!(c.sqlite.busy_timeout.as_secs(), 10);
        assert_eq!(c.sqlite.purge_interval.as_secs(), 300);
        assert_eq!(c.sqlite.max_connections, 4);
        let p = c.postgres.as_ref().unwrap();
        assert_eq!(
            (
                p.schema.as_str(),
                p.max_connections,
                p.connect_timeout.as_secs()
            ),
            ("sg", 20, 3)
        );
        assert!(!format!("{p:?}").contains("pw"), "Debug hides the password");
        let r = c.redis.as_ref().unwrap();
        assert_eq!(r.key_prefix, "sg1:");
        c.validate().unwrap();
        let abs: StoreConfig = marked_yaml::from_yaml(0, "sqlite: { path: /srv/sg.db }").unwrap();
        assert_eq!(
            abs.sqlite.resolve_path(Path::new("/data")),
            Path::new("/srv/sg.db")
        );
    }

    #[test]
    fn store_config_rejects_unknown_keys_and_bad_values() {
        assert!(marked_yaml::from_yaml::<StoreConfig>(0, "mysql: {}").is_err());
        assert!(marked_yaml::from_yaml::<StoreConfig>(0, "sqlite: { file: x.db }").is_err());
        assert!(marked_yaml::from_yaml::<StoreConfig>(0, "sqlite: { busy_timeout: 5 }").is_err());
        assert!(
            marked_yaml::from_yaml::<StoreConfig>(0, "redis: { key_prefix: x }").is_err(),
            "url is required"
        );
        let c: StoreConfig = marked_yaml::from_yaml(0, "postgres: { url: 'mysql://x' }").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("store.postgres.url"));
        let c: StoreConfig =
            marked_yaml::from_yaml(0, "postgres: { url: 'postgres://x', schema: 'a;drop' }")
                .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("store.postgres.schema"));
        let c: StoreConfig = marked_yaml::from_yaml(0, "sqlite: { max_connections: 0 }").unwrap();
        assert!(c.validate().is_err());
        let c: StoreConfig = marked_yaml::from_yaml(0, "redis: { url: 'memcached://x' }").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("redis+cluster://"));
    }

    #[test]
    fn sentinel_and_cluster_urls_are_accepted() {
        for url in [
            "redis+sentinel://h:26379,h:26380/main",
            "redis+cluster://h:7000,h:7001",
        ] {
            let c = StoreConfig {
                redis: Some(RedisConfig::new(url)),
                ..StoreConfig::default()
            };
            c.validate().expect(url);
        }
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn user_spec_from_yaml() {
        let y = format!(
            "username: alice\nemail: alice@example.com\nname: Alice A\ngroups: [staff, admins]\n\
             attributes:\n  department: engineering\n  regions: [eu, us]\n  level: 3\ndisabled: false\n\
             password_hash: \"{PHC}\"\n"
        );
        let u: UserSpec = marked_yaml::from_yaml(0, &y).unwrap();
        assert_eq!(u.username, "alice");
        assert_eq!(u.groups, vec!["staff", "admins"]);
        assert_eq!(
            u.attributes["regions"],
            AttributeValue::Many(vec!["eu".into(), "us".into()])
        );
        assert_eq!(u.attributes["level"], AttributeValue::One("3".into()));
        assert_eq!(u.password_hash.as_ref().unwrap().as_str(), PHC);
        assert!(!format!("{u:?}").contains("c29tZXNhbHRz"));
        let minimal: UserSpec =
            marked_yaml::from_yaml(0, "username: bob\ndisabled: true\n").unwrap();
        assert!(minimal.disabled && minimal.password_hash.is_none() && minimal.groups.is_empty());
        #[derive(Deserialize)]
        struct Doc {
            users: Vec<UserSpec>,
        }
        let doc: Doc =
            marked_yaml::from_yaml(0, "users:\n  - username: a\n  - username: b\n").unwrap();
        assert_eq!(doc.users.len(), 2);
        assert!(marked_yaml::from_yaml::<UserSpec>(0, "username: a\npassword: x\n").is_err());
        assert!(
            marked_yaml::from_yaml::<UserSpec>(0, "email: a@b\n").is_err(),
            "username is required"
        );
    }

    #[test]
    fn password_hash_must_be_argon2id_phc() {
        for bad in [
            "hunter2",
            "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA",
            "$2b$12$abcdefghijklmnopqrstuv",
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ",
            "$argon2id$v=19$t=2,p=1$c29tZXNhbHQ$aGFzaA",
        ] {
            let err = PasswordHash::parse(bad).unwrap_err();
            assert!(err.contains("stepgate user hash-password"), "{bad}: {err}");
            assert!(!err.contains(bad), "errors never echo the value");
        }
        let y = "username: a\npassword_hash: hunter2\n";
        let err = marked_yaml::from_yaml::<UserSpec>(0, y)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hash-password"), "{err}");
        PasswordHash::parse(PHC).unwrap();
        PasswordHash::parse("$argon2id$m=65536,t=3,p=4$c29tZXNhbHQ$aGFzaA").unwrap();
    }
}
