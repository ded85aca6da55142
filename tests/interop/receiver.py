"""Webhook receiver that verifies Herald's deliveries with third-party libraries.

Paths:
  /standard  verified with the `standardwebhooks` package (Standard Webhooks reference library)
  /standard/N  the same with the N-th --standard-secret (0-based; for rotation tests)
  /stripe    verified with `stripe.WebhookSignature.verify_header` (timestamped scheme)
Answers 204 when the signature verifies and 401 when it does not, so Herald's delivery log
records the verdict. GET /results returns the counts as JSON.

Usage: receiver.py --standard-secret S [--standard-secret S2 ...] --stripe-secret S --stripe-header NAME
Prints the port it listens on as the first line of standard output.
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe
from standardwebhooks.webhooks import Webhook

args = None
lock = threading.Lock()
results = {"standard_ok": 0, "standard_bad": 0, "stripe_ok": 0, "stripe_bad": 0, "errors": []}


def verdict(name, ok, err=None):
    with lock:
        results[f"{name}_{'ok' if ok else 'bad'}"] += 1
        if err is not None and len(results["errors"]) < 20:
            results["errors"].append(f"{name}: {err}")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with lock:
            body = json.dumps(results).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        ok = False
        if self.path == "/standard" or self.path.startswith("/standard/"):
            try:
                index = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/standard/") else 0
                headers = {k.lower(): v for k, v in self.headers.items()}
                Webhook(args.standard_secret[index]).verify(body, headers)
                ok = True
                verdict("standard", True)
            except Exception as e:  # noqa: BLE001 - any failure is a bad signature
                verdict("standard", False, repr(e))
        elif self.path == "/stripe":
            try:
                header = self.headers.get(args.stripe_header)
                stripe.WebhookSignature.verify_header(body.decode(), header, args.stripe_secret, tolerance=300)
                ok = True
                verdict("stripe", True)
            except Exception as e:  # noqa: BLE001
                verdict("stripe", False, repr(e))
        self.send_response(204 if ok else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--standard-secret", required=True, action="append")
    p.add_argument("--stripe-secret", required=True)
    p.add_argument("--stripe-header", required=True)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
