"""kv.httpmetrics records django-prometheus's request metrics exactly as django-prometheus's own
middlewares do: the same requests through either pair move every series by the same amount
(latency histograms: the same count; their sums and buckets depend on timing)."""

from django.test import override_settings
from django.urls import path
from kvsite.urls import urlpatterns as app_urlpatterns
from prometheus_client import REGISTRY

from tests.conftest import make_client, unique


def boom(request):
    raise RuntimeError("a view that fails: process_exception's series")


urlpatterns = [*app_urlpatterns, path("boom", boom)]  # this module is the URLconf below

THEIRS = ("django_prometheus.middleware.PrometheusBeforeMiddleware",
          "django_prometheus.middleware.PrometheusAfterMiddleware")
OURS = ("kv.httpmetrics.PrometheusBeforeMiddleware", "kv.httpmetrics.PrometheusAfterMiddleware")
TIMING = ("django_http_requests_latency_including_middlewares_seconds",
          "django_http_requests_latency_seconds_by_view_method")


def snapshot() -> dict:
    values = {}
    for metric in REGISTRY.collect():
        if not metric.name.startswith("django_http"):
            continue
        for s in metric.samples:
            if s.name.endswith("_created"):
                continue
            if metric.name in TIMING and not s.name.endswith("_count"):
                continue
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def traffic() -> None:
    rw, anon = make_client("rw"), make_client(None)
    key = unique()
    assert rw.put(f"/api/kv/{key}", {"value": {"a": 1}},
                  content_type="application/json").status_code == 201
    assert rw.get(f"/api/kv/{key}?r=one").status_code == 200
    assert rw.get(f"/api/kv/{unique()}").status_code == 404
    assert anon.get(f"/api/kv/{key}").status_code == 401
    assert rw.get("/healthz", headers={"X-Requested-With": "XMLHttpRequest"}).status_code == 200
    assert rw.generic("BREW", "/healthz").status_code in (200, 405)
    assert rw.get("/no/such/page").status_code == 404
    assert rw.get("/healthz", headers={"X-Forwarded-Proto": "https"}).status_code == 200
    assert rw.put(f"/api/kv/{key}", b"{not json", content_type="application/json"
                  ).status_code == 400
    assert rw.get("/boom").status_code == 500


def deltas(middlewares: tuple[str, str]) -> dict:
    from django.conf import settings

    mw = [m for m in settings.MIDDLEWARE if m not in THEIRS + OURS]
    with override_settings(MIDDLEWARE=[middlewares[0], *mw, middlewares[1]],
                           ROOT_URLCONF=__name__):
        before = snapshot()
        traffic()
        after = snapshot()
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def test_same_series_move_by_the_same_amounts():
    theirs = deltas(THEIRS)
    ours = deltas(OURS)
    assert theirs, "the traffic moved no django_http series"
    assert ours == theirs
    names = {name for name, _ in ours}
    assert "django_http_responses_total_by_status_total" in names
    assert "django_http_requests_latency_seconds_by_view_method_count" in names
    assert "django_http_exceptions_total_by_type_total" in names


def test_settings_use_the_cheaper_pair():
    from django.conf import settings

    assert settings.MIDDLEWARE[0] == OURS[0] and settings.MIDDLEWARE[-1] == OURS[1]
    assert not set(THEIRS) & set(settings.MIDDLEWARE)
