//! Clients of a test's stepgate: `*.test` host names resolve to loopback, cookies are kept,
//! and a sign-in goes through the portal's forms as a browser's does.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use reqwest::cookie::{CookieStore as _, Jar};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Client, ClientBuilder, Response, StatusCode, Url};

use super::people::Person;

/// The sign-in form's action.
const LOGIN: &str = "/_stepgate/login";
/// The TOTP step-up form's action.
const TOTP: &str = "/_stepgate/step-up/totp";

/// A client builder whose `*.test` host names (and `localhost`, `*.localhost`, as browsers
/// resolve them) resolve to 127.0.0.1 (the port is the URL's), so every host a test's YAML
/// names reaches the stepgate (or front proxy) on loopback.
pub fn client() -> ClientBuilder {
    Client::builder().dns_resolver(Arc::new(TestHosts))
}

/// Resolves `*.test`, `localhost` and `*.localhost` to 127.0.0.1 and anything else as the
/// system does.
struct TestHosts;

impl Resolve for TestHosts {
    fn resolve(&self, name: Name) -> Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            let loopback =
                name.ends_with(".test") || name == "localhost" || name.ends_with(".localhost");
            let addrs: Vec<SocketAddr> = if loopback {
                vec![SocketAddr::from(([127, 0, 0, 1], 0))]
            } else {
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect()
            };
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The redirect policy: follow (up to 10) or not at all.
pub fn redirects(follow: bool) -> reqwest::redirect::Policy {
    if follow {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    }
}

/// A [`client`] with a cookie jar of its own; derefs to the client.
pub struct Browser {
    client: Client,
    /// Its cookies.
    pub jar: Arc<Jar>,
}

impl Browser {
    /// Keeps cookies and follows redirects.
    pub fn new() -> Browser {
        Browser::on(Arc::default(), client())
    }

    /// Keeps cookies and follows no redirects: the test reads each one.
    pub fn not_following() -> Browser {
        Browser::on(Arc::default(), client().redirect(redirects(false)))
    }

    /// The client `builder` builds, keeping its cookies in `jar`.
    pub fn on(jar: Arc<Jar>, builder: ClientBuilder) -> Browser {
        let client = builder.cookie_provider(jar.clone()).build().unwrap();
        Browser { client, jar }
    }

    /// Another [`client`] on this one's cookies (the same user in another tab), following
    /// redirects or not.
    pub fn tab(&self, follow: bool) -> Browser {
        Browser::on(self.jar.clone(), client().redirect(redirects(follow)))
    }

    /// The `Cookie` header it sends to `url` ("" when none).
    pub fn cookies(&self, url: &str) -> String {
        self.jar
            .cookies(&url.parse().unwrap())
            .and_then(|v| v.to_str().ok().map(str::to_string))
            .unwrap_or_default()
    }

    /// Its (non-empty) `stepgate_session` cookie for `url`.
    pub fn session_id(&self, url: &str) -> Option<String> {
        self.cookies(url)
            .split("; ")
            .find_map(|c| c.strip_prefix("stepgate_session="))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Deref for Browser {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A page as a browser reads it: where it came from, its status and its HTML.
pub struct Page {
    /// Its URL (after any redirects).
    pub url: Url,
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub html: String,
}

impl Page {
    /// Reads `r`.
    pub async fn read(r: Response) -> Page {
        let (url, status) = (r.url().clone(), r.status());
        Page {
            url,
            status,
            html: r.text().await.unwrap(),
        }
    }

    /// Opens `url` with `c`, following redirects itself when `c` does not.
    pub async fn open(c: &Client, url: &str) -> Page {
        Page::read(follow(c, c.get(url).send().await.unwrap()).await).await
    }

    /// The value of the form field `name` (panics, showing the page, when there is none).
    pub fn field(&self, name: &str) -> String {
        field(&self.html, name)
    }

    /// Posts one of the portal's forms: this page's `csrf` and `t` fields and `fields`, to
    /// `path` on the origin the page came from (the portal answers on the host a request
    /// came to, and its cookies are that host's).
    pub async fn submit(&self, c: &Client, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut form = vec![("csrf", self.field("csrf")), ("t", self.field("t"))];
        form.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
        let origin = self.url.origin().ascii_serialization();
        c.post(format!("{origin}{path}"))
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// Submits the TOTP `code` on this step-up page.
    pub async fn submit_code(&self, c: &Client, code: &str) -> Response {
        self.submit(c, TOTP, &[("code", code)]).await
    }
}

/// A form field's value in a portal page, entities decoded.
pub fn field(html: &str, name: &str) -> String {
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

/// `r`, or where its redirects lead when `c` left them to the caller: stepgate's own
/// redirects are each a `303 See Other`.
async fn follow(c: &Client, mut r: Response) -> Response {
    while r.status().is_redirection() {
        assert_eq!(r.status(), 303, "a redirect of stepgate's: {r:?}");
        let to = r.url().join(&header(&r, "location")).unwrap();
        r = c.get(to).send().await.unwrap();
    }
    r
}

/// Opens `url` (an app's page or the sign-in page) and submits `who`'s password on the
/// sign-in page it leads to; the answer (followed where `c` follows redirects).
pub async fn password(c: &Client, url: &str, who: &Person) -> Response {
    let page = Page::open(c, url).await;
    assert_eq!(page.status, 200, "the sign-in page at {url}");
    page.submit(
        c,
        LOGIN,
        &[("username", who.username), ("password", who.password)],
    )
    .await
}

/// Signs `who` in through the portal as a browser does: [`password`], then the TOTP `code`
/// on the step-up page the sign-in policy asks for. The answer to the code (followed, to
/// the app, where `c` follows redirects).
pub async fn sign_in(c: &Client, url: &str, who: &Person, code: &str) -> Response {
    let r = follow(c, password(c, url, who).await).await;
    assert!(
        r.url().path().ends_with("/_stepgate/step-up"),
        "after the password the sign-in policy asks for MFA, got {}",
        r.url()
    );
    Page::read(r).await.submit_code(c, code).await
}

/// A response header as a string ("" when absent).
pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `Retry-After`, in seconds.
pub fn retry_after(r: &Response) -> Option<u64> {
    r.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
}
