"""Harness-owned evaluator for nanochat_d12 (contract: evaluators/README.md).

prepare:
  - tiny: offline text (pydoc topics + standard-library sources), seeded shuffle (seed 4321), 10%
    of documents held out; a 1,024-piece SentencePiece BPE and parquet shards (`text` column) of
    the rest under public/; under private/: the validation token stream (first 16,384 tokens of
    half the held-out documents) and a CORE-lite `eval_bundle/` built from the other half in the
    real bundle's format (core.yaml, eval_meta_data.csv, eval_data/*.jsonl) with four tasks:
    next_line (multiple choice, 4 options), line_schema (schema, 2 contexts), closing_char
    (language modelling, 3-shot) and last_word (language modelling).
  - real: ClimbMix parquet shards (the last one is validation) and the public CORE eval_bundle.zip
    (downloaded, or placed by hand); a 32,768-piece SentencePiece tokenizer trained on shard 0.
score, per seed: the harness's timing and exit code; then, in a child process under what is left
  of budgets.eval_seconds, the workspace's `load_checkpoint` loads model.pt and this file's own
  CORE code scores every task of the bundle (docs/reference/environments.md 3.2): multiple choice
  and schema pick the lowest mean continuation loss, language modelling needs every greedy token
  right; centred accuracy (acc - b) / (1 - b) per task, CORE = their mean. Validation bpb (summed
  nats / ln 2 / summed bytes) is secondary. Probe causality (`_lm.flip_probe`): the model scores
  the first seq_len + 1 validation tokens twice, one token near the end replaced the second time;
  a changed loss at any earlier target is `illegal`. Gate: the model's depth equals gates.depth.
Score: mean CORE over seeds (maximize). Nothing the trainer prints or writes is read.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402  (the path above makes this work from any cwd)
    Outcome,
    SeedRun,
    applied_gates,
    build_once,
    download,
    failed,
    load_harness,
    prepared_meta,
    process_status,
    run_cli,
    write_atomic,
)
import _lm  # noqa: E402

PROFILES = ("tiny", "real", "search")  # search: the tiny data, a shorter run
CPU_PROFILES = ("tiny", "search")
GATES = ("depth",)  # the gates this evaluator checks
RECIPE = "recipe/base_train.py"
CHECKPOINT = "model.pt"
FORMAT = 1  # bump when the prepared files change, so cached data is rebuilt
EVAL_MARGIN_SECONDS = 3.0

TINY = dict(seed=4321, vocab=1024, max_doc_chars=8_000, max_chars=3_000_000, val_fraction=0.1,
            val_tokens=16_384, items=100, seq_len=128, shards=4)
REAL = dict(vocab=32_768, seq_len=2048, val_tokens=10_485_760, train_shards=40,
            max_per_task=500)
CLIMBMIX = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_LAST = 6542  # shard_06542 is validation
EVAL_BUNDLE = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
# CORE-lite: (label, type, shots, random baseline %, delimiter)
TINY_TASKS = [("next_line", "multiple_choice", 0, 25.0, "\n"),
              ("line_schema", "schema", 0, 50.0, "\n"),
              ("closing_char", "language_modeling", 3, 0.0, ""),
              ("last_word", "language_modeling", 0, 0.0, " ")]


# -------------------------------------------------------------------------------------------------
# prepare
# -------------------------------------------------------------------------------------------------

def write_parquet(path: Path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": texts}), buffer)
    write_atomic(path, buffer.getvalue())


def usable_lines(doc: str) -> list[str]:
    return [line.strip() for line in doc.splitlines() if 20 <= len(line.strip()) <= 120]


def core_lite_items(docs: list[str], rng: random.Random, n: int) -> dict[str, list[dict]]:
    """CORE-lite items from held-out documents, in the real bundle's JSONL shapes."""
    runs = [usable_lines(d) for d in docs]
    pool = [line for lines in runs for line in lines]
    spots = [(lines, i) for lines in runs for i in range(3, len(lines))]
    rng.shuffle(spots)
    mc, schema = [], []
    for lines, i in spots[:n]:
        choices = [lines[i]] + rng.sample(pool, 3)
        order = rng.sample(range(4), 4)
        mc.append({"query": "\n".join(lines[i - 3:i]), "choices": [choices[k] for k in order],
                   "gold": order.index(0)})
    for lines, i in spots[n:2 * n]:
        options = [lines[i - 1], rng.choice(pool)]
        gold = rng.randrange(2)
        if gold:
            options.reverse()
        schema.append({"context_options": options, "continuation": lines[i], "gold": gold})
    closing = [{"context": line[:-1], "continuation": line[-1]}
               for line in pool if line[-1] in ")]:,"]
    words = [m for line in pool if (m := re.match(r"^(.*\S) ([A-Za-z_]{3,})$", line))]
    last = [{"context": m[1], "continuation": m[2]} for m in words]
    return {"next_line": mc, "line_schema": schema,
            "closing_char": rng.sample(closing, min(n, len(closing))),
            "last_word": rng.sample(last, min(n, len(last)))}


