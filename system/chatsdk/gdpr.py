"""Routes of this area are added by the issue that builds it (see app.py's MODULES)."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
