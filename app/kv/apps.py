from django.apps import AppConfig


class KvConfig(AppConfig):
    name = "kv"
    verbose_name = "Key-value store"

    def ready(self):
        from . import schema  # noqa: F401 - registers the OpenAPI auth extension
