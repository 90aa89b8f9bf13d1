"""Command-line commands of the automatic production: ``site``, ``run``, ``status``, ``retry``.

They are registered on the main ``agriseries`` group by :mod:`agriseries.cli`
(``main.add_command(site)``, ``main.add_command(run)``, ...), and can also be run on their own
as ``python -m agriseries.production.cli``.

* ``agriseries site template`` prints a commented site file; ``agriseries site check
  SITE.yaml`` validates one and shows its tiles and months;
* ``agriseries run SITE.yaml [--watch] [--scheduler tcp://host:8786]`` runs the production
  (progress bars on a terminal; ``--json`` prints the report);
* ``agriseries status SITE.yaml`` prints the jobs by state with their errors, the products
  made and what is waiting;
* ``agriseries retry SITE.yaml KEY... | --all`` puts failed and quarantined jobs back in the
  queue (attempts reset) once their cause is fixed; the next ``run`` takes them.

Exit codes: 0 all went well, 1 a job failed or the run stopped on an error (the database
unavailable...), 2 wrong usage, 130 (SIGINT) or 143 (SIGTERM) a run without ``--watch`` stopped
before it finished (running jobs released; run it again to finish).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from ..cli_output import TILE, out
from ..cli_output import err as console
from ..core.errors import AgriseriesError

__all__ = ["cli", "retry", "run", "site", "status"]


def _fail(exc: AgriseriesError) -> None:
    from ..core.errors import NothingToDoError

    if isinstance(exc, NothingToDoError):
        raise exc  # the group's handler: "nothing to do: ...", exit code 3 (EXIT_NOTHING)
    console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    sys.exit(1)


def _load(path: Path):
    from .site import load_site

    try:
        return load_site(path)
    except AgriseriesError as e:
        _fail(e)


@click.group(name="site")
def site() -> None:
    """Site files: a commented template, and validation."""


@site.command(name="template")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the template to this file instead of printing it.")
def template(output: Path | None) -> None:
    """Print a commented site file (every field explained) to start from."""
    from .site import TEMPLATE

    if output is None:
        click.echo(TEMPLATE, nl=False)
        return
    if output.exists():
        raise click.UsageError(f"{output} exists; not overwritten")
    output.write_text(TEMPLATE)
    console.print(f"site template written to {output}")


@site.command(name="check")
@click.argument("site_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the validated site as JSON.")
def check(site_file: Path, as_json: bool) -> None:
    """Validate SITE_FILE and show its tiles, months and settings."""
    s = _load(site_file)
    problems = []
    if not s.inbox.path.is_dir():
        problems.append(f"{s.where('inbox.path')}: inbox folder {s.inbox.path} does not exist "
                        "(agriseries run needs it)")
    if s.store.exists() and not s.store.is_dir():
        problems.append(f"{s.where('store')}: {s.store} is a file, not a folder")
    doc = {"name": s.name, "tiles": s.tiles, "months": [f"{a:%Y-%m}" for a, _ in s.months()],
           "store": str(s.store), "inbox": str(s.inbox.path), "database": s.database_url,
           "notices": s.notices(), "problems": problems}
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        for k, v in doc.items():
            if k != "problems":
                out.print(f"[bold]{k}[/bold]: {', '.join(v) if isinstance(v, list) else v}",
                          highlight=False)
        for p in problems:
            console.print(f"[red]error:[/red] {p}", highlight=False, soft_wrap=True)
    sys.exit(1 if problems else 0)


class _Progress:
    """Rich progress bars per processor, fed by run events."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("[bold]{task.description:<7}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[state]}"),
                                 TimeElapsedColumn(), console=console, disable=not enabled)
        self.tasks: dict[str, int] = {}
        self.counts: dict[str, list[int]] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, ev) -> None:
        if ev.kind == "note":
            self.progress.console.print(f"[dim]{ev.detail}[/dim]", highlight=False,
                                        soft_wrap=True)
            return
        if ev.processor is None:
            return
        p = ev.processor
        if p not in self.tasks:
            self.tasks[p] = self.progress.add_task(p, total=0, state="")
            self.counts[p] = [0, 0, 0]  # started, done, failed
        c = self.counts[p]
        if ev.kind == "started":
            c[0] += 1
        elif ev.kind == "done":
            c[1] += 1
        elif ev.kind == "failed":
            c[2] += 1
            self.progress.console.print(f"[red]failed[/red] {p} {ev.tile or ''}: {ev.detail}",
                                        highlight=False, soft_wrap=True)
        running = c[0] - c[1] - c[2]
        self.progress.update(self.tasks[p], total=c[0], completed=c[1] + c[2],
                             state=f"{running} running" + (f", {c[2]} failed" if c[2] else ""))


