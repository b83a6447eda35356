"""Tables of the KV service.

``kv_item`` keeps a tombstone (``deleted``) for a deleted key instead of removing the row: a quorum
read compares versions across nodes, and a missing row has no version that could beat a stale
copy on a lagging node. ``manage.py kv_purge_tombstones`` removes old tombstones.
"""

from django.db import models


class KVItem(models.Model):
    key = models.TextField(primary_key=True, db_collation="C")
    value = models.JSONField(null=True)
    version = models.BigIntegerField()
    deleted = models.BooleanField(default=False)
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "kv_item"

    def __str__(self) -> str:
        return f"{self.key}@{self.version}"


class ApiToken(models.Model):
    """A bearer token; only its SHA-256 is stored."""

    name = models.CharField(max_length=100, unique=True)
    token_sha256 = models.CharField(max_length=64, unique=True)
    scopes = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "kv_api_token"

    def __str__(self) -> str:
        return self.name

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(s for s in self.scopes.split(",") if s)
