"""The STAC API fields extension, applied by the service itself to what either backend
answers (docs/distribution.md, "Fields").

The service takes ``fields`` out of a search (``GET``/``POST /search``,
``GET /collections/<c>/items``) before the backend sees it, lets the backend answer with
whole items, and keeps of each item what the request asked for. So both backends give the
same answer, typed ``application/geo+json``, and a backend's search never runs on a
projection that lacks the columns it filters on.

Semantics (fields extension v1.0.0):

* ``fields`` empty (``GET ?fields=``, ``{"fields": {}}``, ``include`` and ``exclude`` both
  null or empty): the default set, :data:`DEFAULT` (a valid STAC item);
* ``include`` given: those fields, plus ``id``, ``collection``, ``type`` and ``links``;
* only ``exclude``, ``include`` absent (and ``GET ?fields=-a,-b``): every field but those;
* ``exclude`` with ``include`` explicitly null or ``[]`` (POST): the default set without
  them;
* a field in both: included; otherwise the most specific path wins
  (``exclude: [properties], include: [properties.eo:cloud_cover]`` keeps only that property
  of ``properties``; ``include: [properties], exclude: [properties.x]`` all but ``x``);
* a name that is not an item's top-level field is a property
  (``eo:cloud_cover`` = ``properties.eo:cloud_cover``);
* ``{"fields": null}``, a ``fields`` that is not an object, an unknown key in it or an
  ``include``/``exclude`` that is not a list of strings: a 400 (:class:`FieldsError`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT", "Fields", "FieldsError", "parse_get", "parse_post", "select"]

#: What an empty ``fields`` keeps: the fields extension's default set, with the item's
#: collection and extension list (small, and they keep the item a valid STAC item).
DEFAULT = ("type", "stac_version", "stac_extensions", "id", "collection", "geometry", "bbox",
           "links", "assets", "properties.datetime")
#: Kept whatever ``include`` says, unless excluded by name (``id``, ``collection``: always).
ALWAYS = ("type", "links")
NEVER_DROPPED = ("id", "collection")
TOP_LEVEL = {"type", "stac_version", "stac_extensions", "id", "collection", "geometry", "bbox",
             "properties", "links", "assets"}


class FieldsError(ValueError):
    """A ``fields`` value the service cannot use (answered 400 with this message)."""


@dataclass(frozen=True)
class Fields:
    """A parsed ``fields`` request. ``mode``: ``default`` (the default set), ``include``
    (the included fields), ``all-but`` (every field but ``exclude``), ``default-but`` (the
    default set but ``exclude``)."""

    mode: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    raw: Any = None  # what the request said (the GET string or the POST object)

    def get_value(self) -> str:
        """The request as a GET ``fields`` value (for paging links)."""
        if isinstance(self.raw, str):
            return self.raw
        return ",".join([*self.include, *(f"-{f}" for f in self.exclude)])

    def post_value(self) -> dict[str, Any]:
        """The request as a POST ``fields`` object (for paging links)."""
        if isinstance(self.raw, dict):
            return copy.deepcopy(self.raw)
        out: dict[str, Any] = {}
        if self.include:
            out["include"] = list(self.include)
        if self.exclude:
            out["exclude"] = list(self.exclude)
        return out


def _name(field: str) -> str:
    field = field.strip()
    if field and field.split(".", 1)[0] not in TOP_LEVEL:
        return f"properties.{field}"
    return field


def parse_get(value: str) -> Fields:
    """``fields`` of a GET request: comma-separated names, ``-name`` excluded, ``name`` or
    ``+name`` included."""
    include: list[str] = []
    exclude: list[str] = []
    for tok in value.split(","):
        tok = tok.strip()
        if tok.startswith("-"):
            name = _name(tok[1:])
            if name:
                exclude.append(name)
        else:
            name = _name(tok[1:] if tok.startswith("+") else tok)
            if name:
                include.append(name)
    if include:
        return Fields("include", tuple(include), tuple(exclude), value)
    if exclude:
        return Fields("all-but", (), tuple(exclude), value)
    return Fields("default", raw=value)


def _names(obj: dict[str, Any], key: str) -> list[str] | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise FieldsError(f"fields.{key} must be a list of field names (strings), not {v!r:.200}")
    return [n for n in (_name(x) for x in v) if n]


def parse_post(value: Any) -> Fields:
    """``fields`` of a POST search body: an object with ``include`` and/or ``exclude``."""
    if not isinstance(value, dict):
        raise FieldsError(f"fields must be an object with 'include' and/or 'exclude' lists of "
                          f"field names, not {value!r:.200}")
    unknown = sorted(set(value) - {"include", "exclude"})
    if unknown:
        raise FieldsError(f"fields has unknown key(s) {unknown}: expected 'include' and/or "
                          "'exclude'")
    include, exclude = _names(value, "include"), _names(value, "exclude")
    if include:
        return Fields("include", tuple(include), tuple(exclude or ()), value)
    if exclude:
        # include absent: every field but these; include null or []: the default set but these
        return Fields("default-but" if "include" in value else "all-but", (), tuple(exclude),
                      value)
    return Fields("default", raw=value)


def _covers(rule: str, path: str) -> bool:
    return path == rule or path.startswith(rule + ".")


def _decide(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool | None:
    """Keep (True) or drop (False) ``path`` by the most specific rule naming it or one of
    its parents (a tie: kept); ``None`` when no rule does."""
    best, best_len = None, -1
    for rule in exclude:
        if _covers(rule, path) and len(rule) > best_len:
            best, best_len = False, len(rule)
    for rule in include:
        if _covers(rule, path) and len(rule) >= best_len:
            best, best_len = True, len(rule)
    return best


def _select(obj: dict[str, Any], prefix: str, include: tuple[str, ...],
            exclude: tuple[str, ...], keep_default: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        path = prefix + key
        d = _decide(path, include, exclude)
        keep = keep_default if d is None else d
        deeper = isinstance(value, dict) and any(r.startswith(path + ".")
                                                 for r in (*include, *exclude))
        if deeper:
            sub = _select(value, path + ".", include, exclude, keep)
            if sub or keep:
                out[key] = sub
        elif keep:
            out[key] = value
    return out


def select(item: dict[str, Any], fields: Fields) -> dict[str, Any]:
    """What ``fields`` keeps of ``item`` (a new dict; the item is not changed)."""
    props = item.get("properties") if isinstance(item.get("properties"), dict) else {}
    default = list(DEFAULT)
    if props.get("datetime") is None:  # a period item: its start and end instead
        default += ["properties.start_datetime", "properties.end_datetime"]
    exclude = fields.exclude
    if fields.mode == "default":
        include, keep_default = tuple(default), False
    elif fields.mode == "all-but":
        include, keep_default = (), True
    elif fields.mode == "default-but":
        include = tuple(d for d in default if not any(_covers(e, d) for e in exclude))
        keep_default = False
    else:
        include = fields.include + tuple(a for a in ALWAYS if a not in exclude)
        keep_default = False
    out = _select(item, "", include, exclude, keep_default)
    for key in NEVER_DROPPED:
        if key in item and key not in out:
            out[key] = item[key]
    return out
