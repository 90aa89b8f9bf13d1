"""Acquisition against a loopback STAC API replaying real provider responses.

The server (:mod:`agriseries.acquire.replay`) serves the recorded Earth Search, Planetary
Computer and GEODES items of ``tests/data/acquire`` (see its SOURCE.txt) plus items for the
real product samples of ``tests/data`` (the T29UNU Sentinel-2 L2A SAFE, as COGs and as a
zip; the Landsat 8 C2 L2 scene with its USGS STAC item), and injects faults on request.

Sockets: pytest runs with ``--disable-socket``; this module may connect to 127.0.0.1 only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import time
from pathlib import Path

import pytest
from odc.geo.geom import box

from agriseries.acquire.catalog import Selection, search
from agriseries.acquire.fetch import FetchOptions, Fetcher, acquire, staging_root
from agriseries.acquire.http import HttpSettings, ProviderSession
from agriseries.acquire.layout import MANIFEST, manifest_ok
from agriseries.acquire.providers import get_provider
from agriseries.acquire.replay import ReplayServer
from agriseries.acquire.verify import check_checksum, find_error_page, multihash_digest
from agriseries.core.errors import AuthenticationError, DownloadError, VerificationError

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

FAST = HttpSettings(connect_timeout_s=2, read_timeout_s=1.0, attempts=4, backoff_s=0.05,
                    backoff_max_s=2.0)
#: A small area inside the T29UNU sample (about 3 x 3 km)
AREA = box(-8.30, 52.50, -8.25, 52.53, "EPSG:4326")


@pytest.fixture()
def replay_stall_s() -> float:
    """The stalled socket outlasts FAST's 1 s read timeout (samples, srv: tests/conftest.py)."""
    return 3.0


def endpoints(server: ReplayServer) -> dict[str, dict[str, str]]:
    eps = {n: {"url": server.api_url(n)} for n in server.apis}
    eps["planetary-computer"]["token_url"] = server.api_url("planetary-computer") + "/token"
    eps["cdse"]["token_url"] = server.api_url("cdse") + "/oauth"
    return eps


def providers(server, *names, **changes):
    eps = endpoints(server)
    return [dataclasses.replace(get_provider(n, eps[n]), **changes) for n in names]


def sel(**kw) -> Selection:
    base = dict(start=dt.date(2022, 10, 1), end=dt.date(2022, 10, 31), tiles=("T29UNU",))
    return Selection(**{**base, **kw})


# ---------------------------------------------------------------------------- search


def test_search_merges_collections_and_baselines_into_one_acquisition(srv):
    s = Selection(dt.date(2025, 7, 31), dt.date(2025, 7, 31), tiles=("T24MXV",))
    res = search(s, providers(srv, "earth-search", search_limit=2))
    assert res.failures == {}
    assert [a.id for a in res.acquisitions] == ["S2B_L2A_T24MXV_20250731_R095"]
    a = res.acquisitions[0]
    # the reprocessed collection (c1) wins over the first processing of the same acquisition
    assert (a.provider, a.collection) == ("earth-search", "sentinel-2-c1-l2a")
    assert [x.collection for x in a.alternatives] == ["sentinel-2-l2a"]
    assert a.cloud == pytest.approx(24.684544)
    assert a.size and a.size > 10**8  # the c1 items give file:size for every band
    l1c = search(dataclasses.replace(s, level="L1C"), providers(srv, "earth-search"))
    assert [x.id for x in l1c.acquisitions] == ["S2B_L1C_T24MXV_20250731_R095"]


def test_search_pages_through_a_season_and_counts_requests(srv):
    s = Selection(dt.date(2020, 6, 1), dt.date(2020, 7, 31), tiles=("T35MNM",), sensors=("S2",))
    seen = []
    res = search(s, providers(srv, "planetary-computer", search_limit=5), on_request=seen.append)
    assert len(res.acquisitions) == 13
    assert len({a.datetime.date() for a in res.acquisitions}) == 13
    pages = [r for r in srv.requests("/planetary-computer/search")]
    assert len(pages) == 3  # 13 items, 5 per page, paged by pystac-client via the next link
    assert res.requests == len(seen) >= 3


