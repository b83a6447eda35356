"""The benchmark's baseline inside the app's whole stack (middleware, gunicorn, settings)."""

from django.http import JsonResponse
from kv.reads import fetch_row


def bare_get(request, key):
    """The same primary-key lookup as every read of the API (kv.reads.fetch_row) on the
    primary, with no DRF, auth, consistency logic, node selection or metrics of its own."""
    row = fetch_row("default", key)
    if row is None or row[2]:
        return JsonResponse({"error": "not_found", "detail": "no such key"}, status=404)
    return JsonResponse({"key": key, "value": row[0], "version": str(row[1])})
