"""Time one NanoChat-D12 training step (forward + backward) per attention setting; log to MLflow.

The paper's agents reached SDPA's flash kernel only by dropping the sliding windows (SSSL -> L,
reference/paper.md 7.2). This measures what that trade costs and what `ATTENTION_BACKEND =
"triton"` buys: the recipe's own GPT (projects/nanochat_d12/recipe/base_train.py) at its real
profile (depth 12, head dim 128, T 2048, 512-token windows), bf16 autocast as the recipe trains on
CUDA, random tokens, in eager mode. Variants: sdpa/SSSL (the masked path), sdpa/L, triton/SSSL,
triton/L. Median milliseconds per step by triton.testing.do_bench; tokens per second follow.

Root MLproject entry point `nanochat-step`; on a machine without CUDA it prints one line and exits 0.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # kernels/, as the environment's python_path gives trials
VARIANTS = [("sdpa", "SSSL"), ("sdpa", "L"), ("triton", "SSSL"), ("triton", "L")]


def load_recipe():
    path = ROOT / "projects" / "nanochat_d12" / "recipe" / "base_train.py"
    spec = importlib.util.spec_from_file_location("nanochat_base_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_step(recipe, backend: str, pattern: str, batch: int, vocab: int) -> float:
    """Median ms of zero_grad + forward + cross-entropy + backward at the real profile's shape."""
    from triton.testing import do_bench

    hp = recipe.load_knobs("real")
    hp.attention_backend, hp.window_pattern = backend, pattern
    torch.manual_seed(0)
    model = recipe.GPT(hp, vocab).cuda()
    idx = torch.randint(0, vocab, (batch, hp.max_seq_len + 1), device="cuda")
    inputs, targets = idx[:, :-1], idx[:, 1:]

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=getattr(torch, hp.compute_dtype)):
            logits = model(inputs)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()

    return do_bench(step, warmup=200, rep=1000, return_mode="median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--vocab", type=int, default=32768, help="vocabulary size (nanochat: 32768)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("nanochat_step: no CUDA GPU on this machine, nothing to benchmark.")
        return
    import mlflow
    import triton

    from kernels import attention

    attention._override_impl = "triton"  # a triton variant that cannot run the kernel fails, not times SDPA
    recipe = load_recipe()
    tokens = args.batch * recipe.load_knobs("real").max_seq_len
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}, torch {torch.__version__}, triton {triton.__version__}, batch {args.batch}")
    lines = ["| backend | window pattern | ms/step | tokens/s | speed-up vs sdpa/SSSL |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with mlflow.start_run():
        mlflow.log_params({**vars(args), "gpu": gpu, "torch": torch.__version__, "triton": triton.__version__})
        base = None
        for backend, pattern in VARIANTS:  # each row printed and logged as it is measured
            ms = time_step(recipe, backend, pattern, args.batch, args.vocab)
            torch.cuda.empty_cache()  # the variant's model and activations are garbage by now
            base = base or ms
            lines.append(f"| {backend} | {pattern} | {ms:.1f} | {tokens / ms * 1e3:,.0f} | {base / ms:.2f}x |")
            print(lines[-1], flush=True)
            mlflow.log_metric(f"{backend}.{pattern}.ms_per_step", ms)
        mlflow.log_text("\n".join(lines), "nanochat_step.md")


if __name__ == "__main__":
    main()
