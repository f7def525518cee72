"""Parsing model answers and applying their edits in memory: each format, each refusal message."""

import json

import pytest

from mlflow_autoresearch.agents.llm.edits import (WHOLE_FILE_MAX_LINES, EditError, apply_answer,
                                       parse_answer, resolve_path)

RECIPE = "recipe/toy.py"
SRC = '''"""Toy."""

STEPS = 60  # gradient steps
LR = 0.1  # step size


def main():
    for _ in range(STEPS):
        pass
    for _ in range(STEPS):
        pass
'''
FILES = {RECIPE: SRC, "recipe/other.py": "X = 1\n"}


def sr(path, search, replace):
    return f"{path}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


DIFF = ("--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -4 +4 @@\n-LR = 0.1  # step size\n"
        "+LR = 0.2  # step size\n")
STALE_DIFF = "```diff\n--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -1 +1 @@\n-nope\n+yes\n```\n"


def as_json(**values):
    return json.dumps({"hypothesis": "Bigger steps.", "expected_delta": -0.01, "parent": "t0000",
                       **values}, indent=2)


def test_fields_in_the_forms_models_write():
    plain = parse_answer("Hypothesis: More steps lower the loss.\nExpected delta: -0.002\n"
                         "Parent: t0004\nNotes: t0003 was close.\n")
    assert plain.hypothesis == "More steps lower the loss." and plain.expected_delta == -0.002
    assert plain.parent == "t0004" and plain.notes == "t0003 was close."
    bold = parse_answer("**Hypothesis:** Halve LR.\n**Expected delta**: \u22120.3 s\n")
    assert bold.hypothesis == "Halve LR." and bold.expected_delta == -0.3
    headings = parse_answer("## Hypothesis\n\nWarmup is too long.\n\n## Expected delta\n+0.1\n")
    assert headings.hypothesis == "Warmup is too long." and headings.expected_delta == 0.1
    json_ish = parse_answer('{\n  "hypothesis": "Cut epochs.",\n  "expected_delta": -1.5,\n'
                            '  "parent": "t0002"\n}')
    assert (json_ish.hypothesis, json_ish.expected_delta, json_ish.parent) == \
        ("Cut epochs.", -1.5, "t0002")
    # Field-like lines inside code are code, not fields; missing fields are None.
    code = parse_answer("```python\nhypothesis = 3\n```\nExpected delta: unclear\n")
    assert code.hypothesis is None and code.expected_delta is None and code.parent is None
    fenced = parse_answer("```\nHypothesis: Fewer steps.\nParent: t0001\n```\n")
    assert fenced.hypothesis == "Fewer steps." and fenced.parent == "t0001"


def test_search_replace_blocks_with_fences_and_an_inherited_path():
    answer = ("Hypothesis: h\n\nrecipe/toy.py\n```python\n<<<<<<< SEARCH\nSTEPS = 60  # gradient "
              "steps\n=======\nSTEPS = 120  # gradient steps\n>>>>>>> REPLACE\n```\n\n```python\n"
              "<<<<<<< SEARCH\nLR = 0.1  # step size\n=======\nLR = 0.2  # step size\n"
              ">>>>>>> REPLACE\n```\n")
    applied = apply_answer(answer, FILES)
    assert applied.format == "search/replace"
    assert applied.files[RECIPE] == SRC.replace("60", "120").replace("0.1", "0.2")
    assert applied.files["recipe/other.py"] == "X = 1\n"


def test_search_replace_forgives_trailing_space_and_a_uniform_indent_shift():
    answer = sr(RECIPE, "  for _ in range(STEPS):   \n      pass\n  for _ in range(STEPS):",
                "  for _ in range(2 * STEPS):\n      pass\n  for _ in range(STEPS):")
    out = apply_answer(answer, FILES).files[RECIPE]
    assert "    for _ in range(2 * STEPS):\n        pass\n    for _ in range(STEPS):" in out


