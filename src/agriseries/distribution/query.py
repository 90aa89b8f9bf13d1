"""The STAC API query extension (``query``), served as a CQL2 filter.

The service does not hand ``query`` to its catalogue backend (stac-fastapi-pgstac compared
numbers as text and refused half of the operators; stac-fastapi-geoparquet ignored it):
:class:`~agriseries.distribution.app.ServedItems` takes it out of the search and puts in its
place the equivalent CQL2-JSON expression (:func:`query_filter`), ANDed with the search's
own ``filter`` (:func:`and_filters`), so both backends run the same filter and answer alike
(docs/distribution.md, "Query").

What each operator becomes (``p`` the property; strings compared case-insensitively, as
the extension asks, through CQL2's ``casei``):

==============  ================================================================
``eq``          ``p = v`` (a number or a boolean as such, ``null``: ``p IS NULL``);
                a string: ``casei(p) = casei(v)``, an RFC 3339 date-time as is
``neq``         ``NOT`` of the ``eq`` term (an item without ``p`` matches neither)
``lt`` ...      ``p < v`` etc.: a number, or an RFC 3339 date-time (a string)
``startsWith``  ``casei(p) LIKE casei('v%')`` (``%``, ``_``, ``\\`` of ``v`` escaped)
``endsWith``    ``casei(p) LIKE casei('%v')``
``contains``    ``casei(p) LIKE casei('%v%')``
``in``          ``casei(p) IN (casei(v1), ...)`` (numbers: ``p IN (...)``)
==============  ================================================================

An array property of strings (``instruments``) matches ``eq`` when it holds the string and
``in`` when it holds one of the strings (``A_CONTAINS`` / ``A_OVERLAPS``, compared as they
are, case included). Which
properties are arrays is told by the backend when it knows (``kinds``: the embedded
catalogue reads its files' schemas); without it (pgstac, whose JSON has no fixed types)
``eq`` and ``in`` on strings are the OR of both forms, which pgstac runs on either kind.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..core.errors import AgriseriesError

__all__ = ["OPERATORS", "QueryError", "and_filters", "filter_as_json", "parse_query",
           "query_filter"]

#: The operators of the query extension, in the order the extension lists them.
OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "startsWith", "endsWith", "contains", "in")
#: Other names accepted for an operator (stac-fastapi-pgstac served ``ne``).
ALIASES = {"ne": "neq"}
_ORDER = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
#: kinds of a property (what ``kinds`` maps a name to) whose values are not strings
_NOT_STRINGS = ("number", "boolean")


class QueryError(AgriseriesError, ValueError):
    """A ``query`` (or the ``filter`` it is combined with) that cannot be served; the
    message names the property, the operator and what was expected."""


def parse_query(value: Any) -> dict[str, Any]:
    """The query object of a search: ``value`` as given in a POST body, or the JSON text of
    a GET ``query`` parameter.

    Raises
    ------
    QueryError
        Not JSON, or not a JSON object.
    """
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise QueryError(f"query {_show(value)} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise QueryError(f"query {_show(value)}: expected a JSON object "
                         '{"<property>": {"<operator>": <value>}}')
    return value


def _show(v: Any, n: int = 120) -> str:
    try:
        s = json.dumps(v) if not isinstance(v, (str, bytes)) else repr(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= n else s[:n] + "..."


def _prop(name: str) -> dict[str, str]:
    return {"property": name}


def _casei(x: Any) -> dict[str, Any]:
    return {"op": "casei", "args": [x]}


def _or(terms: list[dict]) -> dict:
    return terms[0] if len(terms) == 1 else {"op": "or", "args": terms}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_datetime(v: Any) -> bool:
    if not isinstance(v, str) or not _DATETIME.fullmatch(v):
        return False
    try:
        dt.datetime.fromisoformat(v.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


def _like_escaped(s: str) -> str:
    """``s`` as a CQL2 LIKE pattern matching it literally (``\\`` is CQL2's escape)."""
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _term(name: str, op: str, value: Any, kind: str | None, known: bool) -> dict[str, Any]:
    """One ``property: {op: value}`` condition as CQL2-JSON. ``kind``: what the backend says
    the property holds (``None``: not known); ``known``: the backend tells kinds at all."""
    where = f"query: {name!r} {op}"
    if _is_number(value) and not math.isfinite(value):
        raise QueryError(f"{where}: expected a finite number, got {value}")
    p = _prop(name)
    if op in ("eq", "neq"):
        if value is None:
            t: dict[str, Any] = {"op": "isNull", "args": [p]}
        elif isinstance(value, bool) or _is_number(value):
            if kind == "array":
                raise QueryError(f"{where}: {name!r} holds arrays: expected a string (an "
                                 f"element of them), got {_show(value)}")
            t = {"op": "=", "args": [p, value]}
        elif isinstance(value, str):
            if kind in _NOT_STRINGS:
                raise QueryError(f"{where}: {name!r} holds {kind}s: expected a {kind}, got "
                                 f"{_show(value)}")
            if kind == "array":
                t = {"op": "a_contains", "args": [p, [value]]}
            elif _is_datetime(value) or kind == "datetime":
                t = {"op": "=", "args": [p, value]}
            else:
                t = {"op": "=", "args": [_casei(p), _casei(value)]}
                if not known:  # pgstac: an array property holding the value matches too
                    t = _or([t, {"op": "a_contains", "args": [p, [value]]}])
        else:
            raise QueryError(f"{where}: expected a string, a number, a boolean or null, got "
                             f"{_show(value)}")
        return t if op == "eq" else {"op": "not", "args": [t]}
    if op in _ORDER:
        if not (_is_number(value) or _is_datetime(value)):
            raise QueryError(f"{where}: expected a number or an RFC 3339 date-time "
                             f"(2018-07-01T00:00:00Z), got {_show(value)}")
        if kind == "array":
            raise QueryError(f"{where}: {name!r} holds arrays: {op} compares a number or a "
                             "date-time")
        return {"op": _ORDER[op], "args": [p, value]}
    if op in ("startsWith", "endsWith", "contains"):
        if not isinstance(value, str):
            raise QueryError(f"{where}: expected a string, got {_show(value)}")
        if kind in (*_NOT_STRINGS, "array"):
            raise QueryError(f"{where}: {name!r} holds {kind}s: {op} applies to strings")
        e = _like_escaped(value)
        pattern = {"startsWith": f"{e}%", "endsWith": f"%{e}", "contains": f"%{e}%"}[op]
        return {"op": "like", "args": [_casei(p), _casei(pattern)]}
    # in
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) or _is_number(v) for v in value):
        raise QueryError(f"{where}: expected a non-empty array of strings or numbers, got "
                         f"{_show(value)}")
    if any(_is_number(v) and not math.isfinite(v) for v in value):
        raise QueryError(f"{where}: expected finite numbers, got {_show(value)}")
    if kind == "array":
        if not all(isinstance(v, str) for v in value):
            raise QueryError(f"{where}: {name!r} holds arrays: expected strings (elements "
                             f"of them), got {_show(value)}")
        return {"op": "a_overlaps", "args": [p, list(value)]}
    strings = [v for v in value if isinstance(v, str)]
    numbers = [v for v in value if _is_number(v)]
    if strings and kind in _NOT_STRINGS:
        raise QueryError(f"{where}: {name!r} holds {kind}s: expected {kind}s, got "
                         f"{_show(strings)}")
    terms = []
    if numbers:
        terms.append({"op": "in", "args": [p, numbers]})
    if strings:
        if kind == "datetime":
            t = {"op": "in", "args": [p, strings]}
        else:
            t = {"op": "in", "args": [_casei(p), [_casei(s) for s in strings]]}
        if not known:  # pgstac: an array property holding one of the values matches too
            t = _or([t, {"op": "a_overlaps", "args": [p, strings]}])
        terms.append(t)
    return _or(terms)