def test_search_cloud_filter_and_tile_filter(srv):
    s = Selection(dt.date(2020, 6, 1), dt.date(2020, 7, 31), tiles=("T35MNM",), max_cloud=10)
    res = search(s, providers(srv, "planetary-computer"))
    assert res.acquisitions and all(a.cloud <= 10 for a in res.acquisitions)
    assert len(res.acquisitions) < 13
    other = search(dataclasses.replace(s, tiles=("T31UDS",)), providers(srv, "planetary-computer"))
    assert other.acquisitions == []


def test_provider_down_is_reported_and_the_next_provider_is_used(srv):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/stac"
    down = dataclasses.replace(get_provider("earth-search"), url=dead)
    fast = dataclasses.replace(FAST, attempts=2)
    res = search(sel(), [down, *providers(srv, "planetary-computer")], settings=fast)
    assert "earth-search" in res.failures
    assert [a.provider for a in res.acquisitions] == ["planetary-computer"]
    srv.apis["earth-search"].down = True  # answers 503 to everything
    res = search(sel(), providers(srv, "earth-search", "planetary-computer"), settings=fast)
    assert "earth-search" in res.failures and res.acquisitions[0].provider == "planetary-computer"


# ---------------------------------------------------------------------------- windowed fetch


def test_windowed_fetch_reads_only_the_area_and_the_safe_reader_reads_it(srv, samples, tmp_path):
    from agriseries.io.safe import read_safe

    res = search(sel(), providers(srv, "earth-search", "planetary-computer"))
    (a,) = res.acquisitions
    assert a.provider == "earth-search" and a.alternatives[0].provider == "planetary-computer"
    inbox = tmp_path / "inbox"
    with Fetcher(inbox, FetchOptions(area=AREA), settings=FAST, endpoints=endpoints(srv)) as f:
        (r,) = acquire(res.acquisitions, f)
    assert r.status == "fetched", r.error
    entry = Path(r.entry)
    assert entry.parent == inbox and manifest_ok(entry)
    served = sum(x["bytes"] for x in srv.requests("/files/s2/") if x["path"].endswith(".tif"))
    full = sum(p.stat().st_size for p in samples["s2"].rglob("*.tif"))
    assert 0 < served < full / 3  # range reads of the window, not the files
    prod = read_safe(entry, allow_missing_bands=True)
    assert prod.tile == "T29UNU" and prod.level == "L2A" and "B04" in prod.bands
    assert prod.sun_angles is not None and prod.view_angles  # from the real MTD_TL.xml
    fp = prod.footprint.to_crs("EPSG:32629")
    assert fp.area < 0.2 * samples_area(samples)
    assert fp.buffer(61).contains(AREA.to_crs("EPSG:32629"))
    # a second run fetches nothing and says so
    n = len(srv.log)
    with Fetcher(inbox, FetchOptions(area=AREA), settings=FAST, endpoints=endpoints(srv)) as f:
        (r2,) = acquire(res.acquisitions, f)
    assert r2.status == "skipped" and len(srv.log) == n
    assert not any(staging_root(inbox).glob("*/*"))


def samples_area(samples) -> float:
    import rasterio

    with rasterio.open(next(samples["s2"].rglob("*_B04_60m.tif"))) as src:
        b = src.bounds
    return (b.right - b.left) * (b.top - b.bottom)


def test_planetary_computer_assets_are_signed_with_one_token(srv, tmp_path):
    res = search(sel(), providers(srv, "planetary-computer"))
    with Fetcher(tmp_path / "inbox", FetchOptions(area=AREA), settings=FAST,
                 endpoints=endpoints(srv)) as f:
        (r,) = acquire(res.acquisitions, f)
    assert r.status == "fetched", r.error
    assert len(srv.requests("/planetary-computer/token/")) == 1
    files = srv.requests("/planetary-computer/files/")
    assert files and all(x["status"] in (200, 206) for x in files)


def test_unsigned_planetary_computer_asset_is_refused(srv, tmp_path):
    p = providers(srv, "planetary-computer")[0]
    url = srv.api_url("planetary-computer") + "/files/s2/" + \
        "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE/MTD_MSIL2A.xml"
    with ProviderSession(p, FAST) as s:
        with pytest.raises(AuthenticationError, match="403"):
            s.download(url, tmp_path / "MTD_MSIL2A.xml")
        s.download(s.sign(url, "sentinel-2-l2a"), tmp_path / "MTD_MSIL2A.xml")
    assert (tmp_path / "MTD_MSIL2A.xml").stat().st_size > 10_000


