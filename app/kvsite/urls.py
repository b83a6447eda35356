from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularAPIView

from django.conf import settings
from django.urls import path

from kv import views
from kv.auth import BearerTokenAuthentication, HasScope

urlpatterns = [
    path("api/kv/", views.CollectionView.as_view()),
    path("api/kv/<path:key>", views.KeyView.as_view()),
    path("api/cluster", views.ClusterView.as_view()),
    path("api/schema/", SpectacularAPIView.as_view(
        authentication_classes=[BearerTokenAuthentication], permission_classes=[HasScope])),
    path("healthz", views.healthz),
    path("readyz", views.readyz),
    path("metrics", ExportToDjangoView),
]
if settings.KV["BENCH_BARE_VIEW"]:
    urlpatterns.append(path("bench/bare/<path:key>", views.bare_get))

handler400 = "kv.errors.bad_request"
handler403 = "kv.errors.permission_denied"
handler404 = "kv.errors.page_not_found"
handler500 = "kv.errors.server_error"
