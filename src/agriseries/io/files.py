"""What every reader needs from the files of a product: folder-or-zip access, XML, raster headers.

:class:`ProductFiles`
    The files of one product by path relative to its root, whether the product is a
    folder or a folder inside a ``.zip`` archive: listing, case-insensitive lookup, a
    path GDAL can open (``/vsizip/...`` inside an archive), the bytes of a file, and
    :meth:`ProductFiles.xml` (an XML file parsed with its namespaces stripped).
:func:`zip_members`
    The member list of a zip archive, or a :class:`CorruptProductError` saying the
    archive is truncated (no readable table of contents) when it is.
:func:`xml_text`, :func:`xml_float`
    One element's text or number, required or optional, with errors naming the file
    and the element.
:func:`raster_info`, :func:`file_geobox`
    The header of a raster file (band count, data type, grid, no data, band
    descriptions) and its grid, with one clear error when the file is missing,
    truncated, not a raster, or not georeferenced.

Every error names the file at fault and says what was expected (:mod:`agriseries.core.errors`).
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import rasterio
from lxml import etree
from odc.geo.geobox import GeoBox
from rasterio.errors import RasterioIOError

from ..core.errors import CorruptProductError, MissingBandError, UnknownProductError

__all__ = ["ProductFiles", "RasterInfo", "file_geobox", "raster_info", "xml_float", "xml_text",
           "zip_members"]

#: The first bytes of a zip archive (a local file header).
ZIP_MAGIC = b"PK\x03\x04"


# --------------------------------------------------------------------------------------
# zip archives


def looks_like_zip(path: str | os.PathLike) -> bool:
    """True for a file named ``*.zip`` or starting with a zip local file header. Never raises."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix.lower() == ".zip":
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == ZIP_MAGIC
    except OSError:
        return False