def test_search_replace_refusals_say_what_to_fix():
    with pytest.raises(EditError, match=r"not in the file.*closest match in the file \(line 3\)"
                                        r":\n```\nSTEPS = 60  # gradient steps"):
        apply_answer(sr(RECIPE, "STEPS = 70  # gradient steps", "STEPS = 1"), FILES)
    with pytest.raises(EditError, match=r"occur 2 times in the file \(at lines 8, 10\)"):
        apply_answer(sr(RECIPE, "    for _ in range(STEPS):", "    for _ in range(3):"), FILES)
    with pytest.raises(EditError, match="names no file"):
        apply_answer(sr("", "LR = 0.1  # step size", "LR = 1"), FILES)
    with pytest.raises(EditError, match="'evaluators/toy.py', which is not an editable file"):
        apply_answer(sr("evaluators/toy.py", "a", "b"), FILES)
    with pytest.raises(EditError, match="empty SEARCH"):
        apply_answer(sr(RECIPE, "", "NEW = 1"), FILES)
    with pytest.raises(EditError, match="not closed"):
        apply_answer(f"{RECIPE}\n<<<<<<< SEARCH\nLR = 0.1\n", FILES)
    with pytest.raises(EditError, match="holds no edit"):
        apply_answer("I would raise the learning rate.", FILES)


def test_unified_diff_is_placed_by_content_not_by_its_line_numbers():
    answer = ("Hypothesis: h\n```diff\n--- a/recipe/toy.py\n+++ b/recipe/toy.py\n"
              "@@ -40,7 +40,7 @@\n"
              " STEPS = 60  # gradient steps\n-LR = 0.1  # step size\n+LR = 0.05  # step size\n"
              "\n@@ -10,2 +10,2 @@\n     for _ in range(STEPS):\n-        pass\n"
              "+        continue\n```\n")
    applied = apply_answer(answer, FILES)
    assert applied.format == "unified diff"
    out = applied.files[RECIPE]
    assert "LR = 0.05" in out
    # Two identical places: the hunk's line number picks the second loop.
    assert out.endswith("        pass\n    for _ in range(STEPS):\n        continue\n")


def test_bare_headerless_diff_uses_the_default_file():
    answer = "@@ @@\n-STEPS = 60  # gradient steps\n+STEPS = 90  # gradient steps\n"
    assert "STEPS = 90" in apply_answer(answer, FILES, default=RECIPE).files[RECIPE]
    with pytest.raises(EditError, match="names no file"):
        apply_answer(answer, FILES)


def test_diff_refusals():
    with pytest.raises(EditError, match="creates or deletes a file"):
        apply_answer("```diff\n--- /dev/null\n+++ b/recipe/new.py\n@@ -0,0 +1 @@\n+x = 1\n```",
                     FILES)
    with pytest.raises(EditError, match=r"hunk 1 of the diff for recipe/toy.py: the lines to "
                                        r"replace are not in the file"):
        apply_answer("```diff\n--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -1 +1 @@\n-nope\n"
                     "+yes\n```", FILES)


def test_whole_file_rewrites_of_small_files_only():
    new = SRC.replace("LR = 0.1", "LR = 0.3")
    applied = apply_answer(f"Hypothesis: h\n\n`recipe/toy.py`\n```python\n{new}```\n", FILES)
    assert applied.format == "whole file" and applied.files[RECIPE] == new
    named = apply_answer(f"```python recipe/toy.py\n{new}```\n", FILES)
    assert named.files[RECIPE] == new
    excerpt = "```python recipe/toy.py\nSTEPS = 1\n# ... rest of the file unchanged\n```\n"
    with pytest.raises(EditError, match="not the whole file.*elides code"):
        apply_answer(excerpt, FILES)
    big = {RECIPE: "".join(f"X{i} = {i}\n" for i in range(WHOLE_FILE_MAX_LINES + 1))}
    with pytest.raises(EditError, match=f"has {WHOLE_FILE_MAX_LINES + 1} lines"):
        apply_answer(f"```python recipe/toy.py\n{big[RECIPE]}```\n", big)


def test_formats_fall_back_until_one_applies():
    stale = sr(RECIPE, "LR = 0.9  # step size", "LR = 1")
    diff = ("```diff\n--- a/recipe/toy.py\n+++ b/recipe/toy.py\n@@ -4 +4 @@\n"
            "-LR = 0.1  # step size\n"
            "+LR = 0.2  # step size\n```\n")
    applied = apply_answer(stale + "\nOr as a diff:\n" + diff, FILES)
    assert applied.format == "unified diff" and "LR = 0.2" in applied.files[RECIPE]
    both_bad = stale + diff.replace("-LR = 0.1", "-LR = 0.7")
    with pytest.raises(EditError, match=r"(?s)\(1\) SEARCH/REPLACE block 1.*\(2\) hunk 1"):
        apply_answer(both_bad, FILES)


