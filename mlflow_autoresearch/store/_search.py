"""Bounded queries over one campaign's runs: every search passes `max_results`, so the cost per
turn stays flat as a campaign grows to 10,000 trials (benchmarks/lineage_queries.py).

A run is a recorded trial once its status is final (the store sets it after the verdict); a
RUNNING run is a trial in flight, or one a dead loop left half-written until recovery: no query
counts it as a result, whatever tags it already holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from .. import tags
from ..records import Decision, Direction, FailureLabel, Trial
from ._records import quote, tag_is, trial_from_run

RECENT = 30
WINDOW = 40  # newest runs `recent_and_mine` reads: 30 recent, and 5 of each of 7 specialists
_SLACK = 2   # leaderboard runs read beyond the limit, for ones the label then drops
_ABORT = FailureLabel.HARNESS_ABORT.tag
_DONE = "FINISHED"  # the status of a recorded trial that is not harness_abort


def leaderboard(client: MlflowClient, experiment_id: str, direction: Direction,
                limit: int = 20) -> list[Trial]:
    """Kept trials and the baseline, best first."""
    return [trial_from_run(r) for r in leaderboard_runs(client, experiment_id, direction, limit)]


def leaderboard_runs(client: MlflowClient, experiment_id: str, direction: Direction,
                     limit: int = 20) -> list[Run]:
    """The leaderboard's runs, best first.

    MLflow looks a filter's tag up for every run of the campaign, one clause at a time, so SQL
    filters on the decision alone (the store writes one only with an ok label) and Python on the
    label and the final status. Filtered, a prefix of the same order is a prefix of the answer, and the whole of it
    once `limit` runs pass or the campaign has no more; when it is not (decisions on runs that
    are not ok, written by something else), the query with both clauses runs.
    """
    order = [f"metrics.{tags.SCORE} {'ASC' if direction is Direction.MINIMIZE else 'DESC'}"]
    kept = f"tags.`{tags.DECISION}` != '{Decision.DISCARD.value}'"
    fetch = limit + _SLACK
    runs = client.search_runs([experiment_id], kept, order_by=order, max_results=fetch)
    board = [r for r in runs if r.data.tags.get(tags.LABEL) == FailureLabel.OK.tag
             and r.info.status == _DONE]
    if len(board) >= limit or len(runs) < fetch:
        return board[:limit]
    return list(client.search_runs(
        [experiment_id], f"{tag_is(tags.LABEL, 'ok')} and {kept} and attributes.status = '{_DONE}'",
        order_by=order, max_results=limit))


def ancestors(client: MlflowClient, trial_id: str) -> list[Trial]:
    """The chain from the root to `trial_id` (inclusive), root first: one `IN` query."""
    return chain(client, client.get_run(trial_id))


def chain(client: MlflowClient, run: Run, known: Sequence[Run] = ()) -> list[Trial]:
    """`ancestors` of a run already read; `known` runs (active runs of its campaign, e.g. the
    leaderboard's) are not read again, the rest of its lineage path in one `IN` query."""
    path = [p for p in run.data.tags.get(tags.LINEAGE_PATH, "").split("/") if p]
    if not path:
        return [trial_from_run(run)]
    found = {r.info.run_id: r for r in known if r.info.run_id in path}
    missing = list(dict.fromkeys(p for p in path if p not in found))
    if missing:
        listed = ", ".join(f"'{p}'" for p in missing)  # run ids: hex, nothing to quote
        found.update((r.info.run_id, r) for r in client.search_runs(
            [run.info.experiment_id], f"attributes.run_id IN ({listed})",
            max_results=len(missing)))
    return [trial_from_run(found[p]) for p in path if p in found] + [trial_from_run(run)]


def children(client: MlflowClient, experiment_id: str, parent_id: str,
             limit: int = 100) -> list[Trial]:
    """Direct children of a trial, failures and running ones included, newest first."""
    runs = client.search_runs([experiment_id], tag_is(tags.MLFLOW_PARENT, parent_id),
                              order_by=["attributes.start_time DESC"], max_results=limit)
    return [trial_from_run(r) for r in runs]


def same_edit(client: MlflowClient, experiment_id: str, parent_id: str, sha: str,
              limit: int = 20) -> list[Trial]:
    """Children of `parent_id` whose diff has digest `sha`, running ones included."""
    query = f"{tag_is(tags.MLFLOW_PARENT, parent_id)} and {tag_is(tags.DIFF_SHA, sha)}"
    return [trial_from_run(r) for r in client.search_runs([experiment_id], query,
                                                          max_results=limit)]


def recent(client: MlflowClient, experiment_id: str, limit: int = RECENT,
           specialist: str | None = None) -> list[Trial]:
    """The newest recorded trials (harness_abort hidden), optionally of one specialist."""
    query = f"tags.`{tags.LABEL}` != '{_ABORT}' and attributes.status != 'RUNNING'"
    if specialist:
        query += f" and {tag_is(tags.SPECIALIST, specialist)}"
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                              max_results=limit)
    return [trial_from_run(r) for r in runs]


