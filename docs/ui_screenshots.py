"""Screenshots of a campaign in the MLflow UI, for the docs (docs/ui.md).

Starts `mlflow server` over the store on a free loopback port, opens the link `autoresearch run`
prints (`campaign_url`) and the run pages it leads to in headless Chromium, and saves the PNGs
named in SHOTS under --out (what the campaign lacks is skipped with a message). Columns, order
and charts come from the experiment's saved view: nothing is set in the browser or the store.
Needs `pip install playwright` and `apt-get install chromium` (never downloads a browser):

    python docs/ui_screenshots.py --tracking-uri sqlite:///mlflow.db \\
        --experiment autoresearch/airbench96 --out docs/img

The server is stopped on exit, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow_autoresearch import tags
from mlflow_autoresearch.report.publish import campaign_url

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
VIEWPORT = {"width": 1600, "height": 900}
PAGE_TIMEOUT_MS = 30_000
ML_MODE = "workflowType=machine_learning"  # without it 3.17 opens an experiment as a GenAI app
# runs-table: the link's table; charts: its chart tab; trial-page: the newest kept trial's page
# (else the newest trial's); lineage-report, report-md: the report run's artifacts tab with
# report/lineage.html, report/report.md selected; traces: the newest LLM trial's Traces tab.
SHOTS = ("runs-table", "charts", "trial-page", "lineage-report", "report-md", "traces")
LLM_MODEL = "autoresearch.agent.model"  # an LLM specialist's trial has it


class Failure(Exception):
    """An error to print as one line."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///mlflow.db")
    parser.add_argument("--experiment", required=True, help="the campaign's experiment name")
    parser.add_argument("--out", default="docs/img", type=Path, help="folder for the PNGs")
    parser.add_argument("--only", nargs="+", choices=SHOTS, default=SHOTS, metavar="NAME",
                        help=f"take only these ({', '.join(SHOTS)})")
    return parser.parse_args(argv)


def resolve_store(uri: str) -> tuple[str, Path]:
    """The URI with a SQLite path made absolute, and the folder to run the server in (where
    relative artifact paths were made). Raises Failure if a tool or a local store is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise Failure("the playwright package is missing: pip install playwright") from None
    if not os.access(CHROMIUM, os.X_OK):
        raise Failure(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    if not uri.startswith("sqlite:///"):
        return uri, Path.cwd()
    path = Path(uri[len("sqlite:///"):]).expanduser().resolve()
    if not path.is_file():
        raise Failure(f"no store: {path} does not exist")
    return f"sqlite:///{path}", path.parent


@contextlib.contextmanager
def mlflow_server(uri: str, cwd: Path) -> Iterator[str]:
    """Run `mlflow server` over `uri` in a session of its own; yield its base URL once it
    answers; stop the whole session at exit. Raises Failure if it does not come up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
           "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}  # no job runner, nothing sent out
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(f"{url}/health", timeout=2).close()
                    break
                time.sleep(0.5)
            else:
                log.seek(0)
                tail = " | ".join(line.strip() for line in log.read().splitlines()[-3:])
                raise Failure(f"mlflow server did not answer at {url}: {tail or 'no output'}")
            yield url
        finally:
            for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
                    break


def plan_shots(server: str, name: str) -> dict[str, tuple | str]:
    """Each screenshot's (url, selector to wait for, step before the shot), or why it is
    skipped. Raises Failure if there is no such experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise Failure(f"no experiment named {name!r} in the store")
    eid = experiment.experiment_id

    def newest(where: str) -> str | None:
        runs = client.search_runs([eid], where, max_results=1,
                                  order_by=["attributes.start_time DESC"])
        return runs[0].info.run_id if runs else None

    def run_page(run_id: str, tail: str = "") -> str:
        return f"{server}/#/experiments/{eid}/runs/{run_id}{tail}?{ML_MODE}"

    plan: dict[str, tuple | str] = {
        "runs-table": (campaign_url(server, eid), ".ag-row", None),
        "charts": (campaign_url(server, eid), ".ag-row", show_chart_tab)}
    trial = newest(f"tags.`{tags.DECISION}` = 'keep'") or newest(f"tags.`{tags.TRIAL}` != ''")
    plan["trial-page"] = ((run_page(trial), "text=About this run", show_whole_run_page)
                          if trial else "the experiment has no trials")
    report = newest(f"tags.`{tags.KIND}` = '{tags.REPORT_KIND}'")
    files = {f.path for f in client.list_artifacts(report, "report")} if report else set()
    for shot, path, ready, step in (
            ("lineage-report", "report/lineage.html", "iframe", wait_for_iframe),
            ("report-md", "report/report.md", "text=Campaign report", None)):
        plan[shot] = ((run_page(report, f"/artifacts/{path}"), ready, step) if path in files
                      else f"the experiment has no report run with {path}")
    llm = newest(f"tags.`{LLM_MODEL}` != ''")
    plan["traces"] = ((run_page(llm, "/traces"), "text=/^tr-/", None) if llm
                      else f"no trial tagged {LLM_MODEL} (no LLM specialist took a turn)")
    return plan


def settle(page: Any, selector: str) -> None:
    """Wait for `selector`, then for the page's requests to go quiet (the UI's telemetry worker
    never finishes loading, so Playwright's own "networkidle" would wait forever)."""
    page.wait_for_selector(selector, timeout=PAGE_TIMEOUT_MS)
    quiet_since, deadline = time.monotonic(), time.monotonic() + 15
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
        if page.evaluate("window.__pending || 0"):
            quiet_since = time.monotonic()
        page.wait_for_timeout(200)
    # The one thing closed, as a user would: 3.17 opens its assistant panel on a browser's first
    # visit, over the right quarter of the page, hiding the table's right-hand columns.
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count() and close.first.is_visible():
        close.first.click()
    page.wait_for_timeout(500)


