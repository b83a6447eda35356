"""django-prometheus's request metrics that something reads, recorded at less cost per request.

The dashboards and alert rules (roles/prometheus_grafana) read two of the 19 series
django-prometheus's middlewares update: ``django_http_responses_total_by_status`` (request
rate, 5xx ratio) and ``django_http_requests_latency_seconds_by_view_method`` (latency
quantiles). Those two, and the three that move only on an exception or a request without a
start time, are registered here from django-prometheus's own definitions (``Metrics.register``:
the same names, documentation, labels and buckets) and updated as its PrometheusAfterMiddleware
updates them; the others (requests by method, transport, view; body sizes; charset, template
name; the "before middlewares" counters and histogram) are not registered, so /metrics shows no
series that nothing updates. Two updates per request instead of 13 (each a lock and a pid
check in multiprocess mode). Each labelled child is looked up once per process, not through
``labels()`` on every request.
"""

from __future__ import annotations

from timeit import default_timer

from django_prometheus.middleware import Metrics

# the attributes of django_prometheus.middleware.Metrics this module registers and updates
KEPT = frozenset(("responses_by_status", "requests_latency_by_view_method",
                  "requests_unknown_latency", "exceptions_by_type", "exceptions_by_view"))
# metric name (as django_prometheus.middleware.Metrics.register passes it) -> attribute
_ATTRIBUTE = {
    "django_http_responses_total_by_status": "responses_by_status",
    "django_http_requests_latency_seconds_by_view_method": "requests_latency_by_view_method",
    "django_http_requests_unknown_latency_total": "requests_unknown_latency",
    "django_http_exceptions_total_by_type": "exceptions_by_type",
    "django_http_exceptions_total_by_view": "exceptions_by_view",
}
_MAX_CHILDREN = 10000  # label values come from requests: bound the cache (prometheus keeps all)


class HttpMetrics(Metrics):
    """django-prometheus's Metrics, with only the KEPT attributes registered (the others None)."""

    _instance = None

    def register_metric(self, metric_cls, name, documentation, labelnames=(), **kwargs):
        if _ATTRIBUTE.get(name) not in KEPT:
            return None
        return super().register_metric(metric_cls, name, documentation, labelnames, **kwargs)


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


class PrometheusAfterMiddleware:
    """Responses by status, the latency by view and method (of the view and the middlewares
    inside this one), exceptions by type and view: django-prometheus's PrometheusAfterMiddleware
    for those series."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.m = HttpMetrics.get_instance()
        self.children = _Children()

    @staticmethod
    def _view_name(request) -> str:
        match = getattr(request, "resolver_match", None)
        if match is not None and match.view_name is not None:
            return match.view_name
        return "<unnamed view>"

    def __call__(self, request):
        request.prometheus_after_middleware_event = default_timer()
        response = self.get_response(request)
        self.children.get(self.m.responses_by_status, str(response.status_code)).inc()
        self._observe_latency(request, self._view_name(request))
        return response

    def _observe_latency(self, request, view: str) -> None:
        started = getattr(request, "prometheus_after_middleware_event", None)
        if started is None:
            self.m.requests_unknown_latency.inc()
        else:
            self.children.get(self.m.requests_latency_by_view_method, view,
                              request.method).observe(default_timer() - started)

    def process_exception(self, request, exception):
        self.children.get(self.m.exceptions_by_type, type(exception).__name__).inc()
        match = getattr(request, "resolver_match", None)
        if match is not None:
            self.children.get(self.m.exceptions_by_view,
                              match.view_name or "<unnamed view>").inc()
        self._observe_latency(request, self._view_name(request))
