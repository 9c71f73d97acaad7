//! The portal's words in the reader's language: one Fluent catalogue per language
//! (`crates/server/locales/<code>.ftl`, compiled into the binary), the language chosen per
//! request from the `stepgate_lang` cookie (set by the switcher, `GET {portal}/lang`) or
//! else `Accept-Language`, English when neither names a language the portal speaks.
//!
//! Templates call `t("key", name=value)`: the catalogue's text is trusted like the
//! template's own (it may carry markup such as `<strong>`, and no `"` outside a tag, so a
//! message fits in an attribute too), the values are HTML-escaped before they go in. Rust
//! code calls [`t`] / [`t_with`], whose text a template escapes like any value. A key missing
//! in a language falls back to English; `tests` fail when a key exists in English only, or
//! when a template or source file asks for a key English does not have.

use std::sync::LazyLock;

use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use serde::Deserialize;

/// The cookie the language switcher sets (a preference, not a secret).
pub const LANG_COOKIE: &str = "stepgate_lang";

/// A language the portal speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Lang {
    /// English (complete; every other language falls back to it).
    #[default]
    En,
    /// French.
    Fr,
}

impl Lang {
    /// Every language, English first.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Fr];

    /// The BCP 47 code (`en`, `fr`): the page's `lang` attribute and the cookie's value.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }

    /// The language's own name, as the switcher shows it.
    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Fr => "Français",
        }
    }

    /// The language a code names (`fr`, `fr-CA`, `FR`), if the portal speaks it.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?;
        Lang::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(primary))
    }

    /// The catalogue's source.
    fn source(self) -> &'static str {
        match self {
            Lang::En => include_str!("../../locales/en.ftl"),
            Lang::Fr => include_str!("../../locales/fr.ftl"),
        }
    }

    fn bundle(self) -> &'static FluentBundle<FluentResource> {
        static BUNDLES: LazyLock<Vec<FluentBundle<FluentResource>>> =
            LazyLock::new(|| Lang::ALL.into_iter().map(load).collect());
        &BUNDLES[self as usize]
    }
}

fn load(lang: Lang) -> FluentBundle<FluentResource> {
    let id: unic_langid::LanguageIdentifier =
        lang.code().parse().expect("built-in language codes parse");
    let res = FluentResource::try_new(lang.source().to_string())
        .unwrap_or_else(|(_, e)| panic!("locales/{}.ftl does not parse: {e:?}", lang.code()));
    let mut b = FluentBundle::new_concurrent(vec![id]);
    // No bidi isolation marks around values: the pages are left-to-right HTML.
    b.set_use_isolating(false);
    b.add_resource(res)
        .unwrap_or_else(|e| panic!("locales/{}.ftl repeats a key: {e:?}", lang.code()));
    b
}

/// The language of the request being served and, for a GET, its own address (where the
/// switcher comes back to).
///
/// The language is chosen when a page or message first asks for it ([`Reader::lang`]), not
/// for every request: most requests (proxied, forward-auth) answer without a word of the
/// portal's. Until then the reader keeps the request's `Cookie` and `Accept-Language`
/// lines (a header value shares the request's buffer: keeping one copies no bytes). A
/// request with more than one line of either (HTTP/2 sends one `Cookie` line per cookie)
/// has its language chosen at once instead.
#[derive(Debug, Default)]
pub struct Reader {
    said: Said,
    lang: std::cell::OnceCell<Lang>,
    /// The request's path and query, when the switcher may come back to it with a GET.
    pub back: Option<Uri>,
}

/// The lines a reader's language is chosen from, while it is not chosen yet.
#[derive(Debug, Default)]
struct Said {
    cookie: Option<HeaderValue>,
    accept_language: Option<HeaderValue>,
}

impl Reader {
    /// The reader of a request: the cookie's language, else the best of
    /// `Accept-Language` the portal speaks, else English (chosen when first asked).
    pub fn of(method: &Method, uri: &Uri, headers: &HeaderMap) -> Reader {
        let back = (method == Method::GET).then(|| uri.clone());
        match Said::of(headers) {
            Some(said) => Reader {
                said,
                lang: std::cell::OnceCell::new(),
                back,
            },
            None => Reader {
                said: Said::default(),
                lang: std::cell::OnceCell::from(negotiate(headers)),
                back,
            },
        }
    }

