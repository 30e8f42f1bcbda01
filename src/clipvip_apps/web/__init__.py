"""Web app for searching a video index (``clipvip serve``)."""

from clipvip_apps.web.app import WebConfig, create_app, create_app_from_path

__all__ = ["WebConfig", "create_app", "create_app_from_path"]