def recent_and_mine(client: MlflowClient, experiment_id: str, specialist: str,
                    mine: int, limit: int = RECENT) -> tuple[list[Trial], list[Trial]]:
    """`recent(limit)` and `recent(mine, specialist)`, from the campaign's newest runs.

    A filter on a tag costs a tag lookup for every run of the campaign, so this reads the newest
    WINDOW runs unfiltered (a scan of the runs table alone) and filters them here: a prefix of
    `start_time DESC` filtered is a prefix of either answer, and the whole of it once enough
    runs pass or the campaign has no more. Only an answer the window cannot vouch for is
    queried as `recent` does.
    """
    if specialist:
        quote(specialist)  # the ValueError `recent` raises for a name it cannot search for
    window = client.search_runs([experiment_id], "", order_by=["attributes.start_time DESC"],
                                max_results=WINDOW)
    whole = len(window) < WINDOW
    shown = [r for r in window if r.data.tags.get(tags.LABEL) not in (None, _ABORT)
             and r.info.status != "RUNNING"]
    theirs = shown if not specialist else [
        r for r in shown if r.data.tags.get(tags.SPECIALIST) == specialist]
    newest = ([trial_from_run(r) for r in shown[:limit]] if whole or len(shown) >= limit
              else recent(client, experiment_id, limit))
    own = ([trial_from_run(r) for r in theirs[:mine]] if whole or len(theirs) >= mine
           else recent(client, experiment_id, mine, specialist))
    return newest, own


def all_trials(client: MlflowClient, experiment_id: str, limit: int = 10_000) -> list[Trial]:
    """Every trial of a campaign, oldest first (status and summaries, not the loop's hot path)."""
    runs = client.search_runs([experiment_id], f"tags.`{tags.TRIAL}` LIKE '%'",
                              order_by=["attributes.start_time ASC"], max_results=limit)
    return [trial_from_run(r) for r in runs]


def next_number(client: MlflowClient, experiment_id: str) -> int:
    """max(trial) + 1, 0 for an empty campaign. Reads the `trial` metric, and the newest runs'
    tags for campaigns recorded before the metric existed (schema 1)."""
    by_metric = client.search_runs([experiment_id], f"metrics.{tags.TRIAL_NUMBER} >= 0",
                                   order_by=[f"metrics.{tags.TRIAL_NUMBER} DESC"], max_results=1)
    newest = client.search_runs([experiment_id], f"tags.`{tags.TRIAL}` LIKE '%'",
                                order_by=["attributes.start_time DESC"], max_results=50)
    numbers = [trial_from_run(r).number for r in [*by_metric, *newest]]
    return max(numbers, default=-1) + 1


def running(client: MlflowClient, experiment_id: str, limit: int = 1000) -> list:
    """Trial runs whose MLflow status is still RUNNING (raw runs: recovery needs their tags)."""
    return client.search_runs([experiment_id],
                              f"attributes.status = 'RUNNING' and tags.`{tags.TRIAL}` LIKE '%'",
                              max_results=limit)


def pending_retries(client: MlflowClient, experiment_id: str, limit: int = 200) -> list[Trial]:
    """harness_abort trials whose proposal has not been run again yet, oldest first. Retries
    and the baseline are never retried (the baseline is measured again by itself)."""
    aborted = client.search_runs([experiment_id], tag_is(tags.LABEL, _ABORT),
                                 order_by=["attributes.start_time ASC"], max_results=limit)
    retried = {r.data.tags[tags.RETRY_OF] for r in client.search_runs(
        [experiment_id], f"tags.`{tags.RETRY_OF}` LIKE '%'", max_results=10 * limit)}
    candidates = [trial_from_run(r) for r in aborted]
    return [t for t in candidates
            if t.parent_id and t.retry_of is None and t.run_id not in retried]


def llm_spend(client: MlflowClient, experiment_id: str) -> float:
    """Dollars the campaign's LLM specialists spent in earlier invocations (for the cost cap)."""
    key = f"{tags.AGENT_METRIC_PREFIX}{tags.LLM_COST_USD}"
    runs = client.search_runs([experiment_id], f"metrics.`{key}` > 0", max_results=50_000)
    return sum(r.data.metrics[key] for r in runs)
