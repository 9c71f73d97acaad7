//! A stepgate started from a test's YAML, and what tests read of its state.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use stepgate_authn::{FactorKind, PassedFactor};
use stepgate_config::Config;
use stepgate_server::app::SignalSourceFactory;
use stepgate_server::{build_state_with, demo, serve_on, ServeOptions, Shared};
use stepgate_store::{
    factor_context, AuditEvent, AuditQuery, FactorRecord, SecretKey, SecretsConfig, UserRecord,
};

use super::people::{totp_data, Person};

/// A stepgate serving plain HTTP on a free port of 127.0.0.1.
pub struct Server {
    /// Its state.
    pub st: Shared,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// `server.public_url`.
    pub public_url: String,
    /// The key its stores' secrets are sealed with.
    pub key: SecretKey,
    /// Its base directory (the data directory is `data/` in it); deleted when dropped.
    pub dir: tempfile::TempDir,
}

/// A built state served on a free port of 127.0.0.1 until [`Serving::stop`]: the graceful
/// stop a signal starts ([`stepgate_server::serve_on_until`]), with the last writes it makes.
pub struct Serving {
    /// Where it listens.
    pub port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Serving {
    /// Serves `st`.
    pub async fn start(st: &Shared) -> Serving {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let until = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(stepgate_server::serve_on_until(st.clone(), listener, until));
        Serving { port, stop, task }
    }

    /// Stops it, and waits until it has stopped (its requests drained, what it still held
    /// written).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A stepgate's state, built and not served, for tests that call it directly.
pub struct State {
    /// Its state.
    pub st: Shared,
    /// The key its stores' secrets are sealed with.
    pub key: SecretKey,
    /// Its base directory; deleted when dropped.
    pub dir: tempfile::TempDir,
}

/// An edit of the loaded configuration.
type ConfigEdit = Box<dyn FnOnce(&mut Config)>;

/// How to start a stepgate: [`Server::build`], then the settings, then
/// [`ServerBuilder::start`] (or [`ServerBuilder::state`]).
pub struct ServerBuilder {
    yaml: String,
    dir: Option<tempfile::TempDir>,
    file: Option<String>,
    public_url: Option<Box<dyn FnOnce(u16) -> String>>,
    configure: Vec<ConfigEdit>,
    options: ServeOptions,
    signals: Option<SignalSourceFactory>,
    demo_users: bool,
    users: Vec<(UserRecord, Person)>,
    key: Option<SecretKey>,
    port: u16,
}

impl Server {
    /// Starts describing a stepgate configured by `yaml`.
    pub fn build(yaml: &str) -> ServerBuilder {
        ServerBuilder {
            yaml: yaml.to_string(),
            dir: None,
            file: None,
            public_url: None,
            configure: Vec::new(),
            options: ServeOptions::default(),
            signals: None,
            demo_users: false,
            users: Vec::new(),
            key: None,
            port: 0,
        }
    }

    /// `http://<host>:<port><path>`: stepgate asked for `host` (a `*.test` name resolves to
    /// it in a [`super::client`]).
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.addr.port())
    }

    /// `<base><path>`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl ServerBuilder {
    /// Replaces every `placeholder` in the YAML with `value`, in the order the calls come
    /// (the placeholder must occur).
    pub fn with(mut self, placeholder: &str, value: impl ToString) -> Self {
        assert!(
            self.yaml.contains(placeholder),
            "the test's YAML has no {placeholder}:\n{}",
            self.yaml
        );
        self.yaml = self.yaml.replace(placeholder, &value.to_string());
        self
    }

    /// `server.public_url` from stepgate's port (default `http://127.0.0.1:<port>`).
    pub fn public_url(mut self, url: impl FnOnce(u16) -> String + 'static) -> Self {
        self.public_url = Some(Box::new(url));
        self
    }

    /// Uses `dir` (where the test has written files the YAML names) as the base directory.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Writes the YAML to `name` in the base directory and loads it from there, so that
    /// `reload` re-reads that file.
    pub fn in_file(mut self, name: &str) -> Self {
        self.file = Some(name.to_string());
        self
    }

    /// Edits the loaded configuration (after the listener and public URL are set).
    pub fn configure(mut self, edit: impl FnOnce(&mut Config) + 'static) -> Self {
        self.configure.push(Box::new(edit));
        self
    }

    /// The serve options (default: [`ServeOptions::default`]).
    pub fn options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    /// Replaces the live signal sources with what `factory` builds.
    pub fn signals(mut self, factory: SignalSourceFactory) -> Self {
        self.signals = Some(factory);
        self
    }

    /// Seeds the demo's users (`demo::seed`: jane and john, passwords and TOTP).
    pub fn demo_users(mut self) -> Self {
        self.demo_users = true;
        self
    }

    /// Uses `key` as the secret key (default: a new one): nodes of one deployment share it.
    pub fn key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Creates `record` with `who`'s password and a TOTP authenticator on `who`'s seed.
    pub fn user(mut self, record: UserRecord, who: Person) -> Self {
        self.users.push((record, who));
        self
    }

