//! The recipe docs/gateway.md gives apps for verifying `X-Stepgate-Assertion`, run as
//! written: the Python example (PyJWT) and the Rust example (jsonwebtoken) in
//! examples/assertion/ verify against a live stepgate's JWKS the assertion its upstream
//! received, and refuse each forgery an app must refuse. The doc shows those very files.
//!
//! The Python half needs `python3` with PyJWT 2.10 or later and cryptography (`.ci/run`
//! installs them); without them it is skipped and counted in the run's "skipped: …" line,
//! except under `CI=true`.

#[path = "forward_auth/harness.rs"]
mod harness;
mod support;

/// The Rust example, compiled as an app would compile it.
// An app reads the claims it needs; this test reads only some of them.
#[allow(dead_code)]
mod recipe {
    include!("../../../examples/assertion/verify_assertion.rs");
}

use std::process::{Command, Stdio};

use base64::Engine as _;
use harness::*;
use hmac::Mac as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use stepgate_server::gateway::assertion::IdentityClaims;
use support::{sign_in, user, Browser};

const LEGACY_HOST: &str = "legacy.example.test";
const PYTHON_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/assertion/verify_assertion.py"
);
const RUST_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/assertion/verify_assertion.rs"
);
const GATEWAY_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/gateway.md");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// The claims of a token, unverified.
fn claims_of(token: &str) -> serde_json::Value {
    serde_json::from_slice(&unb64(token.split('.').nth(1).unwrap())).unwrap()
}

/// An `alg` + `kid` header and `claims`, signed with HMAC-SHA256 under `secret`.
fn hs256(kid: &str, claims: &serde_json::Value, secret: &[u8]) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// What a signed-in browser's requests to `console` and `legacy` carried upstream.
struct Live {
    h: Harness,
    /// The assertion the upstream of `console` received.
    console: String,
    /// The assertion the upstream of `legacy` received.
    legacy: String,
    /// The JWKS as served.
    jwks: serde_json::Value,
}

impl Live {
    fn issuer(&self) -> &str {
        &self.h.public_url
    }

    fn jwks_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/.well-known/jwks.json",
            self.h.addr.port()
        )
    }
}

