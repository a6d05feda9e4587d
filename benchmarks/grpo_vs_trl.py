"""Voltline's GRPO against TRL's GRPOTrainer: seconds per step and reward, same model and task.

    .venv/bin/python benchmarks/grpo_vs_trl.py                # 5-9 minutes on 2 shared CPU cores
    .venv/bin/python benchmarks/grpo_vs_trl.py --steps 20     # a quick look

Both sides start from the same pre-trained checkpoint folder (the demo's tiny character-level
Qwen2 that adds two numbers, examples/demo/demo_model.py) and train a LoRA adapter on the same
problems, step by step in the same order, with the same LoRA r/alpha/dropout/targets, group
size, problems per step, learning rate (constant), beta, epsilon, gradient clip, max completion
length, sampling temperature, one update per step and exact-answer reward.

* Voltline runs the way a user runs it: `voltline.Trainer(store=sqlite, agent=adder_agent,
  algorithms={"policy": GRPO(...)}, runners=0, concurrency=K, group_size=G)`; the agent is the
  demo's LangChain agent calling the Voltline LLM proxy served in this process, which batches
  the K concurrent requests and hot-swaps each published adapter version.
* TRL runs `trl.GRPOTrainer` twice: at its defaults that run on CPU (gradient checkpointing on)
  and with `gradient_checkpointing=False`. The faster of the two is the stricter baseline.

Held-out accuracy (before and after) is measured by one shared function on the base model with
the trained adapter loaded, on problems that never appear in training. The target (issue 5):
Voltline at most 0.8 of TRL's seconds per step, with reward at least as high.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The demo's model and agent are reused as they are; runners import the agent by module name.
sys.path.insert(0, str(ROOT / "examples" / "demo"))

TARGET_RATIO = 0.8
# One definition for both sides: Voltline's GRPO defaults, spelled out so a change to them cannot
# silently make the two runs differ.
LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS = 16, 32, 0.0, "all-linear"
# MAX_NEW_TOKENS matches the demo agent's max_tokens=4, which the proxy enforces per request.
EPSILON, MAX_GRAD_NORM, MAX_NEW_TOKENS = 0.2, 1.0, 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (default 60)")
    parser.add_argument("--prompts", type=int, default=8, help="problems per step (default 8)")
    parser.add_argument("--group", type=int, default=8, help="samples per problem (default 8)")
    parser.add_argument("--lr", type=float, default=5e-4, help="learning rate, constant (default 5e-4)")
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (default 0.04)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: steady timings on a shared box; see rl-on-cpu notes)",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, help="Voltline rollouts in flight (default: prompts x group, one step)"
    )
    parser.add_argument("--eval-problems", type=int, default=256, help="held-out problems (default 256)")
    parser.add_argument(
        "--eval-samples", type=int, default=4, help="sampled answers per held-out problem (default 4)"
    )
    parser.add_argument(
        "--only", choices=("voltline", "trl"), help="run one side only (no ratio; for profiling)"
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="also time the rollout phase with lighter agents (store only, plain HTTP, LangChain)",
    )  # fmt: skip
    parser.add_argument("--json", dest="json_path", help="also write every measurement to this file")
    parser.add_argument(
        "--cache-dir", help="model cache (default: $VOLTLINE_DEMO_CACHE, ~/.cache/voltline/demo)"
    )
    return parser.parse_args(argv)


def require_trl() -> None:
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit(
            "This benchmark needs TRL: `.venv/bin/pip install 'trl>=1.16,<1.17'` "
            "(or `scripts/setup.sh --dev`, which installs requirements-dev.txt)."
        )


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "uptime unavailable"


# problems --------------------------------------------------------------------------------------
def problems_for(
    args: argparse.Namespace, max_operand: int
) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """Training problems in step order, and held-out problems none of which is trained on."""
    import random

    from demo_model import make_problems

    train = make_problems(args.prompts * args.steps, seed=args.seed + 1, max_operand=max_operand)
    seen = {(p["a"], p["b"]) for p in train}
    rng = random.Random(args.seed + 3)
    unseen = [(a, b) for a in range(max_operand) for b in range(max_operand) if (a, b) not in seen]
    rng.shuffle(unseen)
    held = [{"a": a, "b": b} for a, b in unseen[: args.eval_problems]]
    return train, held


# shared evaluation ------------------------------------------------------------------------------
def evaluate(
    model_dir: Path, adapter_dir: Path | None, problems: list[dict[str, int]], samples: int
) -> dict[str, float]:
    """Greedy and sampled (T=1, `samples` draws per problem) held-out accuracy of the base model,
    or of the base with `adapter_dir` loaded: the same code and sampling settings for both sides."""
    import torch
    from demo_model import accuracy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    sampled = [accuracy(model, tokenizer, problems, sample=True, seed=1000 + s) for s in range(samples)]
    return {
        "greedy": accuracy(model, tokenizer, problems, sample=False),
        "sampled": sum(sampled) / len(sampled),
    }


# Voltline --------------------------------------------------------------------------------------
class Timer:
    """Accumulates wall time per phase for the current step (wrapping the callables it times)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - started

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            with self.phase(name):
                return fn(*a, **kw)

        return timed

    def take(self) -> dict[str, float]:
        out, self.current = self.current, {}
        return out


