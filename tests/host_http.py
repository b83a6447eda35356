"""One HTTP request made from inside a testinfra host, for the tests that must see a service as
another host (or the host itself) sees it: python3 is on every host, curl is not.

``ca`` is the CA file the server's certificate is verified with; None means the system's trust
store (which does not hold the project CA: how an unverified client is made). A password is
given as is, or read on the host from ``password_file`` (so it never leaves the host).
"""

from __future__ import annotations

import base64
import json
import shlex

SCRIPT = """
import base64, json, ssl, sys, urllib.error, urllib.request
a = json.loads(sys.argv[1])
data = a["data"].encode() if a["data"] else None
req = urllib.request.Request(a["url"], method=a["method"], data=data,
                             headers={"Content-Type": "application/json"})
password = open(a["password_file"]).read() if a["password_file"] else a["password"]
if a["user"]:
    token = base64.b64encode(f"{a['user']}:{password}".encode()).decode()
    req.add_header("Authorization", "Basic " + token)
context = ssl.create_default_context(cafile=a["ca"]) if a["url"].startswith("https") else None
try:
    with urllib.request.urlopen(req, timeout=5, context=context) as r:
        out = {"status": r.status, "body": r.read().decode()}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "body": e.read().decode()[:2000]}
except (urllib.error.URLError, OSError) as e:
    out = {"status": None, "error": str(getattr(e, "reason", e))}
print(json.dumps(out))
"""
_ENCODED = base64.b64encode(SCRIPT.encode()).decode()


def request(host, url: str, method: str = "GET", user: str | None = None,
            password: str | None = None, password_file: str | None = None,
            ca: str | None = None, data: str | None = None) -> dict:
    """{"status": int, "body": str} or {"status": None, "error": str} (no HTTP answer)."""
    args = json.dumps({"url": url, "method": method, "user": user, "password": password,
                       "password_file": password_file, "ca": ca, "data": data})
    out = host.check_output(
        f"python3 -c \"import base64; exec(base64.b64decode('{_ENCODED}'))\" {shlex.quote(args)}")
    return json.loads(out)
