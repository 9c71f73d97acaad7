"""A relying party no one here wrote: authlib's OAuth 2.0 / OpenID Connect client, signing
in through a live stepgate, and a browser (requests, following the portal's forms) for the
person. crates/server/tests/oidc_provider/ runs it and reads one `ok <check>` line per
check; any failed check raises and the script exits non-zero.

    python3 rp.py <settings.json>
"""

import json
import re
import sys
import time
import warnings
from base64 import urlsafe_b64decode
from urllib.parse import parse_qs, urljoin, urlparse

warnings.filterwarnings("ignore")  # authlib.jose's deprecation notice

import pyotp  # noqa: E402
import requests  # noqa: E402
from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.jose import JsonWebKey, jwt  # noqa: E402
from authlib.oidc.core import CodeIDToken  # noqa: E402

S = json.load(open(sys.argv[1]))
ISSUER = S["issuer"]
CB = S["redirect_uri"]
TOTP = pyotp.TOTP(S["totp_base32"])
totp_used = [0]


def ok(name):
    print("ok " + name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def field(html, name):
    m = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), html)
    check(m, "no field %s in the page:\n%s" % (name, html[:2000]))
    return m.group(1).replace("&amp;", "&")


class Person:
    """A browser: keeps cookies, follows redirects itself, fills the portal's forms."""

    def __init__(self):
        self.http = requests.Session()
        self.http.trust_env = False

    def go(self, url):
        """Follows `url` until stepgate sends the browser to the RP's redirect URI; returns
        that URL and the portal pages the person saw (and filled in) on the way."""
        seen = []
        r = self.http.get(url, allow_redirects=False)
        for _ in range(20):
            if r.status_code in (302, 303):
                loc = urljoin(r.url, r.headers["location"])
                if loc.startswith(CB):
                    return loc, seen
                r = self.http.get(loc, allow_redirects=False)
                continue
            path = urlparse(r.url).path
            check(r.status_code == 200, "HTTP %s at %s: %s" % (r.status_code, r.url, r.text[:500]))
            if path.endswith("/login"):
                seen.append("login")
                r = self.http.post(
                    urljoin(r.url, S["portal"] + "/login"),
                    data={
                        "csrf": field(r.text, "csrf"),
                        "t": field(r.text, "t"),
                        "username": S["username"],
                        "password": S["password"],
                    },
                    allow_redirects=False,
                )
            elif path.endswith("/step-up"):
                seen.append("step-up")
                # A code is good once: each step-up types the next period's.
                code = TOTP.at(time.time() + 30 * totp_used[0])
                totp_used[0] += 1
                r = self.http.post(
                    urljoin(r.url, S["portal"] + "/step-up/totp"),
                    data={"csrf": field(r.text, "csrf"), "t": field(r.text, "t"), "code": code},
                    allow_redirects=False,
                )
            else:
                raise AssertionError("unexpected page %s:\n%s" % (r.url, r.text[:1000]))
        raise AssertionError("too many redirects")


disco = requests.get(ISSUER + "/.well-known/openid-configuration").json()
check(disco["issuer"] == ISSUER, disco)
check(disco["acr_values_supported"] == ["aal1", "aal2", "aal3"], disco)
check(disco["code_challenge_methods_supported"] == ["S256"], disco)
check(disco["authorization_response_iss_parameter_supported"] is True, disco)
JWKS = JsonWebKey.import_key_set(requests.get(disco["jwks_uri"]).json())
ok("discovery")


def rp(public=False, client_id=None):
    if public:
        return OAuth2Session(
            S["public_client_id"], None, scope="openid profile", redirect_uri=CB,
            code_challenge_method="S256", token_endpoint_auth_method="none",
        )
    return OAuth2Session(
        client_id or S["client_id"], S["client_secret"], scope="openid profile email groups",
        redirect_uri=CB, code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )


def authorize(person, client_id=None, **extra):
    """An authorization request through `person`'s browser: (callback query, pages seen,
    client, verifier, nonce)."""
    client = rp(client_id=client_id)
    verifier = generate_token(48)
    nonce = generate_token(20)
    url, state = client.create_authorization_url(
        disco["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **extra
    )
    cb, seen = person.go(url)
    q = {k: v[0] for k, v in parse_qs(urlparse(cb).query).items()}
    check(q.get("state") == state, "state round-tripped: %s" % q)
    check(q.get("iss") == ISSUER, "iss in the response (RFC 9207): %s" % q)
    return cb, q, seen, client, verifier, nonce


def sign_in(person, client_id=None, **extra):
    """Signs in and redeems the code; the tokens, their ID token's verified claims and
    the pages seen."""
    cb, q, seen, client, verifier, nonce = authorize(person, client_id=client_id, **extra)
    check("code" in q, "a code, got %s" % q)
    token = client.fetch_token(
        disco["token_endpoint"], authorization_response=cb, code_verifier=verifier
    )
    claims = jwt.decode(
        token["id_token"], JWKS, claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": ISSUER}},
        claims_params={"nonce": nonce, "client_id": client_id or S["client_id"], "access_token": token["access_token"]},
    )
    claims.validate()  # exp, iat, aud, nonce, at_hash, signature via jwks_uri
    for c in ["auth_time", "acr", "amr", "sid"]:
        check(c in claims, "%s in the ID token: %s" % (c, dict(claims)))
    return token, claims, seen, client


jane = Person()
token, claims, seen, client = sign_in(jane)
check(seen == ["login"], seen)
check(claims["acr"] == "aal1" and claims["amr"] == ["pwd"], dict(claims))
check(claims["preferred_username"] == S["username"], dict(claims))
first_auth = claims["auth_time"]
first_sub = claims["sub"]
ok("code flow with PKCE, ID token verified via jwks_uri")

# Clients that chose another algorithm for their ID tokens (id_token_signed_response_alg):
# authlib verifies each with the key jwks_uri publishes for it; the running session signs
# them in without a prompt.
check(set(disco["id_token_signing_alg_values_supported"]) >= {"ES256", "EdDSA", "RS256"}, disco)
for cid, alg in S["alg_clients"]:
    token, claims, seen, _ = sign_in(jane, client_id=cid)
    header = json.loads(urlsafe_b64decode(token["id_token"].split(".")[0] + "=="))
    check(header["alg"] == alg, (cid, header))
    check(claims["aud"] == cid and claims["sub"] == first_sub, (cid, dict(claims)))
    check(seen == [], seen)
    ok("ID token signed with %s verified" % alg)

info = client.get(disco["userinfo_endpoint"]).json()
check(info["sub"] == claims["sub"] and info["preferred_username"] == S["username"], info)
ok("userinfo")

token, claims, seen, client = sign_in(jane, acr_values="aal2")
check(seen == ["step-up"], "aal2 needs the TOTP step-up: %s" % seen)
check(claims["acr"] == "aal2" and "otp" in claims["amr"] and "mfa" in claims["amr"], dict(claims))
ok("acr_values=aal2 stepped up with TOTP")

token, claims, seen, client = sign_in(jane, acr_values="aal2")
check(seen == [], "the SSO session already meets aal2: %s" % seen)
check(claims["acr"] == "aal2", dict(claims))
ok("a satisfying SSO session issues a code without a prompt")

essential = json.dumps({"id_token": {"acr": {"essential": True, "values": ["aal3"]}}})
cb, q, seen, _, _, _ = authorize(jane, claims=essential)
check(q.get("error") == "unmet_authentication_requirements", q)
ok("essential acr aal3 unmet")

time.sleep(1.2)
token, claims, seen, client = sign_in(jane, prompt="login")
check(seen == ["login"], "prompt=login signs in again: %s" % seen)
check(claims["auth_time"] > first_auth, (claims["auth_time"], first_auth))
second_auth = claims["auth_time"]
ok("prompt=login re-authenticates (auth_time moves)")

time.sleep(1.2)
token, claims, seen, client = sign_in(jane, max_age="0")
check(seen == ["login"], "max_age=0 signs in again: %s" % seen)
check(claims["auth_time"] > second_auth, (claims["auth_time"], second_auth))
ok("max_age=0 re-authenticates (auth_time moves)")

token, claims, seen, client = sign_in(jane, max_age="3600")
check(seen == [], seen)
ok("max_age=3600 met by the session")

cb, q, seen, _, _, _ = authorize(Person(), prompt="none")
check(q.get("error") == "login_required", q)
ok("prompt=none without a session: login_required")

cb, q, seen, _, _, _ = authorize(jane, prompt="none", acr_values="aal3")
check(q.get("code"), "aal3 is voluntary here and unreachable: a code anyway, %s" % q)
ok("voluntary acr_values the user cannot reach")

# Refresh: rotation, and a reused token revokes the grant.
rt1 = token["refresh_token"]
t2 = client.refresh_token(disco["token_endpoint"], refresh_token=rt1)
check(t2["refresh_token"] != rt1 and t2["access_token"] != token["access_token"], t2)
r2 = client.post(disco["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": rt1}, withhold_token=True, auth=(S["client_id"], S["client_secret"]))
check(r2.status_code == 400 and r2.json()["error"] == "invalid_grant", r2.text)
r3 = client.post(disco["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]}, withhold_token=True, auth=(S["client_id"], S["client_secret"]))
check(r3.status_code == 400 and r3.json()["error"] == "invalid_grant", "the grant is revoked: %s" % r3.text)
ok("refresh rotation and reuse detection")

# Revocation and introspection.
token, claims, seen, client = sign_in(jane)
auth = (S["client_id"], S["client_secret"])


def introspect(t):
    return requests.post(disco["introspection_endpoint"], data={"token": t}, auth=auth).json()


a = introspect(token["access_token"])
check(a["active"] is True and a["acr"] == claims["acr"] and a["client_id"] == S["client_id"], a)
check(introspect(token["refresh_token"])["active"] is True, "refresh active")
rv = requests.post(disco["revocation_endpoint"], data={"token": token["refresh_token"]}, auth=auth)
check(rv.status_code == 200, rv.text)
check(introspect(token["refresh_token"])["active"] is False, "revoked refresh inactive")
check(introspect(token["access_token"])["active"] is False, "its grant's access token inactive")
check(introspect("not-a-token")["active"] is False, "garbage inactive")
ok("revoke + introspect")

# The RFC 9470 loop: stepgate's own gateway takes the access token as a bearer token; a
# route needing more answers the challenge, the client re-authorizes and retries.
api = S["api"]
token, claims, seen, client = sign_in(jane, prompt="login")
check(claims["acr"] == "aal1", dict(claims))
hdr = {"Host": S["api_host"], "Authorization": "Bearer " + token["access_token"]}
r = requests.get(api + "/expenses", headers=hdr)
check(r.status_code == 200, "the gateway accepts the access token: %s %s" % (r.status_code, r.text))
r = requests.get(api + "/reports/q3", headers=hdr)
check(r.status_code == 401, r.text)
challenge = r.headers["www-authenticate"]
check('error="insufficient_user_authentication"' in challenge, challenge)
acr = re.search(r'acr_values="([^"]+)"', challenge).group(1)
token, claims, seen, client = sign_in(jane, acr_values=acr)
check(seen == ["step-up"] and claims["acr"] == "aal2", (seen, dict(claims)))
hdr["Authorization"] = "Bearer " + token["access_token"]
r = requests.get(api + "/reports/q3", headers=hdr)
check(r.status_code == 200, "%s %s" % (r.status_code, r.text))
ok("RFC 9470 loop through the gateway")

# RP-initiated logout: the session ends, the grant with it.
lo = jane.http.get(
    disco["end_session_endpoint"],
    params={"id_token_hint": token["id_token"], "post_logout_redirect_uri": S["post_logout_uri"], "state": "bye"},
    allow_redirects=False,
)
check(lo.status_code == 303 and lo.headers["location"] == S["post_logout_uri"] + "?state=bye", (lo.status_code, lo.headers))
cb, q, seen, _, _, _ = authorize(jane, prompt="none")
check(q.get("error") == "login_required", "signed out: %s" % q)
r = client.post(disco["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}, withhold_token=True, auth=auth)
check(r.status_code == 400 and r.json()["error"] == "invalid_grant", "the session's grant ended: %s" % r.text)
check(introspect(token["access_token"])["active"] is False, "access token inactive after logout")
ok("RP-initiated logout")

# A public client must use PKCE.
pub = rp(public=True)
url, state = pub.create_authorization_url(disco["authorization_endpoint"])
if "code_challenge" in url:
    url = re.sub(r"&code_challenge(_method)?=[^&]*", "", url)
cb, _ = Person().go(url)
q = {k: v[0] for k, v in parse_qs(urlparse(cb).query).items()}
check(q.get("error") == "invalid_request" and "PKCE" in q.get("error_description", ""), q)
ok("public client without PKCE refused")