    /// Serves on `port` of 127.0.0.1 (one the test reserved) instead of a free one.
    pub fn on_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Builds the state and serves it on a free port of 127.0.0.1.
    pub async fn start(mut self) -> Server {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://127.0.0.1:{}", addr.port());
        let public_url = match self.public_url.take() {
            Some(url) => url(addr.port()),
            None => base.clone(),
        };
        let State { st, key, dir } = self.build(Some((addr, public_url.clone()))).await;
        let serving = st.clone();
        tokio::spawn(async move { serve_on(serving, listener).await.unwrap() });
        Server {
            st,
            addr,
            base,
            public_url,
            key,
            dir,
        }
    }

    /// Builds the state only (no listener; `server.listen` and `public_url` as the YAML
    /// says).
    pub async fn state(self) -> State {
        self.build(None).await
    }

    async fn build(mut self, listen: Option<(SocketAddr, String)>) -> State {
        let dir = self
            .dir
            .take()
            .unwrap_or_else(|| tempfile::tempdir().unwrap());
        // The demo's configuration names its (demo-only) attestation root under its data
        // directory, as `stepgate demo` writes it.
        if self
            .yaml
            .contains(stepgate_server::demo::ATTESTATION_PEM_PATH)
        {
            stepgate_server::demo::write_files(dir.path()).unwrap();
        }
        let mut cfg = match &self.file {
            Some(name) => {
                let path: PathBuf = dir.path().join(name);
                std::fs::write(&path, &self.yaml).unwrap();
                self.options.config_path = Some(path.clone());
                stepgate_config::load(&path)
            }
            None => stepgate_config::load_str("test.yaml", &self.yaml, Some(dir.path())),
        }
        .unwrap_or_else(|e| panic!("{e}"));
        cfg.base_dir = dir.path().to_path_buf();
        cfg.secrets = SecretsConfig::default();
        if let Some((addr, public_url)) = listen {
            cfg.listen = addr;
            cfg.server.public_url = Some(marked_yaml::Spanned::new(
                marked_yaml::Span::new_blank(),
                public_url,
            ));
        }
        for edit in self.configure {
            edit(&mut cfg);
        }
        let key = self.key.take().unwrap_or_else(SecretKey::generate);
        let st = build_state_with(cfg, key.clone(), self.options, self.signals)
            .await
            .unwrap();
        if self.demo_users {
            demo::seed(&st, &key).await.unwrap();
        }
        for (record, who) in self.users {
            enrol(&st, &key, &record, &who).await;
        }
        State { st, key, dir }
    }
}

/// Creates `record` with `who`'s password and a TOTP authenticator on `who`'s seed.
async fn enrol(st: &Shared, key: &SecretKey, record: &UserRecord, who: &Person) {
    st.stores.durable.create_user(record).await.unwrap();
    st.authn
        .admin_set_password(record, who.password, "test")
        .await
        .unwrap();
    let mut f = FactorRecord::new(&record.id, "totp", "Test authenticator");
    f.secret = Some(
        key.seal(&who.seed(), &factor_context(&record.id, &f.id))
            .unwrap(),
    );
    f.data = serde_json::to_value(totp_data()).unwrap();
    st.stores.durable.create_factor(&f).await.unwrap();
}

/// The user called `username` (who must exist).
pub async fn user(st: &Shared, username: &str) -> UserRecord {
    st.stores
        .durable
        .get_user_by_username(username)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no user {username}"))
}

/// The audit rows of `kind`, or all of them, as the store lists them.
pub async fn audit(st: &Shared, kind: Option<&str>) -> Vec<AuditEvent> {
    st.stores
        .durable
        .list_audit(&AuditQuery {
            kind: kind.map(str::to_string),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// A session of `user` who passed a password and TOTP at `at`, stored as a sign-in stores
/// it (for a client that cannot sign in itself, or a time other than now); its id.
pub async fn signed_in_session(st: &Shared, user: &UserRecord, at: DateTime<Utc>) -> String {
    let rt = st.runtime.load_full();
    let a = &rt.config.assurance;
    let mut data = stepgate_server::session::SessionData::new(
        &user.id,
        &user.username,
        PassedFactor::new(FactorKind::Password, a, at),
        at,
    );
    data.add_factor(PassedFactor::new(FactorKind::Totp, a, at));
    st.sessions.rotate(&rt, None, data, at).await.unwrap().id
}

/// A session of `user` who passed a password and a hardware-bound, phishing-resistant,
/// user-verified passkey at `at` (AAL3), stored as a sign-in stores it; its id.
pub async fn aal3_session(st: &Shared, user: &UserRecord, at: DateTime<Utc>) -> String {
    let rt = st.runtime.load_full();
    let a = &rt.config.assurance;
    let mut data = stepgate_server::session::SessionData::new(
        &user.id,
        &user.username,
        PassedFactor::new(FactorKind::Password, a, at),
        at,
    );
    let mut key = PassedFactor::new(FactorKind::Webauthn, a, at);
    key.hardware_bound = true;
    key.phishing_resistant = true;
    key.user_verified = true;
    data.add_factor(key);
    assert_eq!(data.aal(a), 3);
    st.sessions.rotate(&rt, None, data, at).await.unwrap().id
}

/// The lower-case hex SHA-256 of `s`, as a `token_sha256` key holds a token.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