def run_voltline(
    args: argparse.Namespace, model_dir: Path, train: list[dict[str, int]], work: Path
) -> dict[str, Any]:
    from demo_agent import PROXY_ENV, adder_agent, instrument_once
    from voltline_rl import GRPO

    import voltline
    import voltline.trainer as trainer_module
    from voltline.proxy import local_app, serve_in_thread
    from voltline.proxy.adapters import unpack_adapter
    from voltline.trainer import Trainer

    concurrency = args.concurrency or args.prompts * args.group
    store = voltline.connect(f"sqlite:///{work / 'voltline.db'}")
    # max_batch: the engine may put every in-flight request into one forward pass.
    server = serve_in_thread(
        local_app(
            str(model_dir), store=store, adapter="policy", name="adder", default_max_tokens=MAX_NEW_TOKENS,
            max_batch=max(16, concurrency),
        )
    )  # fmt: skip
    os.environ[PROXY_ENV] = server.url
    instrument_once()
    # One micro-batch of the whole step, as TRL's per_device_train_batch_size below.
    grpo = GRPO(
        str(model_dir), resources=("policy",), lr=args.lr, beta=args.beta, epsilon=EPSILON,
        lora_r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS,
        max_grad_norm=MAX_GRAD_NORM, updates_per_step=1, micro_batch_size=args.prompts * args.group,
        seed=args.seed,
    )  # fmt: skip
    timer = Timer()
    # Profiling only: the benchmark wraps the step's phases to show where Voltline's time goes.
    grpo.run_step = timer.wrap("update", grpo.run_step)  # type: ignore[method-assign]
    original_build = trainer_module.build_trajectories
    trainer_module.build_trajectories = timer.wrap("trajectories", original_build)
    steps: list[dict[str, Any]] = []
    try:
        with Trainer(store, adder_agent, {"policy": grpo}, runners=0, concurrency=concurrency,
                     group_size=args.group) as trainer:  # fmt: skip
            trainer._run = timer.wrap("rollouts", trainer._run)  # type: ignore[method-assign]
            for i in range(args.steps):
                batch = train[i * args.prompts : (i + 1) * args.prompts]
                started, cpu = time.perf_counter(), time.process_time()
                metrics = trainer.train_step(batch)
                total, cpu = time.perf_counter() - started, time.process_time() - cpu
                phases = timer.take()
                steps.append({
                    "step": i + 1, "seconds": total, "cpu": cpu, "reward": metrics["mean_reward"],
                    "succeeded": metrics["succeeded"], "turns": metrics.get("policy/turns"),
                    "kl": metrics.get("policy/kl"), "grpo_seconds": metrics.get("policy/seconds"),
                    **phases,
                })  # fmt: skip
                _progress("voltline", steps[-1], args.steps)
    finally:
        trainer_module.build_trajectories = original_build
        voltline.flush()
        server.stop()
    version = store.get_resource("policy")
    adapter_dir = unpack_adapter(store.get_artifact(version.artifact_hash), work / "voltline-adapter")
    store.close()
    return {
        "steps": steps,
        "adapter_dir": adapter_dir,
        "versions": version.version,
        "concurrency": concurrency,
    }


_http: dict[str, Any] = {}
_http_lock = threading.Lock()


def reward_only_agent(task: dict[str, int], resources: dict[str, Any]) -> None:
    """Profiling: no model call at all, so a step costs only the runner, store and spans."""
    import voltline

    voltline.emit_reward(0.0)