def test_paths_resolve_from_what_models_write():
    for raw in ("recipe/toy.py", "`recipe/toy.py`", "**recipe/toy.py**", "a/recipe/toy.py",
                "./recipe/toy.py", "toy.py", "projects/toy/recipe/toy.py", "File: recipe/toy.py"):
        assert resolve_path(raw, FILES) == RECIPE, raw
    assert resolve_path("Here is the change:", FILES) is None
    with pytest.raises(EditError, match="not an editable file"):
        resolve_path("MLproject.yaml", FILES)


def test_json_answer_fields_are_read_whatever_the_keys_case():
    answer = parse_answer(json.dumps({"Hypothesis": "Bigger steps.", "expectedDelta": "-0.02",
                                      "PARENT": "t0003", "Notes": "t0002 was close."}))
    assert (answer.hypothesis, answer.expected_delta, answer.parent, answer.notes) == \
        ("Bigger steps.", -0.02, "t0003", "t0002 was close.")


def test_json_answer_with_a_diff_applies():
    applied = apply_answer(as_json(diff=DIFF), FILES)
    assert applied.format == "unified diff"
    assert applied.files[RECIPE] == SRC.replace("LR = 0.1", "LR = 0.2")


def test_json_answer_in_a_json_fence_applies():
    answer = f"My proposal:\n```json\n{as_json(patch=DIFF)}\n```\nThat is all.\n"
    assert apply_answer(answer, FILES).files[RECIPE] == SRC.replace("LR = 0.1", "LR = 0.2")
    assert parse_answer(answer).hypothesis == "Bigger steps."


def test_json_answer_with_search_replace_blocks_in_edit():
    edit = sr(RECIPE, "STEPS = 60  # gradient steps", "STEPS = 90  # gradient steps")
    applied = apply_answer(as_json(edit=edit), FILES)
    assert applied.format == "search/replace" and "STEPS = 90" in applied.files[RECIPE]


def test_a_json_diff_that_is_not_a_string_is_named_in_the_error():
    with pytest.raises(EditError, match=r"ignored: the ```json block's \"diff\" is not a string"):
        apply_answer(f"```json\n{as_json(diff=DIFF.splitlines())}\n```\n", FILES)


def test_json_that_is_no_answer_object_is_left_to_the_text_formats():
    answer = "```json\n[1, 2]\n```\n" + sr(RECIPE, "LR = 0.1  # step size", "LR = 0.3  # step size")
    assert apply_answer(answer, FILES).format == "search/replace"


def test_a_dict_literal_in_an_edit_is_no_json_answer():
    files = {RECIPE: SRC + 'CONFIG = {"notes": 1}\n'}
    answer = sr(RECIPE, 'CONFIG = {"notes": 1}', 'CONFIG = {"notes": 2}')
    assert apply_answer(answer, files).files[RECIPE].endswith('CONFIG = {"notes": 2}\n')


def test_a_diff_that_does_not_apply_beside_search_replace_that_does_is_named():
    answer = sr(RECIPE, "LR = 0.1  # step size", "LR = 0.3  # step size") + STALE_DIFF
    assert apply_answer(answer, FILES).ignored == (
        "ignored: hunk 1 of the diff for recipe/toy.py: the lines to replace are not in the file.",)


def test_a_second_edit_that_applies_is_named_as_not_used():
    answer = sr(RECIPE, "LR = 0.1  # step size", "LR = 0.3  # step size") + f"```diff\n{DIFF}```\n"
    assert apply_answer(answer, FILES).ignored == (
        "ignored: the unified diff: not used, the search/replace edit came first "
        "(one edit per answer)",)


def test_a_block_for_a_long_file_is_named_as_no_whole_file_rewrite():
    big = {RECIPE: "".join(f"X{i} = {i}\n" for i in range(WHOLE_FILE_MAX_LINES + 1))}
    answer = f"```python\nprint(1)\n```\n```python recipe/toy.py\n{big[RECIPE]}```\n"
    with pytest.raises(EditError, match=(
            r"\nignored: the second ```python block: not a whole-file rewrite \(recipe/toy.py has "
            rf"{WHOLE_FILE_MAX_LINES + 1} lines; whole-file answers are only read for files of at "
            rf"most {WHOLE_FILE_MAX_LINES} lines\)")):
        apply_answer(answer, big)


def test_a_non_numeric_expected_delta_is_named():
    answer = parse_answer("Hypothesis: h\nExpected delta: small\n")
    assert answer.expected_delta is None and answer.ignored == (
        "ignored: Expected delta 'small': not a number; write a signed number in score units, "
        "e.g. -0.01",)
