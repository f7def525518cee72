"""What `autoresearch run` shows while trials run: in a terminal, a live view (rich) of each trial
in flight, its phase (preflight, seed k of n, evaluating, recording) and its time against the
phase's budget, and the best score so far; elsewhere (CI, a pipe, `mlflow run`) plain lines, a
`still running` line per trial every PLAIN_EVERY seconds; with `quiet`, warnings alone.

The one line per finished trial is printed in every mode but quiet. Phases arrive from worker
threads, so the state sits behind a lock and the view is drawn from a copy.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

PLAIN_EVERY = 60.0  # seconds between `still running` lines in plain output


@dataclass
class _Flight:
    number: int
    specialist: str
    started: float
    phase: str = "starting"
    phase_started: float = 0.0
    budget: float = 0.0


class Progress:
    """The campaign's display; use as a context manager around the campaign.

    Args:
        console: where to draw; its `is_terminal` picks the live view or plain lines.
        quiet: print nothing (the CLI prints the summary itself).
    """

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.live = self.console.is_terminal and not quiet
        self._flights: dict[str, _Flight] = {}
        self._best: float | None = None
        self._lock = threading.Lock()
        self._view: Live | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.live:
            self._view = Live(get_renderable=self._render, console=self.console,
                              refresh_per_second=2, transient=True)
            self._view.start()
        elif not self.quiet:
            self._ticker = threading.Thread(target=self._tick, daemon=True,
                                            name="progress-plain")
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._view is not None:
            self._view.stop()
        if self._ticker is not None:
            self._ticker.join()

    # ---- what the campaign tells it ---------------------------------------------------------

    def line(self, text: str) -> None:
        """A line that stays: a finished trial, a warning, a note. With `quiet`, only a
        warning, on stderr."""
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False)
        elif text.startswith("WARNING"):
            Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=False)

    def started(self, key: str, number: int, specialist: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._flights[key] = _Flight(number, specialist, now, phase_started=now)

    def phase(self, key: str, text: str, budget: float) -> None:
        """Trial `key` entered phase `text`, which has `budget` seconds (0: none)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.phase, flight.phase_started, flight.budget = text, time.monotonic(), budget

    def finished(self, key: str, best: float | None) -> None:
        with self._lock:
            self._flights.pop(key, None)
            self._best = best

    # ---- drawing ----------------------------------------------------------------------------

    def rows(self) -> list[str]:
        """One plain row per trial in flight: `t0003 opt  seed 2 of 3  12 s of 60 s (41 s)`."""
        now = time.monotonic()
        with self._lock:
            flights = sorted(self._flights.values(), key=lambda f: f.number)
        return [f"t{f.number:04d} {f.specialist:<9} {f.phase:<28} {_against(f, now)}"
                for f in flights]

    def _render(self) -> Table:
        table = Table.grid(padding=(0, 2))
        best = f"{self._best:.6g}" if self._best is not None else "-"
        table.add_row(f"[bold]best so far[/bold] {best}")
        for row in self.rows():
            table.add_row(row)
        return table

    def _tick(self) -> None:
        while not self._stop.wait(PLAIN_EVERY):
            for row in self.rows():
                self.console.print(f"      still running: {row}", markup=False,
                                   highlight=False)


def _against(flight: _Flight, now: float) -> str:
    """The phase's time against its budget, and the trial's whole time."""
    phase = now - flight.phase_started
    budget = f" of {flight.budget:.0f} s" if flight.budget else ""
    return f"{phase:.0f} s{budget} (trial {now - flight.started:.0f} s)"
