#!/usr/bin/env python3
"""Checks what each compat client sent (the recorder's log) and what faultline stored (SQLite).

Usage: check.py --db FAULTLINE_DB --log RECORDER_LOG --manifest MANIFEST [--fixtures DIR]

The manifest has one line per client run: `NAME PROJECT_ID EXIT_CODE RESULT_JSON`. Every client
sends the same story: one exception raised twice at one site with different ids in its message,
one exception of another type from another site, and one warning message. So each project must
hold exactly those four event ids; the two repeated ones in one error with event_count 2, the
other exception in a second error, the message as a message event (is_message=1).

Prints one `ok`/`FAIL` line per check (`KNOWN` for a listed server bug, see KNOWN_FAILURES) and,
last, `compat: N passed, M failed`; exits 1 on any failure. Needs `brotli` importable to decode
`br` bodies (run.sh uses the brotli venv's python). With --fixtures, writes one request per client
and kind (see write_fixtures) with its encoding undone, and its request line and headers in a
sibling `.headers` file.
"""

import argparse
import base64
import gzip
import json
import os
import re
import sqlite3
import sys
import zlib

try:
    import brotli
except ImportError:  # only needed to decode br bodies
    brotli = None

# What each client must have put on the wire.
#   endpoint: last path segment; auth: where the public key is; encodings: every request's
#   Content-Encoding (None for none) must be one of these, and those in must_use seen at least once.
EXPECT = {
    "python-br": {
        "endpoint": "envelope",
        "auth": "header",
        "encodings": {"br"},
        "must_use": {"br"},
        "names": ("ValueError", "ZeroDivisionError"),
    },
    "python-gzip": {
        "endpoint": "envelope",
        "auth": "header",
        "encodings": {"gzip"},
        "must_use": {"gzip"},
        "names": ("ValueError", "ZeroDivisionError"),
    },
    "raven": {
        "endpoint": "store",
        "auth": "header",
        "encodings": {"deflate"},
        "must_use": {"deflate"},
        "names": ("ValueError", "ZeroDivisionError"),
    },
    "raven-base64": {
        "endpoint": "store",
        "auth": "header",
        "encodings": {None},
        "must_use": set(),
        "base64_body": True,
        "names": ("ValueError", "ZeroDivisionError"),
    },
    "node": {
        "endpoint": "envelope",
        "auth": "query",
        "encodings": {None, "gzip"},
        "must_use": {None, "gzip"},
        "names": ("Error", "RangeError"),
    },
}

# Checks that fail because of a known server bug, by exact check name, with the reason. They are
# printed as KNOWN and counted apart; one that starts passing is a failure, so that whoever fixed
# the server also removes it from here (and the suite goes back to being strict).
KNOWN_FAILURES = {}

# The SDKs derive `{prefix}/api/{id}/envelope/` (or `store/`) from the DSN
# `.../errortracking/api/v1/projects/{id}`; the query holds the key for the Node SDK.
ROUTE = re.compile(r"^/errortracking/api/v1/projects/api/(\d+)/(envelope|store)/?(\?.*)?$")


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.known = 0

    def check(self, name, ok, detail=""):
        known = KNOWN_FAILURES.get(name)
        if ok and known:
            self.failed += 1
            print(f"FAIL - {name}: passes now; remove it from KNOWN_FAILURES in check.py")
        elif ok:
            self.passed += 1
            print(f"ok   - {name}")
        elif known:
            self.known += 1
            print(f"KNOWN - {name}: {detail}\n        known server bug: {known}")
        else:
            self.failed += 1
            print(f"FAIL - {name}: {detail}")
        return ok


