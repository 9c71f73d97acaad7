//! Classes 4 and 5: no page shows a session id or anything it can be derived from, and
//! the session cookie counts only under its exact name, once.

use crate::common::*;
use crate::support::{field, signed_in_session, user, Browser};

#[tokio::test]
async fn no_page_shows_a_session_id_or_anything_it_can_be_derived_from() {
    use base64::Engine as _;
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    // A second live session of the same user, seen on the sessions page.
    let other = sign_in_jane_at(&h, &Browser::not_following(), 1).await;
    let mut pages = Vec::new();
    for path in [
        "/_stepgate/account",
        "/_stepgate/sessions",
        "/_stepgate/login",
        "/admin/users",
    ] {
        let r = b.get(h.url("app.test", path)).send().await.unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        pages.push(r.text().await.unwrap());
        if let Some(l) = location {
            pages.push(l.clone());
            pages.push(b.get(l).send().await.unwrap().text().await.unwrap());
        }
    }
    let sessions = &pages[1];
    assert!(sessions.contains("End"), "{sessions}");
    for id in [&sid, &other] {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        for secret in [id.as_str(), b64.as_str()] {
            for window in secret.as_bytes().windows(12) {
                let w = std::str::from_utf8(window).unwrap();
                for p in &pages {
                    assert!(!p.contains(w), "`{w}` of a session id appears in:\n{p}");
                }
            }
        }
    }
    // The other session's "End" handle ends it, and nothing else does.
    let csrf = field(sessions, "csrf");
    let handles: Vec<String> = sessions
        .match_indices("name=\"id\" value=\"")
        .map(|(i, m)| {
            sessions[i + m.len()..]
                .split('"')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(handles.len(), 1, "{sessions}");
    let end = |handle: String| {
        let (c, csrf, url) = (
            &b,
            csrf.clone(),
            h.url("app.test", "/_stepgate/sessions/end"),
        );
        async move {
            c.post(url)
                .form(&[("csrf", csrf), ("id", handle)])
                .send()
                .await
                .unwrap()
        }
    };
    for forged in [other.clone(), String::new(), "x".repeat(22)] {
        end(forged).await;
        assert!(h.st.stores.hot.get_session(&other).await.unwrap().is_some());
    }
    end(handles[0].clone()).await;
    assert!(h.st.stores.hot.get_session(&other).await.unwrap().is_none());
    assert!(h.st.stores.hot.get_session(&sid).await.unwrap().is_some());
}

#[tokio::test]
async fn the_session_cookie_counts_only_under_its_exact_name_and_once() {
    // Secure cookies: the session cookie is `__Host-stepgate_session`. The test speaks
    // plain HTTP, so it writes the Cookie header itself.
    // A client that keeps Secure cookies off plain HTTP cannot sign in here, so jane's
    // session (password and TOTP, just now) is stored as a sign-in would store it.
    let h = start_with(true).await;
    let jane = user(&h.st, "jane").await;
    let sid = signed_in_session(&h.st, &jane, chrono::Utc::now()).await;
    let get = |cookie: String| {
        let h = &h;
        async move { get_raw(h, "app.test", b"/data", &format!("Cookie: {cookie}\r\n")).await }
    };
    assert_eq!(get(format!("__Host-stepgate_session={sid}")).await.0, 200);
    // Other spellings of the name are other cookies: sign in first.
    for name in [
        "%5F_Host-stepgate_session",
        "__host-stepgate_session",
        "__Host-stepgate%5Fsession",
        "stepgate_session",
        "__Secure-stepgate_session",
    ] {
        let (status, head, _) = get(format!("{name}={sid}")).await;
        assert_eq!(status, 303, "{name}");
        assert!(head.contains("/_stepgate/login"), "{name}: {head}");
    }
    // Twice, in one header or two: refused, whichever is real.
    let (status, _, body) = get(format!(
        "__Host-stepgate_session=x; __Host-stepgate_session={sid}"
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than once"), "{body}");
    let (status, _, _) = get_raw(
        &h,
        "app.test",
        b"/data",
        &format!(
            "Cookie: __Host-stepgate_session={sid}\r\nCookie: __Host-stepgate_session={sid}\r\n"
        ),
    )
    .await;
    assert_eq!(status, 400);
    // A byte outside ASCII on a line spoils only its own piece (found by fuzzing: it hid the
    // whole line), so the copy beside it still counts.
    let (status, _, body) = get_raw(
        &h,
        "app.test",
        b"/data",
        &format!(
            "Cookie: __Host-stepgate_session={sid}\r\nCookie: x=caf\u{e9}; __Host-stepgate_session={sid}\r\n"
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // An upstream may not set stepgate's cookies under any spelling.
    let planted = "/set-cookie?__Host-stepgate_session=planted&__host-STEPGATE_SESSION=planted&%255F_Host-stepgate_session=planted&stepgate_pre=planted&app=kept";
    let (status, head, _) = get_raw(
        &h,
        "app.test",
        planted.as_bytes(),
        &format!("Cookie: __Host-stepgate_session={sid}\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(head.contains("set-cookie: app=kept"), "{head}");
    assert!(!head.contains("planted"), "{head}");
}

/// A session cookie's value holding a byte outside the cookie grammar, wherever it sits
/// (the value is checked eight bytes at a time, the rest one by one), counts for nothing;
/// the same value in double quotes, which the grammar allows, is the session.
#[tokio::test]
async fn a_session_cookie_with_a_byte_outside_the_grammar_anywhere_is_no_session() {
    let h = start().await;
    let b = Browser::not_following();
    let sid = sign_in_jane(&h, &b).await;
    let get = |value: String| {
        let h = &h;
        async move {
            let cookie = format!("Cookie: stepgate_session={value}\r\n");
            get_raw(h, "app.test", b"/data", &cookie).await.0
        }
    };
    assert_eq!(get(sid.clone()).await, 200);
    assert_eq!(get(format!("\"{sid}\"")).await, 200, "quoted");
    let len = sid.len();
    for at in [0, 3, 8, 15, len / 2, len - 1, len] {
        for bad in ["\\", ",", "\"", "\t", "\u{e9}"] {
            // A tab after the value is whitespace around the piece, as browsers send it.
            if at == len && bad == "\t" {
                continue;
            }
            let value = format!("{}{bad}{}", &sid[..at], &sid[at..]);
            assert_eq!(get(value).await, 303, "{bad:?} at {at} of {len}");
        }
    }
}
