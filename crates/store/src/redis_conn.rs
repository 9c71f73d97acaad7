//! The connection to Redis that the hot store and the change feed share the behaviour of:
//! one multiplexed, auto-reconnecting connection to a single Redis (`redis://`, `rediss://`),
//! to the primary that Redis Sentinel names (`redis+sentinel://`), found again after a
//! failover, or to a Redis Cluster (`redis+cluster://`).
//!
//! Sentinel URLs: `redis+sentinel://[[user]:password@]host:port[,host:port…]/<primary
//! name>[/<db>]`. The sentinels are asked (in order, the first that answers) for the address
//! of the primary named in the path; the password and user, when given, are the primary's
//! (the sentinels are asked without). When a command fails because the primary is gone —
//! the connection refused or dropped, a timeout, or `READONLY` from a node that has become a
//! replica — the sentinels are asked again (one question at a time, at most once a second).
//! When they name a primary that answers, the command is tried once more there (the old
//! primary refused it, lost it with the connection, or is gone with whatever it held);
//! otherwise it fails, and the request that needed it is refused with 503, never let through.
//!
//! Cluster URLs: `redis+cluster://[[user]:password@]host:port[,host:port…][/]`. The nodes
//! listed are where the client starts: it asks them for the cluster's slot map and then
//! talks to every primary directly, following `MOVED`/`ASK` redirections and refreshing the
//! map after a failover (the `redis` crate's async cluster client). Cluster has one
//! database (0). A command whose slot has no serving primary fails (`CLUSTERDOWN`, or no
//! answer within the response timeout), so the request that needed it is refused.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::{StoreError, StoreResult};

/// How a Redis connection behaves when Redis is slow or gone: a request that needs hot state
/// must fail (503) within seconds rather than wait for TCP to give up, and reconnecting
/// retries briefly in the background of the next command instead of holding it.
pub(crate) fn connection_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
        .set_number_of_retries(2)
        .set_max_delay(1000)
}

/// How long the sentinels may take to name the primary.
const ASK_SENTINELS: Duration = Duration::from_secs(3);

/// The least time between two questions to the sentinels.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// How long a Cluster command may take in all, with its redirections and retries.
const CLUSTER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis is: one server, a primary that sentinels name, or a cluster.
#[derive(Clone)]
pub(crate) enum Target {
    Single(redis::Client),
    Sentinel(Arc<SentinelTarget>),
    Cluster(Arc<ClusterTarget>),
}

/// A Redis Cluster: the nodes the URL lists, and the credentials every node takes.
pub(crate) struct ClusterTarget {
    nodes: Vec<redis::ConnectionInfo>,
    client: redis::cluster::ClusterClient,
}

/// The sentinels and the primary's name (see the module documentation).
pub(crate) struct SentinelTarget {
    sentinels: Vec<String>,
    primary: String,
    node: redis::sentinel::SentinelNodeConnectionInfo,
}

impl Target {
    /// Where `store.redis` points, with the password from `password_file` or `password_env`
    /// in place of the URL's when one is set (`label`: the URL redacted, for messages).
    pub(crate) fn from_config(
        config: &crate::config::RedisConfig,
        label: &str,
    ) -> StoreResult<Target> {
        Target::parse(&config.url, label, config.password()?)
    }

