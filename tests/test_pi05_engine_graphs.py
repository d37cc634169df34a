"""How the engine keeps compiled code and CUDA graphs across prompt lengths (CPU: the compile half; graphs need CUDA
and are exercised by scripts/bench_engine.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_engine

from sim_eval.policies.pi05.engine import GraphCache


def _obs(instruction: str) -> dict:
    rng = np.random.default_rng(0)
    images = {v: rng.integers(0, 256, (128, 160, 3), dtype=np.uint8) for v in ("agentview", "wrist")}
    return {"images": images, "state": np.zeros(8, np.float32), "instruction": instruction}


def test_prefix_compiles_once_for_every_prompt_length():
    import torch._dynamo as dynamo

    dynamo.reset()
    engine = tiny_engine("lerobot", state_in_prompt=False, compile=True)
    preps = [engine.prepare(_obs(text)) for text in ("pick up the bowl", "open the top drawer of the cabinet and put "
                                                     "the bowl inside it", "stop")]  # fmt: skip
    assert len({len(p.tokens) for p in preps}) == 3
    with torch.inference_mode():
        first = engine.encode_prefix(preps[0])
        with dynamo.config.patch(error_on_recompile=True):  # a second length recompiling would raise here
            caches = [first] + [engine.encode_prefix(p) for p in preps[1:]]
        for prep, cache in zip(preps, caches, strict=True):
            assert cache.key_mask is None and cache.n_valid == cache.keys.shape[3]  # exact length: nothing padded
            images = prep.images.to(engine.dtype)
            keys, values = engine.model.prefix_kv(images, torch.tensor([prep.tokens]))
            assert float((cache.keys - keys).abs().max()) <= 1e-5
            assert float((cache.values - values).abs().max()) <= 1e-5


def test_graph_cache_drops_least_recently_used():
    cache = GraphCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert cache.keys() == ["a", "c"] and cache.get("b") is None and len(cache) == 2


def test_prompts_run_at_their_exact_length_unless_padding_is_asked_for():
    # cuda_graphs=True only decides the padding here: nothing is captured on a CPU engine that never runs
    assert tiny_engine("lerobot", load=False, cuda_graphs=True).pad_multiple == 1
    assert tiny_engine("lerobot", load=False, cuda_graphs=True, pad_multiple=32).pad_multiple == 32
    assert tiny_engine("lerobot", load=False, pad_multiple=32).pad_multiple == 1  # no graphs: nothing to share


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"pad_multiple": 0}, "pad_multiple 0"), ({"max_graphs": 1}, "max_graphs 1")]
)
def test_bad_graph_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_engine("lerobot", load=False, **kwargs)
