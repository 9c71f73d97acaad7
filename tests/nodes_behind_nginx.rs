//! Three `stepgate serve` processes on one PostgreSQL and one Redis behind Debian's nginx
//! load-balancing round-robin, as docs/deploy.md describes a multi-node deployment: a
//! sign-in through any node holds on all of them, a sign-out through one ends the session
//! on all of them on the next request, a node killed with SIGKILL under load leaves the
//! others serving (nginx retries the next node), and the node restarted on its port takes
//! requests again with the sessions the others made, without any manual step.
//!
//! Runs when `STEPGATE_TEST_POSTGRES_URL` and `STEPGATE_TEST_REDIS_URL` are set and nginx
//! is installed; under `STEPGATE_REQUIRE_NGINX=1` (set by `.ci/run`) a missing nginx fails.

#[path = "support/skipped.rs"]
mod skipped;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const PASSWORD: &str = "correct horse battery staple 42";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        let required = std::env::var("STEPGATE_REQUIRE_NGINX").is_ok_and(|v| v == "1")
            || std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !required,
            "nginx is required (STEPGATE_REQUIRE_NGINX=1) but not installed"
        );
        skipped::record("nginx", "apt-get install nginx");
    }
    found
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An upstream that answers every request with 200 "upstream".
async fn upstream() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream")
                    .await;
            });
        }
    });
    port
}

fn hash_password() -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["user", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One deployment: its configuration file and nodes.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    ports: [u16; 3],
    nodes: Vec<Option<Proc>>,
}

impl Deployment {
    fn start_node(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("node{i}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .env("STEPGATE_SECRET_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i] = Some(Proc(child));
        let start = Instant::now();
        while !ready(self.ports[i]) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node {i} did not become ready: {}",
                std::fs::read_to_string(self.dir.path().join(format!("node{i}.log")))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self, i: usize) {
        drop(self.nodes[i].take());
    }
}

/// Whether the node on `port` says it is ready and listening to the other nodes.
fn ready(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET /readyz?details HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") && out.contains("\"in_use\":true")
}

fn nginx_conf(dir: &Path, listen: u16, nodes: &[u16; 3]) -> String {
    let d = dir.display();
    let servers: String = nodes
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p} max_fails=0;\n"))
        .collect();
    format!(
        "events {{}}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream stepgate {{
{servers}  }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://stepgate;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_next_upstream error timeout;
      add_header X-Stepgate-Node $upstream_addr always;
    }}
  }}
}}
"
    )
}

