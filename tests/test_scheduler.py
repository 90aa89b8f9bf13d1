"""The scheduler's rules, on their own: hand-made catalogues, no files, no database."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agriseries.composite.processor import l3a_id
from agriseries.core.ids import Level, ProductId
from agriseries.production.jobstore import ProductRecord, job_key
from agriseries.production.scheduler import (
    PRIORITY,
    Catalogue,
    InboxEntry,
    ingest_jobs,
    l3a_window,
    schedule,
)
from agriseries.production.site import site_from_dict

UTC = dt.UTC
BASE = {"name": "t", "area": {"tiles": ["T31UDS", "T31UES"]},
        "season": {"start": "2018-06-01", "end": "2018-07-31"},
        "inbox": "/nowhere/inbox", "store": "/nowhere/store"}


def make_site(**products):
    return site_from_dict({**BASE, "products": products})


def l2a(tile: str, when: dt.datetime, sensor: str = "S2A", producer: str = "SEN2COR"
        ) -> ProductRecord:
    pid = ProductId(Level.L2A, sensor, tile, when.replace(tzinfo=UTC), producer)
    return ProductRecord.from_id(pid, f"/store/{pid}")


def l3a(tile: str, month: tuple[int, int], inputs: list[str], skipped: list[str] = (),
        sensors=("S2A",)) -> ProductRecord:
    y, m = month
    start = dt.date(y, m, 1)
    end = (dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1))
    pid = l3a_id(tile, start, end, sensors)
    item = {"properties": {"agriseries:inputs": inputs,
                           "agriseries:synthesis": {"skipped": [{"id": s, "error": "x"}
                                                                for s in skipped]}}}
    return ProductRecord.from_id(pid, f"/store/{pid}", item=item)


def d(*a) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def test_l3a_window_is_the_one_the_composite_reads():
    # composite(): centre = start + (end - start) // 2, window centre +- H days
    assert l3a_window(dt.date(2018, 6, 1), dt.date(2018, 6, 30), 23) == (
        dt.date(2018, 6, 15), dt.date(2018, 5, 23), dt.date(2018, 7, 8))
    assert l3a_window(dt.date(2018, 7, 1), dt.date(2018, 7, 31), 10)[0] == dt.date(2018, 7, 16)


def test_l3a_takes_every_input_of_the_window_and_only_those():
    site = make_site(L3B={"enabled": False})
    june = [l2a("T31UDS", d(2018, 5, 22, 23, 59)),  # one day before the window: out
            l2a("T31UDS", d(2018, 5, 23, 0, 0)),  # first instant of the window: in
            l2a("T31UDS", d(2018, 6, 10, 10, 56)),
            l2a("T31UDS", d(2018, 7, 8, 23, 59)),  # last day of the window: in
            l2a("T31UES", d(2018, 6, 10, 10, 56))]  # another tile
    cat = Catalogue(june)
    s = schedule(site, cat, dt.date(2018, 8, 20))
    by = {(j.tile, j.params["period"]): j for j in s.jobs}
    assert set(by) == {("T31UDS", "2018-06"), ("T31UDS", "2018-07"), ("T31UES", "2018-06")}
    j = by[("T31UDS", "2018-06")]
    assert j.processor == "L3A" and j.inputs == tuple(sorted(r.product_id for r in june[1:4]))
    assert j.outputs == ("L3A_S2_T31UDS_20180601-20180630_AGS",)
    assert j.params == {"period": "2018-06", "half_period": 23, "sensors": None}
    # July's window (Jun 23 .. Aug 8) holds only the Jul 8 date
    assert by[("T31UDS", "2018-07")].inputs == (june[3].product_id,)
    # T31UES has no date in July's window: it waits for one
    assert [(w.level, w.tile, w.what) for w in s.waiting] == [("L3A", "T31UES", "2018-07")]
    assert s.waiting[0].reason == "no L2A product between 2018-06-23 and 2018-08-08 yet"


def test_l3a_waits_for_its_window_to_end_unless_provisional():
    cat = Catalogue([l2a("T31UDS", d(2018, 6, 10, 11))])
    final = make_site(L3B={"enabled": False})
    s = schedule(final, cat, dt.date(2018, 7, 8))  # June's window ends on Jul 8: not yet
    assert [j for j in s.jobs if j.params["period"] == "2018-06"] == []
    why = {(w.tile, w.what): w.reason for w in s.waiting}
    assert "made once its window ends on 2018-07-08" in why[("T31UDS", "2018-06")]
    assert "no L2A product between 2018-05-23 and 2018-07-08" in why[("T31UES", "2018-06")]
    assert [j.params["period"] for j in schedule(final, cat, dt.date(2018, 7, 9)).jobs] == [
        "2018-06"]
    prov = make_site(L3A={"provisional": True}, L3B={"enabled": False})
    assert [(j.tile, j.params["period"]) for j in schedule(prov, cat, dt.date(2018, 6, 11)).jobs
            ] == [("T31UDS", "2018-06")]
    # before the window starts, July waits for that
    s = schedule(prov, cat, dt.date(2018, 6, 11))
    assert {(w.tile, w.what): w.reason for w in s.waiting}[("T31UDS", "2018-07")] == \
        "its window starts on 2018-06-23"


def test_l3a_made_from_these_inputs_is_not_due_and_a_late_input_remakes_it():
    site = make_site(L3B={"enabled": False}, L3A={"sensors": None})
    a = l2a("T31UDS", d(2018, 6, 10, 11))
    b = l2a("T31UDS", d(2018, 6, 12, 11))  # its cloud mask was broken: skipped, but considered
    today = dt.date(2018, 9, 1)
    first = next(j for j in schedule(site, Catalogue([a, b]), today).jobs if j.tile == "T31UDS"
                 and j.params["period"] == "2018-06")
    done = l3a("T31UDS", (2018, 6), [a.product_id], skipped=[b.product_id])
    cat = Catalogue([a, b, done])
    assert not [j for j in schedule(site, cat, today).jobs if j.tile == "T31UDS"]
    # a late Sentinel-2 date: same output id, new inputs, so a new job key (remade)
    c = l2a("T31UDS", d(2018, 6, 20, 11), sensor="S2B")
    again = [j for j in schedule(site, Catalogue([a, b, c, done]), today).jobs
             if j.tile == "T31UDS" and j.params["period"] == "2018-06"]
    assert len(again) == 1 and again[0].key != first.key
    assert again[0].outputs == (done.product_id,) and "inputs changed" in again[0].reason
    # a late Landsat date adds a sensor family: the output id changes (the runner's L3A
    # processor replaces the S2 product by the S2L8 one)
    e = l2a("T31UDS", d(2018, 6, 21, 10), sensor="L8", producer="LASRC")
    j = next(j for j in schedule(site, Catalogue([a, b, e, done]), today).jobs
             if j.tile == "T31UDS" and j.params["period"] == "2018-06")
    assert j.outputs == ("L3A_S2L8_T31UDS_20180601-20180630_AGS",)
    # ... unless the site takes Sentinel-2 only
    s2 = make_site(L3B={"enabled": False}, L3A={"sensors": ["S2"]})
    assert not [j for j in schedule(s2, Catalogue([a, b, e, done]), today).jobs
                if j.tile == "T31UDS"]
    # an L3A record without its item (inputs unknown) is kept, not remade
    bare = ProductRecord.from_id(done.product_id, done.path)
    assert not [j for j in schedule(site, Catalogue([a, b, c, bare]), today).jobs
                if j.tile == "T31UDS"]


def test_l3b_one_job_per_new_acquisition_of_the_season():
    site = make_site(L3A={"enabled": False}, L3B={"sensors": ["S2"], "variables": ["LAI"]})
    recs = [l2a("T31UDS", d(2018, 5, 31, 11)),  # before the season
            l2a("T31UDS", d(2018, 6, 1, 11)),
            l2a("T31UDS", d(2018, 7, 31, 11)),
            l2a("T31UDS", d(2018, 8, 1, 11)),  # after
            l2a("T31UES", d(2018, 6, 5, 11), sensor="L8", producer="LASRC"),  # not S2
            l2a("T32ULB", d(2018, 6, 5, 11))]  # not a site tile
    done = ProductRecord.from_id("L3B_S2A_T31UDS_20180601T110000_AGS", "/x")
    jobs = schedule(site, Catalogue(recs + [done]), dt.date(2018, 12, 1)).jobs
    assert [(j.processor, j.inputs, j.outputs) for j in jobs] == [
        ("L3B", (recs[2].product_id,), ("L3B_S2A_T31UDS_20180731T110000_AGS",))]
    assert jobs[0].params == {"variables": ["LAI"], "resolution": 20}
    # acquisitions after today are not there yet; a period product is not an acquisition
    assert schedule(site, Catalogue(recs), dt.date(2018, 6, 30)).jobs[0].inputs == (
        recs[1].product_id,)


def test_schedule_waits_for_ingest_and_reports_pending_levels():
    site = make_site(L4A={"enabled": True})
    cat = Catalogue([l2a("T31UDS", d(2018, 6, 10, 11))])
    s = schedule(site, cat, dt.date(2018, 9, 1), ingest_pending=True)
    assert {j.processor for j in s.jobs} == {"L3B"}  # per-date products go on
    assert any(w.level == "L3A" and "being ingested" in w.reason for w in s.waiting)
    assert len(s.notices) == 1 and "L4A" in s.notices[0] and "not available" in s.notices[0]
    s = schedule(site, cat, dt.date(2018, 9, 1))
    assert {j.processor for j in s.jobs} == {"L3A", "L3B"}
    assert schedule(make_site(L3A={"enabled": False}, L3B={"enabled": False}), cat,
                    dt.date(2018, 9, 1)).jobs == []


def test_keys_do_not_depend_on_catalogue_order():
    site = make_site()
    recs = [l2a(t, d(2018, 6, day, 11), sensor=s) for t in ("T31UDS", "T31UES")
            for day in range(1, 30, 3) for s in ("S2A", "S2B")]
    keys = sorted(j.key for j in schedule(site, Catalogue(recs), dt.date(2018, 9, 1)).jobs)
    for seed in range(3):
        random.Random(seed).shuffle(recs)
        assert sorted(j.key for j in schedule(site, Catalogue(recs), dt.date(2018, 9, 1)).jobs
                      ) == keys
    j = schedule(site, Catalogue(recs), dt.date(2018, 9, 1)).jobs[0]
    assert j.key == job_key(j.processor, list(reversed(j.inputs)), dict(j.params), j.tile)


_times = st.datetimes(min_value=dt.datetime(2018, 1, 1), max_value=dt.datetime(2018, 12, 31),
                      timezones=st.just(UTC))


@settings(max_examples=60, deadline=None)
@given(acqs=st.lists(_times, max_size=25), periods=st.lists(st.tuples(_times, st.integers(0, 90)),
                                                            max_size=8),
       start=_times, span=st.integers(0, 120))
def test_catalogue_find_is_the_job_store_query(acqs, periods, start, span):
    """Catalogue.find follows JobStore.products' rule: dates overlapping [start, end]."""
    recs = [ProductRecord(f"A{i}", "L2A", "T31UDS", t, t, "/") for i, t in enumerate(acqs)]
    recs += [ProductRecord(f"P{i}", "L2A", "T31UDS", t, t + dt.timedelta(days=n), "/")
             for i, (t, n) in enumerate(periods)]
    end = start + dt.timedelta(days=span)
    cat = Catalogue(recs)
    want = sorted((r.start, r.product_id) for r in recs if r.end >= start and r.start <= end)
    assert [(r.start, r.product_id) for r in cat.find("L2A", "T31UDS", start, end)] == want
    assert cat.find("L2A", "T31UES", start, end) == []
    assert len(cat.find("L2A", "T31UDS")) == len(recs)