def raw_http_agent(task: dict[str, int], resources: dict[str, Any]) -> str:
    """Profiling: the demo agent's request made with plain httpx, without LangChain."""
    import httpx
    from demo_agent import PROXY_ENV

    import voltline

    with _http_lock:  # one pooled client for all rollout threads, as the demo agent keeps
        if "client" not in _http:
            _http["client"] = httpx.Client(timeout=60.0)
        client = _http["client"]
    ctx = voltline.current_rollout()
    url = f"{os.environ[PROXY_ENV]}/rollout/{ctx.rollout_id}/attempt/{ctx.attempt_id}/v1/chat/completions"
    body = {
        "model": "adder", "max_tokens": MAX_NEW_TOKENS, "temperature": 1.0,
        "messages": [{"role": "user", "content": f"{task['a']}+{task['b']}="}],
    }  # fmt: skip
    answer = str(client.post(url, json=body).json()["choices"][0]["message"]["content"]).strip()
    voltline.emit_reward(1.0 if answer == str(task["a"] + task["b"]) else 0.0)
    return answer


def profile_rollouts(
    args: argparse.Namespace, model_dir: Path, work: Path, steps: int = 8
) -> list[tuple[str, float, float]]:
    """Rollout-phase seconds per step (median wall, median process CPU) with three agents of
    decreasing weight, no training: what the agent framework, the proxy's HTTP path and the
    runner/store machinery each cost. Same Trainer, store, proxy and concurrency as the run."""
    from demo_agent import PROXY_ENV, adder_agent, instrument_once
    from demo_model import make_problems

    import voltline
    from voltline.proxy import local_app, serve_in_thread
    from voltline.trainer import Trainer

    concurrency = args.concurrency or args.prompts * args.group
    tasks = make_problems(args.prompts * (steps + 1), seed=args.seed + 7)
    store = voltline.connect(f"sqlite:///{work / 'profile.db'}")
    server = serve_in_thread(
        local_app(str(model_dir), store=store, adapter="policy", name="adder",
                  default_max_tokens=MAX_NEW_TOKENS,
                  max_batch=max(16, concurrency))
    )  # fmt: skip
    os.environ[PROXY_ENV] = server.url
    instrument_once()
    rows = []
    agents = [
        ("runner + store only (agent emits a reward, no model call)", reward_only_agent),
        ("+ proxy over HTTP (plain httpx agent)", raw_http_agent),
        ("+ LangChain ChatOpenAI (the demo agent)", adder_agent),
    ]
    try:
        for label, agent in agents:
            walls, cpus = [], []
            with Trainer(
                store, agent, {}, runners=0, concurrency=concurrency, group_size=args.group
            ) as trainer:
                for i in range(steps + 1):  # the first step warms up (imports, first connections)
                    batch = tasks[i * args.prompts : (i + 1) * args.prompts]
                    started, cpu = time.perf_counter(), time.process_time()
                    trainer.train_step(batch)
                    if i:
                        walls.append(time.perf_counter() - started)
                        cpus.append(time.process_time() - cpu)
            rows.append((label, statistics.median(walls), statistics.median(cpus)))
            print(f"  profile: {label}: {rows[-1][1]:.3f} s/step", flush=True)
    finally:
        voltline.flush()
        server.stop()
        store.close()
    return rows


def _progress(name: str, step: dict[str, Any], total: int) -> None:
    if step["step"] % 10 == 0 or step["step"] == total:
        reward = "-" if step["reward"] is None else f"{step['reward']:.3f}"
        print(f"  {name}: step {step['step']}/{total}  {step['seconds']:.3f} s  reward {reward}", flush=True)


