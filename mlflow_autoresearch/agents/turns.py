"""Whose turn it is: specialists whose trials pay get more turns, with a floor for the rest.

A small bandit over the roster, read from the campaign's recent trials (newest first): each
specialist's payoff is its smoothed keep rate over its last `WINDOW` trials, (keeps + 1) /
(trials + 2), so an untried one starts at 1/2: a specialist that keeps goes on, one whose
trials moved nothing yields to those not yet tried. A specialist that has waited `FLOOR` x
roster-size trials (since its last turn, or since the campaign began) goes first, so no surface
is starved. Ties go to whoever waited longest, then to the roster's order (offline specialists
come most promising table first). Deterministic: no randomness at all.
"""

from __future__ import annotations

from ..records import Decision, Trial

WINDOW = 6
FLOOR = 2


def choose_turn(names: list[str], recent: list[Trial]) -> tuple[str, str]:
    """(the specialist whose turn it is, why) from `recent`, the newest trials first."""
    waited = {n: next((i for i, t in enumerate(recent) if t.specialist == n), None)
              for n in names}
    waits = {n: len(recent) if waited[n] is None else waited[n] for n in names}
    starved = [n for n in names if waits[n] >= FLOOR * len(names)]
    if starved:
        name = max(starved, key=lambda n: waits[n])
        why = (f"the floor: no turn in the {waits[name]} trials so far" if waited[name] is None
               else f"the floor: no turn in the last {waits[name]} trials")
        return name, why
    rates = {n: payoff(n, recent) for n in names}
    name = max(names, key=lambda n: (rates[n][0], waits[n]))
    keeps, tried = rates[name][1:]
    others = ", ".join(f"{n} {rates[n][0]:.2f}" for n in names if n != name)
    if not tried:
        return name, (f"not tried yet, so its payoff is the prior 0.50, as high as any "
                      f"({others or 'no others'})")
    return name, (f"the best payoff: {keeps} keep(s) in its last {tried} trials "
                  f"(rate {rates[name][0]:.2f}; others {others or 'none'})")


def payoff(name: str, recent: list[Trial]) -> tuple[float, int, int]:
    """(smoothed keep rate, keeps, trials) over the specialist's last `WINDOW` trials."""
    mine = [t for t in recent if t.specialist == name][:WINDOW]
    keeps = sum(t.decision is Decision.KEEP for t in mine)
    return (keeps + 1) / (len(mine) + 2), keeps, len(mine)
