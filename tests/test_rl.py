"""voltline-rl: GRPO math, logprob recomputation, GRPO and SFT steps on tiny models, a toy run."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("voltline_rl")

from voltline_rl import GRPO, PPO, SFT, load_trajectories, select_best  # noqa: E402
from voltline_rl.batching import make_batch, token_logprobs  # noqa: E402
from voltline_rl.losses import (  # noqa: E402
    clipped_surrogate,
    clipped_value_loss,
    gae,
    group_advantages,
    k3_kl,
    masked_token_mean,
    masked_whiten,
)

import voltline  # noqa: E402
import voltline.algorithms  # noqa: E402
from voltline._trajectory import Trajectory, Turn  # noqa: E402
from voltline.proxy.adapters import unpack_adapter  # noqa: E402
from voltline.proxy.modelinit import init_model  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def traj(rid: str, group: str, prompt, response, reward: float, logprobs=None, input=None) -> Trajectory:
    turn = Turn(
        span_id=f"s-{rid}",
        sequence=0,
        prompt_token_ids=list(prompt),
        response_token_ids=list(response),
        response_logprobs=logprobs,
        reward=reward,
    )
    return Trajectory(
        rollout_id=rid,
        attempt_id=f"a-{rid}",
        input=input,
        metadata={"group": group},
        reward=reward,
        turns=[turn],
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """`voltline model init`'s tiny Qwen2 with its byte-level BPE tokenizer and chat template."""
    return str(init_model(tmp_path_factory.mktemp("rl") / "tiny"))


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    """A 16-token random Qwen2, no tokenizer: GRPO only ever sees token ids.

    initializer_range=0.1 rather than 0.02: LoRA trains the linear layers but not the (tied)
    embeddings, so with tiny random embeddings the logits can barely move whatever the adapter does.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=16,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        initializer_range=0.1,
        pad_token_id=0,
        eos_token_id=0,
        bos_token_id=None,
    )
    out = tmp_path_factory.mktemp("toy") / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return str(out)


# --- GRPO math on hand-computed cases ------------------------------------------------------


def test_group_advantages_normalise_within_each_group():
    adv = group_advantages([1.0, 0.0, 1.0, 0.0, 3.0, 3.0], ["a", "a", "b", "b", "c", "c"], eps=1e-4)
    # Groups a and b: mean 0.5, population std 0.5. Group c: all equal, nothing to learn.
    assert adv[:4] == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001, 0.5 / 0.5001, -0.5 / 0.5001])
    assert adv[4:] == [0.0, 0.0]
    adv = group_advantages([1.0, 2.0, 3.0], ["g"] * 3, eps=0.0)
    std = math.sqrt(2 / 3)
    assert adv == pytest.approx([-1 / std, 0.0, 1 / std])
    assert group_advantages([5.0], ["alone"]) == [0.0]  # a group of one: no NaN
    with pytest.raises(ValueError):
        group_advantages([1.0], ["a", "b"])


def test_clipped_surrogate_takes_the_pessimistic_side():
    ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5, 1.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0]])
    old = torch.zeros_like(ratios)
    loss, clipped = clipped_surrogate(torch.log(ratios), old, adv, epsilon=0.2)
    # A>0, r=1.5: min(1.5, 1.2)=1.2 (clipped). A<0, r=1.5: min(-1.5, -1.2)=-1.5 (not clipped).
    # A>0, r=0.5: min(0.5, 0.8)=0.5. A<0, r=0.5: min(-0.5, -0.8)=-0.8 (clipped). r=1: -A.
    assert loss[0].tolist() == pytest.approx([-1.2, 1.5, -0.5, 0.8, -2.0])
    assert clipped.tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0]]
    # One advantage per sequence broadcasts over its tokens.
    loss, _ = clipped_surrogate(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -2.0]))
    assert loss.tolist() == [[-1.0] * 3, [2.0] * 3]


def test_k3_kl_is_zero_when_equal_and_matches_the_formula():
    logp = torch.log(torch.tensor([0.5, 0.3]))
    ref = torch.log(torch.tensor([0.25, 0.3]))
    kl = k3_kl(logp, ref)
    # δ = log(0.25/0.5): e^δ - δ - 1 = 0.5 + ln 2 - 1
    assert kl.tolist() == pytest.approx([0.5 + math.log(2) - 1, 0.0], abs=1e-7)
    assert bool((k3_kl(torch.randn(100), torch.randn(100)) >= 0).all())


def test_token_level_aggregation_weighs_every_token_equally():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(masked_token_mean(values, mask)) == pytest.approx(7 / 3)  # not (1.5 + 4) / 2
    # A micro-batch divides by the whole batch's token count, so accumulation equals one pass.
    assert float(masked_token_mean(values, mask, total_tokens=6)) == pytest.approx(7 / 6)
    assert float(masked_token_mean(values, torch.zeros_like(mask))) == 0.0


def test_batch_masks_only_response_tokens():
    batch = make_batch([[5, 6], [7]], [[8, 9], [10, 11, 12]], [[-0.1, -0.2], None], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 8, 9], [7, 10, 11, 12]]
    # loss_mask[b, i] scores token i+1: row 0 predicts 8 at position 1 and 9 at position 2.
    assert batch.loss_mask.tolist() == [[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    old = batch.sampler_logprobs
    assert math.isnan(old[0, 0]) and old[0, 1:].tolist() == pytest.approx([-0.1, -0.2])
    assert bool(torch.isnan(old[1]).all())  # no logprobs given for that turn
    padded = make_batch([[1, 2, 3], [1]], [[4], [2]], pad_id=0)
    assert padded.input_ids.tolist() == [[1, 2, 3, 4], [1, 2, 0, 0]]
    assert padded.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert padded.loss_mask.tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    assert padded.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 1, 1]]
    assert padded.tokens == 2


def test_registered_through_entry_points():
    assert voltline.algorithms.get("grpo") is GRPO
    assert voltline.algorithms.get("sft") is SFT
    infos = voltline.algorithms.available()
    assert infos["grpo"].source == "entry point voltline-rl"
    assert voltline.algorithms.get("ppo") is PPO


# --- logprobs recomputed on the exact ids equal the sampler's ------------------------------


def test_recomputed_logprobs_equal_generate_logprobs(tiny_dir):
    from transformers import AutoTokenizer

    algo = GRPO(tiny_dir, beta=0.0)
    model = algo.model
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.padding_side = "left"
    prompts = [tok.encode("What is 2 + 3?"), tok.encode("Hello")]  # different lengths: left padding
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    torch.manual_seed(3)
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=True,
            max_new_tokens=8,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=-1,  # never stop early: 8 tokens in every row
        )
    width = enc["input_ids"].shape[1]
    responses = out.sequences[:, width:].tolist()
    logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # raw, temperature 1
    sampler = [[float(logp[b, i, t]) for i, t in enumerate(resp)] for b, resp in enumerate(responses)]

    batch = make_batch(prompts, responses, sampler, pad_id=algo.policy.pad_id)
    with torch.no_grad():
        mine = token_logprobs(model, batch)
    mask = batch.loss_mask.bool()
    assert int(mask.sum()) == 16
    assert float((mine[mask] - batch.sampler_logprobs[mask]).abs().max()) < 1e-5


@pytest.fixture(scope="module")
def proxy(tiny_dir, tmp_path_factory):
    from voltline.proxy import local_app, serve_in_thread

    store = voltline.connect(f"sqlite:///{tmp_path_factory.mktemp('rlstore')}/rl.db")
    server = serve_in_thread(
        local_app(tiny_dir, store=store, adapter="policy", name="tiny", default_max_tokens=6)
    )
    yield store, server
    server.stop()
    store.close()


def sample_from_proxy(store, server, n: int, seed: int) -> list[Turn]:
    import openai

    claim = store.start_rollout({"task": "rl"})
    client = openai.OpenAI(
        base_url=server.base_url(claim.rollout.rollout_id, claim.attempt.attempt_id), api_key="unused"
    )
    turns = []
    for i in range(n):
        r = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"Add {i} and 3."}],
            max_tokens=6,
            seed=seed + i,
        )
        choice = r.choices[0]
        turns.append(
            Turn(
                span_id=f"{seed}-{i}",
                sequence=i,
                prompt_token_ids=r.model_extra["prompt_token_ids"],
                response_token_ids=choice.model_extra["token_ids"],
                response_logprobs=[t.logprob for t in choice.logprobs.content],
            )
        )
    return turns


def test_grpo_step_trains_the_adapter_the_proxy_serves(tiny_dir, proxy):
    """Sample through the proxy, train, publish, sample the new version: logprobs stay exact."""
    store, server = proxy
    algo = GRPO(tiny_dir, resources=("policy",), lr=5e-3)
    before = {n: p.detach().clone() for n, p in algo.model.named_parameters() if p.requires_grad}

    def batch_from(turns):
        out = []
        for i, turn in enumerate(turns):
            turn.reward = float(i % 2)  # half the group is rewarded: non-zero advantages
            out.append(Trajectory(rollout_id=f"r{i}", attempt_id="a", metadata={"group": "g"}, turns=[turn]))
        return out

    result = algo.run_step(batch_from(sample_from_proxy(store, server, 4, seed=0)))
    m = result.metrics
    assert m["turns"] == 4 and m["groups"] == 1 and m["reward_mean"] == 0.5
    assert m["logprob_diff_max"] < 1e-5  # the base model sampled; the fresh adapter is a no-op
    assert m["grad_norm"] > 0 and m["tokens"] > 0
    changed = [
        n for n, p in algo.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert changed and all("lora_" in n for n in changed)

    [resource] = result.resources
    assert resource.name == "policy" and resource.kind == "lora_adapter"
    assert resource.payload == {"format": "peft-tar-gz", "base_model": tiny_dir}
    folder = unpack_adapter(resource.artifact)
    assert {p.name for p in folder.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    from transformers import AutoModelForCausalLM

    loaded = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_dir), str(folder)
    ).eval()
    probe = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=probe).logits, algo.model(input_ids=probe).logits, atol=1e-5)
        with loaded.disable_adapter():
            assert not torch.allclose(loaded(input_ids=probe).logits, algo.model(input_ids=probe).logits)

    version = store.put_resource(
        resource.name, resource.kind, resource.payload, artifact=resource.artifact, created_by="grpo step 1"
    )
    assert version.version == 1
    # The proxy now samples with the trained adapter; recomputed logprobs match its own.
    result = algo.run_step(batch_from(sample_from_proxy(store, server, 4, seed=10)))
    assert result.metrics["logprob_diff_max"] < 1e-5
    assert voltline.flush()


def test_grpo_with_equal_rewards_and_no_kl_leaves_the_adapter_alone(toy_dir):
    algo = GRPO(toy_dir, beta=0.0, lr=1e-2)
    before = {n: p.detach().clone() for n, p in algo.model.named_parameters() if p.requires_grad}
    batch = [traj(f"r{i}", "g", [1, 2], [3 + i], 1.0) for i in range(4)]
    result = algo.run_step(batch)
    assert result.metrics["zero_std_groups"] == 1.0 and result.metrics["grad_norm"] == 0.0
    assert all(torch.equal(p, before[n]) for n, p in algo.model.named_parameters() if p.requires_grad)
    # Nothing trainable: no new version, no error.
    empty = algo.run_step([traj("x", "g", [1], [], 1.0)])
    assert empty.resources == [] and empty.metrics["turns"] == 0 and empty.metrics["skipped_turns"] == 1


def test_only_response_tokens_reach_the_loss(toy_dir):
    """The GRPO loss is a token mean over response tokens only, whatever the prompts' lengths."""
    algo = GRPO(toy_dir, beta=0.0, lr=1e-2)
    # Responses of 1, 2 and 3 tokens after prompts of 5, 1 and 3 tokens; rewards 0, 1, 2.
    batch = [
        traj("r0", "g", [9, 9, 9, 1, 2], [3], 0.0),
        traj("r1", "g", [1], [4, 5], 1.0),
        traj("r2", "g", [7, 1, 2], [6, 7, 8], 2.0),
    ]
    m = algo.run_step(batch).metrics
    a = 1 / math.sqrt(2 / 3)  # advantages -a, 0, +a; at ratio 1 each token's loss is -A
    assert m["tokens"] == 6.0
    assert m["policy_loss"] == pytest.approx(-(-a * 1 + 0 * 2 + a * 3) / 6, abs=1e-3)
    assert m["clip_fraction"] == 0.0


