//! Passkeys in tests: webauthn-rs's software authenticator registered for a user (as the
//! account page's ceremony stores it) and a passkey sign-in through the portal's JSON
//! ceremony, as the portal's script drives it.

use base64::Engine as _;
use stepgate_server::Shared;
use stepgate_store::UserRecord;
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;

use super::browser::Page;

/// The origin the default `factors.webauthn` configuration expects.
pub const ORIGIN: &str = "http://localhost:9091";

/// A passkey on a software authenticator with user verification.
pub struct Passkey {
    authenticator: WebauthnAuthenticator<SoftPasskey>,
    /// Its credential id, base64url (as stored, and as a UEM lists it).
    pub credential_id: String,
    /// The user handle it was registered with.
    handle: Vec<u8>,
}

impl Passkey {
    /// Registers a new passkey for `user` through the authentication service (the
    /// ceremony the account page runs, without its fresh-factor gate).
    pub async fn register(st: &Shared, user: &UserRecord) -> Passkey {
        use stepgate_authn::webauthn::RegistrationKind;
        let mut authenticator = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let (options, state) = st
            .authn
            .webauthn_register_start(user, RegistrationKind::Passkey)
            .await
            .unwrap();
        let handle = b64(&options["publicKey"]["user"]["id"]);
        let response = authenticator
            .do_registration(origin(), serde_json::from_value(options).unwrap())
            .unwrap();
        let f = st
            .authn
            .webauthn_register_finish(user, state, serde_json::to_value(response).unwrap(), "")
            .await
            .unwrap();
        Passkey {
            authenticator,
            credential_id: f.lookup_key.unwrap(),
            handle,
        }
    }

    /// Signs in with this passkey alone from `c` (the login page, then the ceremony);
    /// where the portal sends the browser next.
    pub async fn sign_in(&mut self, c: &reqwest::Client, base: &str) -> String {
        let (status, body) = self.sign_in_answer(c, base, false).await;
        assert_eq!(status, 200, "the passkey sign-in: {body}");
        body["redirect"].as_str().unwrap().to_string()
    }

    /// A sign-in with this passkey alone from `c`, its assertion's signature replaced by a
    /// wrong one when `forged`: the finish step's status and JSON body, as the script
    /// reads them.
    pub async fn sign_in_answer(
        &mut self,
        c: &reqwest::Client,
        base: &str,
        forged: bool,
    ) -> (u16, serde_json::Value) {
        let page = Page::open(c, &format!("{base}/_stepgate/login")).await;
        let csrf = page.field("csrf");
        let started: serde_json::Value = c
            .post(format!("{base}/_stepgate/webauthn/login/start"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // The software authenticator finds its credential only by the allow-list, and
        // answers without the user handle a discoverable credential returns.
        let mut options = started["options"].clone();
        options["publicKey"]["allowCredentials"] =
            serde_json::json!([{ "type": "public-key", "id": self.credential_id }]);
        let assertion = self
            .authenticator
            .do_authentication(origin(), serde_json::from_value(options).unwrap())
            .unwrap();
        let mut response = serde_json::to_value(assertion).unwrap();
        response["response"]["userHandle"] = serde_json::json!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.handle)
        );
        if forged {
            response["response"]["signature"] = serde_json::json!(FORGED_SIGNATURE);
        }
        let r = c
            .post(format!("{base}/_stepgate/webauthn/login/finish"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({ "id": started["id"], "response": response }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

/// A well-formed ECDSA signature (DER, r = s = 0) no key made.
const FORGED_SIGNATURE: &str = "MEQCIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAiAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

impl Passkey {
    /// Passes a step-up with this passkey on the step-up page `page` (its passkey button's
    /// signed link and the CSRF token), as the portal's script does; where the portal sends
    /// the browser next.
    pub async fn step_up(&mut self, c: &reqwest::Client, base: &str, page: &Page) -> String {
        let (status, body) = self.step_up_answer(c, base, page, false).await;
        assert_eq!(status, 200, "the passkey step-up: {body}");
        body["redirect"].as_str().unwrap().to_string()
    }

    /// A step-up with this passkey on `page`, its assertion's signature replaced by a wrong
    /// one when `forged`: the finish step's status and JSON body, as the script reads them.
    pub async fn step_up_answer(
        &mut self,
        c: &reqwest::Client,
        base: &str,
        page: &Page,
        forged: bool,
    ) -> (u16, serde_json::Value) {
        let at = page
            .html
            .find("id=\"webauthn-step-up\"")
            .expect("a passkey button on the step-up page");
        let rest = &page.html[at..];
        let i = rest.find("data-token=\"").unwrap() + "data-token=\"".len();
        let token = rest[i..].split('"').next().unwrap().to_string();
        let csrf = page.field("csrf");
        let started: serde_json::Value = c
            .post(format!("{base}/_stepgate/webauthn/step-up/start"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let assertion = self
            .authenticator
            .do_authentication(
                origin(),
                serde_json::from_value(started["options"].clone()).unwrap(),
            )
            .unwrap();
        let mut assertion = serde_json::to_value(assertion).unwrap();
        if forged {
            assertion["response"]["signature"] = serde_json::json!(FORGED_SIGNATURE);
        }
        let r = c
            .post(format!("{base}/_stepgate/webauthn/step-up/finish"))
            .header("x-csrf-token", &csrf)
            .json(
                &serde_json::json!({ "id": started["id"], "token": token, "response": assertion }),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

/// A base64url (or base64) JSON string's bytes.
fn b64(v: &serde_json::Value) -> Vec<u8> {
    let s = v.as_str().unwrap().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.replace('+', "-").replace('/', "_"))
        .unwrap()
}
