"""Shapes of the answers, for the OpenAPI schema at /api/schema/ (kv.schema declares the rest).

The views validate input themselves (kv.consistency) so that every refusal carries the API's
error codes; these serializers describe the contract.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .consistency import MAX_KEY_BYTES

# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F (kv.consistency.validate_key).
NO_CONTROL = "[^\\u0000-\\u001f\\u007f-\\u009f]"
KEY_SCHEMA = {
    "type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES,
    "pattern": f"^{NO_CONTROL}+$",
    "description": f"1 to {MAX_KEY_BYTES} bytes of UTF-8 (a key of at most "
                   f"{MAX_KEY_BYTES // 4} characters always fits), no control characters "
                   "(Unicode category Cc); anything else is 400 bad_key",
}
PREFIX_SCHEMA = {
    "type": "string", "maxLength": MAX_KEY_BYTES, "pattern": f"^{NO_CONTROL}*$",
    "description": "only keys starting with this; empty or absent: every key. Same rules as a "
                   "key, else 400 bad_key",
}
VERSION_SCHEMA = {
    "type": "string", "pattern": "^[1-9][0-9]{0,18}$",
    "description": "a positive 63-bit integer as a decimal string: opaque, totally ordered "
                   "across failovers, compare as integers; also the ETag",
}
VALUE_SCHEMA = {
    "description": "any JSON value, at most KV_MAX_VALUE_BYTES once encoded (else 413); strings "
                   "may not hold \\u0000 or lone surrogates (400 bad_json)",
}
SESSION_TOKEN_SCHEMA = {
    "type": "string", "pattern": "^[0-9]{1,10}-[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$",
    "description": "a session token from the X-KV-Token header of an earlier write; else "
                   "400 bad_token",
    "example": "1-0/3000148",
}



def _schema_field(schema: dict):
    @extend_schema_field(schema)
    class Field(serializers.Field):
        pass

    return Field


def _key_field():
    return _schema_field(KEY_SCHEMA)()


def _version_field(**kwargs):
    return _schema_field(VERSION_SCHEMA)(**kwargs)


def _value_field():
    return _schema_field(VALUE_SCHEMA)()


class ItemSerializer(serializers.Serializer):
    key = _key_field()
    value = _value_field()
    version = _version_field()


class PageSerializer(serializers.Serializer):
    items = ItemSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="opaque cursor, null on the last page")


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="a code from app/README.md, Errors")
    detail = serializers.CharField(help_text="a sentence for humans")


class ServiceUnavailableSerializer(ErrorSerializer):
    needed = serializers.IntegerField(required=False, help_text="nodes the operation needed")
    got = serializers.IntegerField(required=False, help_text="nodes that answered in time")
    nodes = serializers.DictField(child=serializers.CharField(), required=False,
                                  help_text="each node asked, and what happened")
    committed_locally = serializers.BooleanField(
        required=False, allow_null=True,
        help_text="a write: true when the primary committed it (the wait for the standbys was "
                  "cancelled), null when unknown")
    version = _version_field(required=False)


class ClusterSerializer(serializers.Serializer):
    primary = serializers.CharField(allow_null=True)
    timeline = serializers.IntegerField(allow_null=True)
    n = serializers.IntegerField()
    k = serializers.IntegerField()
    w = serializers.IntegerField()
    r = serializers.IntegerField()
    sync_standbys_streaming = serializers.IntegerField()
    write_quorum = serializers.BooleanField()
    read_quorum = serializers.BooleanField()
    problems = serializers.ListField(child=serializers.CharField())
    age_seconds = serializers.FloatField()
    nodes = serializers.DictField()
    instance = serializers.CharField()