def test_grpo_rejects_more_than_one_resource(toy_dir):
    with pytest.raises(ValueError):
        GRPO(toy_dir, resources=("a", "b"))
    with pytest.raises(FileNotFoundError):
        GRPO("/nonexistent/model").model  # noqa: B018


# --- a short run where reward rises -------------------------------------------------------

PROMPTS = [[1, 2], [1, 3], [1, 4], [1, 5]]
TARGETS = {2: {4, 5, 6, 7}, 3: {8, 9, 10, 11}, 4: {12, 13, 14, 15}, 5: {4, 6, 8, 10}}


def expected_reward(model) -> float:
    """The exact probability of a rewarded answer, averaged over the prompts: no sampling noise."""
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor(PROMPTS)).logits[:, -1].float(), dim=-1)
    return float(sum(probs[i, sorted(TARGETS[p[-1]])].sum() for i, p in enumerate(PROMPTS)) / len(PROMPTS))


def run_toy(toy_dir, steps: int, flip: bool = False, make=None):
    """Each prompt asks for one of 4 of 16 tokens (reward 1); 8 samples per prompt per step."""
    algo = make() if make else GRPO(toy_dir, lr=5e-3, beta=0.04, seed=0)
    gen = torch.Generator().manual_seed(1)
    start = expected_reward(algo.model)
    sampled = []
    result = None
    for step in range(steps):
        with torch.no_grad():
            logp = torch.log_softmax(
                algo.model(input_ids=torch.tensor(PROMPTS)).logits[:, -1].float(), dim=-1
            )
        batch = []
        for i, prompt in enumerate(PROMPTS):
            for k in range(8):
                tok = int(torch.multinomial(logp[i].exp(), 1, generator=gen))
                hit = tok in TARGETS[prompt[-1]]
                reward = float(hit != flip)
                batch.append(traj(f"{step}-{i}-{k}", str(i), prompt, [tok], reward, [float(logp[i, tok])]))
        result = algo.run_step(batch)
        sampled.append(sum(float(t.reward == (not flip)) for t in batch) / len(batch))
        assert result.metrics.get("logprob_diff_max", 0.0) < 1e-5
    return algo, start, sampled, result


