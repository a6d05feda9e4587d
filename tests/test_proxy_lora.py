"""LoRA adapters published to the store as `lora_adapter` versions are served without a restart."""

from __future__ import annotations

import openai
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import voltline  # noqa: E402
from voltline.proxy import local_app, serve_in_thread  # noqa: E402
from voltline.proxy.adapters import publish_adapter  # noqa: E402
from voltline.proxy.modelinit import init_model  # noqa: E402

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def forward_logprobs(model, prompt, completion):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    return logp.gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1).tolist()


def make_adapter(model_dir: str, out, seed: int):
    """A LoRA adapter with non-zero weights (so it visibly changes the model), saved with peft."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(base, config).eval()
    model.save_pretrained(out)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    model_dir = str(init_model(root / "tiny"))
    store = voltline.connect(f"sqlite:///{root}/lora.db")
    server = serve_in_thread(
        local_app(model_dir, store=store, adapter="policy", name="tiny", default_max_tokens=8)
    )
    yield root, model_dir, store, server
    server.stop()
    store.close()


def sample(client, model: str, seed: int = 0):
    r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=6, seed=seed)
    return (
        r.model_extra["prompt_token_ids"],
        r.choices[0].model_extra["token_ids"],
        [t.logprob for t in r.choices[0].logprobs.content],
    )


def close_to(got, want) -> bool:
    return max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4


def test_new_adapter_versions_are_used_by_the_next_request(setup):
    from transformers import AutoModelForCausalLM

    root, model_dir, store, server = setup
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    claim = store.start_rollout({"task": "lora"})
    rid, aid = claim.rollout.rollout_id, claim.attempt.attempt_id
    client = openai.OpenAI(base_url=server.base_url(rid, aid), api_key="unused")

    # No adapter published yet: the plain name is the base model.
    prompt, ids, lps = sample(client, "tiny")
    assert close_to(lps, forward_logprobs(base, prompt, ids))

    v1 = make_adapter(model_dir, root / "v1", seed=1)
    assert publish_adapter(store, "policy", root / "v1").version == 1
    prompt, ids, lps = sample(client, "tiny")  # the very next request, same server
    assert close_to(lps, forward_logprobs(v1, prompt, ids))
    assert not close_to(lps, forward_logprobs(base, prompt, ids))  # the adapter really changed the model

    v2 = make_adapter(model_dir, root / "v2", seed=2)
    assert publish_adapter(store, "policy", root / "v2").version == 2
    prompt, ids, lps = sample(client, "tiny")
    assert close_to(lps, forward_logprobs(v2, prompt, ids))

    # Explicit choices: the base, or any published version.
    prompt, ids, lps = sample(client, "tiny:base")
    assert close_to(lps, forward_logprobs(base, prompt, ids))
    prompt, ids, lps = sample(client, "tiny:1")
    assert close_to(lps, forward_logprobs(v1, prompt, ids))
    with pytest.raises(openai.NotFoundError):
        sample(client, "tiny:3")
    assert [m.id for m in client.models.list()] == ["tiny", "tiny:base", "tiny:1", "tiny:2"]

    assert voltline.flush()
    spans = store.query_spans(rollout_id=rid, kind="llm")
    assert [s.resources for s in spans] == [{}, {"policy": 1}, {"policy": 2}, {}, {"policy": 1}]
