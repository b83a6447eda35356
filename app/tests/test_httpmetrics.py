"""kv.httpmetrics records the django-prometheus request series that dashboards and alert rules
read, with django-prometheus's own definitions, as its PrometheusAfterMiddleware does, and no
other django_http series: what a known set of requests moves is checked series by series."""

from collections import Counter

from django.test import override_settings
from django.urls import Resolver404, path, resolve
from django_prometheus.middleware import Metrics
from kv.httpmetrics import KEPT, HttpMetrics
from kvsite.urls import urlpatterns as app_urlpatterns
from prometheus_client import REGISTRY, CollectorRegistry

from tests.conftest import make_client, unique


def boom(request):
    raise RuntimeError("a view that fails: process_exception's series")


urlpatterns = [*app_urlpatterns, path("boom", boom)]  # this module is the URLconf below

# every name queried in roles/prometheus_grafana (tests/monitoring/test_metric_names.py)
READ_BY_MONITORING = ("django_http_responses_total_by_status",
                      "django_http_requests_latency_seconds_by_view_method")
LATENCY = "django_http_requests_latency_seconds_by_view_method"


def snapshot() -> dict:
    values = {}
    for metric in REGISTRY.collect():
        if not metric.name.startswith("django_http"):
            continue
        for s in metric.samples:
            if s.name.endswith("_created"):
                continue
            if metric.name == LATENCY and not s.name.endswith("_count"):
                continue  # sums and buckets depend on timing
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def traffic() -> list[tuple[str, object]]:
    rw, anon = make_client("rw"), make_client(None)
    key = unique()
    out = []

    def do(method, resp):
        out.append((method, resp))
        return resp.status_code

    assert do("PUT", rw.put(f"/api/kv/{key}", {"value": {"a": 1}},
                            content_type="application/json")) == 201
    # r=primary: a standby outside the quorum may not have the write yet (r=one may be stale)
    assert do("GET", rw.get(f"/api/kv/{key}?r=primary")) == 200
    assert do("GET", rw.get(f"/api/kv/{unique()}")) == 404
    assert do("GET", anon.get(f"/api/kv/{key}")) == 401
    assert do("BREW", rw.generic("BREW", "/healthz")) == 405
    assert do("GET", rw.get("/no/such/page")) == 404
    assert do("PUT", rw.put(f"/api/kv/{key}", b"{not json",
                            content_type="application/json")) == 400
    assert do("GET", rw.get("/boom")) == 500
    return out


def test_kept_series_move_as_django_prometheus_defines_them():
    from django.conf import settings

    with override_settings(MIDDLEWARE=settings.MIDDLEWARE, ROOT_URLCONF=__name__):
        before = snapshot()
        sent = traffic()
        after = snapshot()
    moved = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}

    statuses = Counter(str(resp.status_code) for _, resp in sent)
    latency = Counter()
    for method, resp in sent:
        try:
            view = resolve(resp.request["PATH_INFO"], urlconf=__name__).view_name
        except Resolver404:
            view = "<unnamed view>"
        latency[(view, method)] += 1
    latency[("tests.test_httpmetrics.boom", "GET")] += 1  # the exception's observation, too
    expected = {("django_http_responses_total_by_status_total", (("status", s),)): float(n)
                for s, n in statuses.items()}
    expected.update({(f"{LATENCY}_count", (("method", m), ("view", v))): float(n)
                     for (v, m), n in latency.items()})
    expected[("django_http_exceptions_total_by_type_total", (("type", "RuntimeError"),))] = 1.0
    expected[("django_http_exceptions_total_by_view_total",
              (("view", "tests.test_httpmetrics.boom"),))] = 1.0
    assert moved == expected


def test_no_other_django_http_series_and_the_same_definitions():
    make_client("rw").get("/healthz")  # the middleware is loaded
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("django_http")}
    assert names == {"django_http_responses_total_by_status",
                     "django_http_requests_latency_seconds_by_view_method",
                     "django_http_requests_unknown_latency", "django_http_exceptions_total_by_type",
                     "django_http_exceptions_total_by_view"}
    assert set(READ_BY_MONITORING) <= names

    class Theirs(Metrics):  # django-prometheus's full set, in a registry of its own
        _instance = None
        registry = CollectorRegistry()

        def register_metric(self, metric_cls, name, documentation, labelnames=(), **kwargs):
            return metric_cls(name, documentation, labelnames=labelnames,
                              registry=self.registry, **kwargs)

    theirs, ours = Theirs(), HttpMetrics.get_instance()
    for attr in KEPT:
        a, b = getattr(theirs, attr), getattr(ours, attr)
        assert (type(a), a._name, a._documentation, a._labelnames,
                getattr(a, "_upper_bounds", None)) == (
            type(b), b._name, b._documentation, b._labelnames,
            getattr(b, "_upper_bounds", None)), attr


def test_settings_use_the_cheaper_middleware():
    from django.conf import settings

    assert settings.MIDDLEWARE[-1] == "kv.httpmetrics.PrometheusAfterMiddleware"
    assert not any(m.startswith("django_prometheus.") or m.endswith("BeforeMiddleware")
                   for m in settings.MIDDLEWARE)
