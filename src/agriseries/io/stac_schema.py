"""Offline validation of STAC documents against the core schema and every extension they
declare (``agriseries store check``).

The schemas come with the software, nothing is fetched: the STAC core schemas (item,
collection, catalog, and the GeoJSON ones they use) from pystac's own copy, the extension
schemas agriseries writes from ``agriseries/io/stac_schemas`` (stac-extensions, Apache-2.0,
see its SOURCE.txt) or from another folder of the same layout (``schemas=``, or the
environment variable ``AGRISERIES_STAC_SCHEMAS``), the PROJJSON schema the projection
extension refers to from pyproj. A reference to anything else is reported (it cannot be
checked offline), not fetched. This is the one validator of the package: the store checks
every document with it before writing it, and ``agriseries store check`` checks whole stores.

:func:`stac_errors` returns one line per error (``"eo: properties/eo:cloud_cover: -3 is less
than the minimum of 0"``), the empty list for a valid document. The validators are built once
per schema and process.
"""

from __future__ import annotations

import json
import os
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The extension schemas shipped with agriseries (``<ext>/<version>/schema.json``).
SCHEMAS = Path(__file__).parent / "stac_schemas"
#: The environment variable naming another folder of extension schemas (same layout).
SCHEMAS_ENV = "AGRISERIES_STAC_SCHEMAS"

_EXTENSION = re.compile(r"https://stac-extensions\.github\.io/([^/]+)/(v[^/]+)/schema\.json$")
_CORE = {"Feature": "item-spec/json-schema/item.json",
         "Collection": "collection-spec/json-schema/collection.json",
         "Catalog": "catalog-spec/json-schema/catalog.json"}
_lock = threading.Lock()


def schema_folder(schemas: str | os.PathLike | None = None) -> Path:
    """The folder of extension schemas in use: ``schemas``, else ``AGRISERIES_STAC_SCHEMAS``,
    else the one shipped with agriseries."""
    return Path(schemas or os.environ.get(SCHEMAS_ENV) or SCHEMAS)


def extension_schema(uri: str, schemas: str | os.PathLike | None = None) -> Path | None:
    """The local file of an extension schema URI, or ``None`` when the folder has none."""
    m = _EXTENSION.match(uri)
    if not m:
        return None
    path = schema_folder(schemas) / m.group(1) / m.group(2) / "schema.json"
    return path if path.is_file() else None


def shipped_extensions(schemas: str | os.PathLike | None = None) -> list[str]:
    """``["classification/v1.1.0", "eo/v1.1.0", ...]``: the extension schemas of the folder."""
    return sorted(f"{p.parent.parent.name}/{p.parent.name}"
                  for p in schema_folder(schemas).glob("*/*/schema.json"))


@lru_cache(maxsize=4)
def _registry(folder: Path):
    """A registry holding every schema that may be referred to, crawled once (a registry
    that retrieves on demand crawls again at each lookup: 10 times slower)."""
    import pyproj
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    core = get_local_schema_cache()  # uri -> schema, pystac's offline copies
    resources = [(uri, Resource.from_contents(schema)) for uri, schema in core.items()]
    for name in shipped_extensions(folder):
        uri = f"https://stac-extensions.github.io/{name}/schema.json"
        resources.append((uri, Resource.from_contents(
            json.loads((folder / name / "schema.json").read_text()))))
    projjson = Path(pyproj.datadir.get_data_dir()) / "projjson.schema.json"
    if projjson.is_file():
        contents = json.loads(projjson.read_text())
        resources.append((contents.get("$id", "https://proj.org/schemas/v0.7/projjson.schema.json"),
                          Resource.from_contents(contents)))

    def retrieve(uri: str):
        if uri.startswith("https://proj.org/schemas/") and projjson.is_file():
            return Resource.from_contents(json.loads(projjson.read_text()))
        raise NoSuchResource(uri)  # offline: nothing else is fetched

    return Registry(retrieve=retrieve).with_resources(resources).crawl(), core


@lru_cache(maxsize=64)
def _validator(uri: str, folder: Path):
    import jsonschema

    registry, _ = _registry(folder)
    schema = registry.get_or_retrieve(uri).value.contents
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return cls(schema, registry=registry)


def _innermost(error):
    """The deepest error of a oneOf / anyOf failure: the one naming the field at fault."""
    best = error
    for sub in error.context or ():
        cand = _innermost(sub)
        if len(cand.absolute_path) > len(best.absolute_path):
            best = cand
    return best


def _what(error) -> str:
    """An error's message; for alternatives none of which holds (``anyOf``, ``oneOf``: the
    item's datetime or its start and end), what each alternative lacked, not the whole
    instance."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        alternatives = list(dict.fromkeys(_what(_innermost(c)) for c in error.context))
        return "expected one of: " + " | ".join(alternatives[:4])
    return error.message


def stac_errors(doc: dict[str, Any], limit: int = 20,
                schemas: str | os.PathLike | None = None) -> list[str]:
    """The schema errors of a STAC item, collection or catalogue (at most ``limit``), each
    ``"<schema>: <where>: <what>"``; ``[]`` when it is valid against the core schema of its
    ``stac_version`` and every schema in its ``stac_extensions``. The extension schemas come
    from :func:`schema_folder` (``schemas``); a declared extension it has no schema of is an
    error."""
    from referencing.exceptions import Unresolvable

    if not isinstance(doc, dict):
        return ["core: not a JSON object"]
    kind = doc.get("type")
    if kind not in _CORE:
        return [f"core: type {kind!r}: expected a STAC Item (Feature), Collection or Catalog"]
    folder = schema_folder(schemas)
    _, core = _registry(folder)
    version = doc.get("stac_version")
    core_uri = f"https://schemas.stacspec.org/v{version}/{_CORE[kind]}"
    if core_uri not in core:
        known = sorted({u.split("/")[3] for u in core if u.startswith("https://schemas.stacspec")})
        return [f"core: stac_version {version!r}: no schema for it (expected {', '.join(known)})"]
    out: list[str] = []
    extensions = doc.get("stac_extensions") or []
    if not isinstance(extensions, list):
        extensions = []
    for uri in [core_uri, *extensions]:
        m = _EXTENSION.match(str(uri))
        name = "core" if uri == core_uri else (m.group(1) if m else "extension")
        if uri != core_uri and extension_schema(str(uri), folder) is None:
            out.append(f"{name}: extension {uri}: no local schema for it in {folder}, so it "
                       f"cannot be checked offline (there: {', '.join(shipped_extensions(folder))})")
            continue
        try:
            with _lock:  # referencing's registry is not documented as thread-safe
                validator = _validator(uri, folder)
                errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        except Unresolvable as exc:
            out.append(f"{name}: a reference of the schema cannot be resolved offline ({exc})")
            continue
        for top in errors:
            e = _innermost(top)
            where = "/".join(str(p) for p in e.absolute_path) or "(document)"
            out.append(f"{name}: {where}: {_what(e)[:300]}")
            if len(out) >= limit:
                return out
    return out


__all__ = ["SCHEMAS", "SCHEMAS_ENV", "extension_schema", "schema_folder", "shipped_extensions",
           "stac_errors"]
