//! Changes announced across nodes, so that every node's read cache drops a record another
//! node just changed.
//!
//! Each stepgate node keeps a short read cache of the records every request reads
//! (sessions, users, devices, sign-in histories). A node that writes one of them publishes
//! *what* changed — never the record itself, never a secret: a session id, a user id, a
//! device id — on one Redis channel (`<key_prefix>changes`), and every node subscribed to
//! it drops its copy. Redis delivers a published message to every subscriber's connection
//! before it answers the publisher, so by the time the writing node answers its client, the
//! other nodes have it on their sockets. On Redis Cluster a subscription listens on one node
//! (the first listed that answers) and the node a change is published on passes it to the
//! others over the cluster bus, after answering the publisher: the other nodes have it
//! within the bus's latency rather than strictly before. A cluster subscription also checks
//! that its own probes come back (see [`PROBE_TAG`]).
//!
//! Redis pub/sub keeps nothing for a subscriber that is not connected. A subscriber that
//! loses its connection (or whose health check goes unanswered) therefore cannot know what
//! it missed: [`ChangeStream::next`] returns an error, and the cache must then be emptied
//! and bypassed until a new subscription stands. Within a live connection Redis drops
//! nothing (a subscriber too slow to keep up is disconnected, which is the same case).

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};

use crate::config::{redact_url, RedisConfig};
use crate::error::{StoreError, StoreResult};
use crate::redis_conn::{Conn, Target};

/// How often a subscription checks that its connection still answers, and how long it
/// waits for the answer.
const HEALTH_CHECK: Duration = Duration::from_secs(1);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting a subscription may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A change to a cached record: what another node must drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// One session (by id): updated, rotated away or ended.
    Session(String),
    /// Every session of a user (by user id): "sign out everywhere", an admin revoke.
    SessionsOfUser(String),
    /// A user record (by user id): created, changed, disabled, deleted.
    User(String),
    /// A sign-in history (by its hot-store key).
    History(String),
    /// A device record (by device id).
    Device(String),
    /// A policy set saved in the durable store (by version): every node puts the newest in
    /// force (`admin.policy_edits: store`).
    PolicySet(i64),
}

impl Change {
    fn encode(&self) -> String {
        let (tag, key) = match self {
            Change::Session(k) => ('s', k.as_str()),
            Change::SessionsOfUser(k) => ('S', k.as_str()),
            Change::User(k) => ('u', k.as_str()),
            Change::History(k) => ('h', k.as_str()),
            Change::Device(k) => ('d', k.as_str()),
            Change::PolicySet(v) => return format!("p:{v}"),
        };
        format!("{tag}:{key}")
    }

    fn decode(s: &str) -> Option<Change> {
        let (tag, key) = s.split_once(':')?;
        let key = key.to_string();
        Some(match tag {
            "s" => Change::Session(key),
            "S" => Change::SessionsOfUser(key),
            "u" => Change::User(key),
            "h" => Change::History(key),
            "d" => Change::Device(key),
            "p" => Change::PolicySet(key.parse().ok()?),
            _ => return None,
        })
    }
}

/// On Redis Cluster, a subscription listens on one node and hears what the others publish
/// over the cluster bus, which a healthy `PING` to that node does not vouch for. So each
/// health check also publishes a probe (`<node> ?<n>`) the way changes are published, and
/// the subscription is lost when a probe has not come back by the check after next.
const PROBE_TAG: char = '?';

/// Publishing changes and subscribing to other nodes' (one per node).
pub struct ChangeFeed {
    /// Where Redis is: a subscription asks anew (with Sentinel, the primary may have moved).
    target: Target,
    conn: Conn,
    channel: String,
    node: String,
    label: String,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("store", &self.label)
            .field("channel", &self.channel)
            .field("node", &self.node)
            .finish()
    }
}

impl ChangeFeed {
    /// Connects to the Redis of `store.redis` (retrying with backoff while it is down, as
    /// the hot store does). The node's id is random: a node skips its own messages.
    pub async fn connect(config: &RedisConfig) -> StoreResult<Self> {
        let label = redact_url(&config.url);
        let target = Target::from_config(config, &label)?;
        let conn = Conn::connect(target.clone()).await?;
        Ok(ChangeFeed {
            target,
            conn,
            channel: format!("{}changes", config.key_prefix),
            node: crate::new_id()[..16].to_string(),
            label,
        })
    }

