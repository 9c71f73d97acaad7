//! WebSocket: the one upgrade passed to an upstream, and the spliced connection that lasts
//! only as long as the grant it was allowed under.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};

/// Whether a message asks to switch to WebSocket: a `Connection` header with the `upgrade`
/// token and one `Upgrade` header that is exactly `websocket` (any case). Any other upgrade
/// (`h2c` above all, which would hand the connection to the upstream past every later
/// decision) is not one stepgate passes on: its headers are stripped and the request goes
/// on as plain HTTP.
pub fn websocket_upgrade(h: &HeaderMap) -> bool {
    // `Upgrade` first: nearly no request has one, and then `Connection` is not looked up.
    let mut upgrades = h.get_all(header::UPGRADE).iter();
    let websocket = match (upgrades.next(), upgrades.next()) {
        (Some(v), None) => v
            .to_str()
            .is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket")),
        _ => false,
    };
    websocket
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Marks a message as switching to WebSocket (after the hop-by-hop headers were removed).
pub fn set_websocket_upgrade(h: &mut HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// What keeps an upgraded connection open: the session it was allowed under (checked every
/// `every`), or a bearer token (until it expires).
pub enum Watch {
    /// A stored session, by id.
    Session {
        /// The state (sessions, caches, configuration).
        st: crate::app::state::Shared,
        /// The session id.
        id: String,
        /// How often to check.
        every: Duration,
    },
    /// A bearer token's expiry (`None`: a token without `exp`, kept as long as it lasts).
    Until(Option<chrono::DateTime<chrono::Utc>>),
}

impl Watch {
    /// Completes, saying why, when the connection may no longer stay open.
    async fn ended(self) -> &'static str {
        match self {
            Watch::Until(None) => std::future::pending().await,
            Watch::Until(Some(exp)) => {
                let left = (exp - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(left).await;
                "the bearer token expired"
            }
            Watch::Session { st, id, every } => loop {
                tokio::time::sleep(every).await;
                if let Some(why) = session_gone(&st, &id).await {
                    return why;
                }
            },
        }
    }
}

/// Why the session `id` no longer lets its user through, if it does not: signed out,
/// expired, idle, its user disabled, or the store not answering (fail closed).
async fn session_gone(st: &crate::app::state::Shared, id: &str) -> Option<&'static str> {
    let rt = st.runtime.load();
    let now = chrono::Utc::now();
    let s = match st.sessions.check(&rt, id, now).await {
        Ok(Ok(s)) if !s.data.pending => s,
        Ok(_) => return Some("the session ended"),
        Err(_) => return Some("the session store did not answer"),
    };
    match st.cache.user(&s.data.user_id).await {
        Ok(Some(u)) if !u.disabled => None,
        Ok(_) => Some("the user is disabled or gone"),
        Err(_) => Some("the user store did not answer"),
    }
}

/// Joins the client's upgraded connection to the upstream's, copying both ways until
/// either side closes or `watch` says the grant has ended (then both are closed).
pub fn splice_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    app: String,
    watch: Watch,
) {
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%app, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut c = hyper_util::rt::TokioIo::new(c);
        let mut u = hyper_util::rt::TokioIo::new(u);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                if let Err(e) = r {
                    tracing::debug!(%app, error = %e, "upgraded connection ended with an error");
                }
            }
            why = watch.ended() => {
                tracing::info!(%app, reason = why, "closing an upgraded connection");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_websocket_upgrade_is_passed_on() {
        let h = |conn: &[&'static str], up: &[&'static str]| {
            let mut h = HeaderMap::new();
            for c in conn {
                h.append(header::CONNECTION, HeaderValue::from_static(c));
            }
            for u in up {
                h.append(header::UPGRADE, HeaderValue::from_static(u));
            }
            websocket_upgrade(&h)
        };
        assert!(h(&["keep-alive, Upgrade"], &["websocket"]));
        assert!(h(&["upgrade"], &["WebSocket"]));
        assert!(!h(&[], &["websocket"]), "no Connection: upgrade");
        assert!(!h(&["Upgrade, HTTP2-Settings"], &["h2c"]));
        assert!(!h(&["upgrade"], &["websocket, h2c"]));
        assert!(!h(&["upgrade"], &["websocket", "h2c"]));
        assert!(!h(&["upgrade"], &["websocket/13"]));
        assert!(!h(&["upgrade"], &[]));
    }
}