    /// The reader's language (chosen now if no one asked before).
    pub fn lang(&self) -> Lang {
        *self.lang.get_or_init(|| {
            let mut headers = HeaderMap::with_capacity(2);
            if let Some(v) = &self.said.cookie {
                headers.insert(header::COOKIE, v.clone());
            }
            if let Some(v) = &self.said.accept_language {
                headers.insert(header::ACCEPT_LANGUAGE, v.clone());
            }
            negotiate(&headers)
        })
    }
}

impl Said {
    /// The request's `Cookie` and `Accept-Language` lines (shared, not copied); `None` when
    /// it has more than one of either. One pass over the headers: a request has few, and
    /// comparing a name with a standard one is cheaper than hashing it to look it up.
    fn of(headers: &HeaderMap) -> Option<Said> {
        let mut said = Said::default();
        for (name, value) in headers {
            let line = if name == header::COOKIE {
                &mut said.cookie
            } else if name == header::ACCEPT_LANGUAGE {
                &mut said.accept_language
            } else {
                continue;
            };
            if line.replace(value.clone()).is_some() {
                return None;
            }
        }
        Some(said)
    }
}

/// The language for a request's headers (see [`Reader::of`]).
pub fn negotiate(headers: &HeaderMap) -> Lang {
    // Every request is read for its language, and nearly none carries the cookie: the
    // `Cookie` lines are parsed only when one holds the cookie's name at all (a cookie
    // called exactly that name cannot be sent without it).
    let named = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|line| names_lang_cookie(line.as_bytes()));
    if let Some(l) = named
        .then(|| stepgate_request::cookies::lookup(headers, LANG_COOKIE).one())
        .flatten()
        .and_then(Lang::from_tag)
    {
        return l;
    }
    let mut best: Option<(Lang, f32)> = None;
    for v in headers.get_all(header::ACCEPT_LANGUAGE) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',').take(32) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())
                .unwrap_or(0.0);
            if q <= 0.0 {
                continue;
            }
            if let Some(l) = Lang::from_tag(tag) {
                if best.is_none_or(|(_, bq)| q > bq) {
                    best = Some((l, q));
                }
            }
        }
    }
    best.map_or(Lang::En, |(l, _)| l)
}

/// Whether `line` holds the language cookie's name anywhere (every request's `Cookie`
/// lines are searched for it: a vectorised search, not a byte loop, with the searcher built
/// once, as building it costs more than a search of a `Cookie` line).
fn names_lang_cookie(line: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(LANG_COOKIE.as_bytes()));
    FINDER.find(line).is_some()
}

/// The language of the request being served (English outside a request).
pub fn lang() -> Lang {
    crate::app::serving::SERVING
        .try_with(|s| s.reader.lang())
        .unwrap_or_default()
}

/// The current reader's address to come back to after switching language.
pub fn back() -> Option<Uri> {
    crate::app::serving::SERVING
        .try_with(|s| s.reader.back.clone())
        .ok()
        .flatten()
}

/// `key` in the current request's language.
pub fn t(key: &str) -> String {
    tr(lang(), key, &[])
}