    /// Reads `url` (`store.redis.url`), with `password` in place of the URL's when given.
    pub(crate) fn parse(url: &str, label: &str, password: Option<String>) -> StoreResult<Target> {
        let bad = |why: String| {
            StoreError::Config(format!("`store.redis.url` ({label}) is not usable: {why}"))
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            return Target::parse_cluster(rest, &bad, password);
        }
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            use redis::IntoConnectionInfo;
            let mut info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
            if password.is_some() {
                info.redis.password = password;
            }
            return redis::Client::open(info)
                .map(Target::Single)
                .map_err(|e| bad(e.to_string()));
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| {
            bad("a Sentinel URL names the primary after the hosts: \
                 redis+sentinel://host:26379[,host:26379]/<primary name>[/<db>]"
                .into())
        })?;
        let mut path = path.split('/');
        let primary = path.next().unwrap_or_default().to_string();
        if primary.is_empty() {
            return Err(bad("the primary's name after the hosts is missing".into()));
        }
        let db = match path.next() {
            None | Some("") => 0,
            Some(d) => d
                .parse::<i64>()
                .map_err(|_| bad(format!("the database `{d}` is not a number")))?,
        };
        if path.next().is_some() {
            return Err(bad("expected /<primary name>[/<db>] after the hosts".into()));
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            let (h, p) = host.rsplit_once(':').ok_or_else(|| {
                bad(format!(
                    "the sentinel `{host}` needs a port (Sentinel listens on 26379 by default)"
                ))
            })?;
            if h.is_empty() || p.parse::<u16>().is_err() {
                return Err(bad(format!("the sentinel `{host}` is not host:port")));
            }
            sentinels.push(format!("redis://{host}"));
        }
        let mut info = redis::RedisConnectionInfo {
            db,
            ..Default::default()
        };
        read_auth(auth, &mut info, password, &bad)?;
        // Every sentinel URL must be one the client accepts.
        redis::sentinel::Sentinel::build(sentinels.clone()).map_err(|e| bad(e.to_string()))?;
        Ok(Target::Sentinel(Arc::new(SentinelTarget {
            sentinels,
            primary,
            node: redis::sentinel::SentinelNodeConnectionInfo {
                tls_mode: None,
                redis_connection_info: Some(info),
            },
        })))
    }

    /// A client for the server to talk to now: the single server, or the primary the
    /// sentinels name.
    /// With a cluster, a client for the first listed node that accepts a connection (a
    /// subscription needs one node: classic `PUBLISH` reaches every node of a cluster).
    pub(crate) async fn client(&self) -> StoreResult<redis::Client> {
        match self {
            Target::Single(c) => Ok(c.clone()),
            Target::Sentinel(s) => s.primary().await,
            Target::Cluster(c) => c.any_node().await,
        }
    }

    /// `rest`: what follows `redis+cluster://`.
    fn parse_cluster(
        rest: &str,
        bad: &dyn Fn(String) -> StoreError,
        password: Option<String>,
    ) -> StoreResult<Target> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !(path.is_empty() || path == "0") {
            return Err(bad(format!(
                "Redis Cluster has one database (0), so nothing may follow the hosts but `/`, got `/{path}`"
            )));
        }
        let mut info = redis::RedisConnectionInfo::default();
        read_auth(auth, &mut info, password, bad)?;
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            let (h, p) = host.rsplit_once(':').ok_or_else(|| {
                bad(format!(
                    "the cluster node `{host}` needs a port: redis+cluster://host:7000[,host:7001…]"
                ))
            })?;
            let port = p.parse::<u16>().ok().filter(|_| !h.is_empty());
            let Some(port) = port else {
                return Err(bad(format!("the cluster node `{host}` is not host:port")));
            };
            nodes.push(redis::ConnectionInfo {
                addr: redis::ConnectionAddr::Tcp(h.trim_matches(['[', ']']).to_string(), port),
                redis: info.clone(),
            });
        }
        let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(CLUSTER_RESPONSE_TIMEOUT)
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Target::Cluster(Arc::new(ClusterTarget { nodes, client })))
    }
}

/// Reads `user:password` (percent-encoded) from a Sentinel or Cluster URL into `info`, with
/// `password` (from `password_file`/`password_env`) in place of the URL's when given.
fn read_auth(
    auth: Option<&str>,
    info: &mut redis::RedisConnectionInfo,
    password: Option<String>,
    bad: &dyn Fn(String) -> StoreError,
) -> StoreResult<()> {
    if let Some(auth) = auth {
        let (user, secret) = match auth.split_once(':') {
            Some((u, p)) => (u, p),
            None => ("", auth),
        };
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| bad("the user or password is not valid percent-encoding".into()))
        };
        if !user.is_empty() {
            info.username = Some(decode(user)?);
        }
        if !secret.is_empty() {
            info.password = Some(decode(secret)?);
        }
    }
    if password.is_some() {
        info.password = password;
    }
    Ok(())
}