def query_filter(query: Mapping[str, Any],
                 kinds: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The CQL2-JSON expression equivalent to a ``query`` object (``None`` for ``{}``).

    Parameters
    ----------
    query
        ``{"<property>": {"<operator>": <value>, ...}, ...}`` (several operators of a
        property and several properties: all must hold); a property given a plain value
        (``{"platform": "landsat-8"}``) is ``eq``. A ``properties.`` prefix is dropped.
    kinds
        What the catalogue says each property holds (``"array"``, ``"string"``,
        ``"number"``, ``"boolean"``, ``"datetime"``; a property it does not hold: absent);
        ``None`` when it cannot say (see the module docstring).

    Raises
    ------
    QueryError
        Unknown operator, a value of the wrong type (the message names the property, the
        operator and what was expected).
    """
    terms: list[dict[str, Any]] = []
    for name, ops in query.items():
        if not isinstance(name, str) or not name.strip():
            raise QueryError(f"query: a property name must be a non-empty string, got "
                             f"{_show(name)}")
        prop = name.removeprefix("properties.")
        if not isinstance(ops, dict):
            if isinstance(ops, list):
                raise QueryError(f"query: {name!r}: expected an object of operators "
                                 f"({', '.join(OPERATORS)}) or a value, got {_show(ops)}")
            ops = {"eq": ops}
        if not ops:
            raise QueryError(f"query: {name!r}: no operator (expected one of "
                             f"{', '.join(OPERATORS)})")
        kind = None if kinds is None else kinds.get(prop)
        for op, value in ops.items():
            canon = ALIASES.get(op, op)
            if canon not in OPERATORS:
                raise QueryError(f"query: {name!r}: unknown operator {op!r} (expected one of "
                                 f"{', '.join(OPERATORS)})")
            terms.append(_term(prop, canon, value, kind, kinds is not None))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else {"op": "and", "args": terms}


def filter_as_json(value: Any, lang: str | None) -> dict[str, Any]:
    """A search's ``filter`` as CQL2-JSON: a JSON object as it is, CQL2-JSON text parsed,
    CQL2 text translated (``lang``: the search's ``filter-lang``; ``cql2-text`` or
    ``cql2-json``, ``None``: guessed from the value).

    Raises
    ------
    QueryError
        The filter does not parse.
    """
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise QueryError(f"filter {_show(value)}: expected CQL2 text or a CQL2-JSON object")
    text = value.strip()
    if lang == "cql2-json" or (lang is None and text.startswith("{")):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise QueryError(f"filter {_show(value)} (cql2-json) is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise QueryError(f"filter {_show(value)} (cql2-json): expected a JSON object")
        return doc
    if lang not in (None, "cql2-text"):
        raise QueryError(f"filter-lang {lang!r}: expected cql2-text or cql2-json")
    try:
        import cql2

        return cql2.Expr(text).to_json()
    except Exception as e:  # noqa: BLE001 -- cql2 raises plain Exceptions
        raise QueryError(f"invalid CQL2 filter {_show(value)}: {e}") from None


def and_filters(*exprs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The CQL2-JSON conjunction of the expressions given (``None`` ones left out)."""
    args = [e for e in exprs if e is not None]
    if not args:
        return None
    return args[0] if len(args) == 1 else {"op": "and", "args": args}
