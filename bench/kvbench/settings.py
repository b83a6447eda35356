"""The app's settings, routed through kvbench.urls (the app's URLs plus the bare view)."""

from kvsite.settings import *  # noqa: F403

ROOT_URLCONF = "kvbench.urls"