def test_ingest_jobs_one_per_product_and_tile_one_per_series():
    site = site_from_dict({**BASE, "area": {"tiles": ["T18NUG", "T18NUH", "T31UDS"]}})
    entries = [
        InboxEntry("/in/S2.SAFE", "inbox:S2.SAFE@1", "product", ("T31UDS",), on_tile_grid=True),
        InboxEntry("/in/S2other.SAFE", "inbox:S2other.SAFE@1", "product", ("T29UNU",),
                   on_tile_grid=True),
        InboxEntry("/in/LC08", "inbox:LC08@1", "product", ("T18NUF", "T18NUG", "T18NUH")),
        InboxEntry("/in/a_10m.nc", "inbox:a_10m.nc@1", "series", group="g1"),
        InboxEntry("/in/a_20m.nc", "inbox:a_20m.nc@1", "series", group="g1"),
        InboxEntry("/in/l8.nc", "inbox:l8.nc@1", "series", group="g2"),
        InboxEntry("/in/junk", "inbox:junk@1", "unreadable", error="not a product"),
    ]
    jobs = ingest_jobs(site, entries)
    got = sorted((j.inputs, j.tile, tuple(j.params["paths"]), j.params["tile"],
                  j.params.get("ignored", "")[:11]) for j in jobs)
    assert got == sorted([
        (("inbox:S2.SAFE@1",), "T31UDS", ("/in/S2.SAFE",), None, ""),
        (("inbox:S2other.SAFE@1",), None, (), None, "outside the"),
        (("inbox:LC08@1",), "T18NUG", ("/in/LC08",), "T18NUG", ""),
        (("inbox:LC08@1",), "T18NUH", ("/in/LC08",), "T18NUH", ""),
        (("inbox:a_10m.nc@1", "inbox:a_20m.nc@1"), None, ("/in/a_10m.nc", "/in/a_20m.nc"),
         None, ""),
        (("inbox:l8.nc@1",), None, ("/in/l8.nc",), None, ""),
        (("inbox:junk@1",), None, ("/in/junk",), None, ""),
    ])
    assert all(j.processor == "ingest" and j.priority > 20 for j in jobs)
    assert len({j.key for j in jobs}) == len(jobs)


