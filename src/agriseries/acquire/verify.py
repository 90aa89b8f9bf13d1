"""Checks a downloaded file must pass before it enters the inbox.

* :func:`check_checksum`: the STAC ``file:checksum`` multihash (sha2-256, sha2-512, sha1,
  md5, blake2b-256...), hex encoded as the file extension specifies;
* :func:`looks_like_error_page`: an HTML or XML error page where data was expected (a proxy
  that answers 200 with an error page, or writes one into the middle of a stream);
* :func:`check_opens`: the file opens as what it claims to be (raster, zip, XML, JSON, text).
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

from ..core.errors import VerificationError

__all__ = ["ERROR_PAGE_MARKERS", "check_checksum", "check_opens", "find_error_page",
           "looks_like_error_page", "multihash_digest", "new_hasher"]

#: multihash code -> hashlib name (https://github.com/multiformats/multicodec table).
_MULTIHASH = {0x11: "sha1", 0x12: "sha256", 0x13: "sha512", 0xD5: "md5",
              0xB220: "blake2b_256", 0xB240: "blake2b"}

#: Byte strings that start an HTML / XML error page (lower case).
ERROR_PAGE_MARKERS = (b"<!doctype html", b"<html", b"<head><title>", b"<?xml version")
#: The HTML markers as one case-insensitive pattern (searched in place: no lowered copy of
#: each chunk of a download).
_HTML_PAGE = re.compile(b"|".join(re.escape(m) for m in ERROR_PAGE_MARKERS[:3]), re.IGNORECASE)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7


def multihash_digest(checksum: str) -> tuple[str, bytes]:
    """``(hashlib name, digest)`` of a hex multihash such as ``1220<64 hex digits>``."""
    try:
        raw = bytes.fromhex(checksum)
        code, pos = _varint(raw, 0)
        length, pos = _varint(raw, pos)
    except ValueError:
        raise VerificationError(f"file:checksum {checksum!r}: not a hex multihash") from None
    if code not in _MULTIHASH:
        raise VerificationError(f"file:checksum {checksum!r}: unsupported multihash code "
                                f"0x{code:x} (known: sha1, sha2-256, sha2-512, md5, blake2b)")
    digest = raw[pos:]
    if len(digest) != length:
        raise VerificationError(f"file:checksum {checksum!r}: digest length {len(digest)}, "
                                f"the multihash says {length}")
    return _MULTIHASH[code], digest


def _hasher(name: str):
    if name == "blake2b_256":
        return hashlib.blake2b(digest_size=32)
    return hashlib.new(name)


def new_hasher(checksum: str):
    """A fresh hashlib object of the algorithm of the multihash ``checksum`` (to hash a
    file while it is written, then give to :func:`check_checksum`)."""
    return _hasher(multihash_digest(checksum)[0])


def check_checksum(path: str | Path, checksum: str, hashed=None) -> None:
    """Raise :class:`VerificationError` unless ``path`` has the multihash ``checksum``.

    ``hashed``: a hashlib object (from :func:`new_hasher`) already fed every byte of the file
    as it was written; the file is then not read again."""
    name, want = multihash_digest(checksum)
    h = hashed
    if h is None:
        h = _hasher(name)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    if h.digest() != want:
        raise VerificationError(f"{path}: {name} checksum {h.hexdigest()} does not match the "
                                f"provider's {want.hex()}")


def looks_like_error_page(chunk: bytes, expect_markup: bool = False,
                          body_start: bool = False) -> bool:
    """True when ``chunk`` holds an HTML error page (anywhere in it), or, at the start of a
    response body (``body_start``) of a file that is not XML (``expect_markup`` false), an
    XML document (S3-style ``<?xml ...><Error>`` answers). Data files may hold XML inside
    (a SAFE zip does), so ``<?xml`` is only suspect where the body begins."""
    if _HTML_PAGE.search(chunk) is not None:
        return True
    return body_start and not expect_markup and chunk.lstrip()[:5].lower() == b"<?xml"


def find_error_page(path: str | Path, start: int, end: int,
                    expect_markup: bool = False) -> int | None:
    """The offset of the first HTML error page (or, at ``start``, an XML one: see
    :func:`looks_like_error_page`) in bytes ``[start, end)`` of the file ``path``; ``None``
    when there is none. Read in 1 MiB pieces overlapping by a marker's length."""
    overlap = max(len(m) for m in ERROR_PAGE_MARKERS)
    with open(path, "rb") as f:
        f.seek(start)
        if not expect_markup and f.read(64).lstrip()[:5].lower() == b"<?xml":
            return start  # an XML document (S3-style error) where the data begins
        f.seek(start)
        pos = start
        tail = b""
        while pos < end:
            chunk = f.read(min(1 << 20, end - pos))
            if not chunk:
                break
            m = _HTML_PAGE.search(tail + chunk)
            if m is not None:
                return pos - len(tail) + m.start()
            tail = chunk[-overlap:]
            pos += len(chunk)
    return None


_RASTER = (".tif", ".tiff", ".jp2")


def check_opens(path: str | Path, name: str | None = None, *, deep: bool = True) -> None:
    """Open ``path`` as what its name (``name`` if given) says it is; raise
    :class:`VerificationError` naming the file when it does not. ``deep=False`` (the file
    matched its provider checksum already): a zip's directory is read, not every member's
    CRC."""
    p = Path(path)
    suffix = Path(name or p.name).suffix.lower()
    try:
        if suffix in _RASTER:
            import rasterio

            with rasterio.open(p) as src:
                src.read(1, window=((0, min(1, src.height)), (0, min(1, src.width))))
        elif suffix == ".zip":
            with zipfile.ZipFile(p) as z:
                bad = z.testzip() if deep else None
            if bad is not None:
                raise VerificationError(f"{p}: member {bad} of the archive is corrupt")
        elif suffix == ".xml":
            from lxml import etree

            etree.parse(str(p), etree.XMLParser(resolve_entities=False, no_network=True))
        elif suffix == ".json":
            json.loads(p.read_bytes())
    except VerificationError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to open is the same verdict
        raise VerificationError(f"{p}: does not open as a {suffix or 'file'} "
                                f"({type(e).__name__}: {e})") from None
