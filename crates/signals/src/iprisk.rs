//! IP risk score 0–100 from feed files (CIDR → score) and an HTTP reputation provider.
//!
//! Feeds are flattened into one sorted table of non-overlapping ranges (the highest score
//! wins where entries overlap), so a lookup is one binary search. The HTTP provider has a
//! timeout, a per-IP cache, and a configured meaning for failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime};

use crate::config::{HttpIpRiskConfig, IpRiskConfig, IpRiskFeedConfig, ProviderFailure};

/// An IP risk problem.
#[derive(Debug, thiserror::Error)]
pub enum IpRiskError {
    /// The feed file could not be read.
    #[error("IP risk feed `{path}`: {message}")]
    FeedRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A feed line did not parse.
    #[error("IP risk feed `{path}` line {line}: {message}; expected `CIDR [score 0-100]`, e.g. `203.0.113.0/24 80`")]
    FeedLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The provider's API key environment variable is not set.
    #[error("IP risk provider: environment variable `{0}` (api_key_env) is not set")]
    MissingApiKey(String),
    /// The provider's API key file cannot be read or is empty.
    #[error("IP risk provider: {0}")]
    ApiKeyFile(String),
    /// The URL has no `{ip}` placeholder.
    #[error("IP risk provider: url `{0}` must contain `{{ip}}` where the address goes")]
    BadUrl(String),
    /// The provider failed and `on_error: fail` (the gateway answers 503 / denies).
    #[error("IP risk provider failed for {ip}: {message}")]
    Provider {
        /// The address.
        ip: IpAddr,
        /// What went wrong (timeout, HTTP status, missing score).
        message: String,
    },
}

/// An IP risk score, and whether the HTTP provider failed on the way to it (its
/// `on_error` meaning answered: the score unknown, or `assume_score`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpRiskAnswer {
    /// The score 0–100; `None` when unknown.
    pub score: Option<u8>,
    /// Whether the provider failed and its failure meaning answered instead.
    pub provider_failed: bool,
}

