"""Typed parameters: frozen dataclasses to and from JSON, and command-line options from them.

Parameters are frozen dataclasses inside agriseries (pydantic models only at the
boundaries: site files, server settings). The production stores a job's parameters as JSON
in its job store, so each stage's parameter class must come back from JSON unchanged:
:func:`to_json` / :func:`from_json` do it for any such dataclass (nested dataclasses,
tuples, mappings, optional values, paths, dates, enums), driven by the field types, and
:class:`JsonParams` adds them as methods. ``from_json(C, to_json(x)) == x``.

A parameter's default and its one-line description are written once, on the dataclass
(the description in the class docstring's ``Attributes`` section, numpydoc style); the
command line takes both from there with :func:`click_options`, and builds the object back
with :func:`from_options`, so no default is written twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigurationError

__all__ = ["JsonParams", "click_options", "default_of", "field_help", "from_json",
           "from_options", "to_json"]

T = TypeVar("T")

#: Field metadata key: ``{"json": "omit_none"}`` leaves the field out of the JSON when it is
#: ``None`` (job parameters whose absence is meaningful).
OMIT_NONE = "omit_none"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalars
    return value


def to_json(obj: Any) -> dict[str, Any]:
    """A dataclass instance as a JSON-serialisable dict (field by field, in field order)."""
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise ConfigurationError(f"{obj!r}: expected a dataclass instance")
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and f.metadata.get("json") == OMIT_NONE:
            continue
        out[f.name] = _jsonable(value)
    return out


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # noqa: BLE001 -- a forward reference that does not resolve
        raise ConfigurationError(f"{cls.__name__}: cannot read its field types ({e})") from e


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as type ``tp``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigurationError(f"{where}: null where {tp} was expected")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except (ConfigurationError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise ConfigurationError(f"{where}: {value!r} is none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigurationError(f"{where}: {value!r}: expected one of {args}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"{where}: {value!r}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigurationError(f"{where}: {value!r}: expected {len(args)} values")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in
                     enumerate(zip(args or [Any] * len(value), value, strict=True)))
    if origin in (list, Iterable, typing.Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(f"{where}: {value!r}: expected a list")
        a = args[0] if args else Any
        return [_convert(a, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{where}: {value!r}: expected a mapping")
        kt, vt = args if args else (Any, Any)
        return {_convert(kt, k, where): _convert(vt, v, f"{where}[{k!r}]")
                for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value, where=where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where}: {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigurationError(f"{where}: {value!r}: expected an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{where}: {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigurationError(f"{where}: {value!r}: expected a string")
        return value
    if tp is Path:
        return Path(value)
    if tp is dt.datetime:
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if tp is dt.date:
        return dt.date.fromisoformat(value) if isinstance(value, str) else value
    return value


def from_json(cls: type[T], data: Mapping[str, Any] | None, *, where: str | None = None) -> T:
    """An instance of the dataclass ``cls`` from the dict :func:`to_json` wrote.

    Missing fields take their defaults; unknown fields are refused.

    Raises
    ------
    ConfigurationError
        A field is unknown, missing without a default, or of the wrong type (the message
        names it).
    """
    where = where or cls.__name__
    data = dict(data or {})
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigurationError(f"{where}: unknown parameter(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(names))})")
    kwargs = {k: _convert(hints.get(k, Any), v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigurationError(f"{where}: {e}") from e


class JsonParams:
    """Mixin for frozen parameter dataclasses: :meth:`to_json` and :meth:`from_json`."""

    def to_json(self) -> dict[str, Any]:
        """The parameters as a JSON-serialisable dict (:func:`to_json`)."""
        return to_json(self)

    @classmethod
    def from_json(cls: type[T], data: Mapping[str, Any] | None) -> T:
        """The parameters from the dict :meth:`to_json` wrote (:func:`from_json`)."""
        return from_json(cls, data)


def default_of(cls: type, name: str) -> Any:
    """The default value of a dataclass field (``default_of(WaspParams, "half_period")``)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ConfigurationError(f"{cls.__name__}.{name} has no default")
    raise ConfigurationError(f"{cls.__name__} has no field {name!r}")


_SECTION = re.compile(r"^\s*(Attributes|Parameters)\s*\n\s*-{3,}\s*$", re.M)


