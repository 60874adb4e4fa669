#!/usr/bin/env python3
"""Python `sentry-sdk` against faultline: the events every compat client sends (see check.py).

Usage: python_sdk.py DSN RESULT_JSON [EXPECTED_COMPRESSION]

Sends one exception raised twice at the same site with different ids in its message (one error,
two events), a second exception type from another site (a second error) and a warning message,
then flushes. The SDK picks `br` when the `brotli` module imports and gzip otherwise; the venv
decides which, and EXPECTED_COMPRESSION makes a wrong venv fail here rather than pass silently.
Exits non-zero when the SDK reports a dropped or lost envelope (any non-2xx answer, a network
error, a full queue).
"""

import json
import sys
import uuid

import sentry_sdk
from sentry_sdk.transport import HttpTransport

try:
    import brotli  # noqa: F401

    HAVE_BROTLI = True
except ImportError:
    HAVE_BROTLI = False

FAILURES = []


class CheckedTransport(HttpTransport):
    """The SDK's own HTTP transport, with its loss hooks recorded: the SDK never raises on a failed
    send, it only calls these."""

    def on_dropped_event(self, reason):
        FAILURES.append(f"dropped: {reason}")
        super().on_dropped_event(reason)

    def record_lost_event(self, reason, data_category=None, item=None, *, quantity=1):
        FAILURES.append(f"lost: {reason} ({data_category or (item and item.data_category)})")
        super().record_lost_event(reason, data_category, item, quantity=quantity)


def load_order(order_id):
    raise ValueError(f"order {order_id} could not be loaded")


def compute_ratio(done, total):
    return done / total


def main():
    dsn, result_path = sys.argv[1], sys.argv[2]
    expected_compression = sys.argv[3] if len(sys.argv) > 3 else None

    sentry_sdk.init(
        dsn=dsn,
        transport=CheckedTransport,
        environment="compat",
        release="faultline-compat@1.0.0",
        server_name="compat-host",  # not the machine's name, which would end up in fixtures
        # Mark this script's frames in-app whatever the working directory: grouping uses in-app
        # frames, which is what keeps the two ValueErrors with different ids together.
        in_app_include=["__main__"],
    )
    # A private attribute: if a later SDK renames it, only this early check is lost; check.py
    # still sees the Content-Encoding on the wire.
    compression = getattr(sentry_sdk.get_client().transport, "_compression_algo", "unknown")

    repeated = []
    for _ in range(2):
        try:
            load_order(uuid.uuid4().hex[:12])
        except ValueError:
            repeated.append(sentry_sdk.capture_exception())
    try:
        compute_ratio(3, 0)
    except ZeroDivisionError:
        other = sentry_sdk.capture_exception()
    message_text = "compat python: nightly report finished with 3 warnings"
    message = sentry_sdk.capture_message(message_text, level="warning")

    sentry_sdk.flush(timeout=10)
    sentry_sdk.get_client().close(timeout=10)

    if expected_compression and compression not in (expected_compression, "unknown"):
        FAILURES.append(
            f"transport compression is {compression!r}, expected {expected_compression!r}"
            f" (brotli importable: {HAVE_BROTLI})"
        )
    if None in repeated + [other, message]:
        FAILURES.append("capture returned no event id")

    result = {
        "sdk": "sentry-sdk",
        "version": sentry_sdk.VERSION,
        "brotli_importable": HAVE_BROTLI,
        "compression": compression,
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
