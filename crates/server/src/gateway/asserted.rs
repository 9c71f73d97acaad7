//! What an allowed request asserts about a session's subject to the upstream: the identity
//! headers ([`headers::identity_headers`]) and the signed assertion
//! ([`assertion::header_until`]), built once per session state and app on each worker
//! thread and reused while the assertion is.
//!
//! A block is reused only for the very state it was built from: the same session record
//! and user record (the `Arc`s the caches hand out: a changed session or user is a new
//! one, and a `Weak` held here keeps an old one's address from being reused), the same
//! configuration ([`Runtime::generation`]), the same app and signing key, and only until
//! its assertion is due to be signed afresh. Bearer grants are not kept.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use stepgate_policy::spec::AppSpec;
use stepgate_store::UserRecord;

use super::headers::REMOTE_HEADERS;
use super::{assertion, headers};
use crate::access::decision_log::REQUEST_ID_NAME;
use crate::access::Grant;
use crate::app::responses::put_security_headers;
use crate::app::state::{AppState, Runtime};
use crate::session::SessionData;

/// The headers, in the order they are set (an [`Asserted`]).
pub type Block = Rc<Asserted>;

/// A session's identity headers and assertion, in the order they are set (the slice it
/// derefs to), and forward-auth's answer made of them ([`Asserted::answer`]).
pub struct Asserted {
    set: Box<[(HeaderName, HeaderValue)]>,
    answer: OnceCell<HeaderMap>,
}

impl std::ops::Deref for Asserted {
    type Target = [(HeaderName, HeaderValue)];

    fn deref(&self) -> &Self::Target {
        &self.set
    }
}

impl Asserted {
    /// Forward-auth's answer headers: these, every other identity header empty (so a
    /// front proxy that copies them overwrites what the client sent), and the security
    /// headers every answer gets ([`put_security_headers`], `Cache-Control: no-store`
    /// among them), with an empty request id for the caller to fill in
    /// ([`crate::access::decision_log::set_header`]). Built once per block and cloned: a
    /// map cloned hashes nothing, a map filled header by header hashes every name.
    pub fn answer(&self) -> HeaderMap {
        self.answer
            .get_or_init(|| {
                let mut h = HeaderMap::with_capacity(self.set.len() + REMOTE_HEADERS.len() + 10);
                for (name, value) in self.set.iter() {
                    h.insert(name.clone(), value.clone());
                }
                for name in &REMOTE_HEADERS {
                    h.entry(name)
                        .or_insert_with(|| HeaderValue::from_static(""));
                }
                put_security_headers(&mut h);
                // The request id's place, which `set_header` fills in each answer: a
                // cloned map has no room to spare, and a header added to it would move
                // every other one. For the same reason the answer's `Content-Length: 0`
                // (the allowed answer has no body) is kept here rather than added to each
                // clone on the way out.
                h.insert(REQUEST_ID_NAME, HeaderValue::from_static(""));
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                h
            })
            .clone()
    }
}

impl From<Vec<(HeaderName, HeaderValue)>> for Asserted {
    fn from(set: Vec<(HeaderName, HeaderValue)>) -> Self {
        Asserted {
            set: set.into_boxed_slice(),
            answer: OnceCell::new(),
        }
    }
}

/// Blocks kept per thread before all are dropped (and built again as requests come).
const MAX_BLOCKS: usize = 4096;

struct Kept {
    session: Weak<SessionData>,
    user: Weak<UserRecord>,
    generation: u64,
    app: Box<str>,
    /// The signing key's id, when the block holds an assertion.
    kid: Option<Box<str>>,
    /// Unix seconds until which the block's assertion is reused.
    until: i64,
    block: Block,
}

impl Kept {
    fn holds(&self, rt: &Runtime, app: &str, grant: &Grant, kid: Option<&str>, now: i64) -> bool {
        std::ptr::eq(self.session.as_ptr(), Arc::as_ptr(&grant.session.data))
            && std::ptr::eq(self.user.as_ptr(), Arc::as_ptr(&grant.user))
            && self.generation == rt.generation
            && *self.app == *app
            && self.kid.as_deref() == kid
            && now < self.until
    }
}

thread_local! {
    /// By session id: the blocks of each app the session was let into.
    static KEPT: RefCell<HashMap<String, Vec<Kept>, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// The identity headers and assertion for a grant of a stored session (a bearer grant's
/// are built by the caller: see [`headers::identity_header_overrides`]). `now`: the
/// request's time, which a kept block's assertion must still be reused at.
pub fn session_block(
    st: &AppState,
    rt: &Runtime,
    app: &AppSpec,
    grant: &Grant,
    now: chrono::DateTime<chrono::Utc>,
) -> Block {
    let now = now.timestamp();
    let asserting = rt.config.gateway.assertion.enabled;
    if let Some(block) = kept_block(st, rt, app.id.as_str(), grant, asserting, now) {
        return block;
    }
    // Read before signing: should the key rotate in between, the block names the older
    // key and the next request builds it afresh.
    let kid: Option<Box<str>> = if asserting {
        st.assertion.with_current_kid(|k| Box::from(k))
    } else {
        None
    };
    let mut built = headers::identity_headers(&grant.user, &grant.assurance);
    let mut until = i64::MAX;
    if let Some((name, value, reuse_until)) = assertion::header_until(st, rt, app, grant) {
        built.push((name, value));
        until = reuse_until;
    }
    let block: Block = Rc::new(built.into());
    // An assertion was asked for but none was made (no key): nothing is kept, so the next
    // request tries again.
    if asserting && until == i64::MAX {
        return block;
    }
    keep(
        &grant.session.id,
        Kept {
            session: Arc::downgrade(&grant.session.data),
            user: Arc::downgrade(&grant.user),
            generation: rt.generation,
            app: app.id.as_str().into(),
            kid,
            until,
            block: block.clone(),
        },
    );
    block
}

/// The block kept on this thread for the grant's session and `app`, when it still holds
/// (with the current signing key, when asserting).
fn kept_block(
    st: &AppState,
    rt: &Runtime,
    app: &str,
    grant: &Grant,
    asserting: bool,
    now: i64,
) -> Option<Block> {
    let lookup = |kid: Option<&str>| {
        KEPT.with(|kept| {
            kept.borrow()
                .get(grant.session.id.as_str())
                .and_then(|blocks| {
                    blocks
                        .iter()
                        .find(|k| k.holds(rt, app, grant, kid, now))
                        .map(|k| k.block.clone())
                })
        })
    };
    if asserting {
        st.assertion
            .with_current_kid(|kid| lookup(Some(kid)))
            .flatten()
    } else {
        lookup(None)
    }
}

/// Keeps `fresh` for the session `id`, in place of what no longer holds for it.
fn keep(id: &str, fresh: Kept) {
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() >= MAX_BLOCKS && !kept.contains_key(id) {
            kept.clear();
        }
        let blocks = kept.entry(id.to_string()).or_default();
        // What no longer holds for this session (an older state, another key) goes.
        blocks.retain(|k| k.app != fresh.app && k.session.strong_count() > 0);
        blocks.push(fresh);
    });
}