def field_help(cls: type) -> dict[str, str]:
    """The one-line description of each field, from the class docstring's ``Attributes``
    (or ``Parameters``) section; ``a, b`` entries describe both fields."""
    doc = cls.__doc__ or ""
    m = _SECTION.search(doc)
    if not m:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    lines: list[str] = []
    body = doc[m.end():].splitlines()
    indent = None
    for line in body:
        if not line.strip():
            continue
        lead = len(line) - len(line.lstrip())
        if indent is None:
            indent = lead
        if lead < indent or re.match(r"^\s*-{3,}\s*$", line):
            break
        if lead == indent:
            if names:
                for n in names:
                    out[n] = " ".join(lines)
            names = [n.strip() for n in line.split(":")[0].split(",")]
            lines = []
        else:
            lines.append(line.strip())
    for n in names:
        out[n] = " ".join(lines)
    # a trailing section header line captured as names (e.g. "Raises") is dropped
    return {k: v for k, v in out.items() if v}


def _scalar(tp: Any) -> Any:
    """The click type of a field type, or ``None`` when it has no simple option form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _scalar(rest[0]) if len(rest) == 1 else None
    if tp in (int, float, str, bool):
        return tp
    if origin is typing.Literal:
        return tp
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str):
        return tp
    return None


def click_options(cls: type, names: Iterable[str] | None = None, *,
                  exclude: Iterable[str] = (), prefix: str = "",
                  help_overrides: Mapping[str, str] | None = None) -> Callable:
    """A decorator adding one ``click`` option per field of ``cls`` (or of ``names``).

    The option is ``--<prefix><field-name>`` with the field's default and its docstring
    description; a boolean field is a ``--x/--no-x`` flag; a ``tuple[int, ...]`` field
    takes comma-separated values. The command receives the values under
    ``<prefix><field_name>``; :func:`from_options` builds the object from them.
    """
    import click

    hints = _hints(cls)
    helps = {**field_help(cls), **(help_overrides or {})}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    chosen = list(names) if names is not None else [n for n in fields if n not in set(exclude)]
    decorators = []
    for name in chosen:
        tp = hints[name]
        kind = _scalar(tp)
        if kind is None:
            raise ConfigurationError(f"{cls.__name__}.{name}: no command-line form for {tp}")
        default = default_of(cls, name)
        flag = f"--{prefix}{name}".replace("_", "-")
        dest = f"{prefix}{name}".replace("-", "_")
        text = helps.get(name, "")
        if kind is bool:
            neg = f"--{prefix}no-{name}".replace("_", "-")
            decorators.append(click.option(f"{flag}/{neg}", dest, default=default,
                                           show_default=True, help=text))
        elif typing.get_origin(kind) is tuple:
            shown = ",".join(str(v) for v in default) if default is not None else None
            decorators.append(click.option(flag, dest, default=shown, show_default=True,
                                           help=f"{text} (comma-separated)"))
        elif typing.get_origin(kind) is typing.Literal:
            decorators.append(click.option(flag, dest, default=default, show_default=True,
                                           type=click.Choice([str(a) for a in
                                                              typing.get_args(kind)]),
                                           help=text))
        else:
            decorators.append(click.option(flag, dest, default=default, type=kind,
                                           show_default=default is not None, help=text))

    def decorate(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return decorate


def from_options(cls: type[T], options: Mapping[str, Any], *, prefix: str = "",
                 base: T | None = None, **extra: Any) -> T:
    """The ``cls`` object from the values :func:`click_options` gave the command (fields not
    among the options keep ``base``'s value, or their default); ``extra`` sets other fields.

    Raises
    ------
    ConfigurationError
        A value is not of the field's type (``--crop-values 1,x``).
    """
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if key not in options:
            continue
        v = options[key]
        kind = _scalar(hints[f.name])
        if kind is not None and typing.get_origin(kind) is tuple and isinstance(v, str):
            item = typing.get_args(kind)[0]
            try:
                v = tuple(item(x.strip()) for x in v.split(",") if x.strip())
            except ValueError as e:
                raise ConfigurationError(
                    f"--{key.replace('_', '-')} {v!r}: expected comma-separated "
                    f"{item.__name__} values") from e
        values[f.name] = v
    values.update(extra)
    if base is not None:
        return dataclasses.replace(base, **values)
    return cls(**values)
