#!/usr/bin/env python3
"""The soak driver bench/soak.sh runs: WORKERS threads, each a user of its own, for DURATION
seconds through the load balancer in front of the nodes, mixing what users do:

  * requests to the app (most of the traffic),
  * a step-up with the user's TOTP on the admin route (`max_age: every_time`), at most once
    every STEP_UP_EVERY seconds (default 65: a step-up lets the route through for
    `assurance.every_time_window`, 60 s by default, and a TOTP code is good once),
  * sign-out and a fresh sign-in (password) every SIGN_OUT_EVERY iterations,
  * and, beside the users, a UEM sending a CAEP device-compliance-change SET (signed ES256
    with SOAK_CAEP_KEY) every CAEP_EVERY seconds (default 2: the receiver takes 60 a minute
    from one address), flipping a managed laptop between compliant and not-compliant; each must be
    answered 202.

Every answer is checked against what the design says it must be: a request with a live
session is 200, the admin route without a fresh step-up is 303 to the step-up page, a
signed-out session is 303 to the sign-in page. Anything else is counted as an error, by
kind; the summary is one JSON line on stdout. Between phases it asks soak.sh to sample the
nodes' memory by printing "SAMPLE <label>" and waiting for a line on stdin.
"""
import json
import os
import re
import sys
import threading
import time
from collections import Counter

import pyotp
import requests

BASE = os.environ["SOAK_BASE"]            # http://app.test:PORT (resolved by /etc/hosts-free Host header)
FRONT = os.environ["SOAK_FRONT"]          # http://127.0.0.1:PORT
DURATION = float(os.environ.get("DURATION", "600"))
USERS = json.loads(os.environ["SOAK_USERS"])  # [{"username", "password", "totp"}]
SIGN_OUT_EVERY = int(os.environ.get("SIGN_OUT_EVERY", "200"))
STEP_UP_EVERY = float(os.environ.get("STEP_UP_EVERY", "65"))
CAEP_EVERY = float(os.environ.get("CAEP_EVERY", "2"))
CAEP_KEY = os.environ.get("SOAK_CAEP_KEY")
HOST = BASE.split("://", 1)[1]

counts = Counter()
errors = Counter()
lock = threading.Lock()


def field(html, name):
    m = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), html)
    if not m:
        raise ValueError("no field %s" % name)
    return m.group(1).replace("&#x2f;", "/").replace("&amp;", "&")