impl IpRiskAnswer {
    fn scored(score: Option<u8>) -> Self {
        IpRiskAnswer {
            score,
            provider_failed: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Table {
    // (start, end inclusive, score); sorted, non-overlapping. IPv4 as IPv4-mapped IPv6.
    ranges: Vec<(u128, u128, u8)>,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Table {
    fn build(entries: &[(u128, u128, u8)]) -> Table {
        let mut events: Vec<(u128, bool, u8)> = Vec::with_capacity(entries.len() * 2);
        for &(s, e, score) in entries {
            events.push((s, true, score));
            if e != u128::MAX {
                events.push((e + 1, false, score));
            }
        }
        events.sort_by_key(|&(p, start, _)| (p, start));
        let mut active = [0u32; 101];
        let max = |a: &[u32; 101]| (0..=100usize).rev().find(|&i| a[i] > 0).map(|i| i as u8);
        let mut out: Vec<(u128, u128, u8)> = Vec::new();
        let mut prev = 0u128;
        let mut i = 0;
        while i < events.len() {
            let pos = events[i].0;
            if let Some(m) = max(&active) {
                if pos > prev {
                    push_merged(&mut out, prev, pos - 1, m);
                }
            }
            while i < events.len() && events[i].0 == pos {
                let (_, start, score) = events[i];
                let slot = &mut active[score.min(100) as usize];
                if start {
                    *slot += 1;
                } else {
                    *slot = slot.saturating_sub(1);
                }
                i += 1;
            }
            prev = pos;
        }
        if let Some(m) = max(&active) {
            push_merged(&mut out, prev, u128::MAX, m);
        }
        Table { ranges: out }
    }

    fn lookup(&self, ip: IpAddr) -> Option<u8> {
        let x = to_u128(ip);
        let i = self.ranges.partition_point(|r| r.0 <= x);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (x <= r.1).then_some(r.2)
    }
}

fn push_merged(out: &mut Vec<(u128, u128, u8)>, s: u128, e: u128, score: u8) {
    if let Some(last) = out.last_mut() {
        if last.2 == score && last.1.checked_add(1) == Some(s) {
            last.1 = e;
            return;
        }
    }
    out.push((s, e, score));
}

fn parse_feed(
    path: &Path,
    text: &str,
    default_score: u8,
) -> Result<Vec<(u128, u128, u8)>, IpRiskError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| IpRiskError::FeedLine {
            path: path.to_owned(),
            line: n + 1,
            message,
        };
        let mut parts = line
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|s| !s.is_empty());
        let net = parts.next().unwrap_or("");
        let net: ipnet::IpNet = match net.parse::<ipnet::IpNet>() {
            Ok(n) => n,
            Err(_) => match net.parse::<IpAddr>() {
                Ok(ip) => ipnet::IpNet::from(ip),
                Err(_) => return Err(err(format!("`{net}` is not a CIDR or IP address"))),
            },
        };
        let score = match parts.next() {
            None => default_score,
            Some(s) => match s.parse::<u8>() {
                Ok(v) if v <= 100 => v,
                _ => return Err(err(format!("score `{s}` is not a whole number 0–100"))),
            },
        };
        let (s, e) = (to_u128(net.network()), to_u128(net.broadcast()));
        out.push((s, e, score));
    }
    Ok(out)
}

/// One feed file, reloaded when it changes.
pub struct IpRiskFeed {
    cfg: IpRiskFeedConfig,
    table: RwLock<Arc<Table>>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

impl std::fmt::Debug for IpRiskFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpRiskFeed")
            .field("path", &self.cfg.path)
            .finish()
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl IpRiskFeed {
    /// Loads a feed file.
    pub fn load(cfg: &IpRiskFeedConfig) -> Result<Self, IpRiskError> {
        let stamp = file_stamp(&cfg.path);
        let table = Self::read(cfg)?;
        Ok(IpRiskFeed {
            cfg: cfg.clone(),
            table: RwLock::new(Arc::new(table)),
            stamp: Mutex::new(stamp),
        })
    }

    fn read(cfg: &IpRiskFeedConfig) -> Result<Table, IpRiskError> {
        let text = std::fs::read_to_string(&cfg.path).map_err(|e| IpRiskError::FeedRead {
            path: cfg.path.clone(),
            message: e.to_string(),
        })?;
        Ok(Table::build(&parse_feed(
            &cfg.path,
            &text,
            cfg.default_score,
        )?))
    }

    /// The feed's score for `ip`, if listed.
    pub fn lookup(&self, ip: IpAddr) -> Option<u8> {
        let t = match self.table.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        t.lookup(ip)
    }

    /// Re-reads the file if it changed; a bad new file keeps the old table.
    pub fn reload_if_changed(&self) -> Result<bool, IpRiskError> {
        let now = file_stamp(&self.cfg.path);
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_none() || now == *last {
            return Ok(false);
        }
        let table = Self::read(&self.cfg)?;
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        *last = now;
        Ok(true)
    }
}

/// An HTTP IP reputation provider with cache and timeout.
pub struct HttpIpRiskProvider {
    cfg: HttpIpRiskConfig,
    api_key: Option<String>,
    client: reqwest::Client,
    cache: Mutex<HashMap<IpAddr, (Instant, u8)>>,
}

impl std::fmt::Debug for HttpIpRiskProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpIpRiskProvider")
            .field("url", &self.cfg.url)
            .finish()
    }
}

