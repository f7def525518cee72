"""The surface audit: which parts of the recipe an edit changed, and whose they are.

A specialist may declare what it owns in `autoresearch.yaml` (`knobs`, `symbols`, `files`). Each
editable Python file is read as top-level pieces: a knob (`NAME = <literal>`, upper case), a
symbol (a top-level `def` or `class`; a method counts as its class) and the rest, the file's
module code. An edit touches the pieces whose source differs between the parent's recipe and the
trial's; each piece's owners are the specialists that declare it (module code: those that list
the file). The trial is in domain when its specialist owns every piece it touched; `unknown`
when no specialist of the environment declares anything. The audit records; `audit: enforce` in
the spec makes an out-of-domain edit a `preflight_crash` (the engine's preflight).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from .environment import Environment, Specialist
from .records import Audit

UNOWNED = "unowned"
MODULE_CODE = "module code"


@dataclass(frozen=True)
class Piece:
    """One changed part of an editable file."""

    file: str
    kind: str   # knob | symbol | code
    name: str   # the knob's or symbol's name; the file for module code

    @property
    def label(self) -> str:
        return f"{self.name} ({MODULE_CODE})" if self.kind == "code" else self.name


def audit(env: Environment, specialist: str, before: dict[str, str],
          after: dict[str, str]) -> Audit:
    """The audit of an edit from `before` (the parent's editable files) to `after`."""
    pieces = changed_pieces(before, after)
    roster = env.specialists
    touched: dict[str, list[str]] = {}
    own = True
    for piece in pieces:
        owners = [s.name for s in roster if owns(s, piece)]
        touched.setdefault("+".join(owners) or UNOWNED, []).append(piece.label)
        own = own and specialist in owners
    declared = any(s.knobs or s.symbols or s.files for s in roster)
    verdict = "unknown" if not declared else "true" if own else "false"
    return Audit(tuple((owner, tuple(names)) for owner, names in touched.items()), verdict)


def not_applied(files: list[str]) -> Audit:
    """The audit of an edit that never applied: only the files it names are known."""
    touched = ((UNOWNED, tuple(f"{f} (not applied)" for f in files)),) if files else ()
    return Audit(touched, "unknown")


def owns(spec: Specialist, piece: Piece) -> bool:
    if piece.file in spec.files:
        return True
    return piece.name in (spec.knobs if piece.kind == "knob" else
                          spec.symbols if piece.kind == "symbol" else ())


def changed_pieces(before: dict[str, str], after: dict[str, str]) -> list[Piece]:
    """The pieces whose source differs, file by file; a file that does not parse (or is not
    Python) counts as module code as a whole."""
    found = []
    for rel in sorted(set(before) | set(after)):
        old, new = before.get(rel, ""), after.get(rel, "")
        if old == new:
            continue
        a, b = _pieces(old, rel), _pieces(new, rel)
        if a is None or b is None:
            found.append(Piece(rel, "code", rel))
            continue
        named = [Piece(rel, kind, name) for (kind, name) in sorted(set(a) | set(b))
                 if kind != "code" and a.get((kind, name)) != b.get((kind, name))]
        code = a.get(("code", "")) != b.get(("code", ""))
        if code or not named:  # a change in neither a knob nor a symbol: comments, imports...
            named.append(Piece(rel, "code", rel))
        found += named
    return found


def knob_values(files: dict[str, str], profile: str) -> dict[str, str]:
    """Each knob's value at `profile` as text (a dict keyed by profile gives its entry), for
    the trial's params: what the recipe ran with."""
    values = {}
    for rel, text in sorted(files.items()):
        try:
            tree = ast.parse(text) if rel.endswith(".py") else None
        except SyntaxError:
            tree = None
        for node in tree.body if tree else ():
            name = _knob_name(node)
            if name is None:
                continue
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError):
                continue  # computed, not a literal: not a knob a technique can set
            if isinstance(value, dict) and profile in value:
                value = value[profile]
            values[name] = str(value)
    return values


def _pieces(text: str, rel: str) -> dict[tuple[str, str], str] | None:
    """(kind, name) -> source of each top-level piece; module code is one piece, ("code", "")."""
    if not rel.endswith(".py"):
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    pieces: dict[tuple[str, str], str] = {}
    code = []
    for node in tree.body:
        source = ast.get_source_segment(text, node) or ""
        name = _knob_name(node)
        if name is not None:
            pieces[("knob", name)] = source
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            decorators = "".join(ast.get_source_segment(text, d) or "" for d in node.decorator_list)
            pieces[("symbol", node.name)] = decorators + source
        else:
            code.append(source)
    pieces[("code", "")] = "\n".join(code)
    return pieces


def _knob_name(node: ast.stmt) -> str | None:
    """The name a top-level `NAME = ...` assigns, when it is one upper-case name."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target = node.targets[0]
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        target = node.target
    else:
        return None
    if isinstance(target, ast.Name) and target.id.isupper():
        return target.id
    return None