# TRL -------------------------------------------------------------------------------------------
def run_trl(
    args: argparse.Namespace, model_dir: Path, train: list[dict[str, int]], work: Path, checkpointing: bool
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_dict({
        "prompt": [f"{p['a']}+{p['b']}=" for p in train],
        "answer": [str(p["a"] + p["b"]) for p in train],
    })  # fmt: skip

    def exact_answer(completions: list[str], answer: list[str], **_: Any) -> list[float]:
        return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer, strict=True)]

    steps: list[dict[str, Any]] = []

    class StepClock(TrainerCallback):
        """Wall time of each optimizer step (generation included) and the reward TRL logs for it."""

        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            self.started, self.cpu = time.perf_counter(), time.process_time()

        def on_step_end(self, _args: Any, state: Any, *a: Any, **kw: Any) -> None:
            steps.append({
                "step": state.global_step, "seconds": time.perf_counter() - self.started,
                "cpu": time.process_time() - self.cpu,
            })  # fmt: skip

        def on_log(
            self, _args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if logs and "reward" in logs and steps and steps[-1]["step"] == state.global_step:
                steps[-1].update(reward=logs["reward"], kl=logs.get("kl"))
                _progress("trl" + ("" if checkpointing else " (no grad-ckpt)"), steps[-1], args.steps)

    out = work / ("trl-ckpt" if checkpointing else "trl-nockpt")
    config = GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=False, seed=args.seed, report_to="none",
        save_strategy="no", logging_steps=1, disable_tqdm=True, max_steps=args.steps,
        per_device_train_batch_size=args.prompts * args.group, gradient_accumulation_steps=1,
        num_generations=args.group, shuffle_dataset=False, num_iterations=1,
        max_completion_length=MAX_NEW_TOKENS, temperature=1.0, top_k=0, top_p=1.0,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM, beta=args.beta, epsilon=EPSILON, loss_type="dapo", scale_rewards="group",
        gradient_checkpointing=checkpointing, dataloader_num_workers=0,
    )  # fmt: skip
    lora = LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(args.seed)
    trainer = GRPOTrainer(
        model=str(model_dir), reward_funcs=exact_answer, args=config, train_dataset=dataset,
        processing_class=tokenizer, peft_config=lora, callbacks=[StepClock()],
    )  # fmt: skip
    # The per-step dicts TRL prints would bury the table; StepClock reports progress instead.
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    adapter_dir = out / "adapter"
    trainer.model.save_pretrained(str(adapter_dir))
    return {"steps": steps, "adapter_dir": adapter_dir, "gradient_checkpointing": checkpointing}


# report ----------------------------------------------------------------------------------------
def timing(steps: list[dict[str, Any]], key: str = "seconds") -> tuple[float, float]:
    """Median and mean over steps 2..N: step 1 pays one-off costs (first adapter load, warm-up)."""
    values = [s[key] for s in steps[1:] if s.get(key) is not None] or [s[key] for s in steps if s.get(key)]
    if not values:
        return float("nan"), float("nan")
    return statistics.median(values), statistics.fmean(values)


def mean_reward(steps: list[dict[str, Any]], last: int | None = None) -> float:
    chosen = steps[-last:] if last else steps
    values = [s["reward"] for s in chosen if s.get("reward") is not None]
    return sum(values) / len(values) if values else float("nan")