/// `key` with values, in the current request's language.
pub fn t_with(key: &str, args: &[(&str, FluentValue<'_>)]) -> String {
    tr(lang(), key, args)
}

/// `key` with values in `lang`; English when `lang` lacks it, the key itself when English
/// lacks it too (the tests keep that from shipping).
pub fn tr(lang: Lang, key: &str, args: &[(&str, FluentValue<'_>)]) -> String {
    for l in [lang, Lang::En] {
        let b = l.bundle();
        if let Some(pattern) = b.get_message(key).and_then(|m| m.value()) {
            let mut fa = FluentArgs::new();
            for (k, v) in args {
                fa.set(*k, v.clone());
            }
            let mut errors = Vec::new();
            let s = b.format_pattern(pattern, Some(&fa), &mut errors);
            if !errors.is_empty() {
                tracing::warn!(
                    key,
                    lang = l.code(),
                    ?errors,
                    "catalogue message incomplete"
                );
            }
            return s.into_owned();
        }
    }
    tracing::warn!(key, "no such catalogue message");
    key.to_string()
}

/// A way to sign in's name for people ("Authenticator app" for `totp`) in the current
/// request's language; `'static`, from a table built once per language.
pub fn factor_title(kind: &str) -> &'static str {
    static TITLES: LazyLock<Vec<Vec<(&'static str, String)>>> = LazyLock::new(|| {
        Lang::ALL
            .into_iter()
            .map(|l| {
                let mut v: Vec<(&'static str, String)> = stepgate_policy::KNOWN_FACTORS
                    .iter()
                    .map(|k| (*k, tr(l, &format!("factor-{k}"), &[])))
                    .collect();
                v.push(("", tr(l, "factor-other", &[])));
                v
            })
            .collect()
    });
    let table = &TITLES[lang() as usize];
    table
        .iter()
        .find(|(k, _)| *k == kind)
        .or(table.last())
        .map_or("", |(_, t)| t.as_str())
}

/// A duration in words ("5 minutes", "1 day"), in the current request's language.
pub fn duration(secs: u64) -> String {
    let (n, key) = match secs {
        s if s % 86_400 == 0 && s >= 86_400 => (s / 86_400, "duration-days"),
        s if s % 3_600 == 0 && s >= 3_600 => (s / 3_600, "duration-hours"),
        s if s % 60 == 0 && s >= 60 => (s / 60, "duration-minutes"),
        s => (s, "duration-seconds"),
    };
    t_with(key, &[("n", n.into())])
}

/// A step-up requirement in words, as the object of a sentence ("a passkey or security
/// key, within the last 5 minutes"), in the current request's language: the catalogue's
/// form of [`stepgate_policy::StepUpRequirement::describe`].
pub fn describe(req: &stepgate_policy::StepUpRequirement) -> String {
    use stepgate_policy::MaxAge;
    let what = if req.hardware_bound {
        t("needs-security-key")
    } else if req.phishing_resistant {
        t("needs-webauthn")
    } else if let [only] = req.factors.as_slice() {
        if stepgate_policy::KNOWN_FACTORS.contains(&only.as_str()) {
            t(&format!("needs-{only}"))
        } else {
            t("needs-other")
        }
    } else {
        match req.min_aal {
            Some(3) => t("needs-strongest"),
            Some(2) => t("needs-second-way"),
            _ => t("needs-password"),
        }
    };
    match req.max_age {
        Some(MaxAge::EveryTime) => t_with("needs-every-time", &[("what", what.into())]),
        Some(MaxAge::Within(d)) => t_with(
            "needs-within",
            &[("what", what.into()), ("age", duration(d.as_secs()).into())],
        ),
        None => what,
    }
}

/// The blocked page's failing checks in the reader's language: the ones stepgate words
/// itself (the device's state); a connector's or a policy's own words are shown as given.
pub fn checks(items: &[stepgate_policy::RemediationItem]) -> Vec<stepgate_policy::RemediationItem> {
    const DEVICE_STATE: [(&str, &str); 3] = [
        (
            "This device is not registered with your organisation",
            "check-device-unregistered",
        ),
        (
            "This device is registered but not managed by your organisation",
            "check-device-registered",
        ),
        (
            "This device is managed but has no EDR agent reporting",
            "check-device-managed",
        ),
    ];
    items
        .iter()
        .map(|i| {
            let mut i = i.clone();
            if i.check == "device_state" {
                if let Some((_, key)) = DEVICE_STATE.iter().find(|(en, _)| *en == i.message) {
                    i.message = t(key);
                    if i.fix.is_some() {
                        i.fix = Some(t("check-device-fix"));
                    }
                }
            }
            i
        })
        .collect()
}

/// The keys of a catalogue's source, in order (messages only; terms start with `-`).
pub fn keys(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect()
}

/// The catalogue source of each language (for the tests and `docs/portal.md`'s checks).
pub fn sources() -> impl Iterator<Item = (Lang, &'static str)> {
    Lang::ALL.into_iter().map(|l| (l, l.source()))
}

/// Adds `t` to a template environment (see the module's docs). It reads the page's
/// language from the `lang` value [`crate::portal::pages::Pages::render`] sets.
pub fn add_to(env: &mut minijinja::Environment<'static>) {
    fn args(
        kwargs: &minijinja::value::Kwargs,
    ) -> Result<Vec<(String, FluentValue<'static>)>, minijinja::Error> {
        let mut out = Vec::new();
        for name in kwargs.args() {
            let v: minijinja::Value = kwargs.get(name)?;
            let fv = if let Some(n) = v.as_i64() {
                FluentValue::from(n)
            } else if !v.is_safe() {
                FluentValue::from(escape(&v.to_string()))
            } else {
                FluentValue::from(v.to_string())
            };
            out.push((name.to_string(), fv));
        }
        Ok(out)
    }
    fn page_lang(state: &minijinja::State) -> Lang {
        state
            .lookup("lang")
            .and_then(|v| v.as_str().and_then(Lang::from_tag))
            .unwrap_or_default()
    }
    fn render(
        state: &minijinja::State,
        key: &str,
        kwargs: minijinja::value::Kwargs,
    ) -> Result<minijinja::Value, minijinja::Error> {
        let a = args(&kwargs)?;
        let a: Vec<(&str, FluentValue<'_>)> = a.iter().map(|(k, v)| (&**k, v.clone())).collect();
        Ok(minijinja::Value::from_safe_string(tr(
            page_lang(state),
            key,
            &a,
        )))
    }
    env.add_function("t", render);
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '/' => out.push_str("&#x2f;"),
            c => out.push(c),
        }
    }
    out
}

/// The switcher's links for a page: each other language and the query that picks it
/// (`to=fr&back=%2F_stepgate%2Flogin`), the page's own address when it is a GET.
pub fn switcher(current: Lang) -> Vec<(&'static str, &'static str, String)> {
    let back = back();
    Lang::ALL
        .into_iter()
        .filter(|l| *l != current)
        .map(|l| {
            let mut q = format!("to={}", l.code());
            if let Some(b) = back.as_ref().and_then(|u| u.path_and_query()) {
                q.push_str("&back=");
                // Everything but RFC 3986's unreserved characters.
                const QUERY_VALUE: &percent_encoding::AsciiSet =
                    &percent_encoding::NON_ALPHANUMERIC
                        .remove(b'-')
                        .remove(b'.')
                        .remove(b'_')
                        .remove(b'~');
                q.extend(percent_encoding::utf8_percent_encode(
                    b.as_str(),
                    QUERY_VALUE,
                ));
            }
            (l.code(), l.name(), q)
        })
        .collect()
}

/// The switcher's request.
#[derive(Debug, Deserialize)]
pub struct Switch {
    /// The language's code.
    to: String,
    /// Where to go back to: a path on this server.
    #[serde(default)]
    back: Option<String>,
}

/// Whether `back` is a path on this server (not `//host`, not `/\host`, no scheme).
fn local_path(back: &str) -> bool {
    back.starts_with('/')
        && !back.starts_with("//")
        && !back.starts_with("/\\")
        && !back.chars().any(|c| c.is_control())
}

/// `GET {portal}/lang?to=fr&back=/path`: remembers the language in a cookie for a year
/// and goes back to the page (the account page when `back` is missing or not a path here).
pub async fn switch(
    crate::portal::extract::Visit { here: rt, .. }: crate::portal::extract::Visit,
    Query(s): Query<Switch>,
) -> Response {
    let Some(lang) = Lang::from_tag(&s.to) else {
        return crate::portal::pages::Message {
            portal: rt.portal(),
            title: &t("lang-unknown-title"),
            text: &t("lang-unknown-text"),
            way_on: Some(crate::portal::pages::WayOn::new(
                rt.portal_url("/account"),
                t("go-to-account"),
            )),
            also: None,
        }
        .render(StatusCode::BAD_REQUEST);
    };
    let to = match s.back.as_deref() {
        Some(b) if local_path(b) => b.to_string(),
        _ => rt.portal_url("/account"),
    };
    let mut c = crate::session::cookies::plain_cookie(
        LANG_COOKIE,
        lang.code().to_string(),
        rt.config.sessions.cookie.secure,
    );
    c.set_max_age(cookie::time::Duration::days(365));
    let mut r = crate::app::responses::see_other(&to);
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r.into_response()
}

#[cfg(test)]
mod tests;
