"""Is Elastic's apt repository reachable from here? Used by the elk tests and the Makefile.

    python tests/elk/vendor_repo.py      # exit 0 and "reachable: URL", or exit 1 and the reason

The URL is the role's default (roles/elk/defaults/main.yml), or $ELK_APT_REPO_URL.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DEFAULTS = Path(__file__).resolve().parents[2] / "roles" / "elk" / "defaults" / "main.yml"


def repo_url() -> str:
    if os.environ.get("ELK_APT_REPO_URL"):
        return os.environ["ELK_APT_REPO_URL"]
    defaults = yaml.safe_load(DEFAULTS.read_text())
    major = str(defaults["elk_major_version"])
    return defaults["elk_apt_repo_url"].replace("{{ elk_major_version }}", major)


def probe(url: str | None = None, timeout: float = 10.0) -> tuple[bool, str]:
    """(reachable, explanation). Reachable means the repository's Release file answers 200."""
    url = url or repo_url()
    release = url.rstrip("/") + "/dists/stable/Release"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(release, method="HEAD"), timeout=timeout
        ) as resp:
            if resp.status == 200:
                return True, f"reachable: {url}"
            return False, f"{release} answered HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{release} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{release} is unreachable ({reason})"


def main() -> int:
    ok, why = probe()
    print(why if ok else f"unreachable: {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