async fn signed_in() -> Live {
    let h = start(|port| format!("http://{PORTAL_HOST}:{port}")).await;
    let c = Browser::new();
    let app = format!("http://{APP_HOST}:{}/", h.addr.port());
    let r = sign_in(&c, &app, &FIONA, &FIONA.code(0)).await;
    let echoed: serde_json::Value = r.json().await.unwrap();
    let console = echoed["x-stepgate-assertion"].as_str().unwrap().to_string();
    let r = c
        .get(format!("http://{LEGACY_HOST}:{}/", h.addr.port()))
        .send()
        .await
        .unwrap();
    let echoed: serde_json::Value = r.json().await.unwrap();
    let legacy = echoed["x-stepgate-assertion"].as_str().unwrap().to_string();
    let jwks = reqwest::get(format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        h.addr.port()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    Live {
        h,
        console,
        legacy,
        jwks,
    }
}

/// A token an app must refuse, and how each recipe refuses it.
struct Forgery {
    /// What is wrong with it.
    what: &'static str,
    token: String,
    /// The Rust recipe's error, as [`rust_refusal`] names it.
    rust: String,
    /// The exception the Python recipe raises (PyJWT's class name).
    python: &'static str,
}

/// The Rust recipe's error, by variant and, for a failed verification, jsonwebtoken's
/// error kind: what an app would branch on.
fn rust_refusal(e: &recipe::AssertionError) -> String {
    use recipe::AssertionError as E;
    match e {
        E::Malformed(_) => "Malformed".into(),
        E::Algorithm(alg) => format!("Algorithm({alg:?})"),
        E::NoKeyId => "NoKeyId".into(),
        E::UnknownKey(kid) => format!("UnknownKey({kid})"),
        E::Jwks(_) => "Jwks".into(),
        E::Invalid(e) => format!("Invalid({:?})", e.kind()),
        E::IssuedInFuture => "IssuedInFuture".into(),
    }
}

/// Each token an app must refuse, by what is wrong with it; all made from the live
/// assertion and, where they need a valid signature, signed with stepgate's own key.
fn forgeries(live: &Live) -> Vec<Forgery> {
    let token = &live.console;
    let parts: Vec<&str> = token.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    let kid = header["kid"].as_str().unwrap().to_string();
    let claims: IdentityClaims = serde_json::from_value(claims_of(token)).unwrap();
    let now = chrono::Utc::now().timestamp();
    let signed = |c: &IdentityClaims| live.h.st.assertion.sign(c).unwrap();

    let mut out = Vec::new();
    let mut push = |what, token, rust: &str, python| {
        out.push(Forgery {
            what,
            token,
            rust: rust.to_string(),
            python,
        })
    };
    const BAD_SIGNATURE: (&str, &str) = ("Invalid(InvalidSignature)", "InvalidSignatureError");
    // One byte of the signature changed.
    let mut sig = unb64(parts[2]);
    sig[10] ^= 0x01;
    push(
        "tampered signature",
        format!("{}.{}.{}", parts[0], parts[1], b64(&sig)),
        BAD_SIGNATURE.0,
        BAD_SIGNATURE.1,
    );
    // The claims changed under the original signature.
    let mut admin = claims_of(token);
    admin["preferred_username"] = json!("admin");
    push(
        "tampered claims",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(admin.to_string().as_bytes()),
            parts[2]
        ),
        BAD_SIGNATURE.0,
        BAD_SIGNATURE.1,
    );
    // Genuine, but for another app.
    push(
        "another app's audience",
        live.legacy.clone(),
        "Invalid(InvalidAudience)",
        "InvalidAudienceError",
    );
    // Signed by stepgate's key, but naming another issuer.
    let mut c = claims.clone();
    c.iss = "http://evil.example.test".into();
    push(
        "wrong issuer",
        signed(&c),
        "Invalid(InvalidIssuer)",
        "InvalidIssuerError",
    );
    // Expired well beyond the leeway.
    let mut c = claims.clone();
    c.iat = now - 300;
    c.exp = now - 120;
    push(
        "expired",
        signed(&c),
        "Invalid(ExpiredSignature)",
        "ExpiredSignatureError",
    );
    // Issued in the future.
    let mut c = claims.clone();
    c.iat = now + 600;
    c.exp = now + 660;
    push(
        "issued in the future",
        signed(&c),
        "IssuedInFuture",
        "ImmatureSignatureError",
    );
    // `alg: none`, with and without the signature: jsonwebtoken knows no such algorithm,
    // PyJWT refuses any but ES256.
    let none = b64(json!({ "alg": "none", "typ": "JWT", "kid": kid })
        .to_string()
        .as_bytes());
    push(
        "alg none",
        format!("{none}.{}.", parts[1]),
        "Malformed",
        "InvalidAlgorithmError",
    );
    push(
        "alg none, signed",
        format!("{none}.{}.{}", parts[1], parts[2]),
        "Malformed",
        "InvalidAlgorithmError",
    );
    // HS256 keyed with the public key, in each form an app might hold it.
    let jwk = live.jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(kid))
        .unwrap()
        .clone();
    let mut point = vec![0x04];
    point.extend(unb64(jwk["x"].as_str().unwrap()));
    point.extend(unb64(jwk["y"].as_str().unwrap()));
    // SubjectPublicKeyInfo for a P-256 key: this fixed prefix, then the point.
    let mut spki = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.extend(&point);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD
            .encode(&spki)
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let body = claims_of(token);
    for (what, secret) in [
        ("HS256 keyed with the public key's PEM", pem.into_bytes()),
        ("HS256 keyed with the public key's DER", spki),
        ("HS256 keyed with the public point", point),
        ("HS256 keyed with the JWK", jwk.to_string().into_bytes()),
    ] {
        push(
            what,
            hs256(&kid, &body, &secret),
            "Algorithm(HS256)",
            "InvalidAlgorithmError",
        );
    }
    // ES256 by a key stepgate never had, under stepgate's kid and under a new one.
    let stranger = rcgen::KeyPair::generate().unwrap();
    let enc = EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap();
    for (what, k, rust, python) in [
        (
            "another key under stepgate's kid",
            kid.clone(),
            BAD_SIGNATURE.0,
            BAD_SIGNATURE.1,
        ),
        (
            "another key under an unknown kid",
            "not-a-stepgate-key".to_string(),
            "UnknownKey(not-a-stepgate-key)",
            "PyJWKClientError",
        ),
    ] {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(k);
        push(
            what,
            jsonwebtoken::encode(&h, &body, &enc).unwrap(),
            rust,
            python,
        );
    }
    // No kid at all.
    let mut h = Header::new(Algorithm::ES256);
    h.kid = None;
    push(
        "no kid",
        jsonwebtoken::encode(&h, &body, &enc).unwrap(),
        "NoKeyId",
        "PyJWKClientError",
    );
    push("not a JWT", "not-a-jwt".into(), "Malformed", "DecodeError");
    // A hand-rolled HS256 check of one of them, so the forgery is known to be well made.
    let forged = out
        .iter()
        .find(|f| f.what == "HS256 keyed with the JWK")
        .map(|f| &f.token)
        .unwrap();
    let (signing_input, sig) = forged.rsplit_once('.').unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(jwk.to_string().as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    assert_eq!(mac.finalize().into_bytes().to_vec(), unb64(sig));
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn the_rust_recipe_accepts_the_live_assertion_and_refuses_forgeries() {
    let live = signed_in().await;
    let verifier =
        recipe::AssertionVerifier::new(live.issuer(), "console").with_jwks_url(&live.jwks_url());
    let id = verifier
        .verify(&live.console)
        .await
        .unwrap_or_else(|e| panic!("the live assertion is refused: {e}"));
    assert_eq!(id.preferred_username.as_deref(), Some(USER));
    assert_eq!(id.email.as_deref(), Some("fiona@example.test"));
    assert_eq!(id.groups, ["staff", "ops"]);
    assert_eq!(id.acr.as_deref(), Some("aal2"));
    let user = user(&live.h.st, USER).await;
    assert_eq!(id.sub, user.id);

    for f in forgeries(&live) {
        match verifier.verify(&f.token).await {
            Ok(id) => panic!("{}: accepted as {id:?}", f.what),
            Err(e) => assert_eq!(rust_refusal(&e), f.rust, "{}: {e}", f.what),
        }
    }
    // The legacy app's verifier takes its own assertion and refuses console's.
    let legacy =
        recipe::AssertionVerifier::new(live.issuer(), "legacy").with_jwks_url(&live.jwks_url());
    let id = legacy
        .verify(&live.legacy)
        .await
        .unwrap_or_else(|e| panic!("legacy's own assertion is refused: {e}"));
    assert_eq!(id.sub, user.id);
    match legacy.verify(&live.console).await {
        Ok(id) => panic!("console's assertion accepted by legacy as {id:?}"),
        Err(e) => assert_eq!(rust_refusal(&e), "Invalid(InvalidAudience)", "{e}"),
    }
}

/// Whether `python3` has PyJWT 2.10 or later (the example's `PyJWKClient(timeout=…)`) and
/// cryptography; under `CI=true` it must. Otherwise the test is recorded as skipped.
fn python_has_pyjwt() -> bool {
    const CHECK: &str = "import sys, jwt, cryptography; \
        sys.exit(tuple(int(n) for n in jwt.__version__.split('.')[:2]) < (2, 10))";
    let ok = Command::new("python3")
        .args(["-c", CHECK])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but python3 has no PyJWT 2.10 or later with cryptography: .ci/run installs pyjwt[crypto]"
        );
        support::skipped::record(
            "python3 with PyJWT 2.10+",
            "pip install 'pyjwt[crypto]>=2.10'",
        );
    }
    ok
}

