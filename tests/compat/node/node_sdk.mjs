// Node's @sentry/node against faultline: the events every compat client sends (see check.py).
//
// Usage: node node_sdk.mjs DSN RESULT_JSON   (after `npm ci` in this folder)
//
// The Node SDK authenticates with `?sentry_key=...&sentry_version=7` on the URL (no auth header),
// streams the body with chunked transfer encoding, sends no Content-Type, omits envelope `length`s
// and the final newline, and gzips only bodies over 32 KiB. The second exception carries a large
// `extra` so that one request of this client takes that gzip path.
//
// Exits 1 when any envelope got a non-2xx answer, no answer, or the SDK could not flush.

import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as Sentry from '@sentry/node';

const [dsn, resultPath] = process.argv.slice(2);
const failures = [];

// The SDK's own transport, with every answer looked at: the SDK never throws on a failed send.
function checkedTransport(options) {
  const inner = Sentry.makeNodeTransport(options);
  return {
    async send(envelope) {
      try {
        const res = await inner.send(envelope);
        if (res.statusCode === undefined) {
          failures.push('envelope not sent (dropped before the request, e.g. rate limit)');
        } else if (res.statusCode < 200 || res.statusCode > 299) {
          failures.push(`status ${res.statusCode}`);
        }
        return res;
      } catch (e) {
        failures.push(`send failed: ${e}`);
        throw e;
      }
    },
    flush: (timeout) => inner.flush(timeout),
  };
}

Sentry.init({
  dsn,
  transport: checkedTransport,
  environment: 'compat',
  release: 'faultline-compat@1.0.0',
  serverName: 'compat-host', // not the machine's name, which would end up in fixtures
  tracesSampleRate: 0,
});

function loadOrder(orderId) {
  throw new Error(`order ${orderId} could not be loaded`);
}

function allocateRows(count) {
  return new Array(count);
}

const repeated = [];
for (let i = 0; i < 2; i++) {
  try {
    loadOrder(Math.random().toString(16).slice(2, 14));
  } catch (e) {
    repeated.push(Sentry.captureException(e));
  }
}
// Enough varied text to push this envelope past the SDK's 32 KiB gzip threshold (900 rows: the
// SDK's normalisation keeps at most 1000 entries of an array).
const rows = Array.from(
  { length: 900 },
  (_, i) => `row ${i}: checksum ${(i * 2654435761) % 4294967296}, shard ${i % 16}, status ok, warnings 0`,
);
let other;
try {
  allocateRows(-1);
} catch (e) {
  other = Sentry.captureException(e, { extra: { rows } });
}
const messageText = 'compat node: nightly report finished with 3 warnings';
const message = Sentry.captureMessage(messageText, 'warning');

const flushed = await Sentry.close(10000);
if (!flushed) failures.push('Sentry.close timed out before every event was sent');
if ([...repeated, other, message].some((id) => !id)) failures.push('capture returned no event id');

const require = createRequire(import.meta.url);
const result = {
  sdk: '@sentry/node',
  version: require('@sentry/node/package.json').version,
  repeated,
  other,
  message,
  message_text: messageText,
  failures,
};
writeFileSync(resultPath, JSON.stringify(result, null, 2));
console.log(JSON.stringify(result));
process.exit(failures.length ? 1 : 0);