def zip_members(path: str | os.PathLike) -> list[str]:
    """The names of the files in a zip archive (folders left out).

    Raises
    ------
    CorruptProductError
        The archive has no readable table of contents: truncated (an interrupted
        download keeps the start of the archive and loses its central directory at the
        end) or not a zip at all.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with zipfile.ZipFile(p) as zf:
            return [n for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile as exc:
        with open(p, "rb") as f:
            head = f.read(4)
        if head == ZIP_MAGIC:
            raise CorruptProductError(
                p, f"truncated zip archive ({size:,} bytes): it starts like a zip but its table "
                f"of contents (at the end of the file) is missing or damaged ({exc}); expected a "
                "complete archive: download it again") from exc
        raise CorruptProductError(
            p, f"not a zip archive ({exc}); expected a .zip of a product") from exc
    except OSError as exc:
        raise CorruptProductError(p, f"cannot read the zip archive: {exc}") from exc


# --------------------------------------------------------------------------------------
# the files of a product


@dataclass(frozen=True)
class ProductFiles:
    """The files of one product, in a folder or in a folder inside a zip archive.

    Build it with :meth:`folder` or :meth:`archive`. ``names`` are the paths of every
    file relative to the product's root folder, with ``/`` separators.
    """

    #: What the caller gave (folder, zip, or a metadata file inside the folder).
    given: str
    #: The product folder on disk, or the zip archive.
    root: Path
    #: Inside a zip: the folder holding the product, with a trailing ``/`` (``""`` at the top).
    prefix: str
    #: Every file, relative to the product folder.
    names: tuple[str, ...]
    #: Whether ``root`` is a zip archive.
    is_zip: bool = False

    @classmethod
    def folder(cls, path: str | os.PathLike, given: str | os.PathLike | None = None) -> ProductFiles:
        """The files below the folder ``path`` (recursively)."""
        root = Path(path).resolve()
        names = []
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                names.append(Path(dirpath, f).relative_to(root).as_posix())
        return cls(str(given if given is not None else path), root, "", tuple(sorted(names)))

    @classmethod
    def archive(cls, path: str | os.PathLike, find_prefix: Callable[[Sequence[str]], str | None],
                expected: str) -> ProductFiles:
        """The files of the product inside the zip archive ``path``.

        Parameters
        ----------
        find_prefix
            Given the archive's member names, the folder holding the product (``""``
            for the top, else with a trailing ``/``), or None when the archive holds no
            such product.
        expected
            What the archive should hold, for the error when ``find_prefix`` finds nothing.

        Raises
        ------
        CorruptProductError
            Truncated or unreadable archive (:func:`zip_members`).
        UnknownProductError
            The archive holds no product of this kind.
        """
        members = zip_members(path)
        prefix = find_prefix(members)
        if prefix is None:
            shown = ", ".join(members[:3]) + (" ..." if len(members) > 3 else "")
            raise UnknownProductError(path, f"the zip archive holds no {expected} "
                                            f"({len(members)} file(s): {shown or 'none'})")
        names = tuple(sorted(m[len(prefix):] for m in members if m.startswith(prefix)))
        return cls(str(path), Path(path).resolve(), prefix, names, is_zip=True)

    @property
    def name(self) -> str:
        """The product folder's name (in an archive: its top folder, else the archive's stem)."""
        if self.is_zip:
            return self.prefix.rstrip("/").split("/")[-1] or self.root.stem
        return self.root.name

    def find(self, rel: str) -> str | None:
        """The stored relative path matching ``rel`` whatever its case, or None."""
        return self._upper.get(rel.replace("\\", "/").upper())

    @property
    def _upper(self) -> dict[str, str]:
        cached = self.__dict__.get("_upper_cache")
        if cached is None:
            cached = {n.upper(): n for n in self.names}
            object.__setattr__(self, "_upper_cache", cached)
        return cached

    def has(self, rel: str) -> bool:
        """Whether the file ``rel`` is there (exact name)."""
        return rel in self._set

    @property
    def _set(self) -> frozenset[str]:
        cached = self.__dict__.get("_set_cache")
        if cached is None:
            cached = frozenset(self.names)
            object.__setattr__(self, "_set_cache", cached)
        return cached

    def glob(self, pattern: str) -> list[str]:
        """The names matching the regular expression ``pattern`` (searched, case-insensitive)."""
        rx = re.compile(pattern, re.IGNORECASE)
        return sorted(n for n in self.names if rx.search(n))

    def gdal_path(self, rel: str) -> str:
        """A path GDAL (and the error messages) can use for the file ``rel``."""
        if self.is_zip:
            return f"/vsizip/{self.root.as_posix()}/{self.prefix}{rel}"
        return str(self.root / rel)

    def read_bytes(self, rel: str) -> bytes:
        """The content of the file ``rel``.

        Raises
        ------
        MissingBandError
            The file is not in the product (a metadata file that should be there).
        CorruptProductError
            It cannot be read (a damaged member of an archive, an I/O error).
        """
        where = self.gdal_path(rel)
        try:
            if self.is_zip:
                with zipfile.ZipFile(self.root) as zf:
                    return zf.read(self.prefix + rel)
            return (self.root / rel).read_bytes()
        except (KeyError, FileNotFoundError):
            raise MissingBandError(where, "the file is not in the product") from None
        except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise CorruptProductError(where, f"cannot read the file: {exc}") from exc

    def xml(self, rel: str, what: str = "XML metadata") -> etree._Element:
        """The XML file ``rel`` parsed, namespaces stripped from the tags.

        External entities and network access are off. Raises
        :class:`CorruptProductError` naming the file (empty, truncated or not XML).
        """
        return parse_xml(self.read_bytes(rel), self.gdal_path(rel), what)


def parse_xml(data: bytes, where: str, what: str = "XML metadata") -> etree._Element:
    """Parse ``data`` (the content of the file ``where``), namespaces stripped from the tags."""
    if not data.strip():
        raise CorruptProductError(where, f"the {what} file is empty: expected an XML document")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise CorruptProductError(where, f"the {what} is not well-formed XML (truncated?): "
                                         f"{exc}") from exc
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith("{"):
            el.tag = el.tag.split("}", 1)[1]
    return root


def xml_text(root: etree._Element, xpath: str, where: str, required: bool = True) -> str | None:
    """The stripped text of the element ``xpath`` under ``root``.

    A missing or empty element is a :class:`CorruptProductError` naming ``where`` and
    the element when ``required``, else None.
    """
    el = root.find(xpath)
    if el is None or el.text is None or not el.text.strip():
        if required:
            raise CorruptProductError(where, f"metadata element {xpath.lstrip('./')} is missing "
                                             "or empty")
        return None
    return el.text.strip()


def xml_float(root: etree._Element, xpath: str, where: str, required: bool = True) -> float | None:
    """The element ``xpath`` as a number (see :func:`xml_text`); not a number is an error."""
    txt = xml_text(root, xpath, where, required)
    if txt is None:
        return None
    try:
        return float(txt)
    except ValueError:
        raise CorruptProductError(where, f"metadata element {xpath.lstrip('./')} is not a number: "
                                         f"{txt!r}") from None


# --------------------------------------------------------------------------------------
# raster headers


@dataclass(frozen=True)
class RasterInfo:
    """The header of a raster file."""

    #: Number of bands.
    count: int
    #: Data type of the first band (``uint16``).
    dtype: str
    #: The pixel grid.
    geobox: GeoBox
    #: The file's no-data value, or None.
    nodata: float | None
    #: The band descriptions (GDAL ``Description``), None where a band has none.
    descriptions: tuple[str | None, ...]


def raster_info(path: str) -> RasterInfo:
    """The header of the raster ``path`` (any GDAL path, ``/vsizip/`` included).

    Raises
    ------
    MissingBandError
        There is no such file.
    CorruptProductError
        GDAL cannot open it (truncated, not a raster) or it has no CRS (the message
        names the file and what was expected).
    """
    local = None if path.startswith("/vsi") else Path(path)
    if local is not None and not local.exists():
        raise MissingBandError(path, "the raster file is not on disk")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise CorruptProductError(path, "the raster has no CRS: expected a georeferenced "
                                                "GeoTIFF / JPEG 2000")
            return RasterInfo(src.count, src.dtypes[0], GeoBox(src.shape, src.transform, src.crs),
                              src.nodata, tuple(src.descriptions))
    except RasterioIOError as exc:
        kind = _raster_kind(path)
        size = f", {local.stat().st_size:,} bytes" if local is not None and local.is_file() else ""
        raise CorruptProductError(path, f"cannot open raster (truncated or not a {kind}?{size}): "
                                        f"{str(exc).splitlines()[0]}") from exc


def file_geobox(path: str) -> GeoBox:
    """The pixel grid of the raster ``path`` (errors as :func:`raster_info`)."""
    return raster_info(path).geobox


def _raster_kind(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return {".jp2": "JPEG 2000 image", ".tif": "GeoTIFF", ".tiff": "GeoTIFF"}.get(ext, "raster")