def write_bundle(bundle: Path, items: dict[str, list[dict]]) -> None:
    """core.yaml, eval_meta_data.csv and eval_data/<label>.jsonl in the real bundle's layout."""
    lines = ["icl_tasks:"]
    for label, kind, shots, _, delimiter in TINY_TASKS:
        lines += [f"- label: {label}", f"  dataset_uri: lite/{label}.jsonl",
                  f"  num_fewshot: [{shots}]", f"  icl_task_type: {kind}",
                  f"  continuation_delimiter: {json.dumps(delimiter)}"]
        rows = "".join(json.dumps(item) + "\n" for item in items[label])
        write_atomic(bundle / "eval_data" / "lite" / f"{label}.jsonl", rows.encode())
    write_atomic(bundle / "core.yaml", ("\n".join(lines) + "\n").encode())
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["Eval Task", "Task Category", "Task Type", "#shots", "#datapoints",
                     "Random baseline", "Centered Metric?", "Description"])
    for label, kind, shots, baseline, _ in TINY_TASKS:
        writer.writerow([label, "lite", kind, shots, len(items[label]), baseline, "Yes",
                         "built from held-out offline text"])
    write_atomic(bundle / "eval_meta_data.csv", table.getvalue().encode())


def prepare_tiny(public: Path, private: Path) -> dict:
    docs = _lm.offline_documents(TINY["max_doc_chars"])
    train, held = _lm.split_documents(docs, TINY["seed"], TINY["val_fraction"], TINY["max_chars"])
    val_docs, core_docs = held[::2], held[1::2]
    model = _lm.train_sentencepiece(train, TINY["vocab"], public / "tokenizer" / "tokenizer")
    for k in range(TINY["shards"]):
        write_parquet(public / "base_data" / f"shard_{k:05d}.parquet", train[k::TINY["shards"]])
    val = _lm.encode_documents(model, val_docs)[: TINY["val_tokens"]]
    np.save(private / "val_tokens.npy", val)
    items = core_lite_items(core_docs, random.Random(TINY["seed"]), TINY["items"])
    write_bundle(private / "eval_bundle", items)
    return {"name": "python-stdlib-text", "vocab_size": TINY["vocab"], "n_val_tokens": len(val),
            "core_items": {k: len(v) for k, v in items.items()}}


