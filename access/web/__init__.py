"""Server-rendered web pages of the access layer (``/web``): steward review queue and request
page, researcher page, public transparency register. ``access.app`` mounts ``build_router()``.
"""

from access.web.routes import build_router

__all__ = ["build_router"]