impl HttpIpRiskProvider {
    /// Builds the provider, reading the API key from its file or environment variable.
    pub fn new(cfg: &HttpIpRiskConfig) -> Result<Self, IpRiskError> {
        if !cfg.url.contains("{ip}") {
            return Err(IpRiskError::BadUrl(cfg.url.clone()));
        }
        let api_key = match (&cfg.api_key_file, &cfg.api_key_env) {
            (Some(path), _) => Some(
                crate::config::read_secret_file("ip_risk.http.api_key_file", path)
                    .map_err(IpRiskError::ApiKeyFile)?,
            ),
            (None, Some(var)) => {
                Some(std::env::var(var).map_err(|_| IpRiskError::MissingApiKey(var.clone()))?)
            }
            (None, None) => None,
        };
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout.0)
            .build()
            .map_err(|e| IpRiskError::BadUrl(format!("{} ({e})", cfg.url)))?;
        Ok(HttpIpRiskProvider {
            cfg: cfg.clone(),
            api_key,
            client,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's score for `ip` (0–100), applying the configured failure meaning.
    pub async fn lookup(&self, ip: IpAddr) -> Result<Option<u8>, IpRiskError> {
        self.answer(ip).await.map(|a| a.score)
    }

    /// [`HttpIpRiskProvider::lookup`], telling also whether the provider failed and its
    /// configured failure meaning (`unknown`, `assume_score`) answered instead.
    pub async fn answer(&self, ip: IpAddr) -> Result<IpRiskAnswer, IpRiskError> {
        if let Some(s) = self.cached(ip) {
            return Ok(IpRiskAnswer::scored(Some(s)));
        }
        match self.fetch(ip).await {
            Ok(s) => {
                self.store(ip, s);
                Ok(IpRiskAnswer::scored(Some(s)))
            }
            Err(message) => {
                tracing::warn!(%ip, %message, "IP risk provider failed");
                let score = match self.cfg.on_error {
                    ProviderFailure::Fail => return Err(IpRiskError::Provider { ip, message }),
                    ProviderFailure::Unknown => None,
                    ProviderFailure::AssumeScore => Some(self.cfg.assume_score.min(100)),
                };
                Ok(IpRiskAnswer {
                    score,
                    provider_failed: true,
                })
            }
        }
    }

    fn cached(&self, ip: IpAddr) -> Option<u8> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&ip)
            .filter(|(t, _)| t.elapsed() < self.cfg.cache_ttl.0)
            .map(|(_, s)| *s)
    }

    fn store(&self, ip: IpAddr, score: u8) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.cfg.cache_size {
            let ttl = self.cfg.cache_ttl.0;
            cache.retain(|_, (t, _)| t.elapsed() < ttl);
            if cache.len() >= self.cfg.cache_size {
                cache.clear();
            }
        }
        if self.cfg.cache_size > 0 {
            cache.insert(ip, (Instant::now(), score));
        }
    }

    async fn fetch(&self, ip: IpAddr) -> Result<u8, String> {
        let url = self.cfg.url.replace("{ip}", &ip.to_string());
        let mut req = self.client.get(&url).header("accept", "application/json");
        if let (Some(h), Some(k)) = (&self.cfg.api_key_header, &self.api_key) {
            req = req.header(h.as_str(), k.as_str());
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("timed out after {}", self.cfg.timeout)
            } else {
                format!("request failed: {e}")
            }
        })?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("answer is not JSON: {e}"))?;
        let v = json_path(&body, &self.cfg.score_path)
            .ok_or_else(|| format!("no value at `{}`", self.cfg.score_path))?;
        let n = match v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("value at `{}` is not a number", self.cfg.score_path))?;
        let max = if self.cfg.score_max > 0.0 {
            self.cfg.score_max
        } else {
            100.0
        };
        Ok((n / max * 100.0).round().clamp(0.0, 100.0) as u8)
    }
}

