"""Shapes of requests and answers, for the OpenAPI schema at /api/schema/.

The views validate input themselves (kv.consistency) so that every refusal carries the API's
error codes; these serializers describe the contract.
"""

from rest_framework import serializers


class ItemSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="1 to 512 bytes of UTF-8, no control characters")
    value = serializers.JSONField(help_text="any JSON value")
    version = serializers.CharField(
        help_text="opaque, totally ordered across failovers; compare as integers; also the ETag")


class PutSerializer(serializers.Serializer):
    value = serializers.JSONField()


class CreateSerializer(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.JSONField()


class PageSerializer(serializers.Serializer):
    items = ItemSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="opaque cursor, null on the last page")


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()


class QuorumErrorSerializer(ErrorSerializer):
    needed = serializers.IntegerField()
    got = serializers.IntegerField()
    nodes = serializers.DictField(child=serializers.CharField())
    committed_locally = serializers.BooleanField(required=False, allow_null=True)


class ClusterSerializer(serializers.Serializer):
    primary = serializers.CharField(allow_null=True)
    timeline = serializers.IntegerField(allow_null=True)
    n = serializers.IntegerField()
    k = serializers.IntegerField()
    w = serializers.IntegerField()
    r = serializers.IntegerField()
    nodes = serializers.DictField()
