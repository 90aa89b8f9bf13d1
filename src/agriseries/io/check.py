"""Checking and repairing a product store (``agriseries store check|repair|remove``).

:func:`check_store` walks the store and returns a :class:`CheckReport`: one
:class:`Problem` per thing found wrong, each with what :func:`repair_store` does about it:

============== ============================================================ ====================
kind           what                                                         repair
============== ============================================================ ====================
corrupt-item   an item file that cannot be read (truncated JSON, no          quarantine
               datetime, not the item of its folder)
invalid-item   an item that reads but is not valid STAC: the core schema or a    quarantine
               schema of an extension it declares (checked offline)
no-item        a product folder without its item file                        quarantine
missing-asset  a file the item lists is not in the product folder            quarantine
bad-cog        a COG that does not open, is truncated (its last block does   quarantine
               not read), or whose size / type differs from the item
stray          a folder under a level that is not a product folder           (reported only)
catalogue      ``catalog.json`` or a ``collection.json`` missing, unreadable, rebuild the catalogue
               not valid STAC or not listing exactly the readable items
tmp            what a crashed writer left in ``STORE/.tmp``                  delete
orphan-row     a production catalogue row whose product is not in the store  remove the row
missing-row    a product in the store that the production catalogue lacks     add the row
============== ============================================================ ====================

Quarantined products are moved into ``STORE/.quarantine/`` with a note saying why; nothing
is deleted but temporary leftovers. A later ingest or production run makes them again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from ..core.errors import CorruptItemError, StoreError
from ..core.ids import Level, ProductId
from .catalog import listed_item_ids
from .store import ProductStore, read_item

#: What :func:`repair_store` does for each kind of problem.
REPAIRS = {
    "corrupt-item": "quarantine", "invalid-item": "quarantine", "no-item": "quarantine",
    "missing-asset": "quarantine",
    "bad-cog": "quarantine", "stray": "none", "catalogue": "rebuild catalogue", "tmp": "delete",
    "orphan-row": "remove row", "missing-row": "add row",
}


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong in the store.

    Attributes
    ----------
    kind
        A key of :data:`REPAIRS`.
    path
        The file or folder at fault.
    message
        What is wrong and what was expected.
    product
        The product concerned, when known.
    """

    kind: str
    path: str
    message: str
    product: str | None = None

    @property
    def repair(self) -> str:
        """What :func:`repair_store` does about it."""
        return REPAIRS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "repair": self.repair}


@dataclasses.dataclass
class CheckReport:
    """What :func:`check_store` found."""

    store: str
    products: int = 0
    assets: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)
    #: Products flagged ``agriseries:incomplete`` (stored without some layers: not a fault of
    #: the store, completed by an ingest that brings what they lack).
    incomplete: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "products": self.products, "assets": self.assets,
                "ok": self.ok, "problems": [p.to_dict() for p in self.problems],
                "incomplete": list(self.incomplete)}


