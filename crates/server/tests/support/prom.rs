//! Reading a Prometheus scrape: each sample by name and sorted labels, and Debian's
//! `promtool check metrics` on the text (required under CI or
//! `STEPGATE_REQUIRE_PROMTOOL`, else a missing promtool skips the check).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// A scrape: the text, and each sample by name and sorted labels.
pub struct Scrape {
    pub text: String,
    pub samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// The sample `name{labels}` (labels as `k="v"` pairs in any order), 0 when absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// The sample `name{labels}`, `None` when the scrape has no such series.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        l.sort();
        let key = if l.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", l.join(","))
        };
        self.samples.get(&key).copied()
    }
}

/// `GET http://{addr}/metrics`, parsed.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            Some((name, rest)) => {
                let mut l: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                l.sort();
                format!("{name}{{{}}}", l.join(","))
            }
            None => series.to_string(),
        };
        samples.insert(key, value.parse().unwrap());
    }
    Scrape { text, samples }
}

/// `promtool check metrics` accepts `text` (skipped, with a line on stderr, when promtool
/// is missing outside CI).
pub fn promtool_accepts(text: &str) {
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("STEPGATE_REQUIRE_PROMTOOL").is_some();
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if !required => {
            eprintln!("SKIPPED: promtool is not installed ({e})");
            return;
        }
        Err(e) => panic!("promtool is required (CI / STEPGATE_REQUIRE_PROMTOOL) but: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}
