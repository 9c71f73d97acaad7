"""Verify stepgate's identity assertion (the X-Stepgate-Assertion header) in a Python app.

Needs PyJWT with its crypto extra: pip install "pyjwt[crypto]>=2.10"

    verifier = AssertionVerifier(issuer="https://auth.example.com", audience="wiki")
    identity = verifier.verify(request.headers["X-Stepgate-Assertion"])
    user = identity["preferred_username"]   # never the Remote-User header

Run as a script, it reads one assertion per line on stdin and prints one JSON line each:
    python3 verify_assertion.py ISSUER AUDIENCE [JWKS_URL] < assertions
"""

import json
import sys

import jwt  # PyJWT

# The only algorithm stepgate signs with. Fixed here, never taken from the token: a token
# saying "none" or "HS256" is refused before any key is used.
ALGORITHMS = ["ES256"]
# Clock skew tolerated on exp and iat, in seconds. Assertions live 60 s by default.
LEEWAY = 5


class AssertionVerifier:
    def __init__(self, issuer, audience, jwks_url=None):
        # issuer: stepgate's server.public_url, exactly as configured (the `iss`).
        # audience: this app's id in stepgate's `apps` (the `aud`).
        # jwks_url: where to fetch the keys; by default the issuer's
        #   /.well-known/jwks.json. Never take it from the token.
        self.issuer = issuer
        self.audience = audience
        # Caches the key set for 5 minutes; a token naming a key id it has not seen makes it
        # fetch again (a key rotation), at most every 30 s.
        self.jwks = jwt.PyJWKClient(
            jwks_url or issuer.rstrip("/") + "/.well-known/jwks.json",
            lifespan=300,
            timeout=5,
        )

    def verify(self, token):
        """The assertion's claims if it is valid for this app; raises jwt.PyJWTError if not."""
        # Picks the key by the token's `kid`; a token without one is refused.
        signing_key = self.jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key=signing_key.key,
            algorithms=ALGORITHMS,
            issuer=self.issuer,
            audience=self.audience,
            leeway=LEEWAY,
            options={
                "require": ["iss", "aud", "sub", "exp", "iat"],
                "strict_aud": True,
            },
        )


def main():
    issuer, audience = sys.argv[1], sys.argv[2]
    verifier = AssertionVerifier(issuer, audience, sys.argv[3] if len(sys.argv) > 3 else None)
    for line in sys.stdin:
        try:
            claims = verifier.verify(line.strip())
            print(json.dumps({"ok": True, "claims": claims}), flush=True)
        except jwt.PyJWTError as e:
            print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