/// Follows a dotted path (`data.score`, `results.0.risk`; a leading `$.` is allowed).
pub fn json_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let path = path.trim().trim_start_matches('$').trim_start_matches('.');
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        cur = match cur {
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            serde_json::Value::Object(o) => o.get(part)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// All configured IP risk sources; the score is the highest any of them gives.
#[derive(Debug, Default)]
pub struct IpRiskScorer {
    /// Feed files.
    pub feeds: Vec<IpRiskFeed>,
    /// The HTTP provider.
    pub http: Option<HttpIpRiskProvider>,
}

impl IpRiskScorer {
    /// Loads the feeds and builds the provider.
    pub fn from_config(cfg: &IpRiskConfig) -> Result<Self, IpRiskError> {
        Ok(IpRiskScorer {
            feeds: cfg
                .feeds
                .iter()
                .map(IpRiskFeed::load)
                .collect::<Result<_, _>>()?,
            http: cfg.http.as_ref().map(HttpIpRiskProvider::new).transpose()?,
        })
    }

    /// The score for `ip`: `None` when no source is configured (or the provider's answer is
    /// unknown and no feed lists the IP); an error only when the provider fails with
    /// `on_error: fail`.
    pub async fn score(&self, ip: IpAddr) -> Result<Option<u8>, IpRiskError> {
        self.assess(ip).await.map(|a| a.score)
    }

    /// [`IpRiskScorer::score`], telling also whether the HTTP provider failed on the way
    /// (and its failure meaning answered for it): a failure the decision does not see, but
    /// the operator should.
    pub async fn assess(&self, ip: IpAddr) -> Result<IpRiskAnswer, IpRiskError> {
        let mut best = self.assess_feeds(ip);
        if let Some(h) = &self.http {
            let answer = h.answer(ip).await?;
            best.provider_failed = answer.provider_failed;
            if let Some(s) = answer.score {
                best.score = Some(best.score.map_or(s, |b| b.max(s)));
            }
        }
        Ok(best)
    }

    /// [`IpRiskScorer::assess`] by the feeds alone: the whole answer when no HTTP provider
    /// is configured ([`IpRiskScorer::http`]), with no future to hold.
    pub fn assess_feeds(&self, ip: IpAddr) -> IpRiskAnswer {
        let mut best = IpRiskAnswer::default();
        if !self.feeds.is_empty() {
            best.score = Some(
                self.feeds
                    .iter()
                    .filter_map(|f| f.lookup(ip))
                    .max()
                    .unwrap_or(0),
            );
        }
        best
    }

    /// Re-reads changed feed files.
    pub fn reload_if_changed(&self) -> Result<bool, IpRiskError> {
        let mut any = false;
        for f in &self.feeds {
            any |= f.reload_if_changed()?;
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        Table::build(&parse_feed(Path::new("feed.txt"), text, 100).unwrap())
    }

    #[test]
    fn overlapping_ranges_take_the_highest_score() {
        let t = table("# hosting\n203.0.113.0/24 40\n203.0.113.128/25, 70\n203.0.113.200 95 # tor exit\n2001:db8::/32 60\n");
        let s = |ip: &str| t.lookup(ip.parse().unwrap());
        assert_eq!(s("203.0.113.1"), Some(40));
        assert_eq!(s("203.0.113.130"), Some(70));
        assert_eq!(s("203.0.113.200"), Some(95));
        assert_eq!(s("203.0.113.201"), Some(70));
        assert_eq!(s("203.0.114.1"), None);
        assert_eq!(s("2001:db8::1"), Some(60));
        assert_eq!(s("::ffff:203.0.113.200"), Some(95));
        assert_eq!(s("2001:db9::1"), None);
    }

    #[test]
    fn default_score_and_full_ranges() {
        let t = table("0.0.0.0/0 5\n::/0 3\n198.51.100.7\n");
        assert_eq!(t.lookup("198.51.100.7".parse().unwrap()), Some(100));
        assert_eq!(t.lookup("8.8.8.8".parse().unwrap()), Some(5));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), Some(3));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse_feed(Path::new("f"), "10.0.0.0/8 10\nnot-an-ip 5\n", 100).unwrap_err();
        assert!(matches!(e, IpRiskError::FeedLine { line: 2, .. }), "{e}");
        let e = parse_feed(Path::new("f"), "10.0.0.0/8 101\n", 100).unwrap_err();
        assert!(e.to_string().contains("0–100"), "{e}");
    }

    #[test]
    fn json_paths() {
        let v: serde_json::Value =
            serde_json::json!({"data": {"score": 12, "list": [{"risk": "7"}]}});
        assert_eq!(json_path(&v, "data.score"), Some(&serde_json::json!(12)));
        assert_eq!(
            json_path(&v, "$.data.list.0.risk"),
            Some(&serde_json::json!("7"))
        );
        assert_eq!(json_path(&v, "data.nope"), None);
    }
}