def test_grpo_raises_reward_on_a_toy_task(toy_dir):
    algo, start, sampled, result = run_toy(toy_dir, steps=20)
    end = expected_reward(algo.model)
    assert start < 0.3 and end > start + 0.3, (start, end)
    assert sum(sampled[-5:]) / 5 > sum(sampled[:5]) / 5 + 0.2, sampled
    # The published artifact is that policy: load it the way the proxy does.
    from transformers import AutoModelForCausalLM

    folder = unpack_adapter(result.resources[0].artifact)
    served = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(toy_dir), str(folder)).eval()
    assert expected_reward(served) == pytest.approx(end, abs=1e-5)
    # Control: rewarding the other tokens drives the same probability down instead.
    flipped, start_f, _, _ = run_toy(toy_dir, steps=10, flip=True)
    assert expected_reward(flipped.model) < start_f - 0.1


# --- SFT --------------------------------------------------------------------------------------


def test_select_best_is_rejection_sampling():
    batch = [
        traj("a1", "a", [1], [2], 0.2),
        traj("a2", "a", [1], [3], 0.9),
        traj("b1", "b", [1], [4], 0.1),
        traj("b2", "b", [1], [5], 0.1),
    ]
    assert [t.rollout_id for t in select_best(batch)] == ["a2", "b1"]
    assert [t.rollout_id for t in select_best(batch, min_reward=0.5)] == ["a2"]
    assert [t.rollout_id for t in select_best(batch, per_group=2)] == ["a2", "a1", "b1", "b2"]
    # Without the Trainer's group, identical task inputs form a group.
    ungrouped = [traj(f"u{i}", "x", [1], [2], float(i), input={"q": i % 2}) for i in range(4)]
    for t in ungrouped:
        t.metadata = {}
    assert [t.rollout_id for t in select_best(ungrouped)] == ["u2", "u3"]


