from django.urls import path, register_converter
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.views import SpectacularAPIView
from kv import views
from kv.auth import BearerTokenAuthentication, HasScope
from rest_framework.negotiation import DefaultContentNegotiation


class AnyKey:
    """Any non-empty text, newlines included (the view refuses bad keys with a JSON 400)."""

    regex = r"[\s\S]+"

    def to_python(self, value):
        return value

    def to_url(self, value):
        return value


register_converter(AnyKey, "kvkey")

urlpatterns = [
    path("api/kv/", views.CollectionView.as_view()),
    path("api/kv/<kvkey:key>", views.KeyView.as_view()),
    path("api/cluster", views.ClusterView.as_view()),
    path("api/schema/", SpectacularAPIView.as_view(
        authentication_classes=[BearerTokenAuthentication], permission_classes=[HasScope],
        content_negotiation_class=DefaultContentNegotiation)),
    path("healthz", views.healthz),
    path("readyz", views.readyz),
    path("metrics", ExportToDjangoView),
]

handler400 = "kv.errors.bad_request"
handler403 = "kv.errors.permission_denied"
handler404 = "kv.errors.page_not_found"
handler500 = "kv.errors.server_error"
