"""The read-only catalog page for people, served by ``serve --http`` under ``catalog_page.path``.

:mod:`~servers.catalog_page.routes` (HTTP surface, auditing, security headers),
:mod:`~servers.catalog_page.views` (what a page shows, through the service's use cases as the viewer),
:mod:`~servers.catalog_page.identity` (sessions, CSRF, :func:`principal_for_request`),
:mod:`~servers.catalog_page.lineage_svg` (the lineage graph's layout); templates/ and static/ hold the
Jinja2 templates and the one stylesheet.
"""

from servers.catalog_page.identity import principal_for_request
from servers.catalog_page.routes import CatalogPageMount, create_catalog_page

__all__ = ["CatalogPageMount", "create_catalog_page", "principal_for_request"]
