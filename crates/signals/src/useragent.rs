//! User-agent parsing into browser, OS and device class (woothee's rules).

use serde::Serialize;
use stepgate_policy::UserAgentContext;

/// A parsed user agent, with versions for display and audit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ParsedUserAgent {
    /// Browser family (`Chrome`, `Firefox`, `Safari`, `Edge`, …).
    pub browser: Option<String>,
    /// Browser version.
    pub browser_version: Option<String>,
    /// OS family (`Windows`, `macOS`, `iOS`, `iPadOS`, `Android`, `Linux`, `ChromeOS`).
    pub os: Option<String>,
    /// OS version as the UA reports it.
    pub os_version: Option<String>,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device_class: Option<String>,
}

/// Parses a `User-Agent` header.
pub fn parse(ua: &str) -> ParsedUserAgent {
    let Some(r) = woothee::parser::Parser::new().parse(ua) else {
        return ParsedUserAgent::default();
    };
    let known = |s: &str| (!s.is_empty() && s != "UNKNOWN").then(|| s.to_owned());
    let os = match r.os {
        "Mac OSX" | "Mac OS Classic" => Some("macOS".to_owned()),
        "iPhone" | "iPod" => Some("iOS".to_owned()),
        "iPad" => Some("iPadOS".to_owned()),
        "ChromeOS" => Some("ChromeOS".to_owned()),
        s if s.starts_with("Windows") => Some("Windows".to_owned()),
        s => known(s),
    };
    let device_class = match r.category {
        "pc" => Some("desktop"),
        "smartphone" if r.os == "iPad" || (r.os == "Android" && !ua.contains("Mobile")) => {
            Some("tablet")
        }
        "smartphone" | "mobilephone" => Some("mobile"),
        "crawler" => Some("bot"),
        "appliance" | "misc" => Some("other"),
        _ => None,
    }
    .map(str::to_owned);
    let os_version = match r.os {
        s if s.starts_with("Windows ") => Some(s.trim_start_matches("Windows ").to_owned()),
        _ => known(&r.os_version),
    };
    ParsedUserAgent {
        browser: known(r.name),
        browser_version: known(r.version),
        os,
        os_version,
        device_class,
    }
}

/// User agents longer than this are parsed on each request and never cached.
const CACHEABLE_LEN: usize = 512;
/// Parsed user agents kept per thread; when full, the cache starts over.
const CACHED_AGENTS: usize = 256;

std::thread_local! {
    /// The user agents this thread parsed lately. A user's browser sends the same one on
    /// every request, and parsing it by woothee's rules is one of the costliest steps of a
    /// request's decision. Per thread, so no lock; the std map's keyed hash keeps crafted
    /// agents from colliding, and the caps bound its memory.
    static PARSED: std::cell::RefCell<std::collections::HashMap<Box<str>, UserAgentContext>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The policy engine's view of the user agent.
pub fn user_agent_context(raw: Option<&str>) -> UserAgentContext {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return UserAgentContext::default();
    };
    if raw.len() > CACHEABLE_LEN {
        return context_of(raw);
    }
    if let Some(hit) = PARSED.with(|m| m.borrow().get(raw).cloned()) {
        return hit;
    }
    let c = context_of(raw);
    PARSED.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= CACHED_AGENTS {
            m.clear();
        }
        m.insert(raw.into(), c.clone());
    });
    c
}

/// Builds the parser's tables (several million instructions, a few milliseconds, on a
/// process's first parse of each kind of agent) so that the first requests after start do
/// not pay for them.
pub fn warm_up() {
    for ua in [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
        "curl/8.5.0",
    ] {
        parse(ua);
    }
}

fn context_of(raw: &str) -> UserAgentContext {
    let p = parse(raw);
    UserAgentContext {
        raw: Some(raw.into()),
        browser: p.browser.map(Into::into),
        os: p.os.map(Into::into),
        device_class: p.device_class.map(Into::into),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_agents() {
        let cases = [
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                ("Chrome", "macOS", "desktop"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
                ("Firefox", "Windows", "desktop"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                ("Safari", "iOS", "mobile"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                ("Safari", "iPadOS", "tablet"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
                ("Chrome", "Android", "mobile"),
            ),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                ("Googlebot", "", "bot"),
            ),
        ];
        for (ua, (browser, os, class)) in cases {
            let p = parse(ua);
            assert_eq!(p.browser.as_deref(), Some(browser), "{ua}");
            assert_eq!(p.os.as_deref().unwrap_or(""), os, "{ua}");
            assert_eq!(p.device_class.as_deref(), Some(class), "{ua}");
        }
    }

    #[test]
    fn context_keeps_raw_and_handles_garbage() {
        let c = user_agent_context(Some("curl/8.5.0"));
        assert_eq!(c.raw.as_deref(), Some("curl/8.5.0"));
        let c = user_agent_context(None);
        assert!(c.raw.is_none() && c.browser.is_none());
        let _ = parse("\u{0}\u{fffd}((((;;;");
    }

    #[test]
    fn a_cached_agent_reads_as_a_fresh_parse_and_the_cache_stays_bounded() {
        let chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        let firefox =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
        for _ in 0..2 {
            assert_eq!(user_agent_context(Some(chrome)), context_of(chrome));
            assert_eq!(user_agent_context(Some(firefox)), context_of(firefox));
        }
        assert_eq!(
            user_agent_context(Some(chrome)).os.as_deref(),
            Some("macOS"),
            "each agent keeps its own reading"
        );
        for i in 0..(CACHED_AGENTS * 2) {
            let ua = format!("agent/{i}");
            assert_eq!(
                user_agent_context(Some(&ua)).raw.as_deref(),
                Some(ua.as_str())
            );
            assert!(PARSED.with(|m| m.borrow().len()) <= CACHED_AGENTS);
        }
        let long = format!("Mozilla/5.0 {}", "x".repeat(CACHEABLE_LEN));
        assert_eq!(user_agent_context(Some(&long)), context_of(&long));
        assert!(PARSED.with(|m| !m.borrow().contains_key(long.as_str())));
    }
}