impl ClusterTarget {
    async fn any_node(&self) -> StoreResult<redis::Client> {
        let mut why = Vec::new();
        for node in &self.nodes {
            let client = redis::Client::open(node.clone())?;
            let try_it = async {
                let mut c = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<()>(&mut c).await
            };
            match tokio::time::timeout(Duration::from_secs(2), try_it).await {
                Ok(Ok(())) => return Ok(client),
                Ok(Err(e)) => why.push(format!("{}: {e}", node.addr)),
                Err(_) => why.push(format!("{}: no answer within 2s", node.addr)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "no Redis Cluster node answered ({})",
            why.join("; ")
        )))
    }
}

impl SentinelTarget {
    async fn primary(&self) -> StoreResult<redis::Client> {
        let ask = async {
            let mut sentinel = redis::sentinel::Sentinel::build(self.sentinels.clone())?;
            sentinel
                .async_master_for(&self.primary, Some(&self.node))
                .await
        };
        match tokio::time::timeout(ASK_SENTINELS, ask).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "no sentinel named a reachable primary `{}`: {e}",
                self.primary
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the sentinels did not name the primary `{}` within {ASK_SENTINELS:?}",
                self.primary
            ))),
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A connection to the target: cheap to clone; with Sentinel, re-pointed at the new
/// primary after a failover (module documentation).
#[derive(Clone)]
pub(crate) struct Conn {
    inner: ConnKind,
    db: i64,
}

#[derive(Clone)]
enum ConnKind {
    /// One server, or the primary the sentinels name.
    Node(Arc<ConnInner>),
    /// Every primary of a cluster, each command sent to its key's slot.
    Cluster(redis::cluster_async::ClusterConnection),
}

struct ConnInner {
    target: Target,
    /// The connection to the server in use, and how many times it was re-pointed.
    current: Mutex<(ConnectionManager, u64)>,
    /// When the sentinels were last asked (at most once per [`ASK_AGAIN_AFTER`]).
    asked: tokio::sync::Mutex<Instant>,
}

impl Conn {
    /// Connects (retrying with backoff while Redis is down, as the connection manager does).
    pub(crate) async fn connect(target: Target) -> StoreResult<Conn> {
        if let Target::Cluster(c) = &target {
            let conn = c.client.get_async_connection().await?;
            return Ok(Conn {
                inner: ConnKind::Cluster(conn),
                db: 0,
            });
        }
        let client = target.client().await?;
        let db = client.get_connection_info().redis.db;
        let manager = ConnectionManager::new_with_config(client, connection_config()).await?;
        Ok(Conn {
            inner: ConnKind::Node(Arc::new(ConnInner {
                target,
                current: Mutex::new((manager, 0)),
                asked: tokio::sync::Mutex::new(Instant::now()),
            })),
            db,
        })
    }
}

impl Conn {
    /// How many keys match `pattern` (a `SCAN … MATCH` pattern), over the whole keyspace:
    /// on a Cluster every primary is scanned in turn (a plain `SCAN` would see one node's
    /// share only). Non-blocking for Redis: the scan goes in batches of 1000.
    pub(crate) async fn count_keys(&self, pattern: &str) -> StoreResult<u64> {
        let ConnKind::Cluster(cluster) = &self.inner else {
            let conn = self.clone();
            return scan_count(pattern, move |cmd| {
                let mut conn = conn.clone();
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
            .await;
        };
        let mut cluster = cluster.clone();
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut cluster)
            .await?;
        let mut primaries = std::collections::BTreeSet::new();
        if let Value::Array(ranges) = slots {
            for range in ranges {
                let Value::Array(fields) = range else {
                    continue;
                };
                // start, end, then the primary: [host, port, id, …], then its replicas.
                let Some(Value::Array(primary)) = fields.get(2) else {
                    continue;
                };
                let host = match primary.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::SimpleString(s)) => s.clone(),
                    _ => continue,
                };
                let Some(Value::Int(port)) = primary.get(1) else {
                    continue;
                };
                if let Ok(port) = u16::try_from(*port) {
                    primaries.insert((host, port));
                }
            }
        }
        if primaries.is_empty() {
            return Err(StoreError::Unavailable(
                "Redis Cluster: CLUSTER SLOTS named no primary".into(),
            ));
        }
        let mut total = 0;
        for (host, port) in primaries {
            let cluster = cluster.clone();
            total += scan_count(pattern, move |cmd| {
                let mut cluster = cluster.clone();
                let route = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    },
                );
                async move { cluster.route_command(&cmd, route).await }
            })
            .await?;
        }
        Ok(total)
    }
}