def test_sft_step_lowers_the_loss_on_the_best_trajectories(tiny_dir, tmp_path):
    # Two groups; the good answers (reward 1) are fixed token strings, the bad ones differ.
    batch = []
    for g, prompt in enumerate([[10, 11, 12], [20, 21]]):
        for k in range(3):
            good = k == 1
            response = [30 + g, 31, 32, 33] if good else [40 + k, 41]
            batch.append(traj(f"{g}-{k}", str(g), prompt, response, float(good)))
    path = tmp_path / "data.jsonl"
    path.write_text("".join(t.model_dump_json() + "\n" for t in batch))
    assert load_trajectories(path) == batch

    algo = SFT(tiny_dir, lr=1e-2, epochs=3, min_reward=0.5)
    best = algo.chosen(batch)
    assert [t.rollout_id for t in best] == ["0-1", "1-1"]
    before = algo.nll(best)
    result = algo.run_step(batch)
    after = algo.nll(best)
    assert after < before - 0.5, (before, after)
    m = result.metrics
    assert m["selected"] == 2 and m["turns"] == 2 and m["tokens"] == 8
    assert m["loss"] < m["loss_first_epoch"]
    [resource] = result.resources
    assert resource.kind == "lora_adapter" and resource.payload["format"] == "peft-tar-gz"
    assert (unpack_adapter(resource.artifact) / "adapter_model.safetensors").exists()
    # select="all" trains on a whole (exported) dataset.
    assert len(SFT(tiny_dir, select="all").chosen(load_trajectories(path))) == 6


