"""Offline STAC validation for the tests: core schema + every declared extension.

Independent of agriseries' own checks: jsonschema with the STAC core schemas pystac ships,
the extension schemas of ``tests/data/stac_schemas`` (see its SOURCE.txt) and the PROJJSON
schema of pyproj. Any other remote reference is an error (the tests run offline).

    from stac_offline import assert_valid_stac, store_stac_files
    assert_valid_stac(*store_stac_files(store.root))
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas"
_EXT = re.compile(r"https://stac-extensions\.github\.io/([^/]+)/(v[^/]+)/schema\.json$")
_CORE = {"Feature": "item-spec/json-schema/item.json",
         "Collection": "collection-spec/json-schema/collection.json",
         "Catalog": "catalog-spec/json-schema/catalog.json"}


@lru_cache(maxsize=1)
def _registry():
    import pyproj
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource

    cache = get_local_schema_cache()
    projjson = json.loads((Path(pyproj.datadir.get_data_dir()) / "projjson.schema.json").read_text())

    def retrieve(uri: str):
        m = _EXT.match(uri)
        if m:
            path = SCHEMAS / m.group(1) / m.group(2) / "schema.json"
            if not path.is_file():
                raise NoSuchResource(uri)
            return Resource.from_contents(json.loads(path.read_text()))
        if uri.startswith("https://proj.org/schemas/"):
            return Resource.from_contents(projjson)
        if uri in cache:
            return Resource.from_contents(cache[uri])
        raise NoSuchResource(uri)

    return Registry(retrieve=retrieve), cache


def stac_errors(doc: dict, name: str = "") -> list[str]:
    """Every schema error of one STAC document (item, collection, catalogue), as text."""
    import jsonschema

    registry, cache = _registry()
    kind = doc.get("type")
    if kind not in _CORE:
        return [f"{name}: type {kind!r} is not a STAC Item, Collection or Catalog"]
    version = doc.get("stac_version")
    core_uri = f"https://schemas.stacspec.org/v{version}/{_CORE[kind]}"
    if core_uri not in cache:
        return [f"{name}: no local core schema for STAC {version}"]
    out = []
    uris = [core_uri] + list(doc.get("stac_extensions") or [])
    for uri in uris:
        if uri != core_uri and not _EXT.match(uri):
            out.append(f"{name}: extension {uri} is not a stac-extensions schema")
            continue
        if uri != core_uri:
            m = _EXT.match(uri)
            if not (SCHEMAS / m.group(1) / m.group(2) / "schema.json").is_file():
                out.append(f"{name}: no local schema for {uri} (add it to tests/data/stac_schemas)")
                continue
        schema = registry.get_or_retrieve(uri).value.contents
        validator = jsonschema.Draft7Validator(schema, registry=registry)
        for top in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
            e = _deepest(top)
            where = "/".join(str(p) for p in e.absolute_path)
            out.append(f"{name}: {uri.rsplit('/', 3)[-3] if uri != core_uri else 'core'}: "
                       f"{where}: {e.message[:300]}")
    return out


def _deepest(error):
    """The innermost error of a oneOf/anyOf failure (the one that names the bad field)."""
    best = error
    for sub in error.context or ():
        cand = _deepest(sub)
        if len(cand.absolute_path) > len(best.absolute_path):
            best = cand
    return best


def assert_valid_stac(*docs) -> int:
    """Validate files (paths) or dicts; raise AssertionError listing the errors. Returns the count."""
    errors: list[str] = []
    for d in docs:
        if isinstance(d, (str, Path)):
            name, doc = Path(d).name, json.loads(Path(d).read_text())
        else:
            doc = d if isinstance(d, dict) else d.to_dict()
            name = doc.get("id", "?")
        errors += stac_errors(doc, name)
    assert not errors, f"{len(errors)} STAC schema errors:\n" + "\n".join(errors[:20])
    return len(docs)


def store_stac_files(root: str | Path) -> list[Path]:
    """Every STAC JSON file of a product store (catalogue, collections, items), not the
    temporary area."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root).parts
        if rel[0].startswith(".") or rel[0] == "state":
            continue
        if re.fullmatch(r"catalog(-\d\d)?\.json|collection\.json", p.name) \
                or p.stem == p.parent.name:
            out.append(p)
    return out
