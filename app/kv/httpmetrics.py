"""django-prometheus's request metrics, recorded at less cost per request.

The two middlewares update the very metrics of django_prometheus.middleware.Metrics (same names,
labels, buckets and meaning, so dashboards and alert rules keep working), as its
PrometheusBeforeMiddleware and PrometheusAfterMiddleware do, with three differences in cost only:
each labelled child is looked up once per process instead of through ``labels()`` on every
request, the request's headers are read from ``META`` instead of building ``request.headers``,
and they are plain middleware callables, without MiddlewareMixin's hook dispatch.
"""

from __future__ import annotations

from timeit import default_timer

from django_prometheus.middleware import Metrics

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT",
                      "PATCH"))
_MAX_CHILDREN = 10000  # label values come from requests: bound the cache (prometheus keeps all)


class _Children:
    """metric -> labelled child, cached by label values (given in a fixed order per call site)."""

    def __init__(self):
        self._cache: dict[tuple, object] = {}

    def get(self, metric, *values: str):
        key = (id(metric), *values)
        child = self._cache.get(key)
        if child is None:
            if len(self._cache) >= _MAX_CHILDREN:
                self._cache.clear()
            child = self._cache[key] = metric.labels(*values)
        return child


class PrometheusBeforeMiddleware:
    """Counts requests and responses and observes the latency including every middleware."""

    def __init__(self, get_response):
        self.get_response = get_response
        m = Metrics.get_instance()
        self.requests_total = m.requests_total
        self.responses_total = m.responses_total
        self.latency = m.requests_latency_before

    def __call__(self, request):
        self.requests_total.inc()
        started = default_timer()
        response = self.get_response(request)
        self.responses_total.inc()
        self.latency.observe(default_timer() - started)
        return response


class PrometheusAfterMiddleware:
    """Requests by method, transport and view, responses by status, charset, template and size,
    the latency by view and method, exceptions by type and view."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.m = Metrics.get_instance()
        self.children = _Children()

    @staticmethod
    def _method(request) -> str:
        return request.method if request.method in _METHODS else "<invalid method>"

    @staticmethod
    def _view_name(request) -> str:
        match = getattr(request, "resolver_match", None)
        if match is not None and match.view_name is not None:
            return match.view_name
        return "<unnamed view>"

    def __call__(self, request):
        m, child = self.m, self.children.get
        method = self._method(request)
        transport = "https" if request.is_secure() else "http"
        child(m.requests_by_method, method).inc()
        child(m.requests_by_transport, transport).inc()
        meta = request.META
        if meta.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest":
            m.requests_ajax.inc()
        m.requests_body_bytes.observe(int(meta.get("CONTENT_LENGTH") or 0))
        request.prometheus_after_middleware_event = default_timer()
        response = self.get_response(request)
        view = self._view_name(request)
        status = str(response.status_code)
        child(m.responses_by_status, status).inc()
        child(m.responses_by_status_view_method, status, view, method).inc()
        if hasattr(response, "charset"):
            child(m.responses_by_charset, str(response.charset)).inc()
        if getattr(response, "streaming", False):
            m.responses_streaming.inc()
        else:
            m.responses_body_bytes.observe(len(response.content))
        self._observe_latency(request, view)
        return response

    def _observe_latency(self, request, view: str) -> None:
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is None:
            self.m.requests_unknown_latency.inc()
        else:
            self.children.get(self.m.requests_latency_by_view_method, view,
                              request.method).observe(default_timer() - started)

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = getattr(request, "resolver_match", None)
        if match is not None:
            self.children.get(self.m.requests_by_view_transport_method,
                              match.view_name or "<unnamed view>",
                              "https" if request.is_secure() else "http",
                              self._method(request)).inc()

    def process_template_response(self, request, response):
        # DRF's Response is a template response (template_name None): counted as templatename
        # "None", as django-prometheus does
        if hasattr(response, "template_name"):
            self.children.get(self.m.responses_by_templatename, str(response.template_name)).inc()
        return response

    def process_exception(self, request, exception):
        self.children.get(self.m.exceptions_by_type, type(exception).__name__).inc()
        match = getattr(request, "resolver_match", None)
        if match is not None:
            self.children.get(self.m.exceptions_by_view,
                              match.view_name or "<unnamed view>").inc()
        self._observe_latency(request, self._view_name(request))