def test_landsat_windowed_fetch_is_read_by_the_landsat_reader(srv, tmp_path):
    from agriseries.io.landsat import read_landsat

    s = Selection(dt.date(2019, 12, 1), dt.date(2019, 12, 1), tiles=(), sensors=("L8",),
                  area=box(-75.2, 1.3, -75.0, 1.5, "EPSG:4326"))
    res = search(s, providers(srv, "usgs"))
    (a,) = res.acquisitions
    assert a.id == "L8_L2A_WRS008059_20191201"
    with Fetcher(tmp_path / "inbox", FetchOptions(area=s.area, snap_m=30), settings=FAST,
                 endpoints=endpoints(srv)) as f:
        (r,) = acquire(res.acquisitions, f)
    assert r.status == "fetched", r.error
    prod = read_landsat(r.entry)
    assert prod.sensor == "L8" and set(prod.bands) >= {"B2", "B3", "B4", "B5"}


# ---------------------------------------------------------------------------- whole archives


def test_cdse_archive_with_oauth2_token_refresh_and_clear_errors(srv, tmp_path, monkeypatch):
    from agriseries.io.safe import read_safe

    monkeypatch.setenv("CDSE_USERNAME", "demo")
    monkeypatch.setenv("CDSE_PASSWORD", "demo")
    res = search(sel(), providers(srv, "cdse"))
    (a,) = res.acquisitions
    assert a.size and a.provider == "cdse"
    inbox = tmp_path / "inbox"
    with Fetcher(inbox, settings=FAST, endpoints=endpoints(srv)) as f:
        (r,) = acquire(res.acquisitions, f)
        assert r.status == "fetched", r.error
        assert Path(r.entry).suffix == ".zip" and read_safe(r.entry, allow_missing_bands=True)
        # the token expires server-side: one 401, the token is renewed once, then it works
        os.unlink(r.entry)
        srv.expire_tokens()
        n_tok = len(srv.requests("/cdse/oauth"))
        (r,) = acquire(res.acquisitions, f)
        assert r.status == "fetched", r.error
        assert len(srv.requests("/cdse/oauth")) == n_tok + 1
    # a token that keeps being refused: one clear error, no secret in it
    rel = "archives/" + Path(r.entry).name
    srv.inject(rel, "401", "401")
    p = providers(srv, "cdse")[0]
    with ProviderSession(p, FAST) as s:
        with pytest.raises(AuthenticationError, match="after renewing it") as e:
            s.download(srv.api_url("cdse") + "/files/" + rel, tmp_path / "x.zip")
    assert "demo" not in str(e.value)
    monkeypatch.setenv("CDSE_PASSWORD", "wrong")
    with ProviderSession(p, FAST) as s:
        with pytest.raises(AuthenticationError, match="CDSE_USERNAME") as e:
            s.headers()
    assert "wrong" not in str(e.value)


