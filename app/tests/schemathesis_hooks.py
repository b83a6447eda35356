"""schemathesis hooks (SCHEMATHESIS_HOOKS) for tests/test_schemathesis.py."""

import schemathesis


@schemathesis.hook
def filter_query(context, query):
    """A cursor is valid only if the service issued it, for that prefix: the schema can call it
    an opaque string and no more. Cursors are tested in test_hostile.py and test_pagination.py."""
    return not (query and query.get("cursor"))
