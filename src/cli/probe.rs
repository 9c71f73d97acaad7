//! `stepgate probe`: a health check for container runtimes and orchestrators whose images
//! have no shell or curl (the Containerfile's final image is distroless): one plain-HTTP GET
//! of a local endpoint, exit status 0 when it answers 2xx.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// `stepgate probe` arguments.
#[derive(clap::Args)]
pub struct ProbeArgs {
    /// The endpoint to ask: `http://HOST:PORT/PATH` (plain HTTP; TLS listeners are probed
    /// through a plain-HTTP side listener or by the orchestrator itself).
    #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
    url: String,
    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

/// Runs `stepgate probe`: exit 0 on a 2xx answer, 1 on any other answer or none.
pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let (authority, path) = parse(&args.url)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let status = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: stepgate-probe\r\n\r\n"
        )?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n]).into_owned())
    })();
    match status {
        Ok(head) => {
            let code = head.split(' ').nth(1).unwrap_or("");
            if head.starts_with("HTTP/1.") && code.starts_with('2') && code.len() == 3 {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "{}: answered {:?}",
                    args.url,
                    head.lines().next().unwrap_or("")
                );
                Ok(ExitCode::from(1))
            }
        }
        Err(e) => {
            eprintln!("{}: {e}", args.url);
            Ok(ExitCode::from(1))
        }
    }
}

/// `http://authority/path` into its authority (with a port, 80 by default) and path.
fn parse(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url {url}: expected http://HOST:PORT/PATH (plain HTTP)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    anyhow::ensure!(
        !authority.is_empty()
            && !authority.contains(['@', ' '])
            && !path.contains([' ', '\r', '\n']),
        "--url {url}: expected http://HOST:PORT/PATH"
    );
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            parse("http://127.0.0.1:8080/readyz").unwrap(),
            ("127.0.0.1:8080".into(), "/readyz".into())
        );
        assert_eq!(
            parse("http://localhost").unwrap(),
            ("localhost:80".into(), "/".into())
        );
        assert!(
            parse("https://127.0.0.1/readyz").is_err(),
            "TLS is not probed"
        );
        assert!(parse("http://a b/").is_err());
        assert!(parse("http://h/x\r\nInjected: 1").is_err());
    }
}
