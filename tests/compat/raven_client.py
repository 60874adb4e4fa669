#!/usr/bin/env python3
"""The legacy `raven` client (6.10, the last release) against faultline's `/store/` endpoint.

Usage: raven_client.py DSN RESULT_JSON [--base64]

Sends the same events as the other compat clients (see check.py). The DSN is given a `sync+`
scheme so that raven's synchronous HTTPTransport sends each event before capture returns, and
raven's send hooks are recorded so that any refused or failed send makes this script exit 1
(raven itself only logs them).

raven 6.x posts raw zlib with `Content-Encoding: deflate` and `sentry_version=6`. The releases
before 5.8 posted base64 of the zlib data with no Content-Encoding instead, which servers must
still recognise (the body does not start with `{`); those releases no longer import on Python 3.7
and later (they use `async` as an identifier). `--base64` makes raven 6.10 put exactly those older
bytes and headers on the wire: same JSON, base64(zlib(json)), no Content-Encoding.
"""

import base64
import json
import sys
import uuid
import zlib

import raven
from raven.utils import json as raven_json

FAILURES = []


class CheckedClient(raven.Client):
    def __init__(self, *args, legacy_base64=False, **kwargs):
        self.legacy_base64 = legacy_base64
        super().__init__(*args, **kwargs)

    def _failed_send(self, exc, url, data):
        FAILURES.append(f"send to {url} failed: {exc!r}")
        super()._failed_send(exc, url, data)

    def encode(self, data):
        if self.legacy_base64:
            # raven <= 5.7's Client.encode, verbatim.
            return base64.b64encode(zlib.compress(raven_json.dumps(data).encode("utf8")))
        return super().encode(data)

    def decode(self, data):
        if self.legacy_base64:
            return json.loads(zlib.decompress(base64.b64decode(data)).decode("utf8"))
        return super().decode(data)

    def send_remote(self, url, data, headers=None):
        if self.legacy_base64 and headers is not None:
            # raven <= 5.7 sent no Content-Encoding: the base64 text is the body.
            headers.pop("Content-Encoding", None)
        return super().send_remote(url, data, headers)


def load_order(order_id):
    raise ValueError(f"order {order_id} could not be loaded")


def compute_ratio(done, total):
    return done / total


def main():
    dsn, result_path = sys.argv[1], sys.argv[2]
    legacy_base64 = "--base64" in sys.argv[3:]
    if not dsn.startswith("sync+"):
        dsn = "sync+" + dsn

    client = CheckedClient(
        dsn,
        legacy_base64=legacy_base64,
        environment="compat",
        release="faultline-compat@1.0.0",
        name="compat-host",  # server_name; not the machine's name, which would end up in fixtures
        # Mark this script's frames in-app, as the grouping of the repeated error relies on them.
        include_paths=["__main__"],
        # No automatic breadcrumbs, hooks or module lists: only what this script captures.
        install_sys_hook=False,
        install_logging_hook=False,
        enable_breadcrumbs=False,
        raise_send_errors=False,
    )
    if type(client.remote.get_transport()).__name__ != "HTTPTransport":
        FAILURES.append(f"unexpected transport {type(client.remote.get_transport())}")

    repeated = []
    for _ in range(2):
        try:
            load_order(uuid.uuid4().hex[:12])
        except ValueError:
            repeated.append(client.captureException())
    try:
        compute_ratio(3, 0)
    except ZeroDivisionError:
        other = client.captureException()
    message_text = "compat raven: nightly report finished with 3 warnings"
    message = client.captureMessage(message_text, level="warning")

    if None in repeated + [other, message]:
        FAILURES.append("capture returned no event id")
    if client.state.did_fail():
        FAILURES.append("raven's client state says the last send failed")

    result = {
        "sdk": "raven",
        "version": raven.VERSION,
        "legacy_base64": legacy_base64,
        "repeated": repeated,
        "other": other,
        "message": message,
        "message_text": message_text,
        "failures": FAILURES,
    }
    with open(result_path, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