def prepare_real(data_dir: Path, public: Path, private: Path) -> dict:
    """ClimbMix shards and the CORE bundle, as nanochat downloads them; a SentencePiece tokenizer."""
    import pyarrow.parquet as pq

    downloads = data_dir / "downloads"
    names = [f"shard_{i:05d}.parquet" for i in range(REAL["train_shards"])]
    for name in [*names, f"shard_{CLIMBMIX_LAST:05d}.parquet"]:
        if not (downloads / name).is_file():
            download(f"{CLIMBMIX}/{name}", downloads / name)
    if not (downloads / "eval_bundle.zip").is_file():
        download(EVAL_BUNDLE, downloads / "eval_bundle.zip")
    for name in names:
        target = public / "base_data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        target.symlink_to((downloads / name).resolve())
    first = pq.read_table(downloads / names[0], columns=["text"])["text"].to_pylist()
    model = _lm.train_sentencepiece([t[:10_000] for t in first], REAL["vocab"],
                                    public / "tokenizer" / "tokenizer")
    val_texts = pq.read_table(downloads / f"shard_{CLIMBMIX_LAST:05d}.parquet",
                              columns=["text"])["text"].to_pylist()
    np.save(private / "val_tokens.npy", _lm.encode_documents(model, val_texts)[: REAL["val_tokens"]])
    with zipfile.ZipFile(downloads / "eval_bundle.zip") as archive:
        archive.extractall(private)
    return {"name": "climbmix-400b-shuffle", "vocab_size": REAL["vocab"]}


def prepare(profile: str, data_dir: Path) -> None:
    """Build the profile's data under `data_dir` unless an identical build is already there."""
    build_once(data_dir, profile, FORMAT, lambda public, private: prepare_tiny(public, private)
               if profile in CPU_PROFILES else prepare_real(data_dir, public, private))


# -------------------------------------------------------------------------------------------------
# CORE (the child: the only place trial code runs on the evaluator's side)
# -------------------------------------------------------------------------------------------------

def load_tasks(bundle: Path, max_per_task: int) -> list[dict]:
    """Tasks from core.yaml with their items (shuffled with seed 1337, then truncated)."""
    import yaml

    spec = yaml.safe_load((bundle / "core.yaml").read_text())
    with open(bundle / "eval_meta_data.csv", newline="") as handle:
        baselines = {row["Eval Task"]: float(row["Random baseline"])
                     for row in csv.DictReader(handle)}
    tasks = []
    for task in spec["icl_tasks"]:
        path = bundle / "eval_data" / task["dataset_uri"]
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        random.Random(1337).shuffle(items)
        tasks.append({"label": task["label"], "type": task["icl_task_type"],
                      "shots": int(task["num_fewshot"][0]),
                      "delimiter": task.get("continuation_delimiter", " "),
                      "baseline": baselines[task["label"]] / 100.0,
                      "items": items[:max_per_task]})
    return tasks


def fewshot_prefix(task: dict, index: int) -> str:
    """Examples drawn with seed 1234 + index (never the item itself), each ending in a blank line."""
    if task["shots"] == 0:
        return ""
    others = [i for i in range(len(task["items"])) if i != index]
    picks = random.Random(1234 + index).sample(others, min(task["shots"], len(others)))
    parts = []
    for i in picks:
        item = task["items"][i]
        if task["type"] == "multiple_choice":
            parts.append(item["query"] + task["delimiter"] + item["choices"][item["gold"]])
        elif task["type"] == "schema":
            parts.append(item["context_options"][item["gold"]] + task["delimiter"]
                         + item["continuation"])
        else:
            parts.append(item["context"] + task["delimiter"] + item["continuation"])
    return "\n\n".join(parts) + "\n\n"


def candidates(task: dict, index: int) -> list[tuple[str, str]]:
    """(context, continuation) pairs to score for one item."""
    item, prefix, delim = task["items"][index], fewshot_prefix(task, index), task["delimiter"]
    if task["type"] == "multiple_choice":
        return [(prefix + item["query"] + delim, choice) for choice in item["choices"]]
    if task["type"] == "schema":
        return [(prefix + ctx + delim, item["continuation"]) for ctx in item["context_options"]]
    return [(prefix + item["context"] + delim, item["continuation"])]


