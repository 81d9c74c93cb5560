"""The torch side of the ``hf`` generator: model, tokenizer, LoRA adapters, seeded sampling, training.

Imported only when the generator first needs its model (never while the plugin registry is built).

Sampling is batched and seeded per sample with the Gumbel-max trick: a sample's noise for token
``v`` at step ``t`` is a hash of (its seed, t, v) computed on the device, and the token is
``argmax(logits / T + gumbel)`` (the nucleus removed first when ``top_p`` is set). That is an exact
draw from the tempered distribution, and it depends on the seed alone, not on which other samples
share the batch or where (up to the tiny numerical differences padding can make in the logits).
The transformers ``generate`` loop does the decoding (KV cache, padding, stop tokens for every
architecture); a logits processor makes the choice and records each chosen token's log-probability
under the tempered distribution, the "old" log-probabilities of the importance ratio.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # a 32-bit integer hash multiplier; small enough that int64 products never overflow
_VOCAB_MUL = 0x2545F491
ADAPTER = "default"  # peft's name for the trainable adapter


class PolicyError(RuntimeError):
    """The model cannot be used as configured (no chat template, an adapter that does not fit)."""


def _mix32(x: Any) -> Any:
    """A 32-bit integer hash (works on Python ints and on int64 tensors holding values < 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MUL) & M32
    x = x ^ (x >> 16)
    x = (x * _MUL) & M32
    return x ^ (x >> 16)


def seed_key(seed: int) -> int:
    """A 32-bit key from a 63-bit seed."""
    return _mix32((seed & M32) ^ _mix32(((seed >> 32) & M32) ^ 0x9E3779B9))


def gumbel_noise(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape [len(keys), vocab], a pure function of (key, step, token)."""
    v = torch.arange(vocab, dtype=torch.int64, device=keys.device)
    vh = _mix32((v * _VOCAB_MUL) & M32)
    row = _mix32(keys ^ _mix32(step & M32))
    x = _mix32(row[:, None] ^ vh[None, :])
    x = _mix32(x ^ _mix32(row[:, None] ^ 0x85EBCA6B))
    u = ((x >> 8).to(torch.float32) + 0.5) / 16777216.0  # in (0, 1), 24 bits
    return -torch.log(-torch.log(u))


def nucleus_mask(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """True where a token falls outside the smallest set whose probability reaches ``top_p``."""
    sorted_lp, idx = logp.sort(dim=-1, descending=True)
    probs = sorted_lp.exp()
    before = probs.cumsum(dim=-1) - probs  # probability of the better tokens
    remove_sorted = before >= top_p
    remove_sorted[..., 0] = False
    return torch.zeros_like(remove_sorted).scatter(-1, idx, remove_sorted)


class SeededSampler:
    """A logits processor that draws each row's next token with its own seed and records its log-prob."""

    def __init__(self, seeds: Sequence[int], temperatures: Sequence[float], top_p: float | None, prompt_len: int,
                 device: torch.device) -> None:
        self.keys = torch.tensor([seed_key(int(s)) for s in seeds], dtype=torch.int64, device=device)
        self.temps = torch.tensor([float(t) for t in temperatures], dtype=torch.float32, device=device)
        self.top_p = top_p if top_p is not None and 0 < top_p < 1 else None
        self.prompt_len = prompt_len
        self.logprobs: list[torch.Tensor] = []
        self.tokens: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = int(input_ids.shape[1] - self.prompt_len)
        greedy = self.temps <= 0
        t = torch.where(greedy, torch.ones_like(self.temps), self.temps)
        z = scores.float() / t[:, None]
        logp = torch.log_softmax(z, dim=-1)
        if self.top_p is not None:
            z = z.masked_fill(nucleus_mask(logp, self.top_p), float("-inf"))
        noise = gumbel_noise(self.keys, step, z.shape[-1]).masked_fill(greedy[:, None], 0.0)
        tok = (z + noise).argmax(dim=-1)
        self.tokens.append(tok)
        self.logprobs.append(logp.gather(-1, tok[:, None]).squeeze(-1))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, tok[:, None], 0.0)