    /// This node's id in the messages it publishes.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Announces `change` to every other node.
    pub async fn publish(&self, change: &Change) -> StoreResult<()> {
        let msg = format!("{} {}", self.node, change.encode());
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(msg)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// A new subscription to the other nodes' changes, standing when this returns.
    pub async fn subscribe(&self) -> StoreResult<ChangeStream> {
        let connect = async {
            let client = self.target.client().await.map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "no Redis primary",
                    e.to_string(),
                ))
            })?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "subscribing to {} on {}: no answer within {CONNECT_TIMEOUT:?}",
                    self.channel, self.label
                ))
            })??;
        let (sink, stream) = pubsub.split();
        let mut health = tokio::time::interval(HEALTH_CHECK);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe = matches!(self.target, Target::Cluster(_)).then(|| Probe {
            conn: self.conn.clone(),
            channel: self.channel.clone(),
            sent: 0,
            heard: 0,
        });
        Ok(ChangeStream {
            sink,
            stream,
            node: self.node.clone(),
            health,
            label: self.label.clone(),
            probe,
        })
    }
}

/// A standing subscription to other nodes' changes.
pub struct ChangeStream {
    sink: PubSubSink,
    stream: PubSubStream,
    node: String,
    health: tokio::time::Interval,
    label: String,
    /// On Redis Cluster: the probes sent and the last one heard back.
    probe: Option<Probe>,
}

struct Probe {
    conn: Conn,
    channel: String,
    sent: u64,
    heard: u64,
}

/// What a subscription yields: a change, or a pause to let its owner check whether it is
/// still wanted (once per health check, about every second).
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// Another node changed this.
    Change(Change),
    /// Nothing new; the connection answered its health check.
    Quiet,
}

impl ChangeStream {
    /// The next change another node announced, or [`Heard::Quiet`] after a successful
    /// health check. An error means the subscription is lost and changes may have been
    /// missed: the caller must stop trusting its cache and subscribe again.
    pub async fn next(&mut self) -> StoreResult<Heard> {
        loop {
            tokio::select! {
                msg = self.stream.next() => {
                    let Some(msg) = msg else {
                        return Err(StoreError::Unavailable(format!(
                            "the change subscription on {} was closed", self.label
                        )));
                    };
                    let Ok(text) = msg.get_payload::<String>() else { continue };
                    let Some((node, change)) = text.split_once(' ') else { continue };
                    if let Some(n) = change.strip_prefix(PROBE_TAG) {
                        if let (true, Some(p), Ok(n)) = (node == self.node, &mut self.probe, n.parse()) {
                            p.heard = p.heard.max(n);
                        }
                        continue;
                    }
                    if node == self.node {
                        continue;
                    }
                    match Change::decode(change) {
                        Some(c) => return Ok(Heard::Change(c)),
                        None => {
                            tracing::warn!(message = %text, "unreadable change announcement ignored");
                            continue;
                        }
                    }
                }
                _ = self.health.tick() => {
                    let ping = self.sink.ping::<redis::Value>();
                    match tokio::time::timeout(HEALTH_TIMEOUT, ping).await {
                        Ok(Ok(_)) => {
                            self.send_probe().await?;
                            return Ok(Heard::Quiet);
                        }
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => {
                            return Err(StoreError::Unavailable(format!(
                                "the change subscription on {} did not answer its health check within {HEALTH_TIMEOUT:?}",
                                self.label
                            )))
                        }
                    }
                }
            }
        }
    }
}

impl ChangeStream {
    /// On Redis Cluster: fails when the probe sent two checks ago has not come back, then
    /// publishes the next one.
    async fn send_probe(&mut self) -> StoreResult<()> {
        let Some(p) = &mut self.probe else {
            return Ok(());
        };
        if p.sent >= 2 && p.heard < p.sent - 1 {
            return Err(StoreError::Unavailable(format!(
                "the change subscription on {} did not hear its own probe back: the node it \
                 listens on may be cut off from the cluster, or announcements cannot be published",
                self.label
            )));
        }
        p.sent += 1;
        let msg = format!("{} {PROBE_TAG}{}", self.node, p.sent);
        let mut conn = p.conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&p.channel).arg(msg);
        let publish = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(HEALTH_TIMEOUT, publish).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the change subscription on {} could not publish its probe within {HEALTH_TIMEOUT:?}",
                self.label
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_reads_back_as_itself() {
        for c in [
            Change::Session("abc.def".into()),
            Change::SessionsOfUser("u1".into()),
            Change::User("u:with:colons".into()),
            Change::History("signin:jane".into()),
            Change::Device("dev 1".into()),
            Change::PolicySet(12),
        ] {
            assert_eq!(Change::decode(&c.encode()), Some(c));
        }
        assert_eq!(Change::decode("x:1"), None, "unknown kind");
        assert_eq!(Change::decode("s"), None, "no key");
    }
}
