"""Pages of the ``resources/list`` answer: the products a principal may read, by name, with a cursor.

MCP clients that browse resources (rather than call tools) see one ``product://{name}`` resource per
product the caller may read, in name order, :data:`PAGE_SIZE` at a time. The cursor is opaque to the
client: the URL-safe base64 of the last name of the previous page, so a page is stable when products
are registered or removed between two requests (nothing is skipped or repeated that stayed put).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from catalog.contract import ProductContract
from catalog.errors import InvalidRequestError

__all__ = ["PAGE_SIZE", "decode_cursor", "encode_cursor", "product_page"]

#: Products per ``resources/list`` page.
PAGE_SIZE = 100


def encode_cursor(last_name: str) -> str:
    """The cursor of the page after the one ending with ``last_name``."""
    return base64.urlsafe_b64encode(last_name.encode("utf-8")).decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The last product name of the previous page.

    Raises:
        InvalidRequestError: the cursor is not one this server gave.
    """
    try:
        return base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidRequestError(
            "cursor is not a nextCursor this server gave; list resources again without a cursor"
        ) from None


def product_page(
    readable: Sequence[ProductContract], cursor: str | None, *, page_size: int = PAGE_SIZE
) -> tuple[list[ProductContract], str | None]:
    """One page of ``readable`` in name order after ``cursor``, and the cursor of the next page (None: last).

    Raises:
        InvalidRequestError: the cursor is not one this server gave.
    """
    after = decode_cursor(cursor) if cursor is not None else None
    ordered = sorted(readable, key=lambda c: c.name)
    remaining = [c for c in ordered if after is None or c.name > after]
    page = remaining[:page_size]
    more = len(remaining) > page_size
    return page, encode_cursor(page[-1].name) if more and page else None