# --- with the Trainer and the proxy: the adapter it trains is the one the agent calls next ------

_PROXY_URL: dict[str, str] = {}


def _proxy_agent(task: str, resources) -> None:
    """A plain OpenAI-client agent; the proxy records token ids, the agent only emits a reward."""
    import openai

    ctx = voltline.current_rollout()
    base = f"{_PROXY_URL['url']}/rollout/{ctx.rollout_id}/attempt/{ctx.attempt_id}/v1"
    client = openai.OpenAI(base_url=base, api_key="unused")
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": task}], max_tokens=4
    )
    first = reply.choices[0].model_extra["token_ids"][0]
    voltline.emit_reward(float(first % 2 == 0))  # verifiable: an even first token id


def test_trainer_runs_grpo_against_the_proxy(tiny_dir, tmp_path):
    from voltline.proxy import local_app, serve_in_thread
    from voltline.trainer import Trainer

    store = voltline.connect(f"sqlite:///{tmp_path}/trainer.db")
    server = serve_in_thread(local_app(tiny_dir, store=store, adapter="policy", name="tiny"))
    _PROXY_URL["url"] = server.url
    try:
        algo = GRPO(tiny_dir, lr=5e-3)
        with Trainer(store, _proxy_agent, {"policy": algo}, runners=0, group_size=4) as trainer:
            first = trainer.train_step(["Say a number.", "Name a colour."])
            second = trainer.train_step(["Say a number.", "Name a colour."])
        assert first["rollouts"] == 8 and first["failed"] == 0
        assert first["policy/turns"] == 8 and first["policy/groups"] == 2
        assert first["policy/version"] == 1 and second["policy/version"] == 2
        # Step 2's samples came from version 1, which is exactly the policy GRPO holds: the
        # recomputed logprobs equal the proxy's, so the update is on-policy.
        assert second["policy/logprob_diff_max"] < 1e-5
        assert store.get_resource("policy").created_by == "grpo step 2"
    finally:
        server.stop()
        store.close()


