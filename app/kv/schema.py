"""The OpenAPI description of the API (drf-spectacular), served at /api/schema/.

Every rule the views enforce on input is declared here as JSON Schema (lengths, patterns, ranges,
enums), so that a client generated from the schema sends only requests the service accepts and
the schema's checkers (schemathesis in tests/test_schemathesis.py) can tell a valid request from
an invalid one. The one rule JSON Schema cannot state is the key's size in bytes of UTF-8: the
schema bounds it in characters (512) and says "512 bytes" in the description.

Response headers cannot be declared through drf-spectacular's decorators; ``add_headers`` (a
postprocessing hook, settings.SPECTACULAR_SETTINGS) adds them from ``RESPONSE_HEADERS``.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from .consistency import READ_LEVELS, WRITE_LEVELS
from .serializers import (
    KEY_SCHEMA,
    PREFIX_SCHEMA,
    SESSION_TOKEN_SCHEMA,
    VALUE_SCHEMA,
    ErrorSerializer,
    ServiceUnavailableSerializer,
)


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "kv.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "a token with the read and/or write scope"}


KEY_PARAM = OpenApiParameter("key", KEY_SCHEMA, OpenApiParameter.PATH, required=True)
READ_LEVEL_PARAM = OpenApiParameter(
    "r", {"type": "string", "enum": list(READ_LEVELS), "default": "quorum"}, required=False,
    description="read consistency: quorum (R nodes, highest version wins), primary, or one "
                "(a standby within max_lag, else the primary); anything else, the empty "
                "value included, is 400 bad_consistency")
MAX_LAG_PARAM = OpenApiParameter(
    "max_lag", {"type": "number", "minimum": 0, "maximum": 86400}, required=False,
    description="seconds of replication lag an r=one read accepts (default KV_MAX_LAG); "
                "checked at every level, used by r=one; else 400 bad_max_lag")
TOKEN_PARAM = OpenApiParameter(
    "X-KV-Token", SESSION_TOKEN_SCHEMA, OpenApiParameter.HEADER, required=False,
    description="read your writes: the answer is that write or newer, read at the level r "
                "asks (the token is a lower bound; it never lowers the level)",
    examples=[OpenApiExample("a session token", value=SESSION_TOKEN_SCHEMA["example"])])
WRITE_LEVEL_PARAM = OpenApiParameter(
    "w", {"type": "string", "enum": list(WRITE_LEVELS), "default": "quorum"}, required=False,
    description="write consistency: quorum (the primary and k standbys applied it) or one (the "
                "primary committed it); anything else, the empty value included, is 400 "
                "bad_consistency")
IF_MATCH_PARAM = OpenApiParameter(
    "If-Match", {"type": "string"}, OpenApiParameter.HEADER, required=False,
    description='write only if the current version is one of these entity tags ("<version>", '
                "a comma-separated list, W/ allowed) or, with *, if the key exists; else 412. A "
                "tag that is not a version matches nothing")


def if_none_match_param() -> OpenApiParameter:
    return OpenApiParameter(
        "If-None-Match", {"type": "string", "enum": ["*"]}, OpenApiParameter.HEADER,
        required=False, description="create only: 412 if the key exists; not with If-Match")


READ_PARAMS = [KEY_PARAM, READ_LEVEL_PARAM, MAX_LAG_PARAM, TOKEN_PARAM]
PUT_PARAMS = [KEY_PARAM, WRITE_LEVEL_PARAM, IF_MATCH_PARAM, if_none_match_param()]
DELETE_PARAMS = [KEY_PARAM, WRITE_LEVEL_PARAM, IF_MATCH_PARAM]
CREATE_PARAMS = [WRITE_LEVEL_PARAM]


def list_params() -> list[OpenApiParameter]:
    return [
        OpenApiParameter("prefix", PREFIX_SCHEMA, required=False),
        OpenApiParameter(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": settings.KV["LIST_MAX_LIMIT"],
             "default": settings.KV["LIST_DEFAULT_LIMIT"]},
            required=False, description="page size; else 400 bad_limit"),
        OpenApiParameter(
            "cursor", {"type": "string"}, required=False,
            description="the `next` of the previous page, with the same prefix; empty or "
                        "absent: the first page; a cursor the service did not issue for this "
                        "prefix is 400 bad_cursor"),
        READ_LEVEL_PARAM,
        MAX_LAG_PARAM,
    ]


CLUSTER_PARAMS = [OpenApiParameter(
    "fresh", {"type": "string", "enum": ["0", "1", "false", "true"]}, required=False,
    description="1 or true: probe the nodes now instead of using this worker's cached probe; "
                "else 400 bad_request")]


def put_body() -> dict:
    return {"type": "object", "required": ["value"], "additionalProperties": False,
            "properties": {"value": VALUE_SCHEMA},
            "description": "exactly the field value, else 400 bad_json"}


def create_body() -> dict:
    return {"type": "object", "required": ["key", "value"], "additionalProperties": False,
            "properties": {"key": KEY_SCHEMA, "value": VALUE_SCHEMA},
            "description": "exactly the fields key and value, else 400 bad_json"}


def _err(text: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=text)


E400 = _err("bad_key, bad_json, bad_consistency, bad_max_lag, bad_token, bad_cursor, bad_limit, "
            "bad_precondition or bad_request: the request is refused, nothing was done")
E401 = _err("unauthorized: no token, or an unknown or revoked one")
E403 = _err("forbidden: the token lacks the scope (read for GET, write otherwise)")
E404 = _err("not_found: no such key (deleted keys too)")
E409 = _err("exists: the key exists; use PUT to replace it")
E412 = _err("precondition_failed: the key's current version does not match the condition")
E413 = _err("value_too_large: the value or the body is larger than allowed")
E415 = _err("unsupported_media_type: the body must be application/json")
E503 = OpenApiResponse(
    ServiceUnavailableSerializer,
    description="quorum_unavailable (with needed, got, nodes; for a write whose wait for the "
                "standbys was cancelled after its local commit, committed_locally and "
                "version) or database_unavailable: retry later")
COMMON_ERRORS = {400: E400, 401: E401, 403: E403, 503: E503}

_STR = {"schema": {"type": "string"}}
ETAG_HEADER = {"schema": {"type": "string", "pattern": '^"[1-9][0-9]{0,18}"$'},
               "description": "the version, quoted", "required": True}
NODE_HEADER = {**_STR, "description": "the node whose answer won (a write: the primary)"}
TOKEN_HEADER = {"schema": SESSION_TOKEN_SCHEMA, "required": True,
                "description": "session token of this write: send it back as X-KV-Token"}
AUTH_HEADER = {"schema": {"type": "string", "pattern": "^Bearer"}, "required": True,
               "description": "Bearer realm=\"kv\""}
EVERY_ANSWER = {
    "X-Request-ID": {**_STR, "required": True,
                     "description": "the request's X-Request-ID when it is 1-128 of "
                                    "A-Z a-z 0-9 . _ : -, else a new id; also in the logs"},
    "X-KV-Instance": {**_STR, "required": True, "description": "the instance that answered"},
}
# operationId -> status -> headers (besides EVERY_ANSWER, and WWW-Authenticate on every 401)
RESPONSE_HEADERS = {
    "kv_get": {"200": {"ETag": ETAG_HEADER, "X-KV-Node": NODE_HEADER},
               "404": {"X-KV-Node": NODE_HEADER}},
    "kv_put": {"200": {"ETag": ETAG_HEADER, "X-KV-Node": NODE_HEADER, "X-KV-Token": TOKEN_HEADER},
               "201": {"ETag": ETAG_HEADER, "X-KV-Node": NODE_HEADER,
                       "X-KV-Token": TOKEN_HEADER}},
    "kv_delete": {"204": {"X-KV-Token": TOKEN_HEADER}},
    "kv_create": {"201": {"ETag": ETAG_HEADER, "X-KV-Node": NODE_HEADER,
                          "X-KV-Token": TOKEN_HEADER}},
}


def add_headers(result, generator, request, public):
    """Postprocessing hook: declare the response headers of every operation, and that a body
    is required where there is one."""
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True
            extra = RESPONSE_HEADERS.get(operation.get("operationId"), {})
            for status, response in operation.get("responses", {}).items():
                headers = {**EVERY_ANSWER, **extra.get(status, {})}
                if status == "401":
                    headers["WWW-Authenticate"] = AUTH_HEADER
                response.setdefault("headers", {}).update(headers)
    return result