def report(args: argparse.Namespace, runs: dict[str, dict[str, Any]], before: dict[str, float]) -> list[str]:
    window = max(1, min(20, args.steps // 4))
    lines = [
        f"GRPO, {args.prompts} problems x {args.group} samples per step, {args.steps} steps, lr {args.lr}, "
        f"beta {args.beta}, {args.threads} torch thread(s)",
        "",
        f"| run | s/step median | s/step mean | CPU s/step median | mean train reward (all) | "
        f"last {window} steps | held-out greedy | held-out sampled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| base model (before) | | | | | | {before['greedy']:.3f} | {before['sampled']:.3f} |",
    ]
    for name, run in runs.items():
        med, mean = timing(run["steps"])
        cpu, _ = timing(run["steps"], "cpu")
        ev = run["eval"]
        lines.append(
            f"| {name} | {med:.3f} | {mean:.3f} | {cpu:.3f} | {mean_reward(run['steps']):.3f} | "
            f"{mean_reward(run['steps'], window):.3f} | {ev['greedy']:.3f} | {ev['sampled']:.3f} |"
        )
    volt = runs.get("Voltline GRPO")
    if volt:
        lines += ["", "Voltline per step, median (mean) s over steps 2..N:"]
        for key in ("rollouts", "trajectories", "update", "grpo_seconds"):
            med, mean = timing(volt["steps"], key)
            label = {"rollouts": "rollouts (agent via proxy, enqueue to finish)",
                     "trajectories": "building trajectories from spans",
                     "update": "GRPO.run_step (update + adapter packing)",
                     "grpo_seconds": "  of which GRPO's own step (no packing)"}[key]  # fmt: skip
            lines.append(f"  {label:<48} {med:.3f} ({mean:.3f})")
        rest = [s["seconds"] - s.get("rollouts", 0) - s.get("trajectories", 0) - s.get("update", 0)
                for s in volt["steps"][1:]]  # fmt: skip
        if rest:
            lines.append(f"  {'other (publish, flush, summaries)':<48} {statistics.median(rest):.3f}")
    trl_runs = {k: v for k, v in runs.items() if k.startswith("TRL")}
    if volt and trl_runs:
        lines.append("")
        volt_med, volt_mean = timing(volt["steps"])
        strict_name = min(trl_runs, key=lambda k: timing(trl_runs[k]["steps"])[0])
        for name, run in trl_runs.items():
            med, mean = timing(run["steps"])
            ratio = volt_med / med
            reward_ok = volt["eval"]["sampled"] >= run["eval"]["sampled"]
            train_ok = mean_reward(volt["steps"]) >= mean_reward(run["steps"])
            verdict = "PASS" if ratio <= TARGET_RATIO and reward_ok else "FAIL"
            strict = " (stricter baseline)" if name == strict_name else ""
            cpu_ratio = timing(volt["steps"], "cpu")[0] / timing(run["steps"], "cpu")[0]
            lines.append(
                f"verdict vs {name}{strict}: time ratio Voltline/TRL {ratio:.2f} median "
                f"({volt_mean / mean:.2f} mean, {cpu_ratio:.2f} CPU), target <= {TARGET_RATIO}: "
                f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}; held-out sampled "
                f"{volt['eval']['sampled']:.3f} vs {run['eval']['sampled']:.3f}: "
                f"{'at least as high' if reward_ok else 'LOWER'}; mean train reward "
                f"{mean_reward(volt['steps']):.3f} vs {mean_reward(run['steps']):.3f}"
                f"{'' if train_ok else ' (lower)'} -> {verdict}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only != "voltline":
        require_trl()
    import warnings

    import torch
    import transformers
    from demo_model import ModelSpec, ensure_model

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    # transformers 5 warns on every run that TRL still spells it "gradient_checkpointing".
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    spec = ModelSpec()
    model_dir, info = ensure_model(spec, Path(args.cache_dir) if args.cache_dir else None)
    print(f"model: {info['params']:,} params at {model_dir}", flush=True)
    train, held = problems_for(args, spec.max_operand)
    before = evaluate(model_dir, None, held, args.eval_samples)
    runs: dict[str, dict[str, Any]] = {}
    profile: list[tuple[str, float, float]] = []
    loads: list[str] = [f"start: {uptime()}"]
    with tempfile.TemporaryDirectory(prefix="grpo-vs-trl-") as tmp:
        work = Path(tmp)
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if args.only != "trl":
            plan.append(("Voltline GRPO", lambda: run_voltline(args, model_dir, train, work)))
        if args.only != "voltline":
            plan.append(("TRL, grad-ckpt on (default)", lambda: run_trl(args, model_dir, train, work, True)))
            plan.append(("TRL, grad-ckpt off", lambda: run_trl(args, model_dir, train, work, False)))
        if args.profile and args.only != "trl":
            plan.append(("profile", lambda: {"rows": profile_rollouts(args, model_dir, work)}))
        for name, run in plan:
            if name == "profile":
                profile = run()["rows"]
                continue
            print(f"{name}: {uptime()}", flush=True)
            t0 = time.monotonic()
            result = run()
            result["wall"] = time.monotonic() - t0
            result["eval"] = evaluate(model_dir, result["adapter_dir"], held, args.eval_samples)
            result["adapter_dir"] = str(result["adapter_dir"])
            runs[name] = result
            loads.append(f"after {name}: {uptime()}")
    lines = report(args, runs, before)
    if profile:
        lines += [
            "",
            f"Trainer.train_step with no algorithm (rollouts + summaries), {args.prompts * args.group} "
            "rollouts per step, median s/step (process CPU s):",
        ]
        lines += [f"  {label:<58} {wall:.3f} ({cpu:.3f})" for label, wall, cpu in profile]
    print()
    print("\n".join(lines))
    print()
    for line in loads:
        print(f"load {line}")
    print(f"total {time.monotonic() - started:.0f} s")
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps(
                {"args": vars(args), "before": before, "runs": runs, "profile": profile, "loads": loads},
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
