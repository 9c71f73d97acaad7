//! HTTP/1.1 written and read byte for byte, for what a client library would tidy up (raw
//! bytes in a target, repeated or oddly spelled headers, upgrades, bad framing).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// An answer read off a raw connection.
#[derive(Debug)]
pub struct RawAnswer {
    /// The status code (0 when the peer closed the connection without one).
    pub status: u16,
    /// The status line and header lines, in lower case.
    pub head: String,
    /// The header lines, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked), lossily as text.
    pub body: String,
}

impl RawAnswer {
    /// The values of every header called `name` (ignoring letter case).
    pub fn values(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }
}

/// The values of every header in `headers` called `name` (ignoring letter case only).
pub fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Sends `request` to `addr` as it is and reads the answer until the peer closes the
/// connection, or for 10 s (an upgraded connection stays open).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    let _ = exchange(s, request, &mut out, Duration::from_secs(10)).await;
    parse(&out)
}

/// `GET target` on `host` to `addr`, as raw bytes, with the header `lines` (each ending in
/// CRLF) and `Connection: close`.
pub async fn raw_get(addr: SocketAddr, host: &str, target: &[u8], lines: &str) -> RawAnswer {
    raw(addr, &get_request(host, target, lines)).await
}

/// The bytes of `GET target` on `host` with the header `lines` and `Connection: close`.
pub fn get_request(host: &str, target: &[u8], lines: &str) -> Vec<u8> {
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: {host}\r\n{lines}Connection: close\r\n\r\n").as_bytes(),
    );
    req
}

/// Writes `request` on `s` and reads into `out` until the peer closes, for at most
/// `within` (then `TimedOut`). A TLS peer that closes without `close_notify`, or one that
/// resets the connection after answering, has answered.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
    out: &mut Vec<u8>,
    within: Duration,
) -> std::io::Result<()> {
    let io = async {
        s.write_all(request).await?;
        s.flush().await?;
        let mut chunk = [0u8; 16384];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) if !out.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(within, io)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Reads `bytes` as an HTTP/1.1 response.
pub fn parse(bytes: &[u8]) -> RawAnswer {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RawAnswer {
            status: 0,
            head: String::from_utf8_lossy(bytes).to_ascii_lowercase(),
            headers: Vec::new(),
            body: String::new(),
        };
    };
    let (first, headers) = split_head(&bytes[..end]);
    let status = String::from_utf8_lossy(&first)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = bytes[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    RawAnswer {
        status,
        head: String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A chunked body's data.
fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..i]);
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        rest = &rest[i + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

/// The first line of a message head and its header lines (names as sent).
pub fn split_head(head: &[u8]) -> (Vec<u8>, Vec<(String, String)>) {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default().to_vec();
    let headers = lines
        .filter_map(|l| {
            let i = l.iter().position(|&b| b == b':')?;
            Some((
                String::from_utf8_lossy(&l[..i]).into_owned(),
                String::from_utf8_lossy(&l[i + 1..]).trim().to_string(),
            ))
        })
        .collect();
    (first, headers)
}
