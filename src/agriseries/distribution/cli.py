"""Command-line commands of the distribution: ``serve``, ``publish`` and ``users``.

* ``agriseries serve [--store DIR | SITE.yaml] [--host 127.0.0.1 --port 8080]
  [--catalog-dsn postgresql://...]`` runs the STAC API service (uvicorn);
* ``agriseries publish SITE.yaml [--follow]`` drains the site's publication outbox into
  the catalogue (the embedded one in the store, or ``--catalog-dsn``);
* ``agriseries users add NAME`` (prints its token once), ``users token NAME``,
  ``users list``, ``users revoke NAME``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..core.errors import AgriseriesError

console = Console(stderr=True)
out = Console()

__all__ = ["publish", "serve", "users"]


def _fail(msg: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    sys.exit(code)


def _target(target: Path | None, store: Path | None):
    """(site or None, store) from SITE.yaml or --store."""
    if target is not None and store is not None:
        raise click.UsageError("give SITE.yaml or --store, not both")
    if target is None and store is None:
        raise click.UsageError("give SITE.yaml or --store DIR")
    if target is not None and target.is_dir():
        return None, target
    if target is not None:
        from ..production.site import load_site

        try:
            site = load_site(target)
        except AgriseriesError as e:
            _fail(str(e))
        return site, Path(site.store)
    return None, store


def _settings(store: Path, catalog_dsn: str | None, catalog_dir: Path | None, site=None, **kw):
    from pydantic import ValidationError

    from .settings import ServiceSettings

    if site is not None and catalog_dsn is None and catalog_dir is None:
        # the catalogue the site's run publishes to (site section 'publish')
        catalog_dsn, catalog_dir = site.publish.catalog_dsn, site.publish.catalog_dir

    try:
        return ServiceSettings(store=store, backend="pgstac" if catalog_dsn else "geoparquet",
                               catalog_dsn=catalog_dsn, catalog_dir=catalog_dir,
                               **{k: v for k, v in kw.items() if v is not None})
    except ValidationError as e:
        _fail("; ".join(f"{'.'.join(map(str, x['loc'])) or 'settings'}: {x['msg']}"
                        for x in e.errors()), 2)


_target_arg = click.argument("target", required=False, type=click.Path(path_type=Path))
_store_opt = click.option("--store", type=click.Path(path_type=Path), default=None,
                          help="The product store (instead of SITE.yaml).")
_dsn_opt = click.option("--catalog-dsn", default=None, envvar="AGRISERIES_CATALOG_DSN",
                        help="pgstac catalogue: postgresql://user@host:5432/db (default: the "
                             "embedded stac-geoparquet catalogue in STORE/.distribution).")
_dir_opt = click.option("--catalog-dir", type=click.Path(path_type=Path), default=None,
                        help="Folder of the embedded catalogue (default "
                             "STORE/.distribution/catalog).")
_db_opt = click.option("--service-db", default=None,
                       help="Accounts and baskets database (default "
                            "STORE/.distribution/service.sqlite).")


@click.command(name="serve")
@_target_arg
@_store_opt
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback by default).")
@click.option("--port", default=8080, show_default=True, type=int)
@_dsn_opt
@_dir_opt
@_db_opt
@click.option("--private-search", is_flag=True, help="Search needs a token too.")
@click.option("--quota-gb", type=float, default=None, help="Default daily quota per user (GiB).")
@click.option("--max-downloads", type=int, default=None,
              help="Default concurrent downloads per user.")
@click.option("--oidc-issuer", default=None, help="Single sign-on: token issuer (iss).")
@click.option("--oidc-audience", default=None, help="Single sign-on: audience (aud).")
@click.option("--oidc-jwks-url", default=None, help="Single sign-on: the issuer's JWKS URL.")
@click.option("--oidc-client-id", default=None,
              help="Single sign-on on the web page: its client id at the issuer (a public "
                   "client: authorization code + PKCE; redirect URI http(s)://HOST/portal/).")
@click.option("--pgstac-hydrate", type=click.Choice(["api", "database"]), default=None,
              help="pgstac: hydrate the items in the service (api, the default) or in "
                   "pgstac's SQL (database); the same items either way.")
def serve(target, store, host, port, catalog_dsn, catalog_dir, service_db, private_search,
          quota_gb, max_downloads, oidc_issuer, oidc_audience, oidc_jwks_url, oidc_client_id,
          pgstac_hydrate):
    """Serve the published products: a STAC API with search, downloads (tokens, quotas,
    HTTP Range) and baskets. TARGET is a site file or a store folder."""
    site, store_dir = _target(target, store)
    settings = _settings(store_dir, catalog_dsn, catalog_dir, site, service_db=service_db,
                         public_search=not private_search,
                         quota_bytes_per_day=int(quota_gb * 2**30) if quota_gb else None,
                         max_concurrent_downloads=max_downloads, oidc_issuer=oidc_issuer,
                         oidc_audience=oidc_audience, oidc_jwks_url=oidc_jwks_url,
                         oidc_client_id=oidc_client_id, pgstac_hydrate=pgstac_hydrate)
    try:
        import uvicorn

        from .app import create_app

        app = create_app(settings)
        app.state.agriseries_site = site  # the portal's operator page
    except AgriseriesError as e:
        _fail(str(e))
    console.print(f"agriseries: serving {store_dir} ({settings.backend}) on http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


@click.command(name="publish")
@_target_arg
@_store_opt
@click.option("--database", default=None,
              help="Production database URL (default: the site's; needed with --store).")
@_dsn_opt
@_dir_opt
@click.option("--follow", is_flag=True, help="Keep publishing as products come.")
@click.option("--poll", default=2.0, show_default=True, type=float,
              help="--follow: seconds between two looks at the outbox.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=float,
              help="Time limit of one catalogue call (s).")
@click.option("--all", "everything", is_flag=True,
              help="Publish every product again (to fill a new or rebuilt catalogue).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def publish(target, store, database, catalog_dsn, catalog_dir, follow, poll, timeout_s,
            everything, as_json):
    """Publish the products production made (its outbox) into the catalogue."""
    site, store_dir = _target(target, store)
    if database is None:
        if site is None:
            raise click.UsageError("--store needs --database (the production database URL)")
        database = site.database_url
    settings = _settings(store_dir, catalog_dsn, catalog_dir, site)
    from .catalog import open_backend
    from .publisher import Publisher

    try:
        pub = Publisher(database, open_backend(settings, timeout_s=timeout_s), store_dir,
                        timeout_s=timeout_s)
    except AgriseriesError as e:
        _fail(str(e))
    try:
        if everything:
            try:
                pub.requeue_all()
            except AgriseriesError as e:
                _fail(str(e))
        if follow:
            import signal
            import threading

            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *a: stop.set())

            def show(rep) -> None:
                console.print(f"published {rep.published}, removed {rep.removed}, "
                              f"rejected {len(rep.rejected)}, backlog {rep.backlog}"
                              + (f"; failed: {rep.failures[-1]}" if rep.failures else ""),
                              highlight=False)

            try:
                pub.follow(poll_s=poll, stop=stop, on_report=show)
            except KeyboardInterrupt:
                pass
            return
        try:
            rep = pub.drain(waiting_too=True)  # an operator's "now": backoffs not waited
        except AgriseriesError as e:
            _fail(str(e))
    finally:
        pub.close()
    if as_json:
        out.print_json(json.dumps(rep.to_dict()))
    else:
        out.print(f"published {rep.published}, removed {rep.removed}, rejected "
                  f"{len(rep.rejected)}, backlog {rep.backlog}", highlight=False)
        for pid, msg in rep.rejected:
            out.print(f"  rejected {pid}: {msg}", highlight=False)
        for msg in rep.failures:
            out.print(f"  [red]failed:[/red] {msg}", highlight=False)
    sys.exit(1 if rep.failures or rep.rejected else 0)


@click.group(name="users")
def users() -> None:
    """Accounts of the distribution service: add, token, list, revoke."""


def _accounts(target, store, service_db):
    from .accounts import Accounts
    from .settings import ServiceSettings

    _, store_dir = _target(target, store)
    s = ServiceSettings(store=store_dir, service_db=service_db)
    try:
        return Accounts(s.service_db_url, quota_bytes_per_day=s.quota_bytes_per_day,
                        max_concurrent=s.max_concurrent_downloads)
    except AgriseriesError as e:
        _fail(str(e))


def _with_accounts(target, store, service_db, action):
    """``action(accounts)`` on the service's accounts, closed afterwards; an
    :class:`AgriseriesError` (unknown user, name taken) is reported and exits 1."""
    acc = _accounts(target, store, service_db)
    try:
        return action(acc)
    except AgriseriesError as e:
        _fail(str(e))
    finally:
        acc.close()


_users_target = click.option("--site", "target", type=click.Path(path_type=Path), default=None,
                             help="Site file (or give --store).")


@users.command(name="add")
@click.argument("name")
@_users_target
@_store_opt
@_db_opt
@click.option("--quota-gb", type=float, default=None, help="Daily quota (GiB; default the service's).")
@click.option("--max-downloads", type=int, default=None, help="Concurrent downloads.")
def users_add(name, target, store, service_db, quota_gb, max_downloads):
    """Create user NAME and print its API token (shown only once)."""
    token = _with_accounts(target, store, service_db, lambda acc: acc.add_user(
        name, quota_bytes_per_day=int(quota_gb * 2**30) if quota_gb else None,
        max_concurrent=max_downloads))
    out.print(token, highlight=False)


@users.command(name="token")
@click.argument("name")
@_users_target
@_store_opt
@_db_opt
def users_token(name, target, store, service_db):
    """Make a new API token for user NAME (printed once)."""
    out.print(_with_accounts(target, store, service_db, lambda acc: acc.new_token(name)),
              highlight=False)


@users.command(name="list")
@_users_target
@_store_opt
@_db_opt
@click.option("--json", "as_json", is_flag=True)
def users_list(target, store, service_db, as_json):
    """List the users, their limits and today's downloads."""
    rows = _with_accounts(target, store, service_db, lambda acc: acc.users())
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table(title="agriseries users")
    for c in ("name", "origin", "created", "revoked", "tokens", "bytes today", "quota/day",
              "max downloads"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["origin"], r["created"], r["revoked"] or "", str(r["tokens"]),
                  str(r["bytes_today"]), str(r["quota_bytes_per_day"]), str(r["max_concurrent"]))
    out.print(t)


@users.command(name="revoke")
@click.argument("name")
@_users_target
@_store_opt
@_db_opt
def users_revoke(name, target, store, service_db):
    """Disable user NAME and every token of it."""
    _with_accounts(target, store, service_db, lambda acc: acc.revoke(name))
    out.print(f"user {name} revoked", highlight=False)
