"""``agriseries store check|repair|remove``: look after a product store.

* ``check STORE`` reads every item (and validates it against the STAC core and extension
  schemas, offline), checks every asset (present, a readable COG of the size
  and type the item says; ``--deep`` reads every pixel), the catalogue files and, with
  ``--site``, the production catalogue's rows; exit code 1 when something is wrong;
* ``repair STORE`` does what the check suggests (quarantines broken products into
  ``STORE/.quarantine``, rebuilds the catalogue, deletes temporary leftovers, brings the
  production catalogue in line), then checks again;
* ``remove STORE ID...`` removes products cleanly (folder, catalogue, production row).

``--json`` prints the report for scripts. See docs/robustness.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..cli_output import err


def _open(store_dir: Path | None, site_file: Path | None):
    """The product store and, with a site, its production catalogue."""
    from ..core.errors import StoreError
    from .store import ProductStore

    catalogue = None
    if site_file is not None:
        from ..production.site import load_site

        site = load_site(site_file)
        if store_dir is None:
            store_dir = Path(site.store)
        elif Path(store_dir).resolve() != Path(site.store).resolve():
            raise click.UsageError(f"{store_dir} is not the store of {site_file} ({site.store})")
        catalogue = site.job_store()
    if store_dir is None:
        raise click.UsageError("give the STORE folder (or --site SITE.yaml)")
    store_dir = Path(store_dir)
    if not store_dir.exists():
        raise StoreError(f"{store_dir}: no product store there (no such folder)")
    if not store_dir.is_dir():
        raise StoreError(f"{store_dir}: the product store path is a file, not a folder")
    return ProductStore(store_dir), catalogue


def _checked(store_dir, site_file, deep: bool, tmp_age_h: float, schemas: bool,
             quiet: bool, repair: bool = False):
    """Open the store (and, with a site, its production catalogue), check it and, with
    ``repair``, repair what was found and check again: ``(report, repair, report after)``
    (the last two ``None`` without ``repair``). The production catalogue is closed after."""
    from ..cli_output import progress_bar
    from .check import check_store, repair_store

    store, catalogue = _open(store_dir, site_file)

    def check(silent: bool):
        n = sum(1 for _ in store.item_files())
        with progress_bar("check", n, "product", disable=silent) as tick:
            return check_store(store, deep=deep, catalogue=catalogue,
                               tmp_age_s=tmp_age_h * 3600, schemas=schemas,
                               on_product=lambda p: tick(p.stem))

    try:
        before = check(quiet)
        if not repair:
            return before, None, None
        done = repair_store(store, before, catalogue=catalogue)
        return before, done, check(True)
    finally:
        if catalogue is not None:
            catalogue.close()


def _print_problems(report) -> None:
    for p in report.problems:
        click.echo(f"{p.kind}\t{p.path}\t{p.message}\t[{p.repair}]")


def _check_options(json_help: str):
    """The arguments and options ``store check`` and ``store repair`` share."""
    options = [
        click.argument("store_dir", required=False, type=click.Path(path_type=Path)),
        click.option("--site", "site_file", type=click.Path(exists=True, path_type=Path),
                     default=None, help="Site file: also compare the production catalogue "
                     "(its database) with the store."),
        click.option("--deep", is_flag=True, help="Read every pixel of every COG to find "
                     "damage (slow)."),
        click.option("--tmp-age", "tmp_age_h", type=click.FloatRange(min=0), default=24.0,
                     show_default=True, help="Hours after which an entry of STORE/.tmp is a "
                     "leftover of an interrupted write."),
        click.option("--no-schemas", "no_schemas", is_flag=True,
                     help="Do not validate the items and catalogue files against the STAC "
                     "core and extension schemas (offline; about 20 ms an item)."),
        click.option("--json", "as_json", is_flag=True, help=json_help),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


_site_opt = click.option("--site", "site_file", type=click.Path(exists=True, path_type=Path),
                         default=None, help="Site file: also remove the products' rows from "
                         "the production catalogue (its database).")


@click.group(name="store")
def store_cmd() -> None:
    """Check, repair and remove products of a store."""


@store_cmd.command(name="check")
@_check_options("Print the report as JSON.")
def check_cmd(store_dir, site_file, deep, tmp_age_h, no_schemas, as_json):
    """Check every product of STORE: items readable and valid STAC, assets present and valid
    COGs, the catalogue files in line with the items (and the production catalogue, with
    --site).

    Prints one line per problem (kind, path, what is wrong, what `repair` does), tab
    separated; exit code 0 if the store is sound, 1 if a problem was found.
    """
    report, _, _ = _checked(store_dir, site_file, deep, tmp_age_h, not no_schemas, as_json)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    else:
        _print_problems(report)
        verdict = "sound" if report.ok else f"{len(report.problems)} problem(s)"
        if report.incomplete:
            verdict += (f"; {len(report.incomplete)} product(s) flagged incomplete (see "
                        "agriseries list)")
        err.print(f"{report.store}: {report.products} product(s), {report.assets} file(s): "
                  f"{verdict}" + ("" if report.ok else " (agriseries store repair fixes them)"),
                  highlight=False, markup=False)
    sys.exit(0 if report.ok else 1)


@store_cmd.command(name="repair")
@_check_options("Print what was done as JSON.")
def repair_cmd(store_dir, site_file, deep, tmp_age_h, no_schemas, as_json):
    """Repair what `store check` finds: quarantine broken products (moved into
    STORE/.quarantine with a note; nothing is deleted), rebuild catalog.json and the
    collections, delete leftovers of interrupted writes, bring the production catalogue in
    line (--site). Then check again: exit code 0 if the store is sound.
    """
    before, done, after = _checked(store_dir, site_file, deep, tmp_age_h, not no_schemas,
                                   as_json, repair=True)
    if as_json:
        click.echo(json.dumps({"found": before.to_dict(), "repair": done.to_dict(),
                               "after": after.to_dict()}, indent=1))
    else:
        for a in done.actions:
            click.echo(f"{a['action']}\t{a['path']}\t{a['why']}")
        for e in done.errors:
            err.print(f"error: {e['path']}: {e['error']}", highlight=False, markup=False)
        _print_problems(after)
        err.print(f"{after.store}: {len(before.problems)} problem(s) found, "
                  f"{len(done.actions)} repair(s), {len(after.problems)} left",
                  highlight=False, markup=False)
    sys.exit(0 if after.ok and not done.errors else 1)


@store_cmd.command(name="remove")
@click.argument("store_dir", type=click.Path(path_type=Path))
@click.argument("product_ids", nargs=-1, required=True)
@_site_opt
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
def remove_cmd(store_dir, product_ids, site_file, as_json):
    """Remove products from STORE: each folder atomically (it is whole or gone), then the
    catalogue files and, with --site, the production catalogue's rows. A product that is
    not in the store is reported and the others are still removed (exit code 1)."""
    from ..core.errors import StoreError
    from ..core.ids import ProductId

    store, catalogue = _open(store_dir, site_file)
    removed, failed = [], []
    try:
        for pid in product_ids:
            try:
                ProductId.parse(pid)
            except ValueError as e:
                failed.append({"product": pid, "error": f"{pid}: not a product id ({e})"})
                continue
            try:
                store.remove_product(pid)
                removed.append(pid)
            except (StoreError, OSError) as e:
                failed.append({"product": pid, "error": str(e)})
            if catalogue is not None:
                catalogue.remove_product(pid)
        if removed:
            store.update_catalog(force=True)
    finally:
        if catalogue is not None:
            catalogue.close()
    if as_json:
        click.echo(json.dumps({"removed": removed, "failed": failed}, indent=1))
    else:
        for pid in removed:
            click.echo(f"removed\t{pid}")
        for f in failed:
            err.print(f"error: {f['error']}", highlight=False, markup=False)
    sys.exit(1 if failed else 0)


__all__ = ["store_cmd"]
