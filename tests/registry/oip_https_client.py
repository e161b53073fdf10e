#!/usr/bin/python3
"""An OIP v2 REST client over HTTPS that is not Polis' own (Python's urllib
and ssl), for tests/registry/tls_test.cc.

  oip_https_client.py --url https://localhost:P/v2/models/M/infer --body FILE [--ca CA.pem]

POSTs FILE (JSON) and prints one JSON object: {"status": N, "body": {...}}.
Certificate verification is Python's default (on, host name checked),
trusting only --ca when given, else the system's CAs. A failed TLS
verification prints {"ssl_error": "..."} and exits 4.
"""
import argparse
import json
import ssl
import sys
import urllib.error
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--body", required=True)
    ap.add_argument("--ca", default="")
    a = ap.parse_args()
    context = ssl.create_default_context(cafile=a.ca or None)
    with open(a.body, "rb") as f:
        body = f.read()
    req = urllib.request.Request(a.url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=context, timeout=30) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLError):
            print(json.dumps({"ssl_error": str(e.reason)}))
            return 4
        raise
    print(json.dumps({"status": status, "body": json.loads(text)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