def check_store(store: ProductStore, *, deep: bool = False, catalogue=None,
                tmp_age_s: float = 86400.0, schemas: bool = True,
                on_product: Callable[[Path], None] | None = None) -> CheckReport:
    """Check every product of the store.

    Parameters
    ----------
    store
        The store.
    deep
        Read every pixel of every COG (default: the metadata and the last block of each band,
        which a truncated file lacks).
    catalogue
        A production :class:`~agriseries.production.catalogue.ProductCatalogue` whose rows
        are compared with the products on disk.
    tmp_age_s
        Temporary entries older than this are leftovers of a crashed writer.
    schemas
        Validate every item, the collections and the catalogue against the STAC core schema
        and the schemas of the extensions they declare (offline:
        :mod:`agriseries.io.stac_schema`; about 20 ms an item).
    on_product
        Called with each item file checked (progress).
    """
    root = store.root
    if not root.exists():
        raise StoreError(f"{root}: no product store there (no such folder)")
    if not root.is_dir():
        raise StoreError(f"{root}: the product store path is a file, not a folder")
    report = CheckReport(str(root))
    readable: dict[str, Path] = {}
    for problem in _stray_folders(store):
        report.problems.append(problem)
    for path in store.item_files():
        if on_product:
            on_product(path)
        report.products += 1
        try:
            item = read_item(path)
        except CorruptItemError as e:
            report.problems.append(Problem("corrupt-item", str(path), e.problem, path.stem))
            continue
        readable[item.id] = path
        if schemas:
            problem = _schema_problem(path, "invalid-item", item.id)
            if problem is not None:
                report.problems.append(problem)
        if item.properties.get("agriseries:incomplete"):
            report.incomplete.append(item.id)
        _check_assets(path, item, deep, report)
    report.problems += _check_catalog(store, readable)
    if schemas:
        for path in [store.root / "catalog.json",
                     *sorted(store.root.glob("L*/collection.json"))]:
            problem = _schema_problem(path, "catalogue") if path.is_file() else None
            if problem is not None and not any(p.kind == "catalogue" and p.path == str(path)
                                               for p in report.problems):
                report.problems.append(problem)
    report.problems += _check_tmp(store, tmp_age_s)
    if catalogue is not None:
        report.problems += _check_rows(store, catalogue)
    return report


def _schema_problem(path: Path, kind: str, product: str | None = None) -> Problem | None:
    """A problem of ``kind`` when the STAC document at ``path`` is not valid against its
    core schema and the schemas of its extensions, else ``None``."""
    from .stac_schema import stac_errors

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return Problem(kind, str(path), f"unreadable ({e})", product)
    errors = stac_errors(doc, limit=4)
    if not errors:
        return None
    more = "; ..." if len(errors) > 3 else ""
    return Problem(kind, str(path), "not valid STAC (core schema and declared extensions): "
                   + "; ".join(errors[:3]) + more, product)


def _stray_folders(store: ProductStore) -> list[Problem]:
    """Product folders without their item, and folders that are no product folder."""
    out = []
    levels = {lv.value for lv in Level}
    for lv_dir in sorted(p for p in store.root.iterdir() if p.is_dir() and p.name in levels):
        for folder in sorted(lv_dir.glob("*/*/*")):
            if not folder.is_dir():
                continue
            try:
                pid = ProductId.parse(folder.name)
            except ValueError:
                out.append(Problem("stray", str(folder), "not a product folder (its name is not a "
                                   "product id)"))
                continue
            if store.product_dir(pid) != folder:
                out.append(Problem("stray", str(folder), f"product {pid} is in the wrong folder "
                                   f"(expected {store.product_dir(pid)})", str(pid)))
            elif not (folder / f"{folder.name}.json").is_file():
                out.append(Problem("no-item", str(folder), "product folder without its STAC item "
                                   f"{folder.name}.json", str(pid)))
    return out


def _check_assets(item_path: Path, item, deep: bool, report: CheckReport) -> bool:
    """Append the problems of the item's files; ``True`` if there was one."""
    bad = False
    for key, asset in item.assets.items():
        report.assets += 1
        href = asset.href
        path = Path(href) if Path(href).is_absolute() else item_path.parent / href
        if not path.is_file():
            report.problems.append(Problem("missing-asset", str(path),
                                           f"asset {key!r} of the item is not on disk", item.id))
            bad = True
            continue
        media = asset.media_type or ""
        if media.startswith("image/tiff") or path.suffix.lower() in (".tif", ".tiff"):
            msg = _check_cog(path, asset, deep)
            if msg:
                report.problems.append(Problem("bad-cog", str(path), msg, item.id))
                bad = True
        elif path.suffix.lower() == ".json":
            try:
                json.loads(path.read_text())
            except (OSError, ValueError) as e:
                report.problems.append(Problem("bad-cog", str(path), f"not valid JSON ({e})",
                                               item.id))
                bad = True
    return bad


