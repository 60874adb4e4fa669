#!/usr/bin/env python3
"""A transparent recording proxy between the SDKs and faultline.

The compatibility suite points every SDK at this proxy instead of at the server, so that it can
check what went over the wire (endpoint, auth style, Content-Encoding, framing) and not only what
ended up in the database. Each request is forwarded unchanged: same method, path, query, headers
and body bytes; a chunked request is forwarded chunked (Node's SDK streams its body), a request
with Content-Length keeps it. Only the hop-by-hop headers are rewritten, as any proxy does.

One JSON object per request is appended to the log: the request as received (headers in order,
body base64) and the server's answer. Standard library only.

Usage: recorder.py --upstream 127.0.0.1:PORT --log FILE --port-file FILE
"""

import argparse
import base64
import http.client
import http.server
import json
import os
import sys
import threading
import time

# Headers that describe one connection, not the request (RFC 9110 7.6.1); a proxy must not
# forward them. Host is kept: the server sees the same Host line the SDK wrote.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def read_chunked(rfile):
    body = bytearray()
    while True:
        line = rfile.readline(65537)
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailer section, ends with an empty line.
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        body += rfile.read(size)
        rfile.readline(65537)  # CRLF after the chunk


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect
    upstream = None
    log_file = None
    lock = threading.Lock()

    def log_message(self, fmt, *args):  # quiet: the JSON log is the record
        pass

    def handle_one(self):
        headers = list(self.headers.items())
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            body = read_chunked(self.rfile)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                if body:
                    conn.send(b"%x\r\n%s\r\n" % (len(body), body))
                conn.send(b"0\r\n\r\n")
            else:
                conn.endheaders(body if body else None)
            resp = conn.getresponse()
            resp_body = resp.read()
            status, reason = resp.status, resp.reason
            resp_headers = [
                (k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP
            ]
        except Exception as e:  # the server is gone or broke the connection
            status, reason = 502, "Bad Gateway"
            resp_body = json.dumps({"recorder_error": repr(e)}).encode()
            resp_headers = [("Content-Type", "application/json")]
        finally:
            conn.close()

        record = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "chunked": chunked,
            "body_b64": base64.b64encode(body).decode(),
            "status": status,
            "response_headers": resp_headers,
            "response_body": resp_body.decode("utf-8", "replace"),
        }
        with self.lock:
            with open(self.log_file, "a") as f:
                f.write(json.dumps(record) + "\n")

        self.send_response(status, reason)
        for k, v in resp_headers:
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp_body)))
        self.end_headers()
        self.wfile.write(resp_body)

    do_GET = do_POST = do_PUT = do_OPTIONS = do_DELETE = handle_one


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True, help="host:port of the faultline server")
    p.add_argument("--log", required=True)
    p.add_argument("--port-file", required=True)
    a = p.parse_args()
    Handler.upstream = a.upstream
    Handler.log_file = a.log
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Renamed into place so that the driver never reads a half-written port.
    os.replace(a.port_file + ".tmp", a.port_file)
    print(f"recorder listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