@click.command(name="run")
@click.argument("site_file", type=click.Path(path_type=Path))
@click.option("--watch", is_flag=True,
              help="Keep running: look at the inbox again every --poll seconds, make what is "
                   "new; stop with Ctrl-C or SIGTERM.")
@click.option("--poll", "poll_s", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between two looks at the inbox with --watch (default: the site's "
                   "engine.poll_s).")
@click.option("--scheduler", default=None,
              help="Address of an existing Dask scheduler (tcp://host:8786) instead of a "
                   "LocalCluster.")
@click.option("--scheduler-file", type=click.Path(path_type=Path), default=None,
              help="Scheduler file of an existing Dask cluster (dask-jobqueue, dask-mpi).")
@click.option("--workers", "n_workers", type=click.IntRange(min=1), default=None,
              help="LocalCluster worker processes (default: the site's engine.n_workers).")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
def run(site_file: Path, watch: bool, poll_s: float | None, scheduler: str | None,
        scheduler_file: Path | None, n_workers: int | None, as_json: bool) -> None:
    """Run the production of SITE_FILE: ingest the inbox, make every product due, record
    everything, and exit (run it again and it does only what is new)."""
    from .runner import run as run_site

    s = _load(site_file)
    if scheduler and scheduler_file:
        raise click.UsageError("--scheduler and --scheduler-file: give one")
    for n in s.notices():
        console.print(f"[yellow]note:[/yellow] {n}", highlight=False, soft_wrap=True)
    try:
        with _Progress(enabled=console.is_terminal and not as_json) as progress:
            report = run_site(s, watch=watch, poll_s=poll_s, scheduler=scheduler,
                              scheduler_file=scheduler_file, n_workers=n_workers,
                              on_event=progress)
    except AgriseriesError as e:
        _fail(e)
    if as_json:
        out.print_json(json.dumps(report.to_dict(), default=str))
    else:
        made = len(report.made)
        out.print(f"[bold]{s.name}[/bold]: {len(report.done)} job(s) done, {made} product(s) "
                  f"made, {len(report.failed)} failure(s), {report.submitted} new job(s)",
                  highlight=False)
        for f in report.failed:
            out.print(f"  [red]{f['state']}[/red] {f['processor']} {f['tile'] or ''} "
                      f"(attempt {f['attempts']}): {f['error']}", highlight=False, soft_wrap=True)
        pub = report.publication
        if pub is not None:
            line = (f"published {pub['published']}, removed {pub['removed']}; "
                    f"{pub['backlog']} waiting to be published")
            if pub["failures"]:
                line += f" (last failure: {pub['failures'][-1]})"
            out.print(line, highlight=False, soft_wrap=True)
        if report.stopped == "signal":
            out.print("stopped by a signal; running jobs were released")
    if report.error:
        console.print(f"[red]error:[/red] {report.error}", highlight=False, soft_wrap=True)
    if report.stopped == "signal" and not watch and not report.exit_code:
        # a run asked to finish what is due, stopped before: not done (--watch ends this way);
        # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
        from ..core.errors import exit_code_of_signal

        sys.exit(exit_code_of_signal(report.signal))
    sys.exit(report.exit_code)


@click.command(name="status")
@click.argument("site_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(site_file: Path, as_json: bool) -> None:
    """Show the production state of SITE_FILE: jobs by state (with errors), products
    made, what is due and what waits on inputs."""
    from .runner import status as site_status

    s = _load(site_file)
    try:
        st = site_status(s)
    except AgriseriesError as e:
        _fail(e)
    if as_json:
        out.print_json(json.dumps(st.to_dict(), default=str))
        return
    states = ["queued", "running", "done", "failed", "quarantined"]
    t = Table(title=f"jobs of {s.name}")
    t.add_column("processor")
    for state in states:
        t.add_column(state, justify="right")
    for proc, c in sorted(st.counts.items()):
        t.add_row(proc, *[str(c.get(x, 0)) for x in states])
    out.print(t)
    p = Table(title="products in the catalogue")
    p.add_column("level")
    p.add_column("products", justify="right")
    for lv, n in st.products.items():
        p.add_row(lv, str(n))
    out.print(p)
    if st.running:
        r = Table(title="running")
        for col in ("processor", "tile", "runner", "heartbeat"):
            r.add_column(col)
        for j in st.running:
            r.add_row(j["processor"], j["tile"] or "", j["runner"] or "", j["heartbeat"] or "")
        out.print(r)
    if st.problems:
        f = Table(title="failed and quarantined jobs (agriseries retry SITE JOB puts one back)")
        for col in ("job", "processor", "tile", "state", "attempts", "error"):
            f.add_column(col, overflow="fold")
        for j in st.problems:
            f.add_row(j["key"][:KEY_SHOWN], j["processor"], j["tile"] or "", j["state"],
                      str(j["attempts"]), j["error"] or "")
        out.print(f)
    if st.waiting:
        w = Table(title="waiting")
        for col in ("level", "tile", "product", "why"):
            w.add_column(col)
        for x in st.waiting:
            w.add_row(x.level, x.tile or "", x.what, x.reason)
        out.print(w)
    out.print(f"{st.due} job(s) due, not submitted yet", highlight=False)
    pub = st.publication
    if pub:
        line = f"{pub['pending']} product change(s) waiting to be published"
        if pub["pending"]:
            line += f" (oldest {pub['oldest_s']:g} s ago; agriseries publish drains them)"
        if pub["failing"]:
            line += f"; {pub['failing']} failed their last attempt: {pub['last_error']}"
        out.print(line, highlight=False)
    for n in st.notices:
        out.print(f"[yellow]note:[/yellow] {n}", highlight=False)


#: How many characters of a job's key ``status`` shows (``retry`` takes any unique prefix).
KEY_SHOWN = 12


@click.command(name="retry")
@click.argument("site_file", type=click.Path(path_type=Path))
@click.argument("keys", nargs=-1)
@click.option("--all", "all_", is_flag=True,
              help="Every failed and quarantined job (of --processor / --tile when given).")
@click.option("--processor", default=None, help="Only jobs of this processor (L3A, L3B, ...).")
@click.option("--tile", type=TILE, default=None, help="Only jobs of this tile.")
@click.option("--json", "as_json", is_flag=True, help="Print the retried jobs as JSON.")
def retry(site_file: Path, keys: tuple[str, ...], all_: bool, processor: str | None,
          tile: str | None, as_json: bool) -> None:
    """Put jobs of SITE_FILE back in the queue, their attempts reset and no backoff left,
    for the next `agriseries run`: failed and quarantined jobs once their cause is fixed (an
    input replaced, more memory, a provider back), and done jobs named by KEYS, to run them
    again (their product removed from the store, or an input that failed in them fixed).
    KEYS: job keys, or their first characters as `agriseries status` and `run` show them.

    Exit code 0 when jobs were put back, 2 for a key that names no job (or several, or a
    running or queued one), 3 when --all finds none. --all takes failed and quarantined jobs
    only."""
    from ..core.errors import NothingToDoError
    from .records import JobState

    if bool(keys) == all_:
        raise click.UsageError("name the jobs to retry (the job column of `agriseries status`)"
                               " or give --all, not both" if keys else
                               "name the jobs to retry (the job column of `agriseries "
                               "status`), or give --all")
    s = _load(site_file)
    retryable = (JobState.FAILED, JobState.QUARANTINED)
    try:
        js = s.job_store()
        try:
            if all_:
                chosen = js.jobs(retryable, processor=processor, tile=tile)
                if not chosen:
                    what = " ".join(x for x in (processor, tile) if x)
                    raise NothingToDoError(f"no failed or quarantined {what + ' ' if what else ''}"
                                           f"job in {js.url}")
            else:
                every = js.jobs(processor=processor, tile=tile)
                chosen = []
                for k in keys:
                    hits = [j for j in every if j.key.startswith(k.lower())]
                    if len(hits) != 1:
                        raise click.BadParameter(
                            f"{k!r}: " + (f"{len(hits)} jobs have a key starting so; give more "
                                          "characters" if hits else
                                          f"no job of {s.name} has a key starting so"),
                            param_hint="KEYS")
                    if hits[0].state not in (*retryable, JobState.DONE):
                        raise click.BadParameter(
                            f"{k!r}: the {hits[0].processor} job of {hits[0].tile or 'the site'} "
                            f"is {hits[0].state.value}; only failed, quarantined or done jobs "
                            "are put back", param_hint="KEYS")
                    chosen.append(hits[0])
            done = [(was, js.retry(was.key, done=True)) for was in chosen]
        finally:
            js.close()
    except AgriseriesError as e:
        _fail(e)
    if as_json:
        out.print_json(json.dumps([{"key": now.key, "processor": now.processor,
                                    "tile": now.tile, "was": was.state.value,
                                    "error": was.error} for was, now in done]))
        return
    for was, now in done:
        why = f" ({was.error})" if was.error else ""
        out.print(f"retry {now.key[:KEY_SHOWN]} {now.processor} {now.tile or ''}: was "
                  f"{was.state.value} after {was.attempts} attempt(s){why}",
                  highlight=False, soft_wrap=True)
    out.print(f"{len(done)} job(s) queued again; `agriseries run {site_file}` runs them",
              highlight=False)


@click.group(name="agriseries-production",
             context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """agriseries automatic production (the same commands as in ``agriseries``)."""


cli.add_command(site)
cli.add_command(run)
cli.add_command(status)
cli.add_command(retry)

if __name__ == "__main__":
    cli()