/// Runs the Python example on `tokens` (one per line); one JSON answer per token.
async fn run_python(live: &Live, audience: &str, tokens: &[String]) -> Vec<serde_json::Value> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("python3")
        .arg(PYTHON_EXAMPLE)
        .args([live.issuer(), audience, &live.jwks_url()])
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", tokens.join("\n")).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the Python example failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), tokens.len());
    answers
}

#[tokio::test]
async fn the_python_recipe_accepts_the_live_assertion_and_refuses_forgeries() {
    if !python_has_pyjwt() {
        return;
    }
    let live = signed_in().await;
    let forged = forgeries(&live);
    let mut tokens = vec![live.console.clone()];
    tokens.extend(forged.iter().map(|f| f.token.clone()));
    let answers = run_python(&live, "console", &tokens).await;
    let valid = &answers[0];
    assert_eq!(valid["ok"], true, "the live assertion is refused: {valid}");
    let claims = &valid["claims"];
    assert_eq!(claims["preferred_username"], USER, "{claims}");
    assert_eq!(claims["aud"], "console", "{claims}");
    assert_eq!(claims["iss"], live.issuer(), "{claims}");
    assert_eq!(claims["groups"], json!(["staff", "ops"]), "{claims}");
    for (f, answer) in forged.iter().zip(&answers[1..]) {
        assert_eq!(answer["ok"], false, "{}: accepted: {answer}", f.what);
        // "ExceptionClass: message".
        let error = answer["error"].as_str().unwrap_or_default();
        let class = error.split(':').next().unwrap_or_default();
        assert_eq!(class, f.python, "{}: {error}", f.what);
    }
    let legacy = run_python(
        &live,
        "legacy",
        &[live.legacy.clone(), live.console.clone()],
    )
    .await;
    assert_eq!(
        legacy[0]["ok"], true,
        "legacy's own assertion: {}",
        legacy[0]
    );
    assert_eq!(legacy[1]["ok"], false, "console's assertion: {}", legacy[1]);
    let error = legacy[1]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("InvalidAudienceError:"), "{error}");
}

/// The fenced block that follows the line linking `path` in `doc`.
fn block_after_link<'a>(doc: &'a str, path: &str) -> &'a str {
    let link = format!("[`{path}`](../{path}):\n\n```");
    let at = doc
        .find(&link)
        .unwrap_or_else(|| panic!("docs/gateway.md has no link to {path} before its code"));
    let rest = &doc[at + link.len()..];
    let body = &rest[rest.find('\n').unwrap() + 1..];
    &body[..body
        .find("\n```\n")
        .map(|i| i + 1)
        .expect("an unclosed code block")]
}

#[test]
fn the_docs_show_the_tested_files_verbatim() {
    let doc = std::fs::read_to_string(GATEWAY_DOC).unwrap();
    for (path, file) in [
        ("examples/assertion/verify_assertion.py", PYTHON_EXAMPLE),
        ("examples/assertion/verify_assertion.rs", RUST_EXAMPLE),
    ] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            block_after_link(&doc, path) == text,
            "docs/gateway.md's copy of {path} differs from the file: paste the file into the doc"
        );
    }
}