# --- PPO ----------------------------------------------------------------------------------


def test_gae_on_hand_computed_cases():
    ones = torch.ones(1, 3)
    # gamma = lambda = 1: every advantage is the return (1) minus the value.
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.full((1, 3), 0.5), ones, gamma=1.0, lam=1.0)
    assert adv.tolist() == [[0.5, 0.5, 0.5]] and ret.tolist() == [[1.0, 1.0, 1.0]]
    # lambda = 0.5: A2 = 1 - 0.5; A1 = (0 + 0.5 - 0.5) + 0.5 * A2; A0 = (0 + 0.5 - 0) + 0.5 * A1.
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.5, 0.5]]), ones, gamma=1.0, lam=0.5)
    assert adv[0].tolist() == pytest.approx([0.625, 0.25, 0.5])
    assert ret[0].tolist() == pytest.approx([0.625, 0.75, 1.0])
    # Prompt and padding positions are outside the chain: no value leaks in from them.
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    adv, ret = gae(torch.tensor([[0.0, 0.0, 2.0, 0.0]]), torch.tensor([[9.0, 1.0, 1.0, 9.0]]), mask, 1.0, 1.0)
    assert adv.tolist() == [[0.0, 1.0, 1.0, 0.0]] and ret.tolist() == [[0.0, 2.0, 2.0, 0.0]]
    # gamma discounts the final reward back along the response.
    adv, _ = gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=0.5, lam=1.0)
    assert adv.tolist() == [[0.5, 1.0]]


def test_clipped_value_loss_and_whitening():
    v, old = torch.tensor([1.0, 1.0]), torch.tensor([0.5, 0.5])
    # R=2: the clipped value 0.7 is further from R, so it counts: 0.5 * 1.3^2. R=0: 0.5 * 1^2.
    assert clipped_value_loss(v, old, torch.tensor([2.0, 0.0]), 0.2).tolist() == pytest.approx([0.845, 0.5])
    white = masked_whiten(torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    s = math.sqrt(2 / 3)
    assert white.tolist() == pytest.approx([-1 / s, 0.0, 1 / s, 0.0], abs=1e-6)


def test_ppo_raises_reward_and_publishes_adapter_with_value_head(toy_dir):
    algo, start, sampled, result = run_toy(toy_dir, steps=20, make=lambda: PPO(toy_dir, lr=5e-3, seed=0))
    end = expected_reward(algo.model)
    assert end > start + 0.3, (start, end)
    assert sum(sampled[-5:]) / 5 > sum(sampled[:5]) / 5 + 0.2, sampled
    m = result.metrics
    assert m["value_mean"] != 0.0 and m["value_loss"] > 0  # the value head learnt something
    folder = unpack_adapter(result.resources[0].artifact)
    assert (folder / "value_head.safetensors").exists()
    from transformers import AutoModelForCausalLM

    served = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(toy_dir), str(folder)).eval()
    assert expected_reward(served) == pytest.approx(end, abs=1e-5)
    # Resuming from the artifact restores the value head too.
    resumed = PPO(toy_dir, init_adapter=result.resources[0].artifact)
    assert torch.equal(resumed.value_head.weight, algo.value_head.weight)