def test_l2a_one_job_per_tile_for_the_l1c_without_l2a_only_when_agriseries_makes_them():
    def l1c(tile, when, sensor="S2A"):
        pid = ProductId(Level.L1C, sensor, tile, when, "ESA")
        return ProductRecord.from_id(pid, f"/store/{pid}")

    recs = [l1c("T31UDS", d(2018, 6, 2, 10)), l1c("T31UDS", d(2018, 6, 12, 10)),
            l1c("T31UDS", d(2018, 8, 2, 10)),  # after the season
            l1c("T31UES", d(2018, 6, 5, 10), "L8"),
            l2a("T31UDS", d(2018, 6, 2, 10), producer="AGS")]  # already made
    off = {"enabled": False}
    provider = make_site(L3A=off, L3B=off)
    assert schedule(provider, Catalogue(recs), dt.date(2018, 12, 1)).jobs == []
    site = site_from_dict({**BASE, "products": {"L3A": off, "L3B": off},
                           "l2a": {"source": "agriseries", "resolution": 120}})
    jobs = schedule(site, Catalogue(recs), dt.date(2018, 12, 1)).jobs
    assert [(j.processor, j.tile, j.inputs, j.outputs) for j in jobs] == [
        ("L2A", "T31UDS", (recs[1].product_id,), ("L2A_S2A_T31UDS_20180612T100000_AGS",)),
        ("L2A", "T31UES", (recs[3].product_id,), ("L2A_L8_T31UES_20180605T100000_AGS",))]
    assert jobs[0].params["resolution"] == 120 and jobs[0].priority > PRIORITY["L3B"]
    # date order: it waits while L1C products are being ingested
    s = schedule(site, Catalogue(recs), dt.date(2018, 12, 1), ingest_pending=True)
    assert s.jobs == [] and any(w.level == "L2A" for w in s.waiting)