def header(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def decode_body(req):
    """The body as the server must read it: transport encoding undone, store base64 kept."""
    raw = base64.b64decode(req["body_b64"])
    enc = (header(req["headers"], "Content-Encoding") or "").strip().lower()
    if enc in ("", "identity", "utf-8"):
        return raw
    if enc == "gzip":
        return gzip.decompress(raw)
    if enc == "deflate":
        try:
            return zlib.decompress(raw)
        except zlib.error:
            return zlib.decompress(raw, -15)
    if enc == "br":
        if brotli is None:
            raise RuntimeError("brotli not importable: cannot decode a br body")
        return brotli.decompress(raw)
    raise RuntimeError(f"unknown Content-Encoding {enc!r}")


def events_in(req, body):
    """The event JSON objects a request carries."""
    if req["path"].split("?")[0].rstrip("/").endswith("/store"):
        if not body.lstrip().startswith(b"{"):
            body = zlib.decompress(base64.b64decode(body))
        return [json.loads(body)]
    return [json.loads(payload) for item, payload in envelope_items(body) if item.get("type") == "event"]


def envelope_items(body):
    """(item header, payload) pairs of an envelope, by the framing rules of docs/protocol.md ("Envelope framing")."""
    pos = body.find(b"\n")
    if pos < 0:
        return []
    pos += 1
    items = []
    while pos < len(body):
        end = body.find(b"\n", pos)
        end = len(body) if end < 0 else end
        line, pos = body[pos:end], end + 1
        if not line.strip():
            continue
        item = json.loads(line)
        if "length" in item:
            payload = body[pos : pos + item["length"]]
            pos += item["length"] + 1
        else:
            end = body.find(b"\n", pos)
            end = len(body) if end < 0 else end
            payload, pos = body[pos:end], end + 1
        items.append((item, payload))
    return items


def check_wire(res, name, pid, exp, reqs, result):
    prefix = f"{name}: wire"
    res.check(
        f"{prefix}: requests reached the server",
        bool(reqs),
        f"no request for project {pid} in the recorder log",
    )
    if not reqs:
        return
    bad_route = [r["path"] for r in reqs if ROUTE.match(r["path"]).group(2) != exp["endpoint"]]
    res.check(
        f"{prefix}: posted to /{exp['endpoint']}/ under the DSN's prefix",
        not bad_route and all(r["method"] == "POST" for r in reqs),
        f"other routes or methods: {bad_route or [r['method'] for r in reqs]}",
    )

    auth_problems = []
    for r in reqs:
        h = header(r["headers"], "X-Sentry-Auth")
        q = (ROUTE.match(r["path"]).group(3) or "")
        if exp["auth"] == "header" and not (h and "sentry_key=" in h and "sentry_key=" not in q):
            auth_problems.append(f"X-Sentry-Auth={h!r} query={q!r}")
        if exp["auth"] == "query" and not ("sentry_key=" in q and h is None):
            auth_problems.append(f"X-Sentry-Auth={h!r} query={q!r}")
    res.check(
        f"{prefix}: key sent in the {exp['auth']}",
        not auth_problems,
        "; ".join(auth_problems[:3]),
    )

    seen = {(header(r["headers"], "Content-Encoding") or None) for r in reqs}
    seen = {e.lower() if e else None for e in seen}
    ok = seen <= exp["encodings"] and exp["must_use"] <= seen
    detail = (
        f"Content-Encoding seen {sorted(e or 'none' for e in seen)},"
        f" expected {sorted(e or 'none' for e in exp['encodings'])}"
    )
    if name.startswith("python-"):
        want_br = name == "python-br"
        ok = ok and result.get("brotli_importable") == want_br
        detail += f"; brotli importable in the venv: {result.get('brotli_importable')}"
    if exp.get("base64_body"):
        bodies = [base64.b64decode(r["body_b64"]) for r in reqs]
        ok = ok and all(not b.lstrip().startswith(b"{") for b in bodies)
        detail += "; bodies must be base64 text"
    label = "/".join(sorted(e or "none" for e in exp["must_use"] or exp["encodings"]))
    res.check(f"{prefix}: Content-Encoding {label}", ok, detail)

    answers = []
    for r in reqs:
        try:
            body = json.loads(r["response_body"])
        except ValueError:
            body = None
        good = r["status"] == 200 and isinstance(body, dict) and (
            body == {} or re.fullmatch(r"[0-9a-f]{32}", str(body.get("id", "")))
        )
        if not good:
            answers.append(f"{r['status']} {r['response_body'][:200]!r}")
    res.check(f"{prefix}: every answer 200 with {{\"id\"}} or {{}}", not answers, "; ".join(answers[:3]))


def check_store(res, name, pid, exp, result, db):
    prefix = f"{name}: stored"
    ids = {
        "repeated": [i.replace("-", "").lower() for i in result["repeated"] if i],
        "other": (result.get("other") or "").replace("-", "").lower(),
        "message": (result.get("message") or "").replace("-", "").lower(),
    }
    want = set(ids["repeated"]) | {ids["other"], ids["message"]}
    rows = db.execute(
        "SELECT event_id, error_id, is_message, level, environment, release, message, name"
        " FROM events WHERE project_id = ?",
        (pid,),
    ).fetchall()
    ev = {r[0]: r for r in rows}
    res.check(
        f"{prefix}: exactly the 4 events the SDK captured",
        len(rows) == 4 and set(ev) == want,
        f"stored {sorted(ev)} ({len(rows)} rows), captured {sorted(want)}",
    )
    if not all(i in ev for i in want):
        return

    a, b = (ev[i] for i in ids["repeated"])
    o, m = ev[ids["other"]], ev[ids["message"]]
    errors = {
        r[0]: r
        for r in db.execute(
            "SELECT id, name, event_count, description FROM errors WHERE project_id = ?", (pid,)
        )
    }
    rep_err = errors.get(a[1])
    res.check(
        f"{prefix}: the repeated {exp['names'][0]} is one error with event_count 2",
        a[1] == b[1] and rep_err is not None and rep_err[2] == 2 and rep_err[1] == exp["names"][0],
        f"error ids {a[1]}, {b[1]}; error row {rep_err}",
    )
    oth_err = errors.get(o[1])
    res.check(
        f"{prefix}: the {exp['names'][1]} is a separate error with event_count 1",
        o[1] not in (a[1], m[1]) and oth_err is not None and oth_err[2] == 1
        and oth_err[1] == exp["names"][1],
        f"error id {o[1]} (repeated {a[1]}, message {m[1]}); error row {oth_err}",
    )
    res.check(
        f"{prefix}: exception events are not message events",
        a[2] == 0 and b[2] == 0 and o[2] == 0,
        f"is_message {a[2]}, {b[2]}, {o[2]}",
    )
    res.check(
        f"{prefix}: the message is a message event (is_message=1, level warning, its text)",
        m[2] == 1 and m[3] == "warning" and m[6] == result["message_text"],
        f"is_message={m[2]} level={m[3]!r} message={m[6]!r}",
    )
    counts = {
        r[0]: r[1]
        for r in db.execute(
            "SELECT error_id, COUNT(*) FROM events WHERE project_id = ? GROUP BY error_id", (pid,)
        )
    }
    res.check(
        f"{prefix}: 3 errors, each event_count equal to its stored events",
        len(errors) == 3 and all(counts.get(i, 0) == e[2] for i, e in errors.items()),
        f"errors {list(errors.values())}, events per error {counts}",
    )
    res.check(
        f"{prefix}: environment and release kept",
        all(r[4] == "compat" and r[5] == "faultline-compat@1.0.0" for r in rows),
        f"{[(r[4], r[5]) for r in rows]}",
    )


def write_fixtures(directory, name, reqs, result):
    """One request per client and kind, as the server must read it: `exception` and `message` by
    the event ids the client captured (`exception-gzip` too for Node, which compresses only large
    bodies), other envelopes (session, client_report) by item type."""
    os.makedirs(directory, exist_ok=True)
    message_id = (result.get("message") or "").replace("-", "").lower()
    wanted = {}
    for r in reqs:
        body = decode_body(r)
        events = events_in(r, body)
        if events:
            for event in events:
                eid = str(event.get("event_id", "")).replace("-", "").lower()
                kind = "message" if eid == message_id else "exception"
                if len(EXPECT[name]["encodings"]) > 1 and header(r["headers"], "Content-Encoding"):
                    # A client that compresses only some bodies (Node: over 32 KiB): keep both.
                    kind += "-" + header(r["headers"], "Content-Encoding").lower()
                wanted.setdefault(kind, (r, body))
        else:
            items = envelope_items(body)
            if items:
                wanted.setdefault(items[0][0].get("type", "unknown"), (r, body))
    ext = "store" if reqs and "/store" in reqs[0]["path"] else "envelope"
    for kind, (r, body) in sorted(wanted.items()):
        base = os.path.join(directory, f"{name}-{kind}.{ext}")
        with open(base, "wb") as f:
            f.write(body)
        sent = len(base64.b64decode(r["body_b64"]))
        encoding = header(r["headers"], "Content-Encoding")
        with open(base[: -len(ext)] + "headers", "w") as f:
            f.write(f"{r['method']} {r['path']} HTTP/1.1\n")
            for k, v in r["headers"]:
                f.write(f"{k}: {v}\n")
            f.write(
                f"# Recorded by tests/compat/recorder.py from {result.get('sdk')} {result.get('version')}"
                f" (tests/compat/run.sh, COMPAT_UPDATE_FIXTURES=1). The body as sent was {sent} bytes"
                f"{', chunked' if r['chunked'] else ''}; {os.path.basename(base)} holds it"
                f" {'with its Content-Encoding undone' if encoding else 'byte for byte'}"
                f" ({len(body)} bytes). Server answered {r['status']} {r['response_body'][:100]}."
                f" The key belongs to a throwaway test server.\n"
            )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--fixtures")
    a = p.parse_args()

    log = []
    if os.path.exists(a.log):
        with open(a.log) as f:
            log = [json.loads(line) for line in f if line.strip()]
    db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
    res = Results()

    unrouted = [f"{r['method']} {r['path']}" for r in log if not ROUTE.match(r["path"])]
    res.check("wire: every request went to a route derived from a DSN", not unrouted, f"{unrouted[:5]}")

    with open(a.manifest) as f:
        runs = [line.split() for line in f if line.strip()]
    for name, pid, rc, result_path in runs:
        exp = EXPECT[name]
        result = {}
        if os.path.exists(result_path):
            with open(result_path) as f:
                result = json.load(f)
        res.check(
            f"{name}: client sent everything and exited 0",
            rc == "0" and result and not result.get("failures"),
            f"exit {rc}, failures {result.get('failures')}",
        )
        reqs = [
            r for r in log if (m := ROUTE.match(r["path"])) and m.group(1) == pid
        ]
        check_wire(res, name, pid, exp, reqs, result)
        if result:
            check_store(res, name, pid, exp, result, db)
        if a.fixtures and reqs:
            write_fixtures(a.fixtures, name, reqs, result)

    if res.known:
        print(f"compat: {res.known} known failure(s) not counted, listed as KNOWN above")
    print(f"compat: {res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
