"""The scheduler's rules, on their own: hand-made catalogues, no files, no database."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agriseries.composite.processor import l3a_id
from agriseries.core.ids import Level, ProductId
from agriseries.production.jobstore import ProductRecord, job_key
from agriseries.production.scheduler import (
    CROP_MIN_INPUTS,
    MADE_ONCE,
    PRIORITY,
    RULES,
    WAIT_FOR_INGEST,
    Catalogue,
    InboxEntry,
    crop_product_id,
    ingest_jobs,
    l3a_window,
    l4a_rule,
    l4b_rule,
    schedule,
)
from agriseries.production.site import PENDING_LEVELS, site_from_dict

UTC = dt.UTC
BASE = {"name": "t", "area": {"tiles": ["T31UDS", "T31UES"]},
        "season": {"start": "2018-06-01", "end": "2018-07-31"},
        "inbox": "/nowhere/inbox", "store": "/nowhere/store"}


PARCELS = Path(__file__).parent / "data" / "crop" / "worldcereal_parcels.gpkg"


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


def test_schedule_waits_for_ingest_and_reports_pending_levels(monkeypatch):
    site = make_site()
    cat = Catalogue([l2a("T31UDS", d(2018, 6, 10, 11))])
    s = schedule(site, cat, dt.date(2018, 9, 1), ingest_pending=True)
    assert {j.processor for j in s.jobs} == {"L3B"}  # per-date products go on
    assert any(w.level == "L3A" and "being ingested" in w.reason for w in s.waiting)
    s = schedule(site, cat, dt.date(2018, 9, 1))
    assert {j.processor for j in s.jobs} == {"L3A", "L3B"} and s.notices == []
    assert schedule(make_site(L3A={"enabled": False}, L3B={"enabled": False}), cat,
                    dt.date(2018, 9, 1)).jobs == []
    # no level is pending today; the mechanism stays for new ones: a pending level is
    # reported and gets no job
    crop = site_from_dict({**BASE, "in_situ": str(PARCELS), "products": {
        "L3A": {"enabled": False}, "L3B": {"enabled": False},
        "L4B": {"enabled": True, "class_field": "CT"}}})
    three = Catalogue([l2a("T31UDS", d(2018, 6, day, 11)) for day in (5, 10, 15)])
    assert [j.processor for j in schedule(crop, three, dt.date(2018, 9, 1)).jobs] == ["L4B"]
    monkeypatch.setitem(PENDING_LEVELS, "L4B", "the L4B processor is away (test)")
    s = schedule(crop, three, dt.date(2018, 9, 1))
    assert s.jobs == [] and len(s.notices) == 1
    assert "L4B" in s.notices[0] and "away (test)" in s.notices[0]
    assert "no L4B job is scheduled" in s.notices[0]


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


# ----------------------------------------------------------------------- L4A / L4B


def crop_site(tmp_path=None, season=("2018-03-01", "2018-10-15"), tiles=("T31UDS", "T31UES"),
              **products):
    off = {"enabled": False}
    return site_from_dict({**BASE, "area": {"tiles": list(tiles)},
                           "season": {"start": season[0], "end": season[1]},
                           "in_situ": str(PARCELS),
                           "products": {"L3A": off, "L3B": off, **products}})


def s2_every(tile: str, first: dt.date, last: dt.date, days: int = 5, hour: int = 11):
    out, day = [], first
    while day <= last:
        out.append(l2a(tile, d(day.year, day.month, day.day, hour),
                       sensor="S2A" if len(out) % 2 == 0 else "S2B"))
        day += dt.timedelta(days=days)
    return out


def test_l4a_dates_are_the_month_ends_from_mid_season_and_the_season_end():
    # 2018-03-01 .. 2018-10-15: the middle is Jun 23; month ends from there, then the end
    site = crop_site()
    assert site.l4a_dates() == [dt.date(2018, 6, 30), dt.date(2018, 7, 31),
                                dt.date(2018, 8, 31), dt.date(2018, 9, 30),
                                dt.date(2018, 10, 15)]
    # a given start: the first map at the end of its month (a month end is its own)
    assert crop_site(L4A={"start": "2018-08-01"}).l4a_dates() == [
        dt.date(2018, 8, 31), dt.date(2018, 9, 30), dt.date(2018, 10, 15)]
    assert crop_site(L4A={"start": "2018-07-31"}).l4a_dates()[0] == dt.date(2018, 7, 31)
    # a season ending on a month end: no second map that day
    assert crop_site(season=("2018-03-01", "2018-10-31")).l4a_dates()[-1:] == [
        dt.date(2018, 10, 31)]
    assert len(crop_site(season=("2018-03-01", "2018-10-31")).l4a_dates()) == 4
    # L4B: the dates given, sorted, else the season end
    assert crop_site(L4B={"dates": ["2018-09-30", "2018-07-15", "2018-09-30"]}).l4b_dates() == [
        dt.date(2018, 7, 15), dt.date(2018, 9, 30)]
    assert crop_site().l4b_dates() == [dt.date(2018, 10, 15)]


def test_l4a_one_job_per_tile_and_month_end_that_has_come():
    site = crop_site(L4A={"enabled": True, "class_field": "CROP", "crop_values": [1, 3]})
    uds = s2_every("T31UDS", dt.date(2018, 3, 2), dt.date(2018, 8, 30))  # 2018-06-30 is in
    assert any(ProductId.parse(r.product_id).start.date() == dt.date(2018, 6, 30) for r in uds)
    l8 = l2a("T31UDS", d(2018, 5, 2, 10), sensor="L8", producer="LASRC")  # not read: not S2
    before = l2a("T31UDS", d(2018, 2, 27, 11))  # before the season
    ues = s2_every("T31UES", dt.date(2018, 7, 20), dt.date(2018, 7, 30))  # 3 dates: Jul 20..30
    cat = Catalogue(uds + ues + [l8, before])
    s = schedule(site, cat, dt.date(2018, 8, 31))
    jobs = {(j.tile, j.params["until"]): j for j in s.jobs}
    assert set(jobs) == {("T31UDS", "2018-06-30"), ("T31UDS", "2018-07-31"),
                         ("T31UDS", "2018-08-31"), ("T31UES", "2018-07-31"),
                         ("T31UES", "2018-08-31")}
    june = jobs[("T31UDS", "2018-06-30")]
    want = sorted(r.product_id for r in uds
                  if ProductId.parse(r.product_id).start.date() <= dt.date(2018, 6, 30))
    assert june.processor == "L4A" and june.inputs == tuple(want)
    assert june.outputs == ("L4A_S2_T31UDS_20180301-20180630_AGS",)
    assert june.outputs[0] == crop_product_id("L4A", "T31UDS", site, dt.date(2018, 6, 30))
    assert june.params == {"season": ["2018-03-01", "2018-10-15"], "until": "2018-06-30",
                           "product": june.outputs[0], "class_field": "CROP",
                           "crop_values": [1, 3], "insitu": str(PARCELS),
                           "reference_map": None, "ignore_values": []}
    assert PRIORITY["L3A"] > june.priority > PRIORITY["L4B"]
    assert jobs[("T31UDS", "2018-08-31")].inputs == tuple(sorted(r.product_id for r in uds))
    # T31UES: nothing up to Jun 30; its July map has its three dates
    assert jobs[("T31UES", "2018-07-31")].inputs == tuple(sorted(r.product_id for r in ues))
    why = {(w.tile, w.what): w.reason for w in s.waiting}
    assert why[("T31UES", "2018-06-30")] == (
        "no Sentinel-2 L2A product(s) between 2018-03-01 and 2018-06-30 yet; a crop mask "
        f"needs at least {CROP_MIN_INPUTS}")
    # the dates to come wait for their day
    assert why[("T31UDS", "2018-09-30")] == "the crop mask of 2018-09-30 is made on that day"
    assert {w.what for w in s.waiting if w.tile == "T31UDS"} == {"2018-09-30", "2018-10-15"}
    # today is cut: on Jul 30 only June is due; on Jul 31 July too
    assert [j.params["until"] for j in l4a_rule(site, cat, dt.date(2018, 7, 30))[0]
            if j.tile == "T31UDS"] == ["2018-06-30"]
    assert [j.params["until"] for j in l4a_rule(site, cat, dt.date(2018, 7, 31))[0]
            if j.tile == "T31UDS"] == ["2018-06-30", "2018-07-31"]


def test_l4a_waits_for_enough_sentinel2_inputs():
    site = crop_site(tiles=("T31UDS",), L4A={"enabled": True})
    two = [l2a("T31UDS", d(2018, 6, 5, 11)), l2a("T31UDS", d(2018, 6, 10, 11)),
           l2a("T31UDS", d(2018, 6, 12, 10), sensor="L8", producer="LASRC")]
    jobs, waiting = l4a_rule(site, Catalogue(two), dt.date(2018, 7, 1))
    assert jobs == [] and [w.what for w in waiting] == [
        "2018-06-30", "2018-07-31", "2018-08-31", "2018-09-30", "2018-10-15"]
    assert waiting[0].reason.startswith("2 Sentinel-2 L2A product(s) between 2018-03-01 and "
                                        "2018-06-30 yet")
    third = l2a("T31UDS", d(2018, 6, 30, 10, 56))  # on the map date: in (the whole day)
    jobs, _ = l4a_rule(site, Catalogue([*two, third]), dt.date(2018, 7, 1))
    assert [len(j.inputs) for j in jobs] == [3]


def test_a_crop_mask_made_is_not_due_again_and_late_inputs_do_not_remake_it():
    site = crop_site(tiles=("T31UDS",), L4A={"enabled": True})
    recs = s2_every("T31UDS", dt.date(2018, 4, 1), dt.date(2018, 7, 20))
    today = dt.date(2018, 7, 31)
    first = {j.params["until"]: j for j in l4a_rule(site, Catalogue(recs), today)[0]}
    assert set(first) == {"2018-06-30", "2018-07-31"}
    made = ProductRecord.from_id(first["2018-06-30"].outputs[0], "/store/x")
    late = l2a("T31UDS", d(2018, 6, 16, 11), sensor="S2B")  # a late date of June
    jobs, _ = l4a_rule(site, Catalogue([*recs, made, late]), today)
    assert [j.params["until"] for j in jobs] == ["2018-07-31"]  # June kept, not remade
    assert late.product_id in jobs[0].inputs  # the late date goes into the next map
    # the same job (same key) as long as the inputs are the same; a new input a new key,
    # for the same product (the runner submits it only when no job makes it: MADE_ONCE)
    again = l4a_rule(site, Catalogue([*recs, made]), today)[0][0]
    assert again.key == first["2018-07-31"].key
    assert jobs[0].key != again.key and jobs[0].params["product"] == again.params["product"]
    assert MADE_ONCE == {"L4A", "L4B"}
    # a map of a previous season (another start) does not count
    other = ProductRecord.from_id("L4A_S2_T31UDS_20170301-20180630_AGS", "/store/y")
    assert {j.params["until"] for j in l4a_rule(site, Catalogue([*recs, other]), today)[0]} \
        == {"2018-06-30", "2018-07-31"}


def test_l4a_from_a_reference_map_without_in_situ(tmp_path):
    ref = tmp_path / "esa_cci_lc.tif"
    ref.write_bytes(b"")  # the rule passes the path on; the processor reads it
    site = site_from_dict({**BASE, "area": {"tiles": ["T31UDS"]},
                           "products": {"L3A": {"enabled": False}, "L3B": {"enabled": False},
                                        "L4A": {"enabled": True, "reference_map": str(ref),
                                                "crop_values": [10, 11, 12, 20, 30],
                                                "ignore_values": [210]}}})
    recs = s2_every("T31UDS", dt.date(2018, 6, 1), dt.date(2018, 7, 31))
    # season Jun 1 .. Jul 31: the middle is Jul 1, so one map, on Jul 31
    (job,) = l4a_rule(site, Catalogue(recs), dt.date(2018, 8, 1))[0]
    assert job.params["until"] == "2018-07-31"
    assert job.params["reference_map"] == str(ref) and job.params["insitu"] is None
    assert job.params["crop_values"] == [10, 11, 12, 20, 30]
    assert job.params["ignore_values"] == [210]
    # with in-situ data too, the reference map chosen for L4A wins (in_situ serves L4B)
    both = site_from_dict({**BASE, "area": {"tiles": ["T31UDS"]}, "in_situ": str(PARCELS),
                           "products": {"L4A": {"enabled": True, "reference_map": str(ref)}}})
    jobs = l4a_rule(both, Catalogue(recs), dt.date(2018, 8, 1))[0]
    assert jobs and all(j.params["insitu"] is None for j in jobs)


def test_l4b_one_job_per_date_and_the_latest_crop_mask():
    l4b = {"enabled": True, "class_field": "CT", "exclude_codes": [0],
           "dates": ["2018-07-15", "2018-09-30"]}
    site = crop_site(tiles=("T31UDS",), L4B=l4b)
    recs = s2_every("T31UDS", dt.date(2018, 3, 5), dt.date(2018, 9, 30))
    today = dt.date(2018, 10, 1)
    jobs = {j.params["until"]: j for j in l4b_rule(site, Catalogue(recs), today)[0]}
    assert set(jobs) == {"2018-07-15", "2018-09-30"}
    j = jobs["2018-07-15"]
    assert j.processor == "L4B" and j.outputs == ("L4B_S2_T31UDS_20180301-20180715_AGS",)
    assert j.outputs[0] == crop_product_id("L4B", "T31UDS", site, dt.date(2018, 7, 15))
    assert j.inputs == tuple(sorted(r.product_id for r in recs
                                    if r.start.date() <= dt.date(2018, 7, 15)))
    assert j.params == {"season": ["2018-03-01", "2018-10-15"], "until": "2018-07-15",
                        "product": j.outputs[0], "class_field": "CT", "exclude_codes": [0],
                        "insitu": str(PARCELS)}
    assert j.priority < PRIORITY["L4A"]
    # a date to come waits; a map made is not due again
    made = ProductRecord.from_id(j.outputs[0], "/store/x")
    jobs, waiting = l4b_rule(site, Catalogue([*recs, made]), dt.date(2018, 9, 29))
    assert jobs == [] and [(w.what, w.reason) for w in waiting] == [
        ("2018-09-30", "the crop type map of 2018-09-30 is made on that day")]

    # crop_mask: true with the crop mask made here: wait for the masks due first
    masked = crop_site(tiles=("T31UDS",), L4A={"enabled": True}, L4B={**l4b, "crop_mask": True})
    jobs, waiting = l4b_rule(masked, Catalogue(recs), today)
    assert jobs == [] and len(waiting) == 2
    assert waiting[0].reason.startswith(
        "waits for its crop mask L4A_S2_T31UDS_20180301-20180630_AGS (due first")
    masks = {d_: ProductRecord.from_id(crop_product_id("L4A", "T31UDS", masked, d_), "/m")
             for d_ in masked.l4a_dates()}
    june, july, aug, sep, _ = masked.l4a_dates()
    jobs, waiting = l4b_rule(masked, Catalogue([*recs, masks[june]]), today)
    (j,) = jobs  # Jul 15: June's mask; Sep 30 waits for July's
    assert j.params["until"] == "2018-07-15" and j.params["crop_mask"] == masks[june].product_id
    assert j.inputs == tuple(sorted([masks[june].product_id, *(
        r.product_id for r in recs if r.start.date() <= dt.date(2018, 7, 15))]))
    assert len(waiting) == 1 and waiting[0].reason.startswith(
        f"waits for its crop mask {masks[july].product_id} (due first")
    jobs = l4b_rule(masked, Catalogue([*recs, *masks.values()]), today)[0]
    assert {j.params["until"]: j.params["crop_mask"] for j in jobs} == {
        "2018-07-15": masks[june].product_id, "2018-09-30": masks[sep].product_id}
    # a crop mask that cannot be made (too few inputs: June's) is not waited for
    few = s2_every("T31UDS", dt.date(2018, 7, 1), dt.date(2018, 7, 12))  # 3 dates in July
    jobs, waiting = l4b_rule(masked, Catalogue(few), today)
    assert jobs == [] and [(w.what, w.reason[:40]) for w in waiting] == [
        ("2018-07-15", "no crop mask (L4A) of T31UDS made on or "),
        ("2018-09-30", "waits for its crop mask L4A_S2_T31UDS_20")]
    assert "20180301-20180731" in waiting[1].reason
    # without the L4A in the production: the latest crop mask made (by hand) is used, and
    # none at all is a wait
    by_hand = crop_site(tiles=("T31UDS",), L4B={**l4b, "crop_mask": True})
    jobs, waiting = l4b_rule(by_hand, Catalogue(recs), today)
    assert jobs == [] and "no crop mask (L4A) of T31UDS made on or before 2018-07-15" in \
        waiting[0].reason
    jobs = l4b_rule(by_hand, Catalogue([*recs, masks[aug]]), today)[0]
    assert [(j.params["until"], j.params["crop_mask"]) for j in jobs] == [
        ("2018-09-30", masks[aug].product_id)]


def test_site_model_one_job_per_map_date_for_every_tile():
    """``site_model: true``: one job per map date for the whole site (tile None), with the
    L2A of every tile as inputs and every tile's map as outputs; in season too (a model per
    date); it waits while a tile has too few inputs, and (L4B) for every tile's crop mask."""
    site = crop_site(L4A={"enabled": True, "start": "2018-09-01", "site_model": True,
                          "feature_set": "20m"},
                     L4B={"enabled": True, "class_field": "CT", "site_model": True,
                          "crop_mask": True, "feature_set": "20m"})
    uds = s2_every("T31UDS", dt.date(2018, 3, 5), dt.date(2018, 10, 15))
    ues = s2_every("T31UES", dt.date(2018, 9, 22), dt.date(2018, 10, 15))  # 2 by Sep 30
    today = dt.date(2018, 10, 20)
    jobs, waiting = l4a_rule(site, Catalogue(uds + ues), today)
    (j,) = jobs  # Sep 30 waits for T31UES; the season end (Oct 15) is due
    assert j.tile is None and j.params["until"] == "2018-10-15"
    assert j.params["tiles"] == ["T31UDS", "T31UES"] and j.params["feature_set"] == "20m"
    assert j.outputs == tuple(crop_product_id("L4A", t, site, dt.date(2018, 10, 15))
                              for t in ("T31UDS", "T31UES"))
    assert j.params["products"] == list(j.outputs) and j.params["product"] == j.outputs[0]
    assert j.inputs == tuple(sorted(r.product_id for r in uds + ues))
    assert [(w.tile, w.what) for w in waiting] == [(None, "2018-09-30")]
    assert "T31UES (2): fewer than 3 Sentinel-2 L2A products" in waiting[0].reason
    # one tile's map made already: the job makes the other's (the model still sees both)
    made = ProductRecord.from_id(j.outputs[0], "/m")
    (j2,) = l4a_rule(site, Catalogue([*uds, *ues, made]), today)[0]
    assert j2.outputs == j.outputs[1:] and j2.params["tiles"] == ["T31UDS", "T31UES"]
    # L4B: waits for the crop mask of every tile, then names them in tile order
    jobs, waiting = l4b_rule(site, Catalogue([*uds, *ues, made]), today)
    assert jobs == [] and "waits for its crop mask" in waiting[0].reason
    masks = [ProductRecord.from_id(p, "/m") for p in j.outputs]
    (b,) = l4b_rule(site, Catalogue([*uds, *ues, *masks]), today)[0]
    assert b.tile is None and b.params["crop_masks"] == list(j.outputs)
    assert set(j.outputs) <= set(b.inputs)
    # both made: nothing due
    done = [ProductRecord.from_id(p, "/m") for p in b.outputs]
    assert l4b_rule(site, Catalogue([*uds, *ues, *masks, *done]), today)[0] == []


