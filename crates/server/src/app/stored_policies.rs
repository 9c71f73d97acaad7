//! Policy sets kept in the durable store (`admin.policy_edits: store`): the newest saved
//! version is the set in force on every node, in place of the configuration files'
//! `policies:` (the rest of the configuration still comes from the files).
//!
//! A version is saved only after it loads with the files exactly as a reload would load
//! it ([`super::reload::load_config`]), then swapped in through the reload's own path and
//! announced on the change feed ([`Change::PolicySet`]); every other node hears it, reads
//! the newest version from the store and reloads with it. A node that loses the feed reads
//! the newest version again when its subscription stands, so a change it missed is caught
//! up then. At start a node loads the newest version; one that no longer loads with the
//! files stops the start (fail closed: the files' policies may be looser).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use stepgate_config::PolicyEdits;
use stepgate_store::{Change, ChangeFeed, Heard, PolicyVersion, StoreError};

use super::reload::{load_config, swap_in, ReloadRefused};
use super::state::Shared;

/// The stored policy set a node runs, and how it hears of a new one.
#[derive(Default)]
pub struct StoredPolicies {
    /// `admin.policy_edits` as read at start.
    mode: PolicyEdits,
    /// The version in force (none: the files' policies).
    in_force: Mutex<Option<Arc<PolicyVersion>>>,
    /// One change at a time: a save and a version heard from another node never interleave.
    applying: tokio::sync::Mutex<()>,
    /// Where this node announces the versions it saves (multi-node deployments).
    feed: OnceLock<Arc<ChangeFeed>>,
}

/// Why a draft was not saved or a version not applied.
#[derive(Debug)]
pub enum SaveRefused {
    /// `admin.policy_edits` is `yaml`.
    Off,
    /// The server runs the built-in demo configuration: there is no file to load with.
    NoFile,
    /// The draft does not load with the configuration files: every error, positioned.
    Invalid(stepgate_config::ConfigError),
    /// It loads, but the reload refused it (a connector): the errors in words.
    Refused(Vec<String>),
    /// Another version was saved since `base`.
    Stale {
        /// The newest version now.
        newest: i64,
    },
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for SaveRefused {
    fn from(e: StoreError) -> Self {
        SaveRefused::Store(e)
    }
}

impl StoredPolicies {
    /// For `mode`, with nothing in force yet.
    pub fn new(mode: PolicyEdits) -> Self {
        StoredPolicies {
            mode,
            ..Default::default()
        }
    }

    /// Whether policy sets come from the store.
    pub fn enabled(&self) -> bool {
        self.mode == PolicyEdits::Store
    }

    /// `admin.policy_edits` as read at start (a reload cannot change it).
    pub fn mode(&self) -> PolicyEdits {
        self.mode
    }

    /// The version in force, if a stored one is.
    pub fn in_force(&self) -> Option<Arc<PolicyVersion>> {
        self.in_force.lock().map(|g| g.clone()).unwrap_or(None)
    }

    fn set_in_force(&self, v: Arc<PolicyVersion>) {
        if let Ok(mut g) = self.in_force.lock() {
            *g = Some(v);
        }
    }
}

/// The name a version's errors and `GET /config`'s files give it.
pub fn source_name(version: Option<i64>) -> String {
    match version {
        Some(v) => format!("policy-version-{v}.yaml"),
        None => "policy-draft.yaml".into(),
    }
}

/// Loads `text` with the configuration files as a reload would, without applying it.
pub async fn check(st: &Shared, text: String) -> Result<(), SaveRefused> {
    loaded(st, text).await.map(drop)
}

/// The configuration the files make with `text` as their policy set (what a save would
/// put in force), without applying it: for a draft's replay.
pub async fn loaded(st: &Shared, text: String) -> Result<stepgate_config::Config, SaveRefused> {
    let st2 = st.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        load_config(&st2, Some((&source_name(None), text.as_str())))
    })
    .await
    .map_err(|e| SaveRefused::Refused(vec![e.to_string()]))?;
    match loaded {
        Ok(cfg) => Ok(cfg),
        Err(None) => Err(SaveRefused::NoFile),
        Err(Some(e)) => Err(SaveRefused::Invalid(e)),
    }
}

/// Saves `text` as the next version after `base` (the newest when `None`) by `author`,
/// puts it in force here and announces it: the saved version.
pub async fn save(
    st: &Shared,
    text: String,
    base: Option<i64>,
    author: &str,
    note: Option<String>,
    rollback_of: Option<i64>,
) -> Result<Arc<PolicyVersion>, SaveRefused> {
    let sp = &st.stored_policies;
    if !sp.enabled() {
        return Err(SaveRefused::Off);
    }
    check(st, text.clone()).await?;
    let _one = sp.applying.lock().await;
    let v = record(
        st.stores.durable.as_ref(),
        text,
        base,
        author,
        note,
        rollback_of,
    )
    .await?;
    let v = Arc::new(v);
    apply(st, v.clone()).await?;
    if let Some(feed) = sp.feed.get() {
        if let Err(e) = feed.publish(&Change::PolicySet(v.version)).await {
            // Saved and in force here; the others catch up when their subscription is
            // renewed (they would have lost it too).
            tracing::warn!(error = %e, version = v.version, "could not announce a saved policy set to the other nodes");
        }
    }
    Ok(v)
}

