"""The app's URLs and error handlers, plus ``/bench/bare/<key>``."""

from django.urls import path
from kvbench.views import bare_get
from kvsite.urls import handler400, handler403, handler404, handler500
from kvsite.urls import urlpatterns as app_urlpatterns

urlpatterns = [*app_urlpatterns, path("bench/bare/<kvkey:key>", bare_get)]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