def test_site_model_settings_are_checked():
    import pytest

    from agriseries.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="products.L4A.site_model"):
        site_from_dict({**BASE, "area": {"tiles": ["T31UDS"]},
                        "season": {"start": "2018-03-01", "end": "2018-10-15"},
                        "products": {"L4A": {"enabled": True, "site_model": True}}})


def test_crop_levels_are_in_the_rule_table_and_wait_for_ingest():
    assert {"L4A", "L4B"} <= set(RULES) and {"L4A", "L4B"} <= WAIT_FOR_INGEST
    site = crop_site(L4A={"enabled": True}, L4B={"enabled": True, "class_field": "CT"})
    recs = s2_every("T31UDS", dt.date(2018, 3, 5), dt.date(2018, 10, 15))
    s = schedule(site, Catalogue(recs), dt.date(2018, 12, 1), ingest_pending=True)
    assert s.jobs == [] and {w.level for w in s.waiting} == {"L4A", "L4B"}
    s = schedule(site, Catalogue(recs), dt.date(2018, 12, 1))
    assert sorted((j.processor, j.params["until"]) for j in s.jobs) == [
        ("L4A", "2018-06-30"), ("L4A", "2018-07-31"), ("L4A", "2018-08-31"),
        ("L4A", "2018-09-30"), ("L4A", "2018-10-15"), ("L4B", "2018-10-15")]
    assert len({j.key for j in s.jobs}) == len(s.jobs)
    assert not schedule(crop_site(), Catalogue(recs), dt.date(2018, 12, 1)).jobs  # disabled