/// Writes `text` to `durable` as the version after `base` (the newest when `None`) by
/// `author`, without putting it in force (that is [`save`]'s, or a node's at its next start
/// or reload: `stepgate policy rollback`). Refused as stale when another version was saved
/// since `base`, or while this one was being written.
pub async fn record(
    durable: &dyn stepgate_store::DurableStore,
    text: String,
    base: Option<i64>,
    author: &str,
    note: Option<String>,
    rollback_of: Option<i64>,
) -> Result<PolicyVersion, SaveRefused> {
    let newest = durable
        .latest_policy_version()
        .await?
        .map_or(0, |v| v.version);
    if base.is_some_and(|b| b != newest) {
        return Err(SaveRefused::Stale { newest });
    }
    let mut v = PolicyVersion::new(newest + 1, text, author);
    v.note = note;
    v.rollback_of = rollback_of;
    match durable.save_policy_version(&v).await {
        Ok(()) => Ok(v),
        Err(StoreError::Conflict { .. }) => {
            let newest = durable
                .latest_policy_version()
                .await?
                .map_or(newest, |v| v.version);
            Err(SaveRefused::Stale { newest })
        }
        Err(e) => Err(e.into()),
    }
}

/// Puts `v` in force on this node through the reload's path.
async fn apply(st: &Shared, v: Arc<PolicyVersion>) -> Result<(), SaveRefused> {
    let st2 = st.clone();
    let v2 = v.clone();
    let done = tokio::task::spawn_blocking(move || {
        let name = source_name(Some(v2.version));
        match load_config(&st2, Some((&name, v2.text.as_str()))) {
            Ok(cfg) => swap_in(&st2, cfg),
            Err(None) => Err(ReloadRefused::NoFile),
            Err(Some(e)) => Err(ReloadRefused::Invalid(
                e.diagnostics.iter().map(|d| d.to_string()).collect(),
            )),
        }
    })
    .await
    .map_err(|e| SaveRefused::Refused(vec![e.to_string()]))?;
    match done {
        Ok(config_version) => {
            tracing::info!(version = v.version, %config_version, author = %v.author, "stored policy set in force");
            st.stored_policies.set_in_force(v);
            Ok(())
        }
        Err(ReloadRefused::NoFile) => Err(SaveRefused::NoFile),
        Err(ReloadRefused::Invalid(errors)) => Err(SaveRefused::Refused(errors)),
    }
}

/// Puts the newest stored version in force when it is not already: at start, on hearing
/// another node's save, and when a subscription to the feed stands again.
pub async fn catch_up(st: &Shared) -> Result<(), SaveRefused> {
    let sp = &st.stored_policies;
    let _one = sp.applying.lock().await;
    let Some(newest) = st.stores.durable.latest_policy_version().await? else {
        return Ok(());
    };
    if sp.in_force().is_some_and(|v| v.version >= newest.version) {
        return Ok(());
    }
    apply(st, Arc::new(newest)).await
}

/// At start (`admin.policy_edits: store`): the newest stored version in force before the
/// first request, and a task that follows the other nodes' saves on `feed`.
pub async fn start(st: &Shared, feed: Option<Arc<ChangeFeed>>) -> anyhow::Result<()> {
    if !st.stored_policies.enabled() {
        return Ok(());
    }
    if st.options.config_path.is_none() {
        anyhow::bail!(
            "admin.policy_edits: store needs a configuration file (the stored policy sets replace its `policies:`); the built-in demo configuration has none"
        );
    }
    catch_up(st).await.map_err(|e| {
        anyhow::anyhow!(
            "the newest stored policy set does not load with the configuration files: {}; fix the files, or start with `admin.policy_edits: yaml` to run the files' policies",
            describe(&e)
        )
    })?;
    if let Some(feed) = feed {
        let _ = st.stored_policies.feed.set(feed.clone());
        spawn_listener(Arc::downgrade(st), feed);
    }
    Ok(())
}

/// The errors of `e` in words.
pub fn describe(e: &SaveRefused) -> String {
    match e {
        SaveRefused::Off => "admin.policy_edits is `yaml`".into(),
        SaveRefused::NoFile => "there is no configuration file".into(),
        SaveRefused::Invalid(e) => e.to_string(),
        SaveRefused::Refused(errors) => errors.join("; "),
        SaveRefused::Stale { newest } => format!("version {newest} was saved since"),
        SaveRefused::Store(e) => e.to_string(),
    }
}

fn spawn_listener(st: std::sync::Weak<super::state::AppState>, feed: Arc<ChangeFeed>) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match feed.subscribe().await {
                Ok(mut changes) => {
                    backoff = Duration::from_millis(100);
                    // What was saved while no subscription stood.
                    let Some(s) = st.upgrade() else { return };
                    follow(&s, "subscribed").await;
                    drop(s);
                    let lost = loop {
                        let heard = changes.next().await;
                        let Some(s) = st.upgrade() else { return };
                        match heard {
                            Ok(Heard::Change(Change::PolicySet(_))) => {
                                follow(&s, "announced").await
                            }
                            Ok(_) => {}
                            Err(e) => break e,
                        }
                    };
                    tracing::warn!(error = %lost, "policy sets: lost the subscription to other nodes' changes; resubscribing");
                }
                Err(e) => {
                    if st.strong_count() == 0 {
                        return;
                    }
                    tracing::warn!(error = %e, "policy sets: cannot subscribe to other nodes' changes; retrying in {backoff:?}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

/// [`catch_up`], logging a refusal (the running set stays). Nothing with edits off.
pub(crate) async fn follow(st: &Shared, why: &str) {
    if !st.stored_policies.enabled() {
        return;
    }
    if let Err(e) = catch_up(st).await {
        // The running set stays; the version is the store's, so every node refuses alike.
        tracing::error!(error = %describe(&e), why, "a stored policy set could not be put in force; keeping the running one");
    }
}
