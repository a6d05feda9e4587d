"""Voltline end to end, offline on a CPU: a LangChain agent learns to add with GRPO.

1. A tiny character-level Qwen2 is built and briefly pre-trained (cached after the first run).
2. The Voltline LLM proxy serves it in this process, hot-swapping each new LoRA adapter version.
3. A LangChain `ChatOpenAI` agent (captured by `voltline.instrument()`; it only emits its
   reward) answers "a+b=" problems through the proxy's per-rollout URL.
4. `voltline.Trainer` runs each step's rollouts all at once on threads (so the proxy decodes
   their model calls as one batch) and trains the adapter with GRPO, step by step.
5. Reward and time per step, accuracy before and after on problems never trained on, and a
   reward-curve PNG are reported.

    python examples/demo/train_demo.py [--steps N] [--store sqlite:///voltline.db] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

# Runner processes and this script import the modules beside it by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_agent import PROXY_ENV, adder_agent, instrument_once
from demo_model import ModelSpec, accuracy, ensure_model, sampled_accuracy, split_problems
from png_plot import write_curve_png

DEFAULT_STEPS = 160
# Pre-trained until right about a third of the time: RL mostly sharpens what the model half
# knows, so a base whose greedy answers are often right leaves GRPO room to show.
DEMO_SPEC = ModelSpec(sft_steps=280)
HELD_OUT = 512  # problems (of 2,500) never trained on: accuracy is measured on all of them
PROBE_REPEATS = 4  # samples per held-out problem for sampled accuracy
VAL_TASKS = 128  # held-out problems the agent answers through the proxy before and after

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
    parser.add_argument("--steps", type=int, help=f"GRPO steps (default {DEFAULT_STEPS}; 2 with --quick)")
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
    parser.add_argument(
        "--runners", type=int, default=0, help="runner processes (default 0: threads of this process)"
    )
    parser.add_argument(
        "--concurrency", type=int, help="rollouts each runner runs at once (default: problems x samples)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _windows(train: list[dict[str, Any]], rows: int) -> list[tuple[str, float, int, float, float]]:
    """(step range, mean reward, rollouts, rollout s/step, GRPO s/step) over consecutive windows,
    so long runs fit one screen."""
    size = max(1, -(-len(train) // rows))
    out = []
    for i in range(0, len(train), size):
        chunk = train[i : i + size]
        rewards = [r["mean_reward"] for r in chunk if r["mean_reward"] is not None]
        label = str(chunk[0]["step"]) if len(chunk) == 1 else f"{chunk[0]['step']}-{chunk[-1]['step']}"
        grpo = [r.get("policy/seconds", 0.0) for r in chunk]
        rollout = [r["seconds"] - g for r, g in zip(chunk, grpo, strict=True)]
        out.append((label, sum(rewards) / max(len(rewards), 1), sum(r["rollouts"] for r in chunk),
                    sum(rollout) / len(chunk), sum(grpo) / len(chunk)))  # fmt: skip
    return out


def _accuracies(
    model_dir: Path, store: Any, problems: list[dict[str, int]], repeats: int, adapter: bool
) -> dict[str, float]:
    """Greedy accuracy, and sampled accuracy with its standard error, of the base model or of
    the latest published adapter."""
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
    sampled, se = sampled_accuracy(model, tokenizer, problems, repeats)
    return {
        "greedy": accuracy(model, tokenizer, problems, sample=False),
        "sampled": sampled,
        "sampled_se": se,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    steps = args.steps or (2 if quick else DEFAULT_STEPS)
    prompts = args.prompts or (2 if quick else 8)
    group = args.group or (4 if quick else 8)
    concurrency = args.concurrency or prompts * group

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
    spec = QUICK_SPEC if quick else DEMO_SPEC
    model_dir, info = ensure_model(spec, Path(args.cache_dir) if args.cache_dir else None, console.print)
    console.print(
        f"model: {info['params']:,} params, pre-trained {spec.sft_steps} SFT steps "
        f"(greedy acc {info['greedy_accuracy']:.2f}) at {model_dir}"
    )

    # Training draws from one part of the 2,500 problems; every accuracy below is measured on
    # the other part, which GRPO never sees.
    train_pool, held_out = split_problems(spec.max_operand, 16 if quick else HELD_OUT, seed=args.seed)
    rng = random.Random(args.seed + 1)
    train_tasks = [rng.choice(train_pool) for _ in range(prompts * steps)]
    val_tasks = held_out[: 16 if quick else VAL_TASKS]
    repeats = 1 if quick else PROBE_REPEATS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    log_path.unlink(missing_ok=True)

    store = voltline.connect(args.store)
    before = _accuracies(model_dir, store, held_out, repeats, adapter=False)
    # The proxy serves the base model until GRPO publishes "policy" adapter versions, then the
    # latest one on every call: that is how each step's rollouts use the newest policy. One
    # decoding batch holds every concurrent rollout's request.
    server = serve_in_thread(
        local_app(str(model_dir), store=store, adapter="policy", name="adder", default_max_tokens=4,
                  max_batch=max(16, concurrency * max(1, args.runners)))
    )  # fmt: skip
    os.environ[PROXY_ENV] = server.url
    instrument_once()
    grpo = GRPO(str(model_dir), resources=("policy",), lr=args.lr, seed=args.seed)
    train_started = time.monotonic()
    try:
        # runners=0: rollouts run on threads of this process, next to the proxy (runner
        # processes would each load LangChain and compete for the same two cores). With a
        # whole step's rollouts in flight at once, the proxy decodes their calls together.
        with Trainer(store, adder_agent, {"policy": grpo}, runners=args.runners,
                     concurrency=concurrency, group_size=group) as trainer:  # fmt: skip
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
    train_seconds = time.monotonic() - train_started
    after = _accuracies(model_dir, store, held_out, repeats, adapter=True)
    train = [r for r in records if r["event"] == "train"]
    val = [r for r in records if r["event"] == "val"]
    versions = store.get_resource("policy").version

    table = Table(
        title=f"GRPO reward per step ({prompts} problems x {group} samples, LangChain agent via the proxy)"
    )
    for column in ("steps", "mean train reward", "rollouts", "rollout s/step", "GRPO s/step"):
        table.add_column(column, justify="right")
    for label, reward, rollouts, rollout_s, grpo_s in _windows(train, 20):
        table.add_row(label, f"{reward:.3f}", str(rollouts), f"{rollout_s:.2f}", f"{grpo_s:.2f}")
    console.print(table)

    held = Table(title=f"held-out accuracy ({len(held_out)} problems never trained on)")
    for column in ("", "before", "after"):
        held.add_column(column, justify="right")
    held.add_row(
        f"agent reward via the proxy ({len(val_tasks)} problems)",
        f"{val[0]['mean_reward']:.3f}",
        f"{val[-1]['mean_reward']:.3f}",
    )
    held.add_row(
        f"greedy accuracy ({len(held_out)} problems)", f"{before['greedy']:.3f}", f"{after['greedy']:.3f}"
    )
    held.add_row(
        f"sampled accuracy ({len(held_out)} problems x {repeats}), ± std. error",
        f"{before['sampled']:.3f} ± {before['sampled_se']:.3f}",
        f"{after['sampled']:.3f} ± {after['sampled_se']:.3f}",
    )
    console.print(held)

    rewards = [r["mean_reward"] for r in train]
    windows = [rewards[max(0, i - 9) : i + 1] for i in range(len(rewards))]
    smooth = [sum(w) / len(w) for w in windows]  # 10-step moving average
    png = write_curve_png(
        out / "reward_curve.png",
        [(rewards, (160, 190, 230)), (smooth, (20, 70, 170))],
        title="GRPO mean train reward per step",
        labels=("per step", "10-step moving average"),
    )
    step_s = [r["seconds"] for r in train]
    grpo_s = [r.get("policy/seconds", 0.0) for r in train]
    summary = {
        "steps": steps, "prompts": prompts, "group": group, "runners": args.runners,
        "concurrency": concurrency, "threads": args.threads, "lr": args.lr,
        "adapter_versions": versions, "store": args.store, "png": str(png),
        "held_out": len(held_out), "sampled_repeats": repeats,
        "val_reward_before": val[0]["mean_reward"], "val_reward_after": val[-1]["mean_reward"],
        "greedy_before": before["greedy"], "greedy_after": after["greedy"],
        "sampled_before": before["sampled"], "sampled_after": after["sampled"],
        "sampled_se_before": before["sampled_se"], "sampled_se_after": after["sampled_se"],
        "median_step_seconds": round(_median(step_s), 3),
        "median_rollout_seconds": round(_median([s - g for s, g in zip(step_s, grpo_s, strict=True)]), 3),
        "median_grpo_seconds": round(_median(grpo_s), 3),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    console.print(
        f"per step (median): {summary['median_step_seconds']:.2f} s = rollouts "
        f"{summary['median_rollout_seconds']:.2f} s + GRPO update {summary['median_grpo_seconds']:.2f} s; "
        f"training {train_seconds:.0f} s, total {summary['seconds']:.0f} s"
    )
    console.print(f"reward curve: {png}")
    console.print(f"adapter versions published: {versions} (resource 'policy' in {args.store})")
    print("summary: " + json.dumps(summary), flush=True)  # one unwrapped line, for scripts
    store.close()
    return 0


if __name__ == "__main__":
    # Everything is local: never let transformers reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