@dataclass
class Sample:
    tokens: list[int]
    logprobs: list[float]
    finish: str  # "stop" (a stop token ended it) or "length" (max_new_tokens ran out)


@dataclass
class TrainItem:
    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float
    temperature: float = 1.0
    old_logprobs: list[float] | None = None


def resolve_device(device: str | None) -> torch.device:
    if not device or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PolicyError(f"generator.device is {device!r} but torch sees no CUDA device")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if not dtype or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]


PLAIN_TEMPLATE = "plain"


class Policy:
    """A causal LM with a trainable LoRA adapter (peft's ``default``) and optional extra adapters."""

    def __init__(self, *, model_path: str, tokenizer_path: str | None = None, device: str = "auto",
                 dtype: str = "auto", trust_remote_code: bool = False, lora_r: int = 16, lora_alpha: int = 32,
                 lora_dropout: float = 0.0, lora_target_modules: Any = "all-linear", adapter: str | None = None,
                 adapters: dict[str, str] | None = None, init_seed: int = 0, gradient_checkpointing: bool = False,
                 chat_template: str | None = None) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = str(model_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path, local_files_only=True,
                                                       trust_remote_code=trust_remote_code)
        self.chat_template = self._chat_template(chat_template)
        try:
            base = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=self.dtype,
                                                        trust_remote_code=trust_remote_code)
        except TypeError:  # transformers before `dtype` was accepted
            base = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, torch_dtype=self.dtype,
                                                        trust_remote_code=trust_remote_code)
        if gradient_checkpointing:
            base.gradient_checkpointing_enable()
            base.enable_input_require_grads()
        # the LoRA is created on the CPU under a fixed seed, so a fresh adapter is the same on any device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            if adapter:
                model = PeftModel.from_pretrained(base, str(adapter), adapter_name=ADAPTER, is_trainable=True)
            else:
                targets = lora_target_modules if isinstance(lora_target_modules, str) else list(lora_target_modules)
                config = LoraConfig(r=int(lora_r), lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout),
                                    target_modules=targets, task_type="CAUSAL_LM")
                model = get_peft_model(base, config, adapter_name=ADAPTER)
        self.model = model.to(self.device)
        self.model.eval()
        self.extra_adapters: dict[str, str] = {}
        for name, path in (adapters or {}).items():
            self.load_adapter(str(path), name)
        self.pad_id = self.tokenizer.pad_token_id
        self.stop_ids = self._stop_ids()
        if self.pad_id is None:
            self.pad_id = self.stop_ids[0] if self.stop_ids else 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr: float | None = None
        self.version = 0

    # -- tokens and chat ------------------------------------------------------------------------
    def _chat_template(self, option: str | None) -> str | None:
        if option is None:
            if not getattr(self.tokenizer, "chat_template", None):
                raise PolicyError(f"the tokenizer at {self.model_path} has no chat template; set "
                                  f"generator.chat_template to a Jinja template file, or to \"plain\" for a base model")
            return None
        if option == PLAIN_TEMPLATE:
            return PLAIN_TEMPLATE
        path = Path(option)
        if path.is_file():
            return path.read_text()
        if "{%" in option or "{{" in option:
            return option
        raise PolicyError(f"generator.chat_template {option!r} is neither a file, 'plain' nor a Jinja template")

    def _stop_ids(self) -> list[int]:
        ids: list[int] = []
        gen_cfg = getattr(self.model, "generation_config", None)
        for source in (getattr(gen_cfg, "eos_token_id", None), self.tokenizer.eos_token_id):
            if source is None:
                continue
            for i in source if isinstance(source, (list, tuple)) else [source]:
                if i is not None and int(i) not in ids:
                    ids.append(int(i))
        return ids

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text: the chat template applied, ending where the assistant's answer starts."""
        if self.chat_template == PLAIN_TEMPLATE:
            return "\n\n".join(m["content"] for m in messages) + "\n\n"
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
        if self.chat_template is not None:
            kwargs["chat_template"] = self.chat_template
        try:
            return str(self.tokenizer.apply_chat_template(messages, **kwargs))
        except Exception:  # noqa: BLE001 - some templates refuse a system message: fold it into the user's
            if messages and messages[0]["role"] == "system" and len(messages) > 1:
                merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]},
                          *messages[2:]]
                return str(self.tokenizer.apply_chat_template(merged, **kwargs))
            raise

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    # -- adapters -------------------------------------------------------------------------------
    def load_adapter(self, path: str, name: str) -> None:
        """Load a peft LoRA adapter under ``name`` for sampling (``default`` is the trainable one)."""
        if name in (ADAPTER, "base"):
            raise PolicyError(f"adapter name {name!r} is reserved")
        if name in self.extra_adapters:
            self.model.delete_adapter(name)
        self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        self.model.set_adapter(ADAPTER)
        self._trainable_only()
        self.extra_adapters[name] = str(path)

    def _trainable_only(self) -> None:
        for n, p in self.model.named_parameters():
            p.requires_grad_(f".{ADAPTER}." in n and "lora_" in n)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if f".{ADAPTER}." in n and "lora_" in n]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The trainable adapter's weights (copies on the CPU)."""
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.model, adapter_name=ADAPTER)
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    @contextlib.contextmanager
    def use_adapter(self, name: str | None) -> Iterator[None]:
        """``None``/``default``: the trainable adapter; ``base``: no adapter; else a loaded one."""
        if name in (None, ADAPTER):
            yield
        elif name == "base":
            with self.model.disable_adapter():
                yield
        else:
            if name not in self.extra_adapters:
                loaded = ", ".join(self.extra_adapters) or "none"
                raise PolicyError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
            self.model.set_adapter(name)
            try:
                yield
            finally:
                self.model.set_adapter(ADAPTER)
                self._trainable_only()

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], temperatures: Sequence[float],
               top_p: float | None, max_new_tokens: int, adapter: str | None = None) -> list[Sample]:
        from transformers import GenerationConfig, LogitsProcessorList

        n = len(prompts)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        proc = SeededSampler(seeds, temperatures, top_p, width, self.device)
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=int(max_new_tokens),
                                  pad_token_id=self.pad_id, eos_token_id=self.stop_ids or None,
                                  temperature=None, top_p=None, top_k=None)
        self.model.eval()
        with self.use_adapter(adapter):
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config,
                                      logits_processor=LogitsProcessorList([proc]))
        seqs = (out if isinstance(out, torch.Tensor) else out.sequences)[:, width:].cpu()
        logprobs = torch.stack(proc.logprobs, dim=1).cpu() if proc.logprobs else torch.zeros((n, 0))
        stops = set(self.stop_ids)
        samples = []
        for i in range(n):
            row = seqs[i].tolist()
            cut, finish = len(row), "length"
            for j, tok in enumerate(row):
                if tok in stops:
                    cut, finish = j + 1, "stop"
                    break
            samples.append(Sample(row[:cut], [float(x) for x in logprobs[i, :cut].tolist()], finish))
        return samples

    # -- log-probabilities ----------------------------------------------------------------------
    def _batch(self, items: Sequence[TrainItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        seqs = [list(it.prompt_ids) + list(it.completion_ids) for it in items]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            attn[i, width - len(s):] = 1
        c = max(len(it.completion_ids) for it in items)
        return ids.to(self.device), attn.to(self.device), (attn.cumsum(-1) - 1).clamp(min=0).to(self.device), c

    def completion_logprobs(self, items: Sequence[TrainItem], adapter: str | None = None,
                            grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of each completion given its prompt, under each item's temperature:
        ``[b, C]`` right-aligned (completions end at the last column) and the mask of real tokens."""
        ids, attn, pos, c = self._batch(items)
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with ctx, self.use_adapter(adapter):
            try:
                logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False,
                                    logits_to_keep=c + 1).logits
            except TypeError:  # a model without logits_to_keep
                logits = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits
                logits = logits[:, -(c + 1):]
        logits = logits[:, :-1].float()  # [b, C, vocab]: the largest tensor of an update (see docs/ttt.md)
        temps = [it.temperature if it.temperature > 0 else 1.0 for it in items]
        if any(t != 1.0 for t in temps):
            logits = logits / torch.tensor(temps, device=logits.device)[:, None, None]
        targets = ids[:, -c:]
        logp = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        cols = torch.arange(c, device=logits.device)[None, :]
        lens = torch.tensor([len(it.completion_ids) for it in items], device=logits.device)[:, None]
        mask = cols >= (c - lens)
        return logp, mask

    def sequence_logprob(self, prompt_ids: Sequence[int], completion_ids: Sequence[int], temperature: float = 1.0,
                         adapter: str | None = None) -> float:
        """log p(completion | prompt): the sum of its tokens' log-probs."""
        logp, mask = self.completion_logprobs([TrainItem(list(prompt_ids), list(completion_ids), 0.0, temperature)],
                                              adapter=adapter)
        return float((logp * mask).sum())

    # -- training -------------------------------------------------------------------------------
    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        if self.optimizer is None:
            # TTT-Discover's Adam settings: betas (0.9, 0.95), eps 1e-8, no weight decay
            self.optimizer = torch.optim.AdamW(self.trainable_parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8,
                                               weight_decay=0.0)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.lr = lr
        return self.optimizer

    def _aligned(self, values: list[list[float] | None], c: int, like: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((len(values), c), dtype=torch.float32, device=like.device)
        for i, v in enumerate(values):
            if v:
                out[i, c - len(v):] = torch.tensor(v[-c:], dtype=torch.float32, device=like.device)
        return out

    def train(self, items: Sequence[TrainItem], *, lr: float, clip_eps: float = 0.2, kl_coef: float = 0.0,
              track_kl: bool = True, num_minibatches: int = 1, micro_batch: int = 4, max_grad_norm: float = 1.0,
              loss_agg: str = "token-mean") -> dict[str, Any]:
        """One on-policy update: the clipped importance-ratio policy gradient (``clip_eps`` 0: the plain
        importance-sampling loss), plus ``kl_coef`` times the k3 estimate of KL(policy || base)."""
        items = [it for it in items if it.completion_ids]
        if not items:
            return {"rollouts": 0}
        opt = self._optimizer(lr)
        params = self.trainable_parameters()
        n_mb = max(1, min(int(num_minibatches), len(items)))
        bounds = [round(i * len(items) / n_mb) for i in range(n_mb + 1)]
        minibatches = [list(range(bounds[i], bounds[i + 1])) for i in range(n_mb)]
        old: list[list[float] | None] = [it.old_logprobs for it in items]
        if n_mb > 1:  # later minibatches are off-policy: their old log-probs must come from before the first step
            for chunk in _chunks([i for i, o in enumerate(old) if o is None], micro_batch):
                logp, mask = self.completion_logprobs([items[i] for i in chunk])
                for row, i in enumerate(chunk):
                    n = len(items[i].completion_ids)
                    old[i] = logp[row, -n:].tolist()
        sums = {"loss": 0.0, "pg_loss": 0.0, "kl_base": 0.0, "kl_old": 0.0, "clipped": 0.0, "ratio": 0.0,
                "tokens": 0.0}
        grad_norms: list[float] = []
        self.model.train()
        try:
            for mb in minibatches:
                opt.zero_grad(set_to_none=True)
                if loss_agg == "token-mean":
                    denom = float(sum(len(items[i].completion_ids) for i in mb))
                else:
                    denom = float(len(mb))
                for chunk in _chunks(mb, micro_batch):
                    batch = [items[i] for i in chunk]
                    base_lp = None
                    if kl_coef > 0 or track_kl:  # first, so its logits are freed before the graph is built
                        base_lp, _ = self.completion_logprobs(batch, adapter="base")
                    logp, mask = self.completion_logprobs(batch, grad=True)
                    c = logp.shape[1]
                    given = [old[i] for i in chunk]
                    old_lp = self._aligned(given, c, logp)
                    have = torch.tensor([g is not None for g in given], device=logp.device)[:, None]
                    old_lp = torch.where(have, old_lp, logp.detach())
                    adv = torch.tensor([it.advantage for it in batch], dtype=torch.float32, device=logp.device)[:, None]
                    log_ratio = logp - old_lp
                    ratio = torch.exp(log_ratio)
                    if clip_eps > 0:
                        clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
                        pg = -torch.minimum(ratio * adv, clipped * adv)
                        sums["clipped"] += float((((ratio - clipped).abs() > 1e-9) & mask).sum())
                    else:
                        pg = -ratio * adv
                    tok_loss = pg
                    if base_lp is not None:
                        d = base_lp - logp
                        k3 = torch.exp(d) - d - 1.0
                        sums["kl_base"] += float((k3.detach() * mask).sum())
                        if kl_coef > 0:
                            tok_loss = tok_loss + kl_coef * k3
                    m = mask.float()
                    if loss_agg == "token-mean":
                        loss = (tok_loss * m).sum() / denom
                    else:
                        loss = ((tok_loss * m).sum(1) / m.sum(1).clamp(min=1.0)).sum() / denom
                    loss.backward()
                    sums["loss"] += float(loss.detach()) / n_mb
                    sums["pg_loss"] += float((pg.detach() * m).sum())
                    lr_d = log_ratio.detach()
                    sums["kl_old"] += float(((torch.exp(lr_d) - 1.0 - lr_d) * m).sum())
                    sums["ratio"] += float((ratio.detach() * m).sum())
                    sums["tokens"] += float(m.sum())
                norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
                grad_norms.append(float(norm))
                opt.step()
        finally:
            self.model.eval()
        self.version += 1
        tokens = max(sums["tokens"], 1.0)
        out: dict[str, Any] = {
            "loss": sums["loss"], "pg_loss": sums["pg_loss"] / tokens, "kl_old": sums["kl_old"] / tokens,
            "ratio_mean": sums["ratio"] / tokens, "clip_fraction": sums["clipped"] / tokens,
            "grad_norm": sum(grad_norms) / len(grad_norms), "lr": lr, "rollouts": len(items),
            "tokens": int(sums["tokens"]), "minibatches": n_mb, "adapter_version": self.version,
        }
        if kl_coef > 0 or track_kl:
            out["kl"] = sums["kl_base"] / tokens
        return out

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """The trainable adapter (peft format), the optimiser state and the version, into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder / "adapter"), selected_adapters=[ADAPTER])
        if self.optimizer is not None:
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        (folder / "policy.json").write_text(json.dumps({"version": self.version, "lr": self.lr,
                                                        "model_path": self.model_path}, indent=2))

    def load(self, folder: str | Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(folder)
        weights_file = folder / "adapter" / "adapter_model.safetensors"
        if not weights_file.is_file():
            raise PolicyError(f"{folder} holds no adapter ({weights_file} is missing)")
        weights = load_file(str(weights_file), device=str(self.device))
        result = set_peft_model_state_dict(self.model, weights, adapter_name=ADAPTER)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if "lora_" in k]
        if unexpected:
            raise PolicyError(f"the adapter in {folder} does not fit this model/LoRA config: {unexpected[:3]}")
        self._trainable_only()
        meta = json.loads((folder / "policy.json").read_text()) if (folder / "policy.json").is_file() else {}
        self.version = int(meta.get("version") or 0)
        self.optimizer = None
        opt_file = folder / "optimizer.pt"
        if opt_file.is_file():
            lr = float(meta.get("lr") or 1e-5)
            opt = self._optimizer(lr)
            opt.load_state_dict(torch.load(opt_file, map_location=self.device, weights_only=True))

    def release(self) -> None:
        self.model = None  # type: ignore[assignment]
        self.optimizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _chunks(seq: Sequence[int], size: int) -> Iterator[list[int]]:
    size = max(1, int(size))
    for i in range(0, len(seq), size):
        yield list(seq[i:i + size])
