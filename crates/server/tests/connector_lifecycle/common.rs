//! What the connector tests share: the config with the recording Hexnode, starting
//! stepgate, waiting for a sync to settle, and jane signed in on an enrolled device.

use std::time::Duration;

use stepgate_server::devices::connectors::{Connectors, SyncCounts};

use crate::support::hexnode::{hexnode, Hexnode, API_KEY};
use crate::support::{upstream, Server};

pub(crate) const DEVICE_KEY: &str = "device-cookie-key-for-tests-0123456789abcdef";

/// One Hexnode connector `hexnode` at HEXNODE; INTERVAL and STALE are filled in.
pub(crate) const CONFIG: &str = r#"
apps:
  - id: console
    hosts: [127.0.0.1]
    upstream: http://UPSTREAM
sessions:
  cookie: { secure: false }
server:
  metrics_listen: 127.0.0.1:0
devices:
  cookie: { name: sg-device, key_env: STEPGATE_TEST_DEVICE_KEY }
  connectors:
    - name: hexnode
      kind: hexnode
      url: http://HEXNODE
      secret: { file: hexnode.key }
      interval: INTERVAL
      stale_after: STALE
      page_size: 2
      backoff: 10ms
      retries: 0
      owner_match: local_part
      owner_domains: [example.com]
policies:
  - name: compliant-devices-only
    priority: 10
    targets: { apps: [console] }
    conditions:
      - device_compliance: { compliant: false }
    outcome: { deny: { message: This device is not compliant. } }
  - name: sign-in-mfa
    priority: 30
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
  - name: everyone
    priority: 50
    outcome: allow
"#;

pub(crate) fn key_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hexnode.key"), format!("{API_KEY}\n")).unwrap();
    dir
}

pub(crate) async fn start(fleet: &Hexnode, interval: &str, stale: &str) -> Server {
    std::env::set_var("STEPGATE_TEST_DEVICE_KEY", DEVICE_KEY);
    Server::build(CONFIG)
        .with("UPSTREAM", upstream::text("upstream ok").await)
        .with("HEXNODE", hexnode(fleet).await)
        .with("INTERVAL", interval)
        .with("STALE", stale)
        .in_dir(key_dir())
        .demo_users()
        .start()
        .await
}

/// Waits for the connector's first sync (success or failure) on this node.
pub(crate) async fn settled(h: &Server, name: &str) {
    for _ in 0..300 {
        let s = h.st.connectors.status();
        if s.get(name)
            .is_some_and(|s| s.last_success.is_some() || s.consecutive_errors > 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("connector `{name}` never synced");
}

pub(crate) async fn sync(h: &Server) -> Result<SyncCounts, String> {
    let mut r = Connectors::sync(&h.st, Some("hexnode"), false).await;
    r.remove(0).1.map_err(|e| e.to_string())
}