def test_geodes_search_and_muscate_archive_with_api_key(srv, samples, tmp_path, monkeypatch):
    """CNES GEODES: the recorded PEPS L1C answer and the MUSCATE (MAJA) L2A sample behind an
    API key (``X-API-Key``, from $GEODES_API_KEY): sensing time from ``start_datetime`` (its
    ``datetime`` is the publication), tile from ``grid:code``, size and MD5 from the asset
    description; the zip is verified against that MD5 and read by the MUSCATE reader."""
    from agriseries.acquire.replay import GEODES_KEY, MUSCATE_SAMPLE
    from agriseries.io.muscate import read_muscate

    monkeypatch.delenv("GEODES_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    s = Selection(dt.date(2017, 2, 1), dt.date(2017, 2, 28), tiles=("T38KPD",))
    res = search(s, providers(srv, "geodes"), settings=FAST)
    assert "GEODES_API_KEY" in res.failures["geodes"] and res.acquisitions == []
    monkeypatch.setenv("GEODES_API_KEY", "not-the-key")
    res = search(s, providers(srv, "geodes"), settings=FAST)
    assert "geodes" in res.failures and "not-the-key" not in res.failures["geodes"]
    monkeypatch.setenv("GEODES_API_KEY", GEODES_KEY)
    res = search(s, providers(srv, "geodes"), settings=FAST)
    assert res.failures == {}
    (a,) = res.acquisitions
    assert a.id == "S2A_L2A_T38KPD_20170203" and a.collection == "MUSCATE_SENTINEL2_SENTINEL2_L2A"
    assert a.size == samples["muscate"].stat().st_size and a.cloud == 24
    l1c = search(Selection(dt.date(2025, 4, 2), dt.date(2025, 4, 2), tiles=("T14ULD",),
                           level="L1C"), providers(srv, "geodes"), settings=FAST)
    (b,) = l1c.acquisitions  # the recorded answer: sensed 2 April, published 3 April
    assert b.id == "S2A_L1C_T14ULD_20250402_R141" and b.size == 764210185
    with Fetcher(tmp_path / "inbox", settings=FAST, endpoints=endpoints(srv)) as f:
        (r,) = acquire(res.acquisitions, f)
        assert r.status == "fetched", r.error
        entry = Path(r.entry)
        assert entry.name == f"{MUSCATE_SAMPLE}.zip" and entry.parent == tmp_path / "inbox"
        assert entry.read_bytes() == samples["muscate"].read_bytes()
        # the sample's FRE stack is a one-band extract whose band the metadata cannot tell
        # (tests/data/muscate/SOURCE.txt): named here, as tests/test_input_errors.py does
        prod = read_muscate(entry, stack_bands=["B04"])
        assert prod.tile == "T38KPD" and list(prod.bands) == ["B04"]
        files = srv.requests("/geodes/files/")
        assert [x["status"] for x in files] == [200]
        # a corrupted answer fails the MD5 from the description and is fetched again
        entry.unlink()
        srv.inject(f"archives/{MUSCATE_SAMPLE}.zip", "corrupt")
        (r,) = acquire(res.acquisitions, f)
        assert r.status == "fetched", r.error
        assert Path(r.entry).read_bytes() == samples["muscate"].read_bytes()
        assert len(srv.requests("/geodes/files/")) == 3
    # the archive without the key: refused, a clear error naming where the key is read
    monkeypatch.setenv("GEODES_API_KEY", "not-the-key")
    with ProviderSession(providers(srv, "geodes")[0], FAST) as sess:
        with pytest.raises(AuthenticationError, match="GEODES_API_KEY") as e:
            sess.download(res.acquisitions[0].item.assets[f"{MUSCATE_SAMPLE}.zip"].href,
                          tmp_path / "x.zip")
    assert "not-the-key" not in str(e.value)


def test_cdse_token_is_refreshed_before_it_expires(srv, samples, tmp_path, monkeypatch):
    """A bearer token that will expire within ``token_margin_s`` is renewed with the refresh
    token before the request (no 401 is ever seen), not after a refusal."""
    monkeypatch.setenv("CDSE_USERNAME", "demo")
    monkeypatch.setenv("CDSE_PASSWORD", "demo")
    srv.apis["cdse"].token_lifetime_s = 2.0
    url = srv.api_url("cdse") + f"/files/archives/{samples['archive'].name}"
    with ProviderSession(providers(srv, "cdse")[0],
                         dataclasses.replace(FAST, token_margin_s=1.0)) as s:
        s.download(url, tmp_path / "1.zip")
        s.download(url, tmp_path / "2.zip")  # the token is still fresh: no token request
        time.sleep(1.3)  # 0.7 s left, less than the margin: renewed before the next request
        s.download(url, tmp_path / "3.zip")
    grants = [r["grant"] for r in srv.requests("/cdse/oauth")]
    assert grants == ["password", "refresh_token"]
    assert [r["status"] for r in srv.requests("/cdse/files/")] == [200, 200, 200]


def test_redirected_download_is_followed(srv, samples, tmp_path, monkeypatch):
    """A download answered by a redirect (as CDSE's download service does) is followed; the
    file is verified against the checksum of the item."""
    from agriseries.acquire.replay import multihash_sha256

    monkeypatch.setenv("CDSE_USERNAME", "demo")
    monkeypatch.setenv("CDSE_PASSWORD", "demo")
    arch = samples["archive"]
    srv.inject(f"archives/{arch.name}", "302")
    url = srv.api_url("cdse") + f"/files/archives/{arch.name}"
    with ProviderSession(providers(srv, "cdse")[0], FAST) as s:
        assert s.download(url, tmp_path / "p.zip", size=arch.stat().st_size,
                          checksum=multihash_sha256(arch)) == arch.stat().st_size
    assert [(r["path"].split("/")[1], r["status"]) for r in srv.log if "/files/" in r["path"]] \
        == [("cdse", 302), ("files", 200)]


def test_an_archive_in_the_inbox_counts_as_present_only_when_it_reads(srv, samples, tmp_path,
                                                                       monkeypatch):
    """A zip already in the inbox is that acquisition, fetched, when its directory reads; a
    truncated one (a copy cut short by hand) is not, and the acquisition is fetched again."""
    monkeypatch.setenv("CDSE_USERNAME", "demo")
    monkeypatch.setenv("CDSE_PASSWORD", "demo")
    (a,) = search(sel(), providers(srv, "cdse")).acquisitions
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    arch = samples["archive"]
    (inbox / arch.name).write_bytes(arch.read_bytes()[:-1000])
    with Fetcher(inbox, settings=FAST, endpoints=endpoints(srv)) as f:
        assert f.present(a) is None
        (r,) = acquire([a], f)
        assert r.status == "fetched" and Path(r.entry).read_bytes() == arch.read_bytes()
        assert f.present(a) == inbox / arch.name
        (r,) = acquire([a], f)
        assert r.status == "skipped"


def test_missing_credentials_name_where_they_are_read(monkeypatch, tmp_path):
    monkeypatch.delenv("CDSE_USERNAME", raising=False)
    monkeypatch.delenv("CDSE_PASSWORD", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with ProviderSession(get_provider("cdse"), FAST) as s:
        with pytest.raises(AuthenticationError, match="netrc machine identity.dataspace"):
            s.headers()
    (tmp_path / "netrc").write_text("machine identity.dataspace.copernicus.eu login u "
                                    "password p\n")
    os.chmod(tmp_path / "netrc", 0o600)
    with ProviderSession(get_provider("cdse"), FAST) as s:
        assert s.credentials.values() == ("u", "p")
        assert "p" not in repr(s.credentials).replace("provider", "").replace("cdse", "")


# ---------------------------------------------------------------------------- faults


@pytest.fixture()
def archive(srv, samples):
    """(url, size, checksum, rel) of the zipped SAFE served without authorisation."""
    from agriseries.acquire.replay import multihash_sha256

    arch = samples["archive"]
    rel = f"archives/{arch.name}"
    return srv.file_url(rel), arch.stat().st_size, multihash_sha256(arch), rel


def _get(srv, url, dest, size, checksum, settings=FAST):
    with ProviderSession(get_provider("earth-search"), settings) as s:
        return s.download(url, dest, size=size, checksum=checksum)


def _bodies(srv, rel):
    return [r for r in srv.requests(f"/files/{rel}")]


@pytest.mark.parametrize("fault", ["drop", "short", "stall", "htmlmid"])
def test_interrupted_body_is_resumed_with_range(srv, archive, tmp_path, fault):
    url, size, cs, rel = archive
    srv.inject(rel, fault)
    dest = tmp_path / "p.zip"
    assert _get(srv, url, dest, size, cs) == size
    check_checksum(dest, cs)
    reqs = _bodies(srv, rel)
    assert len(reqs) == 2 and reqs[1]["range"] and reqs[1]["range"] != "bytes=0-"
    # the second request asked only for what was missing: no byte moved twice
    assert reqs[0]["bytes"] - (64 if fault == "htmlmid" else 0) <= int(
        reqs[1]["range"][6:-1]) + (1 << 20)
    assert not dest.with_name("p.zip.part").exists()


@pytest.mark.parametrize("with_checksum", [True, False])
def test_error_page_inside_a_well_framed_answer_is_never_kept(srv, archive, tmp_path,
                                                               with_checksum):
    """A page written over the middle of a complete, well-framed 200 answer (Content-Length
    right). With a checksum, the checksum refuses the file and it is fetched again; without
    one, the file is searched, cut at the page and resumed from there."""
    url, size, cs, rel = archive
    srv.inject(rel, "htmlin")
    dest = tmp_path / "p.zip"
    assert _get(srv, url, dest, size, cs if with_checksum else None) == size
    check_checksum(dest, cs)
    reqs = _bodies(srv, rel)
    assert len(reqs) == 2
    if with_checksum:
        assert reqs[1]["range"] is None  # the whole file again
    else:
        assert reqs[1]["range"] == f"bytes={size // 2}-"  # from the first byte of the page


def test_find_error_page_across_read_boundaries(tmp_path):
    data = bytearray(os.urandom(3 << 20))
    data[:] = data.replace(b"<", b"(")  # no accidental marker in the random bytes
    page = b"<!DOCTYPE HTML><html><body>Service Unavailable</body></html>"
    at = (1 << 20) - 5  # the marker straddles the first 1 MiB read
    data[at:at + len(page)] = page
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(data))
    assert find_error_page(p, 0, len(data)) == at
    assert find_error_page(p, at + 1, len(data)) == at + page.index(b"<html")
    assert find_error_page(p, at + len(page), len(data)) is None
    p.write_bytes(b"<?xml version='1.0'?><Error><Code>SlowDown</Code></Error>")
    assert find_error_page(p, 0, 60) == 0  # an S3-style XML error where the data begins
    assert find_error_page(p, 0, 60, expect_markup=True) is None  # an XML file: fine


@pytest.mark.parametrize("codes", [("500",), ("502",), ("503",), ("502", "503")])
def test_server_errors_are_retried(srv, archive, tmp_path, codes):
    url, size, cs, rel = archive
    srv.inject(rel, *codes)
    assert _get(srv, url, tmp_path / "p.zip", size, cs) == size
    assert [r["status"] for r in _bodies(srv, rel)] == [int(c) for c in codes] + [200]


def test_429_retry_after_is_respected(srv, archive, tmp_path):
    url, size, cs, rel = archive
    srv.retry_after_s = 1
    srv.inject(rel, "429")
    t0 = time.monotonic()
    _get(srv, url, tmp_path / "p.zip", size, cs, dataclasses.replace(FAST, backoff_s=0.01))
    reqs = _bodies(srv, rel)
    assert [r["status"] for r in reqs] == [429, 200]
    assert reqs[1]["time"] - reqs[0]["time"] >= 0.95
    assert time.monotonic() - t0 >= 0.95


def test_html_error_page_with_200_is_never_kept(srv, archive, tmp_path):
    url, size, cs, rel = archive
    srv.inject(rel, "html200")
    dest = tmp_path / "p.zip"
    assert _get(srv, url, dest, None, None) == size  # no size, no checksum: the page is seen
    assert dest.read_bytes()[:2] == b"PK"


def test_checksum_mismatch_is_fetched_again_then_refused(srv, archive, tmp_path):
    url, size, cs, rel = archive
    srv.inject(rel, "corrupt")
    dest = tmp_path / "p.zip"
    assert _get(srv, url, dest, size, cs) == size
    check_checksum(dest, cs)
    dest.unlink()
    srv.inject(rel, *["corrupt"] * FAST.attempts)
    with pytest.raises(VerificationError, match="checksum"):
        _get(srv, url, dest, size, cs)
    assert not dest.exists() and not dest.with_name("p.zip.part").exists()


def test_downloads_go_through_the_proxy_the_environment_names(srv, archive, tmp_path,
                                                               monkeypatch):
    """``http_proxy`` / ``no_proxy`` are honoured for file bodies (as httpx, GDAL and curl do):
    the replay server, which also answers absolute-form requests, plays the proxy of a
    host nobody listens on."""
    _, size, cs, rel = archive
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{sock.getsockname()[1]}/files/{rel}"
    for var in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", srv.url)
    assert _get(srv, nowhere, tmp_path / "p.zip", size, cs) == size
    (r,) = _bodies(srv, rel)
    assert r["status"] == 200
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # now straight to the host: nobody there
    with pytest.raises(DownloadError, match="gave up"):
        _get(srv, nowhere, tmp_path / "q.zip", size, cs, dataclasses.replace(FAST, attempts=1))
    assert len(_bodies(srv, rel)) == 1


def test_multihash_parsing():
    name, digest = multihash_digest("1220" + "ab" * 32)
    assert name == "sha256" and digest == bytes([0xAB]) * 32
    assert multihash_digest("d50110" + "00" * 16)[0] == "md5"
    with pytest.raises(VerificationError, match="not a hex multihash"):
        multihash_digest("zz")


def test_missing_file_fails_without_retrying(srv, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        _get(srv, srv.file_url("nothing.zip"), tmp_path / "x.zip", None, None)
    assert len(srv.requests("/files/nothing.zip")) == 1


def test_alternative_provider_is_used_when_the_first_fails_to_fetch(srv, tmp_path):
    res = search(sel(), providers(srv, "earth-search", "planetary-computer"))
    (a,) = res.acquisitions
    srv.inject("s2/S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE/"
               "MTD_MSIL2A.xml", *["503"] * FAST.attempts)
    with Fetcher(tmp_path / "inbox", FetchOptions(area=AREA), settings=FAST,
                 endpoints=endpoints(srv)) as f:
        (r,) = acquire(res.acquisitions, f)
    assert r.status == "fetched" and r.provider == "planetary-computer", r.error
    assert (Path(r.entry) / MANIFEST).exists()


# ---------------------------------------------------------------------------- the commands


def test_search_and_acquire_commands(srv, tmp_path, monkeypatch):
    """``agriseries search`` (table and --json) and ``agriseries acquire`` (the table of what
    was fetched, skipped, failed) against the replay server, endpoints from the environment;
    a provider that fails is printed and makes the exit code 1."""
    from click.testing import CliRunner

    from agriseries.cli import main

    for name in ("earth-search", "planetary-computer"):
        monkeypatch.setenv(f"AGRISERIES_{name.upper().replace('-', '_')}_URL", srv.api_url(name))
    monkeypatch.setenv("AGRISERIES_PLANETARY_COMPUTER_TOKEN_URL",
                       srv.api_url("planetary-computer") + "/token")
    sel = ["--tile", "T29UNU", "--from", "2022-10-01", "--to", "2022-10-31",
           "--provider", "earth-search,planetary-computer"]
    runner = CliRunner()
    res = runner.invoke(main, ["search", *sel, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    (a,) = doc["acquisitions"]
    assert a["id"] == "S2A_L2A_T29UNU_20221005_R023" and a["provider"] == "earth-search"
    assert doc["failures"] == {} and doc["requests"] >= 2
    res = runner.invoke(main, ["search", *sel])
    assert res.exit_code == 0 and "1 acquisition(s)" in res.stdout
    assert "2022-10-05" in res.stdout  # (an 80-column table: longer cells are folded)
    store = tmp_path / "store"
    bbox = ["--bbox", "-8.30,52.50,-8.25,52.53"]
    res = runner.invoke(main, ["acquire", *sel, *bbox, "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert "1 fetched, 0 skipped (already there, verified), 0 failed" in res.stdout
    assert manifest_ok(store / "inbox" / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_"
                                         "20221005T164454.SAFE")
    res = runner.invoke(main, ["acquire", *sel, *bbox, "--store", str(store)])
    assert res.exit_code == 0 and "0 fetched, 1 skipped" in res.stdout
    # a provider that fails (GEODES without its key): said, exit code 1, the others searched
    monkeypatch.setenv("AGRISERIES_GEODES_URL", srv.api_url("geodes"))
    monkeypatch.delenv("GEODES_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    res = runner.invoke(main, ["search", *sel[:-1], "geodes,earth-search", "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert "GEODES_API_KEY" in doc["failures"]["geodes"]
    assert [x["provider"] for x in doc["acquisitions"]] == ["earth-search"]


def test_search_and_acquire_exit_codes_for_a_wrong_tile_and_nothing_found(srv, tmp_path,
                                                                        monkeypatch):
    """A tile that does not exist is a usage error (exit 2) naming it, before any request;
    a selection no provider has anything for is "nothing to do" (exit 3), for ``search`` and
    for ``acquire`` (which then fetches nothing)."""
    from click.testing import CliRunner

    from agriseries.cli import main

    monkeypatch.setenv("AGRISERIES_EARTH_SEARCH_URL", srv.api_url("earth-search"))
    runner = CliRunner()
    n_requests = len(srv.log)
    for cmd in (["search"], ["acquire", "--store", str(tmp_path / "store")]):
        res = runner.invoke(main, [*cmd, "--tile", "T99ZZZ", "--from", "2022-10-01",
                                   "--to", "2022-10-31", "--provider", "earth-search"])
        assert res.exit_code == 2, res.output
        assert "T99ZZZ" in res.output
    assert len(srv.log) == n_requests  # refused before any request
    # October 2021: the served catalogue has nothing then
    sel = ["--tile", "T29UNU", "--from", "2021-10-01", "--to", "2021-10-31",
           "--provider", "earth-search"]
    res = runner.invoke(main, ["search", *sel, "--json"])
    assert res.exit_code == 3, res.output
    assert json.loads(res.stdout)["acquisitions"] == []
    assert "nothing to do" in res.stderr
    res = runner.invoke(main, ["acquire", *sel, "--store", str(tmp_path / "store")])
    assert res.exit_code == 3, res.output
    assert "0 fetched, 0 skipped (already there, verified), 0 failed" in res.stdout
    assert not any((tmp_path / "store" / "inbox").glob("*"))
    assert len(srv.log) > n_requests  # this time the provider was asked