/// A form field's value in a portal page.
fn field(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in:\n{html}"))
        + needle.len();
    html[i..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

struct Client {
    follow: reqwest::Client,
    plain: reqwest::Client,
    base: String,
}

impl Client {
    fn new(nginx: u16) -> Client {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let at: SocketAddr = ([127, 0, 0, 1], nginx).into();
        let build = |follow: bool| {
            reqwest::Client::builder()
                .resolve("app.test", at)
                .cookie_provider(jar.clone())
                .redirect(if follow {
                    reqwest::redirect::Policy::limited(10)
                } else {
                    reqwest::redirect::Policy::none()
                })
                .build()
                .unwrap()
        };
        Client {
            follow: build(true),
            plain: build(false),
            base: format!("http://app.test:{nginx}"),
        }
    }

    async fn sign_in(&self) {
        let page = self
            .follow
            .get(format!("{}/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.url().path().ends_with("/_stepgate/login"),
            "{}",
            page.url()
        );
        let html = page.text().await.unwrap();
        let r = self
            .follow
            .post(format!("{}/_stepgate/login", self.base))
            .form(&[
                ("csrf", field(&html, "csrf")),
                ("t", field(&html, "t")),
                ("username", "jane".into()),
                ("password", PASSWORD.into()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "upstream", "signed in, at the app");
    }

    /// GET / without following redirects: the status and the node that answered.
    async fn get(&self) -> (u16, String) {
        let r = self
            .plain
            .get(format!("{}/", self.base))
            .send()
            .await
            .unwrap();
        let node = r
            .headers()
            .get("x-stepgate-node")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (r.status().as_u16(), node)
    }

    /// `n` GETs; each answer's status, and the nodes that answered.
    async fn gets(&self, n: usize) -> (Vec<u16>, BTreeSet<String>) {
        let mut statuses = Vec::new();
        let mut nodes = BTreeSet::new();
        for _ in 0..n {
            let (s, node) = self.get().await;
            statuses.push(s);
            nodes.insert(node);
        }
        (statuses, nodes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_nginx_share_sessions_and_survive_a_killed_node() {
    let pg = std::env::var("STEPGATE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let redis = std::env::var("STEPGATE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let (Some(pg), Some(redis)) = (pg, redis) else {
        skipped::record(
            "PostgreSQL and Redis",
            "set STEPGATE_TEST_POSTGRES_URL and STEPGATE_TEST_REDIS_URL",
        );
        return;
    };
    let Some(nginx_bin) = nginx() else { return };
    let run = format!(
        "n{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let dir = tempfile::tempdir().unwrap();
    let up = upstream().await;
    let front = free_port();
    let ports = [free_port(), free_port(), free_port()];
    let config = dir.path().join("stepgate.yaml");
    std::fs::write(
        &config,
        format!(
            "server:
  public_url: http://app.test:{front}
  data_dir: data
  trusted_proxies: [127.0.0.1/32]
apps:
  - {{ id: console, hosts: [app.test], upstream: 'http://127.0.0.1:{up}' }}
sessions: {{ cookie: {{ secure: false }}, cache_ttl: 10m }}
store:
  postgres: {{ url: '{pg}', schema: {run} }}
  redis: {{ url: '{redis}', key_prefix: '{run}:' }}
users:
  - {{ username: jane, password_hash: '{hash}' }}
default_outcome: allow
policies:
  - {{ name: sign-in-with-a-password, priority: 30, targets: {{ sign_in: true }}, outcome: allow }}
",
            hash = hash_password()
        ),
    )
    .unwrap();
    let mut d = Deployment {
        dir,
        config,
        ports,
        nodes: vec![None, None, None],
    };
    for i in 0..3 {
        d.start_node(i);
    }
    std::fs::write(
        d.dir.path().join("nginx.conf"),
        nginx_conf(d.dir.path(), front, &ports),
    )
    .unwrap();
    let _nginx = Proc(
        Command::new(&nginx_bin)
            .arg("-p")
            .arg(d.dir.path())
            .arg("-c")
            .arg(d.dir.path().join("nginx.conf"))
            .args(["-e", "stderr", "-g"])
            .arg(format!(
                "daemon off; master_process off; pid {};",
                d.dir.path().join("nginx.pid").display()
            ))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(front, "nginx");
    let node_addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let all: BTreeSet<String> = (0..3).map(node_addr).collect();

    // Signed in through whichever node nginx chose, the session holds on every node.
    let c = Client::new(front);
    c.sign_in().await;
    let (statuses, nodes) = c.gets(9).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(nodes, all, "round-robin reached every node");

    // Signed out through one node: refused by every node on the next request.
    let account = c
        .follow
        .get(format!("{}/_stepgate/account", c.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = c
        .plain
        .post(format!("{}/_stepgate/logout", c.base))
        .form(&[("csrf", field(&account, "csrf"))])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status().is_redirection(),
        "{}",
        r.status()
    );
    let (statuses, nodes) = c.gets(6).await;
    assert!(
        statuses.iter().all(|s| *s == 303),
        "signed out everywhere: {statuses:?}"
    );
    assert_eq!(nodes, all);

    // A node killed with SIGKILL while requests flow: nginx sends each request to a live
    // node, and no request is answered otherwise than a live node would.
    c.sign_in().await;
    let load = {
        let c = Client::new(front);
        c.sign_in().await;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut statuses = Vec::new();
            while start.elapsed() < Duration::from_secs(3) {
                statuses.push(c.get().await.0);
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    d.kill(1);
    let statuses = load.await.unwrap();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    eprintln!(
        "under load while a node was killed: {ok} of {} requests answered 200",
        statuses.len()
    );
    assert_eq!(
        ok,
        statuses.len(),
        "every request served by a live node: {} of {} answered 200, the rest {:?}",
        ok,
        statuses.len(),
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    let (statuses, nodes) = c.gets(6).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        !nodes.contains(&node_addr(1)),
        "the killed node answers nothing"
    );

    // Restarted on its port, the node rejoins by itself and knows the others' sessions.
    d.start_node(1);
    let (statuses, nodes) = c.gets(6).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(nodes, all, "the restarted node takes requests again");

    // Drop the test's schema and keys.
    drop(d.nodes.drain(..));
    let _ = Command::new("psql")
        .arg(&pg)
        .args([
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS \"{run}\" CASCADE"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("redis-cli")
        .args(["-u", &redis, "--scan", "--pattern", &format!("{run}:*")])
        .output()
        .map(|o| {
            let keys: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !keys.is_empty() {
                let _ = Command::new("redis-cli")
                    .args(["-u", &redis, "DEL"])
                    .args(&keys)
                    .output();
            }
        });
}
