"""The label vocabulary exists once: `FailureLabel`. The evaluators' precedence list (they cannot
import the package) and the contract's table in evaluators/README.md are checked against it."""

import re
import sys

from mlflow_autoresearch.records import FailureLabel
from support import ROOT

sys.path.insert(0, str(ROOT / "evaluators"))
import _common  # noqa: E402


def test_the_evaluators_precedence_names_every_label_once():
    # Every label but preflight_crash, which the harness gives before any evaluator runs.
    everything = {label.tag for label in FailureLabel} - {FailureLabel.PREFLIGHT_CRASH.tag}
    assert set(_common.PRECEDENCE) == everything
    assert len(set(_common.PRECEDENCE)) == len(_common.PRECEDENCE)
    assert _common.PRECEDENCE[0] == FailureLabel.HARNESS_ABORT.tag
    assert _common.PRECEDENCE[-1] == FailureLabel.OK.tag


def test_the_harness_only_labels_are_the_ones_evaluators_may_not_give():
    assert set(_common.HARNESS_LABELS) == {FailureLabel.HARNESS_ABORT.tag,
                                           FailureLabel.PREFLIGHT_CRASH.tag}


def test_the_readme_tables_match_the_codes():
    for doc in (ROOT / "evaluators" / "README.md", ROOT / "README.md"):
        text = doc.read_text()
        rows = dict(re.findall(r"^\| (\d) \| `(\w+)` \|", text, re.M))
        inline = dict(re.findall(r"(\d) `(\w+)`", text))
        table = rows or inline
        assert {int(code): name for code, name in table.items()} == \
            {int(label): label.tag for label in FailureLabel}, doc
    text = (ROOT / "evaluators" / "README.md").read_text().replace("\n", " ")
    order = re.search(r"first in this order wins: ((?:`\w+`(?:, )?)+)", text).group(1)
    assert re.findall(r"`(\w+)`", order) == list(_common.PRECEDENCE)
