"""The two pydantic bases of the catalog's models, named by what they enforce.

:class:`FrozenModel` is for values the catalog builds itself (registration results, diffs): immutable,
so they can be shared and cached. :class:`StrictModel` is for what users and agents write (contracts,
queries): immutable too, and an unknown key is an error rather than silently ignored, so a typo in a
contract or a query is reported; a field with an alias (``"and"``, ``"as"``) also accepts its name.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["FrozenModel", "StrictModel"]


class FrozenModel(BaseModel):
    """Immutable; unknown keys are ignored."""

    model_config = ConfigDict(frozen=True)


class StrictModel(FrozenModel):
    """Immutable; unknown keys are refused; aliased fields accept their alias or their name."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
