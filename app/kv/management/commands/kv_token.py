"""Create, revoke, list and sync API tokens, idempotently.

    manage.py kv_token create --name NAME --token TOKEN --scopes read,write
    manage.py kv_token create --name NAME --token-stdin --scopes read   (token on stdin)
    manage.py kv_token revoke --name NAME
    manage.py kv_token sync  < tokens.json   ([{"name", "token", "scopes"}], revokes the rest)
    manage.py kv_token list

create/revoke/sync print exactly one line: ``changed`` or ``unchanged`` (for Ansible's
changed_when); list prints one JSON object per token (never the token or its digest).
"""

from __future__ import annotations

import json
import re
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from kv.auth import SCOPES, token_digest
from kv.models import ApiToken
from kv.nodes import CLUSTER

TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")
NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")


def _scopes(text: str) -> str:
    scopes = sorted({s.strip() for s in text.split(",") if s.strip()})
    if not scopes or any(s not in SCOPES for s in scopes):
        raise CommandError(f"--scopes must be a comma-separated subset of {', '.join(SCOPES)}")
    return ",".join(scopes)


def _check(name: str, token: str) -> None:
    if not NAME_RE.match(name):
        raise CommandError("--name: 1 to 100 of A-Z a-z 0-9 . _ @ -")
    if not TOKEN_RE.match(token):
        raise CommandError("the token must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -")


def upsert(name: str, token: str, scopes: str) -> bool:
    digest = token_digest(token)
    with transaction.atomic(using=CLUSTER_PRIMARY()):
        row = ApiToken.objects.select_for_update().filter(name=name).first()
        if row is not None and row.token_sha256 == digest and row.scopes == scopes:
            return False
        ApiToken.objects.filter(token_sha256=digest).exclude(name=name).delete()
        if row is None:
            ApiToken.objects.create(name=name, token_sha256=digest, scopes=scopes)
        else:
            row.token_sha256, row.scopes = digest, scopes
            row.save()
        return True


def CLUSTER_PRIMARY() -> str:
    primary = CLUSTER.state(max_age=0).primary
    if primary is None:
        raise CommandError("no PostgreSQL primary is reachable")
    return primary


class Command(BaseCommand):
    help = "Create, revoke, list or sync API tokens (idempotent; prints changed/unchanged)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("--name", required=True)
        group = create.add_mutually_exclusive_group(required=True)
        group.add_argument("--token")
        group.add_argument("--token-stdin", action="store_true",
                           help="read the token from standard input (keeps it out of ps)")
        create.add_argument("--scopes", required=True)
        revoke = sub.add_parser("revoke")
        revoke.add_argument("--name", required=True)
        sub.add_parser("list")
        sync = sub.add_parser("sync", help="JSON list on stdin; revokes tokens not listed")
        sync.add_argument("--keep-others", action="store_true")

    def handle(self, *args, **opts):
        action = opts["action"]
        if action == "create":
            token = sys.stdin.readline().strip() if opts["token_stdin"] else opts["token"]
            _check(opts["name"], token)
            changed = upsert(opts["name"], token, _scopes(opts["scopes"]))
            self.stdout.write("changed" if changed else "unchanged")
        elif action == "revoke":
            with transaction.atomic(using=CLUSTER_PRIMARY()):
                deleted, _ = ApiToken.objects.filter(name=opts["name"]).delete()
            self.stdout.write("changed" if deleted else "unchanged")
        elif action == "list":
            for row in ApiToken.objects.order_by("name"):
                self.stdout.write(json.dumps({"name": row.name, "scopes": row.scopes.split(","),
                                              "created_at": row.created_at.isoformat(),
                                              "updated_at": row.updated_at.isoformat()}))
        else:
            try:
                wanted = json.load(sys.stdin)
                entries = [(str(t["name"]), str(t["token"]), _scopes(
                    ",".join(t["scopes"]) if isinstance(t["scopes"], list) else str(t["scopes"])))
                    for t in wanted]
            except (ValueError, KeyError, TypeError) as exc:
                raise CommandError(f"stdin must be a JSON list of {{name, token, scopes}}: "
                                   f"{exc}") from None
            changed = False
            for name, token, scopes in entries:
                _check(name, token)
                changed |= upsert(name, token, scopes)
            if not opts["keep_others"]:
                names = [e[0] for e in entries]
                with transaction.atomic(using=CLUSTER_PRIMARY()):
                    deleted, _ = ApiToken.objects.exclude(name__in=names).delete()
                changed |= bool(deleted)
            self.stdout.write("changed" if changed else "unchanged")
