"""Database router for the ORM, driven by the node states the service discovers itself
(kv.nodes) instead of fixed aliases; the choices are kv.selection's:

- writes go to the current primary (newest timeline);
- ORM reads of KV items go to a healthy standby whose lag is within KV_MAX_LAG, else to the
  primary; other ORM reads (the management commands' tokens) go to the primary, else to any
  healthy node; ``.using(node)`` pins one node;
- requests do not read through the ORM: every read of theirs runs on the read engine (kv.reads);
- migrations run on ``default`` only (libpq's multi-host ``target_session_attrs=read-write``).
"""

from __future__ import annotations

from . import selection


class NodeRouter:
    def db_for_read(self, model, **hints):
        if model._meta.model_name == "kvitem":
            return selection.kv_read_node()
        return selection.other_read_node()

    def db_for_write(self, model, **hints):
        return selection.write_node()

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"