# Counts the page's fetch/XHR requests in flight (the UI loads everything through them).
PENDING_SCRIPT = """window.__pending = 0;
const fetch0 = window.fetch, send0 = XMLHttpRequest.prototype.send;
window.fetch = (...a) => { window.__pending++;
  return fetch0(...a).finally(() => window.__pending--); };
XMLHttpRequest.prototype.send = function (...a) { window.__pending++;
  this.addEventListener('loadend', () => window.__pending--); return send0.apply(this, a); };"""


def show_chart_tab(page: Any) -> None:
    """Switch the runs page to its chart tab, as a user would, and let the charts draw."""
    page.locator("label:has(input[name='runs-view-mode'][value='CHART'])").first.click()
    page.wait_for_selector(".js-plotly-plot", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_timeout(1500)


def show_whole_run_page(page: Any) -> None:
    """Open the whole description, then grow the viewport until the page's main box (the run
    page scrolls inside it, which a full-page screenshot would cut) shows all it holds."""
    more = page.get_by_text("Show more", exact=True)
    if more.count() and more.first.is_visible():
        more.first.click()
        page.wait_for_timeout(300)
    extra = page.evaluate("""() => {
      const boxes = Array.from(document.querySelectorAll('*')).filter(e => e.scrollHeight >
          e.clientHeight && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY));
      const main = boxes.sort((a, b) => b.clientHeight - a.clientHeight)[0];
      if (!main) return 0;
      const shown = Array.from(main.querySelectorAll('*')).filter(c => (['svg', 'img', 'input']
          .includes(c.localName) || (!c.children.length && c.textContent.trim()))
          && !boxes.some(b => b !== main && b.contains(c)))  // text and pictures, not blanks
        .concat(boxes.filter(b => b !== main && main.contains(b)));  // and the inner boxes
      return Math.max(...shown.map(c => c.getBoundingClientRect().bottom))
             - main.getBoundingClientRect().bottom + 24; }""")
    if extra > 0:
        page.set_viewport_size({"width": VIEWPORT["width"],
                                "height": min(2400, VIEWPORT["height"] + int(extra))})
        page.wait_for_timeout(500)


def wait_for_iframe(page: Any) -> None:  # until the HTML preview's document has drawn
    page.frame_locator("iframe").first.locator("body *").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_timeout(500)


def take_screenshots(plan: dict[str, tuple | str], out: Path, only: list[str]) -> None:
    """Open each planned URL, wait for its selector and a quiet page, run its step, save it.
    Raises Failure if a page does not render in time."""
    from playwright.sync_api import Error, sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(PENDING_SCRIPT)
            for name in only:
                if isinstance(plan[name], str):
                    print(f"skipped {name}.png: {plan[name]}")
                    continue
                (url, ready, step), page = plan[name], context.new_page()
                try:
                    page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
                    settle(page, ready)
                    if step:
                        step(page)
                    page.screenshot(path=str(out / f"{name}.png"))
                    print(f"saved {out / name}.png")
                except Error as exc:
                    why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise Failure(f"{name}.png: {url} did not render ({why})") from None
                finally:
                    page.close()
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so the server stops
    try:
        uri, cwd = resolve_store(args.tracking_uri)
        with mlflow_server(uri, cwd) as base:
            take_screenshots(plan_shots(base, args.experiment), args.out, args.only)
    except Failure as exc:
        print(f"ui_screenshots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
