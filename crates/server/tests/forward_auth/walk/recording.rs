//! The app behind the proxy in the walk: a [`RecordingUpstream`] that records each
//! request's target and headers as they came over the wire, and the identity headers a
//! client spoofs in every spelling.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::support::raw::{split_head, values};

/// The headers stepgate asserts (or that apps read as an identity), lower case.
pub const IDENTITY_HEADERS: [&str; 11] = [
    "remote-user",
    "remote-groups",
    "remote-email",
    "remote-name",
    "remote-aal",
    "remote-amr",
    "remote-auth-time",
    "x-stepgate-assertion",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
];

/// What a client claims under each identity header.
pub(super) const SPOOFED: [(&str, &str); 11] = [
    ("Remote-User", "mallory"),
    ("Remote-Groups", "admins"),
    ("Remote-Email", "mallory@example.test"),
    ("Remote-Name", "Mallory"),
    ("Remote-AAL", "3"),
    ("Remote-AMR", "hwk"),
    ("Remote-Auth-Time", "4102444800"),
    ("X-Stepgate-Assertion", "forged"),
    ("X-Forwarded-User", "mallory"),
    ("X-Forwarded-Email", "mallory@example.test"),
    ("X-Forwarded-Groups", "admins"),
];

/// A header name as an app that ignores case and reads `_` as `-` sees it.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Every spoofed identity header in several spellings: as written, upper case, with
/// underscores (as written and lower case), and with only the first `-` an underscore.
pub fn spoofed_headers() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in SPOOFED {
        let mut spellings = vec![
            name.to_string(),
            name.to_ascii_uppercase(),
            name.replace('-', "_"),
            name.to_ascii_lowercase().replace('-', "_"),
            name.replacen('-', "_", 1),
        ];
        spellings.dedup();
        for s in spellings {
            out.push((s, value.to_string()));
        }
    }
    out
}

/// One request as the app received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request target, byte for byte.
    pub target: Vec<u8>,
    /// The header lines in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The target, lossily as text.
    pub fn target(&self) -> String {
        String::from_utf8_lossy(&self.target).into_owned()
    }

    /// The values of every header named exactly `name` (ignoring letter case only).
    pub fn values(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }
}

/// An HTTP/1.1 app that answers every request with a JSON echo of it and records what it
/// received, exactly as it came.
pub struct RecordingUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RecordingUpstream {
    /// Starts it on a free loopback port.
    pub async fn start() -> RecordingUpstream {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_recorded(s, log.clone()));
            }
        });
        RecordingUpstream { addr, seen }
    }

    /// How many requests it has received.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The requests received after the first `n`.
    pub fn since(&self, n: usize) -> Vec<Seen> {
        self.seen.lock().unwrap()[n..].to_vec()
    }
}

async fn serve_recorded(mut s: tokio::net::TcpStream, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until(&mut s, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        let (first, headers) = split_head(&head[..end]);
        let target = match (
            first.iter().position(|&b| b == b' '),
            first.iter().rposition(|&b| b == b' '),
        ) {
            (Some(a), Some(b)) if a < b => first[a + 1..b].to_vec(),
            _ => first.clone(),
        };
        // Bodies are skipped: the walk only sends GETs.
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        let close = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        let seen = Seen { target, headers };
        let body = serde_json::json!({
            "path": seen.target(),
            "headers": seen.headers,
        })
        .to_string();
        log.lock().unwrap().push(seen);
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        if s.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads into `buf` until it holds `pat`; its offset, or `None` at the end of the stream.
async fn read_until<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    pat: &[u8],
) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i);
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