class User:
    def __init__(self, spec):
        self.spec = spec
        self.s = requests.Session()
        self.s.headers["Host"] = HOST
        self.last_step_up = 0.0  # in this session
        self.last_period = None  # the user's last TOTP period used, across sessions

    def url(self, path):
        return FRONT + path

    def get(self, path, follow=False):
        return self.s.get(self.url(path), allow_redirects=False, timeout=30)

    def follow(self, r):
        while r.status_code in (302, 303):
            loc = r.headers["location"]
            if loc.startswith(BASE):
                loc = loc[len(BASE):]
            r = self.s.get(self.url(loc), allow_redirects=False, timeout=30)
        return r

    def sign_in(self):
        self.s.cookies.clear()
        self.last_step_up = 0.0
        page = self.follow(self.get("/"))
        if "/login" not in page.url:
            raise ValueError("not sent to sign in: %s %s %r" % (page.status_code, page.url, page.text[:200]))
        r = self.s.post(self.url("/_stepgate/login"), data={
            "csrf": field(page.text, "csrf"), "t": field(page.text, "t"),
            "username": self.spec["username"], "password": self.spec["password"],
        }, allow_redirects=False, timeout=30)
        r = self.follow(r)
        if r.status_code != 200 or r.text != "upstream":
            raise ValueError("sign-in ended at %s %s" % (r.status_code, r.url))

    def step_up(self):
        period = int(time.time() // 30)
        if time.time() - self.last_step_up < STEP_UP_EVERY or period == self.last_period:
            return False
        r = self.get("/admin")
        if r.status_code != 303 or "/step-up" not in r.headers.get("location", ""):
            raise ValueError("admin without step-up answered %s" % r.status_code)
        page = self.follow(r)
        now = time.time()
        period = int(now // 30)
        code = pyotp.TOTP(self.spec["totp"]).at(now)
        self.last_period = period
        r = self.s.post(self.url("/_stepgate/step-up/totp"), data={
            "csrf": field(page.text, "csrf"), "t": field(page.text, "t"), "code": code,
        }, allow_redirects=False, timeout=30)
        r = self.follow(r)
        if r.status_code != 200:
            msg = re.search(r'role="alert"[^>]*>([^<]*)', r.text)
            raise ValueError("step-up ended at %s: %s" % (r.status_code, msg.group(1).strip() if msg else r.text[:120]))
        self.last_step_up = time.time()
        return True

    def sign_out(self):
        page = self.follow(self.get("/_stepgate/account"))
        r = self.s.post(self.url("/_stepgate/logout"), data={"csrf": field(page.text, "csrf")},
                        allow_redirects=False, timeout=30)
        if r.status_code >= 400:
            raise ValueError("sign-out answered %s" % r.status_code)
        r = self.get("/")
        if r.status_code != 303 or "/login" not in r.headers.get("location", ""):
            raise ValueError("after sign-out the app answered %s" % r.status_code)


def run(u, until):
    n = 0
    try:
        u.sign_in()
        with lock:
            counts["sign_in"] += 1
    except Exception as e:  # noqa: BLE001 - every failure is counted, by kind
        with lock:
            errors["sign_in: %s" % str(e)[:80]] += 1
    while time.time() < until:
        n += 1
        try:
            r = u.get("/")
            kind = "request"
            if r.status_code != 200:
                raise ValueError("request answered %s" % r.status_code)
            if n % 10 == 0 and u.step_up():
                kind = "step_up"
            if n % SIGN_OUT_EVERY == 0:
                u.sign_out()
                u.sign_in()
                kind = "sign_out_and_in"
            with lock:
                counts[kind] += 1
        except Exception as e:  # noqa: BLE001
            with lock:
                errors[str(e)[:80]] += 1
            try:
                u.sign_in()
            except Exception:  # noqa: BLE001
                time.sleep(0.5)


caep_sent = [0]


def caep(until):
    """The UEM: a device-compliance-change SET every CAEP_EVERY seconds, each answered 202."""
    import jwt  # PyJWT, with cryptography

    key = open(CAEP_KEY, "rb").read()
    while time.time() < until:
        caep_sent[0] += 1
        n = caep_sent[0]
        now = int(time.time())
        status = "not-compliant" if n % 2 else "compliant"
        claims = {
            "iss": "https://uem.soak/", "aud": BASE + "/", "jti": "soak-%d-%d" % (os.getpid(), n),
            "iat": now,
            "sub_id": {"format": "complex", "device": {"format": "opaque", "id": "soak-laptop"}},
            "events": {
                "https://schemas.openid.net/secevent/caep/event-type/device-compliance-change": {
                    "current_status": status,
                    "previous_status": "compliant" if status == "not-compliant" else "not-compliant",
                    "initiating_entity": "policy",
                    "event_timestamp": now,
                }
            },
        }
        token = jwt.encode(claims, key, algorithm="ES256", headers={"typ": "secevent+jwt"})
        try:
            r = requests.post(FRONT + "/_stepgate/caep/events", data=token, timeout=30,
                              headers={"Host": HOST, "content-type": "application/secevent+jwt"})
            with lock:
                if r.status_code == 202:
                    counts["caep_event"] += 1
                else:
                    errors["caep: %s %s" % (r.status_code, r.text[:200])] += 1
        except Exception as e:  # noqa: BLE001
            with lock:
                errors["caep: %s" % str(e)[:80]] += 1
        time.sleep(CAEP_EVERY)


def phase(label, seconds):
    until = time.time() + seconds
    threads = [threading.Thread(target=run, args=(u, until)) for u in users]
    if CAEP_KEY:
        threads.append(threading.Thread(target=caep, args=(until,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("SAMPLE %s" % label, flush=True)
    sys.stdin.readline()


# One User per person for the whole run: the TOTP period a person last used must outlive a
# phase, or the first step-up of the second phase can present the code of the first phase's
# last step-up again — which the server rightly refuses as a replay.
users = [User(spec) for spec in USERS]
print("SAMPLE start", flush=True)
sys.stdin.readline()
start = time.time()
phase("middle", DURATION / 2)
phase("end", DURATION / 2)
print(json.dumps({"seconds": round(time.time() - start), "counts": counts, "errors": errors}), flush=True)