def _check_cog(path: Path, asset, deep: bool) -> str | None:
    """What is wrong with a COG, or ``None``."""
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.Env(CPL_LOG="/dev/null"), rasterio.open(path) as src:
            shape = asset.extra_fields.get("proj:shape")
            if shape and tuple(shape) != (src.height, src.width):
                return (f"{src.height} x {src.width} pixels, the item says "
                        f"{shape[0]} x {shape[1]}")
            rb = asset.extra_fields.get("raster:bands") or []
            if rb and rb[0].get("data_type") and rb[0]["data_type"] != src.dtypes[0]:
                return f"data type {src.dtypes[0]}, the item says {rb[0]['data_type']}"
            if rb and len(rb) != src.count and not asset.extra_fields.get("agriseries:bands"):
                return f"{src.count} band(s), the item lists {len(rb)}"
            layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
            if max(src.height, src.width) > 512 and (not src.profile.get("tiled")
                                                     or not src.overviews(1)):
                return "not a cloud-optimised GeoTIFF (not tiled or without overviews)"
            if layout not in (None, "COG"):
                return f"not a cloud-optimised GeoTIFF (layout {layout})"
            if deep:
                for _, win in src.block_windows(1):
                    src.read(window=win)
                for ov in src.overviews(1):
                    src.read(out_shape=(src.count, max(1, src.height // ov),
                                        max(1, src.width // ov)))
            else:
                bh, bw = src.block_shapes[0]
                row, col = (src.height - 1) // bh * bh, (src.width - 1) // bw * bw
                src.read(window=Window(col, row, min(bw, src.width - col),
                                       min(bh, src.height - row)))
    except rasterio.errors.RasterioError as e:
        cause = e.__cause__ or e.__context__
        text = str(cause if cause is not None and str(cause) else e).split("\n")[0]
        if path.name in text:
            text = text.split(path.name, 1)[1].lstrip(" :,")
        size = path.stat().st_size
        if isinstance(e, rasterio.errors.RasterioIOError) and "Read failed" in str(e):
            return f"truncated or damaged COG: a block does not read ({text}; {size} bytes)"
        return f"not a readable GeoTIFF ({text}; {size} bytes)"
    return None


def _check_catalog(store: ProductStore, readable: dict[str, Path]) -> list[Problem]:
    """``catalog.json`` and the collections list exactly the readable items."""
    root = store.root
    cat_path = root / "catalog.json"
    if not readable and not cat_path.exists():
        return []
    if not cat_path.is_file():
        return [Problem("catalogue", str(cat_path), "the store has products but no catalog.json")]
    try:
        cat = json.loads(cat_path.read_text())
        children = {l["href"] for l in cat.get("links", []) if l.get("rel") == "child"}
    except (OSError, ValueError, TypeError, KeyError) as e:
        return [Problem("catalogue", str(cat_path), f"unreadable catalogue ({e})")]
    out = []
    by_level: dict[str, set[str]] = {}
    for pid, path in readable.items():
        by_level.setdefault(path.relative_to(root).parts[0], set()).add(pid)
    for lv, ids in sorted(by_level.items()):
        col_path = root / lv / "collection.json"
        if f"./{lv}/collection.json" not in children:
            out.append(Problem("catalogue", str(cat_path), f"does not list the {lv} collection"))
        try:
            listed = listed_item_ids(col_path)  # through the tile, year and month catalogues
        except (OSError, ValueError, TypeError, KeyError) as e:
            out.append(Problem("catalogue", str(col_path), f"missing or unreadable collection ({e})"))
            continue
        if listed != ids:
            extra, lacking = sorted(listed - ids), sorted(ids - listed)
            parts = []
            if lacking:
                parts.append(f"{len(lacking)} product(s) not listed (first {lacking[0]})")
            if extra:
                parts.append(f"{len(extra)} listed product(s) missing or unreadable "
                             f"(first {extra[0]})")
            out.append(Problem("catalogue", str(col_path), "; ".join(parts)))
    for href in sorted(children):
        lv = href.split("/")[1] if href.count("/") >= 2 else href
        if lv not in by_level:
            out.append(Problem("catalogue", str(cat_path), f"lists the {lv} collection, which "
                               "has no readable product"))
    return out


def _check_tmp(store: ProductStore, age_s: float) -> list[Problem]:
    import time

    tmp = store.temp_dir
    if not tmp.is_dir():
        return []
    now = time.time()
    return [Problem("tmp", str(p), f"left by an interrupted write "
                    f"{(now - p.lstat().st_mtime) / 3600:.0f} h ago")
            for p in sorted(tmp.iterdir()) if now - p.lstat().st_mtime >= age_s]


def _check_rows(store: ProductStore, catalogue) -> list[Problem]:
    """The production catalogue's rows against the products on disk."""
    on_disk = {p.stem: p for p in store.item_files()}
    rows = {r.product_id: r for r in catalogue.products()}
    out = [Problem("orphan-row", str(store.item_path(pid)) if _parses(pid) else pid,
                   "the production catalogue lists a product that is not in the store", pid)
           for pid in sorted(set(rows) - set(on_disk))]
    out += [Problem("missing-row", str(on_disk[pid]), "product not in the production catalogue",
                    pid) for pid in sorted(set(on_disk) - set(rows))]
    return out


def _parses(pid: str) -> bool:
    try:
        ProductId.parse(pid)
        return True
    except ValueError:
        return False


@dataclasses.dataclass
class RepairReport:
    """What :func:`repair_store` did: one entry per action."""

    store: str
    actions: list[dict[str, str]] = dataclasses.field(default_factory=list)
    errors: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def repair_store(store: ProductStore, report: CheckReport, *, catalogue=None) -> RepairReport:
    """Repair what :func:`check_store` found (see the module's table); a problem that cannot
    be repaired is listed in :attr:`RepairReport.errors` and the rest is still repaired."""
    out = RepairReport(report.store)
    folders: dict[str, Problem] = {}
    for p in report.problems:
        if p.repair == "quarantine":
            folder = Path(p.path) if p.kind == "no-item" else (
                store.product_dir(p.product) if p.product and _parses(p.product)
                else Path(p.path).parent)
            folders.setdefault(str(folder), p)
    for folder, p in folders.items():
        try:
            dest = store.quarantine(Path(folder), f"{p.kind}: {p.path}: {p.message}")
            out.actions.append({"action": "quarantine", "path": folder, "to": str(dest),
                                "why": f"{p.kind}: {p.message}"})
        except (OSError, StoreError) as e:
            out.errors.append({"path": folder, "error": str(e)})
    for p in report.problems:
        if p.kind != "tmp":
            continue
        try:
            import shutil

            tmp = Path(p.path)
            shutil.rmtree(tmp) if tmp.is_dir() and not tmp.is_symlink() else tmp.unlink()
            out.actions.append({"action": "delete", "path": p.path, "why": p.message})
        except FileNotFoundError:
            continue
        except OSError as e:
            out.errors.append({"path": p.path, "error": str(e)})
    if catalogue is not None and any(p.kind in ("orphan-row", "missing-row") or
                                     p.repair == "quarantine" for p in report.problems):
        from ..production.catalogue import rescan

        added, removed = rescan(catalogue, store)
        out.actions.append({"action": "rescan catalogue", "path": str(store.root),
                            "why": f"{added} row(s) added, {removed} removed"})
    if any(p.kind == "catalogue" or p.repair == "quarantine" for p in report.problems):
        try:
            path = store.update_catalog(force=True)
            out.actions.append({"action": "rebuild catalogue", "path": str(path),
                                "why": "catalog.json and collections rewritten from the items"})
        except OSError as e:
            out.errors.append({"path": str(store.root / "catalog.json"), "error": str(e)})
    return out


__all__ = ["CheckReport", "Problem", "REPAIRS", "RepairReport", "check_store", "repair_store"]