def continuation_stats(model, sp, context: str, continuation: str, max_len: int
                       ) -> tuple[float, bool]:
    """(mean continuation loss in nats, whether greedy decoding reproduces every token).

    BOS + context tokens + continuation tokens, cropped on the left to `max_len`.
    """
    import torch
    import torch.nn.functional as F

    cont = sp.encode(continuation)
    ids = ([sp.bos_id()] + sp.encode(context) + cont)[-max_len:]
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=next(model.parameters()).device))[0].float()
    rows = logits[len(ids) - len(cont) - 1: len(ids) - 1]
    target = torch.tensor(cont, device=rows.device)
    loss = F.cross_entropy(rows, target).item()
    return loss, bool((rows.argmax(-1) == target).all())


def task_accuracy(model, sp, task: dict, max_len: int) -> float:
    correct = 0
    for index, item in enumerate(task["items"]):
        stats = [continuation_stats(model, sp, c, k, max_len) for c, k in candidates(task, index)]
        if task["type"] == "language_modeling":
            correct += stats[0][1]
        else:
            correct += int(np.argmin([loss for loss, _ in stats]) == item["gold"])
    return correct / len(task["items"])


def val_nll(model, tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Loss in nats of every target tokens[1:], in non-overlapping windows of `seq_len`."""
    import torch
    import torch.nn.functional as F

    stream = torch.from_numpy(tokens.astype(np.int64))
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(stream) - 1, seq_len):
            window = stream[start:min(start + seq_len + 1, len(stream))].to(device)
            logits = model(window[None, :-1])[0].float()
            out.append(F.cross_entropy(logits, window[1:], reduction="none").double().cpu())
    return torch.cat(out).numpy()


def child_main(argv: list[str]) -> int:
    """`core RECIPE PROFILE CHECKPOINT TOKENIZER BUNDLE VAL_TOKENS OUT`: CORE, val losses and
    the causality probe."""
    import sentencepiece as spm

    recipe, profile, checkpoint, tokenizer, bundle, val_path, out = argv
    settings = TINY if profile in CPU_PROFILES else REAL
    module = _lm.load_module(Path(recipe), "trial_recipe")
    model = module.load_checkpoint(Path(checkpoint), profile)
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    started = time.perf_counter()
    results = {}
    for task in load_tasks(Path(bundle), settings.get("max_per_task", settings.get("items"))):
        results[task["label"]] = (task_accuracy(model, sp, task, settings["seq_len"]),
                                  task["baseline"])
    tokens = np.load(val_path)
    nll = val_nll(model, tokens, settings["seq_len"])
    eval_seconds = time.perf_counter() - started
    causal_diff, causal_at = _lm.flip_probe(lambda stream: -val_nll(model, stream, len(stream)),
                                            tokens[: settings["seq_len"] + 1], sp.get_piece_size())
    doc = {"tasks": results, "depth": int(model.depth), "vocab": int(model.vocab_size),
           "eval_seconds": eval_seconds, "causal_diff": causal_diff, "causal_at": causal_at}
    np.save(out + ".nll.npy", nll)
    Path(out).write_text(json.dumps(doc))
    return 0


# -------------------------------------------------------------------------------------------------
# score
# -------------------------------------------------------------------------------------------------

def run_status(run: SeedRun | None, seed: int, budget: float | None,
               basis: str = "wall") -> tuple[str, str]:
    label, excerpt = process_status(run, seed, budget, RECIPE, basis)
    if label == "ok" and not (run.out_dir / CHECKPOINT).is_file():
        return "crash", f"seed {seed} wrote no {CHECKPOINT}"
    return label, excerpt


def centered(accuracy: float, baseline: float) -> float:
    return (accuracy - baseline) / (1.0 - baseline)


def score(profile: str, data_dir: Path, run_dir: Path) -> Outcome:
    started = time.monotonic()
    harness = load_harness(run_dir)
    public, private = data_dir / "public", data_dir / "private"
    meta = prepared_meta(data_dir, profile, harness,
                         ["private/val_tokens.npy", "public/tokenizer/tokenizer.model"])
    workspace = harness.workspace
    depth_gate = harness.gates.get("depth")
    tokenizer = public / "tokenizer" / "tokenizer.model"
    tokens = np.load(private / "val_tokens.npy")
    n_bytes = _lm.target_bytes(tokens, _lm.sentencepiece_tables(tokenizer))
    budget = harness.budgets.get("train_seconds")
    eval_budget = harness.budgets.get("eval_seconds", float("inf"))

    failures: list[tuple[str, str]] = []
    metrics: dict[str, float] = {"n_expected_seeds": float(len(harness.expected_seeds))}
    cores, bpbs, walls, evals, per_task = [], [], [], [], {}
    for seed in harness.expected_seeds:
        run = harness.seeds.get(seed)
        label, excerpt = run_status(run, seed, budget, harness.time_basis)
        if run is not None and run.exit_code == 0 and not run.timed_out:
            walls.append(run.wall_seconds)
        if label != "ok":
            failures.append((label, excerpt))
            continue
        work = run_dir / "evaluator" / f"seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.out_dir / CHECKPOINT, work / CHECKPOINT)
        out = work / "core.json"
        left = eval_budget - (time.monotonic() - started) - EVAL_MARGIN_SECONDS
        argv = [sys.executable, str(Path(__file__).resolve()), "core", str(workspace / RECIPE), profile,
                str(work / CHECKPOINT), str(tokenizer), str(private / "eval_bundle"),
                str(private / "val_tokens.npy"), str(out)]
        label, excerpt = _lm.score_in_child(argv, workspace, RECIPE, left, work, out, seed, "checkpoint")
        if label != "ok":
            failures.append((label, excerpt))
            continue
        doc = json.loads(out.read_text())
        nll = np.load(str(out) + ".nll.npy")
        evals.append(doc["eval_seconds"])
        metrics["depth"] = float(doc["depth"])
        if doc["vocab"] != int(meta["vocab_size"]) or not np.isfinite(nll).all():
            failures.append(("crash", f"seed {seed}: the model predicts over {doc['vocab']} "
                             f"tokens (tokenizer {meta['vocab_size']}) or a loss is not finite"))
            continue
        if doc["causal_at"] >= 0:
            failures.append(("illegal", f"probe causality: seed {seed}: replacing one validation "
                             f"token changed the loss at earlier target {doc['causal_at']} (by up "
                             f"to {doc['causal_diff']:.3g} nats)"))
            continue
        centred = {k: centered(acc, base) for k, (acc, base) in doc["tasks"].items()}
        for k, v in centred.items():
            per_task.setdefault(k, []).append(v)
        cores.append(float(np.mean(list(centred.values()))))
        bpbs.append(_lm.bits_per_byte(nll, n_bytes[: len(nll)]))
        if depth_gate is not None and doc["depth"] != depth_gate:
            failures.append(("disqualified", f"gate depth = {depth_gate:g} missed: the "
                             f"checkpoint has {doc['depth']} blocks"))

    metrics["n_seeds"] = float(len(cores))
    if walls:
        metrics["train_seconds"] = float(np.mean(walls))
    if evals:
        metrics["eval_seconds"] = float(np.mean(evals))
    if cores:
        metrics.update(core=float(np.mean(cores)), val_bpb=float(np.mean(bpbs)))
        metrics.update({f"core_{k}": float(np.mean(v)) for k, v in per_task.items()})
    gates = applied_gates(harness, GATES)
    return failed(failures, metrics, gates) or Outcome("ok", score=round(metrics["core"], 6),
                                                       metrics=metrics, gates=gates)


if __name__ == "__main__":
    if sys.argv[1:2] == ["core"]:
        sys.exit(child_main(sys.argv[2:]))
    sys.exit(run_cli(None, PROFILES, prepare, score))