/// Counts the keys matching `pattern` with `SCAN` through `send` (one node).
async fn scan_count<F, Fut>(pattern: &str, send: F) -> StoreResult<u64>
where
    F: Fn(Cmd) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<Value>>,
{
    let mut cursor: u64 = 0;
    let mut n = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let (next, keys): (u64, Vec<Value>) = redis::from_redis_value(&send(cmd).await?)?;
        n += keys.len() as u64;
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

impl ConnInner {
    /// The connection in use and its generation.
    fn manager(&self) -> (ConnectionManager, u64) {
        match self.current.lock() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a command failed on generation `used`: with Sentinel, when the failure says
    /// the primary may have moved, asks the sentinels where it is now and re-points the
    /// connection. Whether the connection now points elsewhere than `used` did (so the
    /// command may be tried once more, on the new primary: the old one refused it, lost it
    /// with the connection, or is gone with whatever it held).
    async fn after_failure(&self, e: &redis::RedisError, used: u64) -> bool {
        let Target::Sentinel(s) = &self.target else {
            return false;
        };
        let moved = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.kind() == redis::ErrorKind::ReadOnly;
        if !moved {
            return false;
        }
        // One question at a time; the others wait for its answer.
        let mut asked = self.asked.lock().await;
        if self.manager().1 != used {
            return true; // re-pointed meanwhile
        }
        if asked.elapsed() < ASK_AGAIN_AFTER {
            return false;
        }
        *asked = Instant::now();
        let client = match s.primary().await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "Redis Sentinel: no primary to fail over to yet");
                return false;
            }
        };
        let addr = client.get_connection_info().addr.to_string();
        match ConnectionManager::new_with_config(client, connection_config()).await {
            Ok(m) => {
                if let Ok(mut current) = self.current.lock() {
                    *current = (m, used + 1);
                }
                tracing::warn!(primary = %s.primary, %addr, "Redis Sentinel: following the primary to its (new) address");
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, %addr, "Redis Sentinel: the primary named could not be reached");
                false
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let inner = match &mut self.inner {
                ConnKind::Cluster(c) => return c.req_packed_command(cmd).await,
                ConnKind::Node(inner) => inner,
            };
            let (mut m, used) = inner.manager();
            match m.req_packed_command(cmd).await {
                Err(e) if inner.after_failure(&e, used).await => {
                    inner.manager().0.req_packed_command(cmd).await
                }
                r => r,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let inner = match &mut self.inner {
                ConnKind::Cluster(c) => return c.req_packed_commands(cmd, offset, count).await,
                ConnKind::Node(inner) => inner,
            };
            let (mut m, used) = inner.manager();
            match m.req_packed_commands(cmd, offset, count).await {
                Err(e) if inner.after_failure(&e, used).await => {
                    inner
                        .manager()
                        .0
                        .req_packed_commands(cmd, offset, count)
                        .await
                }
                r => r,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> Arc<SentinelTarget> {
        match Target::parse(url, "test", None).unwrap() {
            Target::Sentinel(s) => s,
            _ => panic!("not read as a Sentinel URL"),
        }
    }

    #[test]
    fn sentinel_urls_name_sentinels_primary_db_and_credentials() {
        let s = sentinel("redis+sentinel://:p%40ss@10.0.0.1:26379,10.0.0.2:26380/main/3");
        assert_eq!(
            s.sentinels,
            ["redis://10.0.0.1:26379", "redis://10.0.0.2:26380"]
        );
        assert_eq!(s.primary, "main");
        let info = s.node.redis_connection_info.as_ref().unwrap();
        assert_eq!(info.db, 3);
        assert_eq!(info.password.as_deref(), Some("p@ss"));
        assert_eq!(info.username, None);
        let s = sentinel("redis+sentinel://app:secret@h:26379/main");
        let info = s.node.redis_connection_info.as_ref().unwrap();
        assert_eq!((info.username.as_deref(), info.db), (Some("app"), 0));
    }

    #[test]
    fn a_password_from_a_file_or_the_environment_replaces_the_urls() {
        let Target::Sentinel(s) = Target::parse(
            "redis+sentinel://:inurl@h:26379/main",
            "x",
            Some("fromfile".into()),
        )
        .unwrap() else {
            panic!("not a Sentinel URL");
        };
        let info = s.node.redis_connection_info.as_ref().unwrap();
        assert_eq!(info.password.as_deref(), Some("fromfile"));
        let Target::Single(c) =
            Target::parse("redis://:inurl@h:6379", "x", Some("fromfile".into())).unwrap()
        else {
            panic!("not one server");
        };
        assert_eq!(
            c.get_connection_info().redis.password.as_deref(),
            Some("fromfile")
        );
    }

    #[test]
    fn a_bad_sentinel_url_says_what_is_wrong() {
        for (url, says) in [
            ("redis+sentinel://h:26379", "names the primary"),
            (
                "redis+sentinel://h:26379/",
                "name after the hosts is missing",
            ),
            ("redis+sentinel://h/main", "needs a port"),
            ("redis+sentinel://h:port/main", "is not host:port"),
            ("redis+sentinel://h:26379/main/x", "`x` is not a number"),
            (
                "redis+sentinel://h:26379/main/0/extra",
                "expected /<primary name>",
            ),
            ("redis+sentinel://:%zz@h:26379/main", "percent-encoding"),
        ] {
            let e = Target::parse(url, "the url", None)
                .err()
                .expect(url)
                .to_string();
            assert!(e.contains("`store.redis.url` (the url)"), "{url}: {e}");
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    fn cluster(url: &str, password: Option<&str>) -> Arc<ClusterTarget> {
        match Target::parse(url, "test", password.map(String::from)).unwrap() {
            Target::Cluster(c) => c,
            _ => panic!("not read as a Cluster URL"),
        }
    }

    #[test]
    fn cluster_urls_name_the_nodes_and_credentials() {
        let c = cluster(
            "redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001/",
            None,
        );
        let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:7000", "10.0.0.2:7001"]);
        for n in &c.nodes {
            assert_eq!(n.redis.username.as_deref(), Some("app"));
            assert_eq!(n.redis.password.as_deref(), Some("p@ss"));
            assert_eq!(n.redis.db, 0);
        }
        let c = cluster("redis+cluster://h:7000", None);
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].redis.password, None);
        let c = cluster("redis+cluster://:inurl@h:7000,h:7001/0", Some("fromfile"));
        assert!(c
            .nodes
            .iter()
            .all(|n| n.redis.password.as_deref() == Some("fromfile")));
    }

    #[test]
    fn a_bad_cluster_url_says_what_is_wrong() {
        for (url, says) in [
            ("redis+cluster://h/", "needs a port"),
            ("redis+cluster://h:7000,h/", "`h` needs a port"),
            ("redis+cluster://h:port", "is not host:port"),
            ("redis+cluster://:7000", "is not host:port"),
            ("redis+cluster://h:7000/2", "one database (0)"),
            ("redis+cluster://:%zz@h:7000", "percent-encoding"),
        ] {
            let e = Target::parse(url, "the url", None)
                .err()
                .expect(url)
                .to_string();
            assert!(e.contains("`store.redis.url` (the url)"), "{url}: {e}");
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_plain_url_is_one_server() {
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/2", "x", None).unwrap(),
            Target::Single(_)
        ));
        assert!(Target::parse("http://127.0.0.1", "x", None).is_err());
    }
}
