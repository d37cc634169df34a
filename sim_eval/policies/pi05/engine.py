"""``Pi05Engine``: observation in, action chunk out, split as ``encode_prefix`` (expensive, cacheable) and ``denoise``.

The engine owns pre/post-processing (camera mapping, resize, prompt, normalization) around ``Pi05Model``. On CUDA it
replays CUDA graphs for both halves: the prefix graph is keyed by (cameras, prompt length) and the denoise graph by
prefix length. Prompts run at their exact length, so no padding is computed: the prefix is compiled once with a
dynamic prompt length, and a new length costs two graph captures (~0.1 s on an H100), never a recompile. A prompt
that carries the discretized state changes length by a few tokens from frame to frame, so each task brings a few
lengths. ``pad_multiple > 1`` pads prompts to fewer lengths instead, the padding masked by key (on an H100 that cost
~0.8 ms a prefix: masked attention and slower cuBLAS tiles, docs/benchmarks.md). At most ``max_graphs`` graphs are
kept, least recently used first out."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from sim_eval.policies.pi05.checkpoint import copy_weights, plan_checkpoint, read_checkpoint_info
from sim_eval.policies.pi05.config import KERNELS, CheckpointInfo, ModelSizes
from sim_eval.policies.pi05.model import Pi05Model, PrefixCache
from sim_eval.policies.pi05.processing import Normalizer, Prepared, Preparer, PromptTokenizer, find_tokenizer

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
# compiled artifacts, each under the cache directory (compile_cache_dirs)
COMPILE_CACHES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def compile_cache_dirs(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """torch.compile's (Inductor) and Triton's on-disk caches in one known place, ``$XDG_CACHE_HOME/sim_eval/`` (by
    default ``~/.cache/sim_eval/``): ``inductor/`` and ``triton/``. A second process or run then loads the compiled
    prefix and kernels instead of compiling them again (a batched server's start-up, N batch-1 workers). A directory
    the user set is kept. Both read the variable when they first compile, so it is set before (the engine does, on
    CUDA; spawned children inherit it). Returns the two directories."""
    base = os.path.join(environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sim_eval")
    for name, sub in COMPILE_CACHES.items():
        environ.setdefault(name, os.path.join(base, sub))
    return {name: environ[name] for name in COMPILE_CACHES}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def default_camera_map(camera_keys: tuple[str, ...]) -> dict[str, str]:
    """Our views -> checkpoint cameras: ``wrist`` to the first key naming a wrist, ``agentview`` to the first other."""
    wrist = [k for k in camera_keys if "wrist" in k]
    other = [k for k in camera_keys if "wrist" not in k]
    mapping = {}
    if other:
        mapping["agentview"] = other[0]
    if wrist:
        mapping["wrist"] = wrist[0]
    return mapping


def resolve_camera_map(camera_map: dict[str, str] | None, camera_keys: tuple[str, ...]) -> dict[str, str]:
    if camera_map is None:
        return default_camera_map(camera_keys)
    resolved = {}
    for view, key in camera_map.items():
        hits = [k for k in camera_keys if k == key or k.endswith("." + key) or k.endswith("/" + key)]
        if len(hits) != 1:
            raise ValueError(
                f"camera_map: {view!r} -> {key!r} matches {hits or 'no'} checkpoint camera; "
                f"checkpoint cameras are {list(camera_keys)}"
            )
        resolved[view] = hits[0]
    return resolved


class Pi05Engine:
    def __init__(
        self,
        info: CheckpointInfo,
        device: str = "auto",
        dtype: str = "float32",
        tokenizer: str | None = None,
        camera_map: dict[str, str] | None = None,
        num_steps: int | None = None,
        cuda_graphs: bool | None = None,
        pad_multiple: int = 1,
        max_graphs: int = 32,
        load: bool = True,
        tokenizer_obj: PromptTokenizer | None = None,
        state_in_prompt: bool | None = None,
        model: Pi05Model | None = None,
        compile: bool | None = None,
        compile_mode: str | None = None,
        kernels: str = "auto",
        triton_options: dict[str, Any] | None = None,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} not supported: float32 or bfloat16")
        if resolve_device(device).type == "cuda":  # before anything compiles: see compile_cache_dirs
            compile_cache_dirs()
        if state_in_prompt is not None:  # e.g. a LeRobot checkpoint fine-tuned with openpi's state-free prompt
            info = replace(info, state_in_prompt=bool(state_in_prompt))
        self.info = info
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]
        self.num_steps = int(num_steps or info.num_steps)
        self.camera_map = resolve_camera_map(camera_map, info.camera_keys)
        self.normalizer = Normalizer(info.norm)
        self.tokenizer = tokenizer_obj or PromptTokenizer(
            find_tokenizer(tokenizer, info.tokenizer_name, info.path), info.max_token_len
        )
        # the pre-processing alone (no model): picklable, so a batched server's simulator workers run it
        self.preparer = Preparer(info, self.camera_map, self.normalizer, self.tokenizer)
        self.cuda_graphs = (self.device.type == "cuda") if cuda_graphs is None else bool(cuda_graphs)
        if pad_multiple < 1 or max_graphs < 2:
            raise ValueError(f"pad_multiple {pad_multiple} must be >= 1 and max_graphs {max_graphs} >= 2 (a prefix and "
                             "a denoise graph)")  # fmt: skip
        # without graphs nothing is shared across lengths: padding would only cost
        self.pad_multiple = pad_multiple if self.cuda_graphs else 1
        with torch.device("meta"):
            meta_model = Pi05Model(info.sizes)
        self.skipped: list[str] = []
        plan = None
        if load:  # shapes are checked on the meta model, before a single weight is allocated
            expected = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
            plan, self.skipped = plan_checkpoint(info, expected)
        # an already-built model may be shared (the benchmark runs eager and graph engines on one set of weights)
        self.model = model if model is not None else build_model(info.sizes, self.device, self.dtype)
        if plan is not None:
            copy_weights(self.model, info, plan)
            self.model.prepare_inference()
        # torch.compile fuses the many small element-wise kernels (norms, RoPE, gates) that otherwise bound the
        # prefix and the torch denoise step even under CUDA graphs; off on CPU, where it only costs start-up time
        self.compiled = (self.device.type == "cuda") if compile is None else bool(compile)
        self.kernels = self._choose_kernels(kernels)
        if triton_options and self.kernels != "triton":
            raise ValueError(f"triton_options {triton_options} given, but the denoise step runs kernels "
                             f"{self.kernels!r}: they apply to kernels='triton' only")  # fmt: skip
        self._prefix_kv = self.model.prefix_kv
        self._velocity = self.model.velocity
        if self.compiled:
            import torch._dynamo as dynamo

            # the prefix compiles per (cameras, mask presence), its length being dynamic; the torch denoise step per
            # (prefix length, chunk, mask presence): allow more variants than dynamo's default 8
            dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
            self._prefix_kv = _dynamic_length(torch.compile(self.model.prefix_kv))
            if self.kernels == "torch":
                # compile_mode (e.g. "max-autotune-no-cudagraphs") applies to the denoise step only: that is where
                # the skinny GEMMs live, and autotuning the whole prefix would cost minutes of start-up
                self._velocity = torch.compile(self.model.velocity, dynamic=False, mode=compile_mode)
        if self.kernels == "triton":
            from sim_eval.policies.pi05.triton_expert import TritonExpert

            self._velocity = TritonExpert(self.model, **(triton_options or {})).velocity
        self._mods: list[list[torch.Tensor]] | None = None
        self._graphs: GraphCache = GraphCache(max_graphs)
        self._pool = None

    def _choose_kernels(self, kernels: str) -> str:
        """``torch`` (the model's own ops, compiled on CUDA) or ``triton`` (``TritonExpert``: CUDA, bf16, batch 1;
        the denoise loop's skinny GEMMs and attention as purpose-built kernels). ``auto`` takes triton where it can
        run and torch elsewhere (CPU, fp32: fp32 GEMMs on tensor cores would round operands to tf32)."""
        if kernels not in KERNELS:
            raise ValueError(f"kernels {kernels!r} not supported: {', '.join(KERNELS)}")
        if kernels == "torch":
            return "torch"
        reason = None
        if self.device.type != "cuda":
            reason = f"needs CUDA (device is {self.device})"
        elif self.dtype != torch.bfloat16:
            reason = f"runs bf16 (dtype is {self.dtype})"
        else:
            try:
                from sim_eval.policies.pi05.triton_expert import unsupported_reason
            except ImportError as exc:
                reason = f"triton is not importable ({exc})"
            else:
                reason = unsupported_reason(self.model)
        if reason is None:
            return "triton"
        if kernels == "triton":
            raise ValueError(f"kernels='triton': {reason}")
        return "torch"

    # ------------------------------------------------------------------------------------------------ interface
    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.camera_map)

    @property
    def chunk_size(self) -> int:
        return self.info.n_action_steps

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        return (1, self.info.chunk_size, self.info.sizes.max_action_dim)

    def sample_noise(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching start noise (1, chunk, max_action_dim), drawn on the CPU so a seeded generator gives the same
        noise on every device."""
        return torch.randn(self.noise_shape, generator=generator, dtype=torch.float32)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def prepare(self, obs: dict[str, Any]) -> Prepared:
        return self.preparer(obs)

    def encode_prefix(self, obs: dict[str, Any] | Prepared) -> PrefixCache:
        prep = obs if isinstance(obs, Prepared) else self.prepare(obs)
        n_tok = len(prep.tokens)
        t_pad = -(-n_tok // self.pad_multiple) * self.pad_multiple
        ids = torch.zeros(1, t_pad, dtype=torch.long)
        ids[0, :n_tok] = torch.tensor(prep.tokens, dtype=torch.long)
        n_img = prep.images.shape[0] * self.info.sizes.vision.num_tokens
        images = prep.images.to(self.device, self.dtype, non_blocking=True)
        ids = ids.to(self.device)
        if t_pad == n_tok:
            key_mask = None
        else:
            key_mask = torch.zeros(1, n_img + t_pad, dtype=torch.bool)
            key_mask[0, : n_img + n_tok] = True
            key_mask = key_mask.to(self.device)
        with torch.inference_mode():
            if self.cuda_graphs:
                return self._graph_prefix(images, ids, key_mask, n_img + n_tok)
            keys, values = self._prefix_kv(images, ids, key_mask)
            return PrefixCache(keys, values, key_mask, n_img + n_tok)

    def denoise_normalized(self, cache: PrefixCache, noise: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            mods = self.modulations()
            noise = noise.to(self.device, torch.float32)
            if self.cuda_graphs:
                return self._graph_denoise(cache, noise)
            return self.model.denoise(cache, noise, self.num_steps, modulations=mods, velocity_fn=self._velocity)

    def denoise(self, cache: PrefixCache, noise: torch.Tensor) -> np.ndarray:
        """Action chunk (n_action_steps, 7), un-normalized, float32 numpy."""
        x = self.denoise_normalized(cache, noise)
        x = x[0, : self.info.n_action_steps, :7].float().cpu().numpy()
        return self.normalizer.unnormalize_actions(x)

    def modulations(self) -> list[list[torch.Tensor]]:
        """adaRMS modulations for the fixed schedule, computed once (they depend on time alone)."""
        if self._mods is None:
            with torch.inference_mode():
                self._mods = [self.model.time_modulations(t) for t in self.model.schedule(self.num_steps, self.device)]
        return self._mods

    # ------------------------------------------------------------------------------------------------ CUDA graphs
    def _capture(self, key: Any, fn, static_inputs: dict[str, torch.Tensor]):
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside capture: kernels selected, workspaces allocated
                fn(**static_inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = fn(**static_inputs)
        # graphs share one memory pool; that is safe because every replay's outputs are cloned before the next replay
        return self._graphs.put(key, (graph, static_inputs, out))

    def _replay(self, key: Any, fn, inputs: dict[str, torch.Tensor]):
        """Copy ``inputs`` into the static buffers of the graph captured for ``key`` (captured on first use), replay
        it and return its (static) outputs."""
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key, fn, {k: v.clone() for k, v in inputs.items()})
        graph, static, out = entry
        for name, value in inputs.items():
            static[name].copy_(value)
        graph.replay()
        return out

    def _graph_prefix(self, images, ids, key_mask, n_valid) -> PrefixCache:
        inputs = {"images": images, "ids": ids}
        if key_mask is not None:  # without padding no mask: the unmasked fused attention kernels apply
            inputs["key_mask"] = key_mask

        def fn(images, ids, key_mask=None):
            return self._prefix_kv(images, ids, key_mask)

        k, v = self._replay(("prefix", images.shape[0], ids.shape[1], key_mask is not None), fn, inputs)
        # clone: the graph's outputs are overwritten by the next replay, a PrefixCache must not change
        return PrefixCache(k.clone(), v.clone(), key_mask, n_valid)

    def _graph_denoise(self, cache: PrefixCache, noise: torch.Tensor) -> torch.Tensor:
        mods = self.modulations()
        inputs = {
            "keys": cache.keys,
            "values": cache.values,
            "noise": noise,
            "n_valid": torch.tensor([cache.n_valid], device=self.device),
        }
        if cache.key_mask is not None:
            inputs["key_mask"] = cache.key_mask

        def fn(keys, values, noise, n_valid, key_mask=None):
            cache = PrefixCache(keys, values, key_mask, n_valid)
            return self.model.denoise(cache, noise, self.num_steps, modulations=mods, velocity_fn=self._velocity)

        key = ("denoise", cache.keys.shape[3], tuple(noise.shape), cache.key_mask is not None)
        return self._replay(key, fn, inputs).clone()


class GraphCache:
    """Captured graphs by key, at most ``max_entries``: putting one more drops the least recently used."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Any, entry: Any) -> Any:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[Any]:
        return list(self._entries)


def _dynamic_length(compiled):
    """Call ``compiled`` (``Pi05Model.prefix_kv`` under torch.compile) with the prompt's length marked dynamic, so one
    compilation serves every prompt length; everything else stays static."""

    def prefix_kv(images: torch.Tensor, ids: torch.Tensor, key_mask: torch.Tensor | None = None):
        if ids.shape[1] >= 2:  # sizes 0 and 1 are always specialized
            torch._dynamo.mark_dynamic(ids, 1)
            if key_mask is not None:  # its length is 256 per image + the prompt's: related, so "maybe"
                torch._dynamo.maybe_mark_dynamic(key_mask, 1)
        return compiled(images, ids, key_mask)

    return prefix_kv


def build_model(sizes: ModelSizes, device: torch.device, dtype: torch.dtype) -> Pi05Model:
    """Allocate without running initializers (weights are loaded or filled by the caller)."""
    with torch.device("meta"):
        model = Pi05Model(sizes)
    model = model.to_empty(device=device).to(dtype)
    return model.eval().requires_grad_(False)


def randomize_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Finite, well-scaled random weights: N(0, 1/fan_in) matrices, SigLIP LayerNorm scales 1+N(0, 0.1^2), Gemma
    RMSNorm weights N(0, 0.1^2) (the scale is 1+w), biases N(0, 0.02^2). For speed measurements of sizes that have no
    checkpoint here (the real Pi0.5): the arithmetic is the trained model's, the actions are meaningless."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        r = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)
        if p.ndim >= 2:
            p.copy_(r * p[0].numel() ** -0.5)
        elif name.startswith("vision.") and name.endswith("weight"):
            p.copy_(1 + 0.1 * r)
        elif name.endswith("weight"):
            p.copy_(0.1 * r)
        else:
            p.copy_(0.02 * r)


def load_engine(
    checkpoint: str, model_sizes: str | dict | None = None, random_weights: bool = False, **kwargs
) -> Pi05Engine:
    """The engine for ``checkpoint``; with ``random_weights`` its processors and tokenizer but random weights of
    the sizes it (or ``model_sizes``) names, none read from disk."""
    info = read_checkpoint_info(checkpoint, model_sizes)
    if not random_weights:
        return Pi05Engine(info, **kwargs)
    device, dtype = resolve_device(kwargs.get("device", "auto")), DTYPES[kwargs.get("dtype", "float32")]
    model = build_model(info.sizes, device, dtype)
    randomize_weights(model)
    model.prepare_inference()
    if device.type == "cuda":  # the fp32 draws (2 GB for the real embedding) stay reserved otherwise: N workers pay it
        torch.cuda.empty_cache()
    return Pi05Engine(info, model=model, load=False, **kwargs)
