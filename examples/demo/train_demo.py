"""Voltline end to end, offline on a CPU: a LangChain agent learns to add with GRPO.

1. A tiny character-level Qwen2 is built and briefly pre-trained (cached after the first run).
2. The Voltline LLM proxy serves it in this process, hot-swapping each new LoRA adapter version.
3. A LangChain `ChatOpenAI` agent (captured by `voltline.instrument()`; it only emits its
   reward) answers "a+b=" problems through the proxy's per-rollout URL.
4. `voltline.Trainer` runs the rollouts and trains the adapter with GRPO, step by step.
5. Reward per step, held-out accuracy before and after, and a reward-curve PNG are reported.

    python examples/demo/train_demo.py [--steps 80] [--store sqlite:///voltline.db] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Runner processes and this script import the modules beside it by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_agent import PROXY_ENV, adder_agent, instrument_once
from demo_model import ModelSpec, accuracy, ensure_model, make_problems
from png_plot import write_curve_png

QUICK_SPEC = ModelSpec(
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    sft_steps=10,
    sft_batch=32,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="GRPO steps (default 80; 2 with --quick)")
    parser.add_argument("--store", default="sqlite:///voltline.db", help="store URL")
    parser.add_argument("--quick", action="store_true", help="a tiny model and batch, for tests")
    parser.add_argument("--out", default="voltline-demo", help="folder for the PNG and the metrics log")
    parser.add_argument(
        "--cache-dir", help="model cache (default: $VOLTLINE_DEMO_CACHE, ~/.cache/voltline/demo)"
    )
    parser.add_argument("--lr", type=float, default=5e-4, help="GRPO learning rate")
    parser.add_argument("--prompts", type=int, help="problems per step (default 8; 2 with --quick)")
    parser.add_argument("--group", type=int, help="samples per problem (default 8; 4 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _windows(train: list[dict[str, Any]], rows: int) -> list[tuple[str, float, int]]:
    """(step range, mean reward, rollouts) over consecutive windows, so long runs fit one screen."""
    size = max(1, -(-len(train) // rows))
    out = []
    for i in range(0, len(train), size):
        chunk = train[i : i + size]
        rewards = [r["mean_reward"] for r in chunk if r["mean_reward"] is not None]
        label = str(chunk[0]["step"]) if len(chunk) == 1 else f"{chunk[0]['step']}-{chunk[-1]['step']}"
        out.append((label, sum(rewards) / max(len(rewards), 1), sum(r["rollouts"] for r in chunk)))
    return out


def _accuracies(
    model_dir: Path, store: Any, problems: list[dict[str, int]], adapter: bool
) -> tuple[float, float]:
    """Greedy and sampled accuracy of the base model, or of the latest published adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter:
        from peft import PeftModel

        from voltline.proxy.adapters import unpack_adapter

        version = store.get_resource("policy")
        folder = unpack_adapter(store.get_artifact(version.artifact_hash))
        model = PeftModel.from_pretrained(model, str(folder))
    model.eval()
    greedy = accuracy(model, tokenizer, problems, sample=False)
    return greedy, accuracy(model, tokenizer, problems, sample=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    steps = args.steps or (2 if quick else 80)
    prompts = args.prompts or (2 if quick else 8)
    group = args.group or (4 if quick else 8)

    import torch
    from rich.console import Console
    from rich.table import Table
    from voltline_rl import GRPO

    import voltline
    from voltline.proxy import local_app, serve_in_thread
    from voltline.trainer import Trainer

    torch.set_num_threads(args.threads)
    console = Console(width=None if sys.stdout.isatty() else 100)
    started = time.monotonic()
    spec = QUICK_SPEC if quick else ModelSpec()
    model_dir, info = ensure_model(spec, Path(args.cache_dir) if args.cache_dir else None, console.print)
    console.print(
        f"model: {info['params']:,} params, pre-trained {spec.sft_steps} SFT steps "
        f"(greedy acc {info['greedy_accuracy']:.2f}) at {model_dir}"
    )

    train_tasks = make_problems(prompts * steps, seed=args.seed + 1, max_operand=spec.max_operand)
    val_tasks = make_problems(16 if quick else 64, seed=args.seed + 2, max_operand=spec.max_operand)
    probe = make_problems(16 if quick else 256, seed=args.seed + 3, max_operand=spec.max_operand)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    log_path.unlink(missing_ok=True)

    store = voltline.connect(args.store)
    before = _accuracies(model_dir, store, probe, adapter=False)
    # The proxy serves the base model until GRPO publishes "policy" adapter versions, then the
    # latest one on every call: that is how each step's rollouts use the newest policy.
    server = serve_in_thread(
        local_app(str(model_dir), store=store, adapter="policy", name="adder", default_max_tokens=4)
    )
    os.environ[PROXY_ENV] = server.url
    instrument_once()
    grpo = GRPO(str(model_dir), resources=("policy",), lr=args.lr, seed=args.seed)
    try:
        # runners=0: rollouts run on a thread of this process, next to the proxy; runner
        # processes would each load LangChain and compete for the same two cores.
        with Trainer(store, adder_agent, {"policy": grpo}, runners=0, group_size=group) as trainer:
            records = trainer.fit(
                train_tasks,
                steps=steps,
                batch_size=prompts,
                val_tasks=val_tasks,
                val_every=steps,
                log_path=log_path,
            )
    finally:
        voltline.flush()
        server.stop()
    after = _accuracies(model_dir, store, probe, adapter=True)
    train = [r for r in records if r["event"] == "train"]
    val = [r for r in records if r["event"] == "val"]
    versions = store.get_resource("policy").version

    table = Table(
        title=f"GRPO reward per step ({prompts} problems x {group} samples, LangChain agent via the proxy)"
    )
    for column in ("steps", "mean train reward", "rollouts"):
        table.add_column(column, justify="right")
    for label, reward, rollouts in _windows(train, 20):
        table.add_row(label, f"{reward:.3f}", str(rollouts))
    console.print(table)

    held = Table(title="held-out accuracy (never trained on)")
    for column in ("", "before", "after"):
        held.add_column(column, justify="right")
    held.add_row(
        f"agent reward, sampled ({len(val_tasks)} problems)",
        f"{val[0]['mean_reward']:.3f}",
        f"{val[-1]['mean_reward']:.3f}",
    )
    held.add_row(f"greedy accuracy ({len(probe)} problems)", f"{before[0]:.3f}", f"{after[0]:.3f}")
    held.add_row(f"sampled accuracy ({len(probe)} problems)", f"{before[1]:.3f}", f"{after[1]:.3f}")
    console.print(held)

    rewards = [r["mean_reward"] for r in train]
    windows = [rewards[max(0, i - 9) : i + 1] for i in range(len(rewards))]
    smooth = [sum(w) / len(w) for w in windows]  # 10-step moving average
    png = write_curve_png(out / "reward_curve.png", [(rewards, (160, 190, 230)), (smooth, (20, 70, 170))])
    summary = {
        "steps": steps, "prompts": prompts, "group": group, "adapter_versions": versions,
        "store": args.store, "png": str(png),
        "val_reward_before": val[0]["mean_reward"], "val_reward_after": val[-1]["mean_reward"],
        "greedy_before": before[0], "greedy_after": after[0],
        "sampled_before": before[1], "sampled_after": after[1],
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    console.print(f"reward curve: {png}")
    console.print(f"adapter versions published: {versions} (resource 'policy' in {args.store})")
    print("summary: " + json.dumps(summary), flush=True)  # one unwrapped line, for scripts
    store.close()
    return 0


if __name__ == "__main__":
    # Everything is local: never let transformers reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
