"""The ``hf`` generator: a causal language model on disk, sampled in batches on the GPU, trainable.

Nothing here imports torch at module level: building the plugin registry stays light. The model
is loaded (``local_files_only=True``: nothing is ever downloaded) the first time it is needed.

What it does for each proposal, like the API generators: the prompt from
:func:`kforge.prompts.build_prompt` (same sections, same template options), the model's own chat
template around it, one sample with the proposal's seed (``Proposal.seed``) and temperature
(``params["temperature"]``, else the option), the code pulled out with
:func:`kforge.extract.extract_code`, and ``tokens_in``/``tokens_out`` counted (cost 0).

For training, every sample is kept as a *rollout*: prompt tokens, completion tokens and the
log-probability each completion token had when it was sampled. :meth:`HFGenerator.train_step` takes
a batch (see its docstring) and makes one LoRA update; :meth:`save_checkpoint` /
:meth:`load_checkpoint` write and read the adapter, the optimiser state and the adapter version.

Adapters: the trainable LoRA is peft's ``default`` (fresh, or started from ``adapter``); more adapters
can be loaded by name (``adapters`` option, :meth:`load_adapter`) and a proposal samples from one
with ``params["adapter"] = "<name>"`` (``"base"``: the model without any adapter).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kforge.api import Generation, Generator, Proposal, RunContext
from kforge.extract import extract_code
from kforge.options import Option, RecipeError
from kforge.prompts import Prompt, PromptSettings, build_prompt

if TYPE_CHECKING:
    from kforge_hf.policy import Policy

_LATEST: list[weakref.ReferenceType[HFGenerator]] = []


def latest_generator() -> HFGenerator | None:
    """The most recently constructed ``hf`` generator still alive in this process (the ttt search's
    fallback when the engine does not lend it the generator through ``ctx.generator``)."""
    return _LATEST[-1]() if _LATEST else None


class HFGenerator(Generator):
    name = "hf"
    description = ("a causal language model from a local folder (transformers), sampled in seeded batches, "
                   "with LoRA adapters and train_step for test-time training")
    supports_training = True  # train_step is real (the ttt search checks this)
    options = (
        Option("model_path", str, None, "folder of a transformers causal LM (config, weights, tokenizer); nothing "
               "is ever downloaded", required=True, is_path=True),
        Option("tokenizer_path", str, None, "folder of the tokenizer (default: model_path)", is_path=True),
        Option("device", str, "auto", "where the model runs: 'auto' (cuda if available, else cpu), 'cpu', 'cuda', "
               "'cuda:1', ..."),
        Option("dtype", str, "auto", "weights dtype ('auto': bfloat16 on a GPU that has it, else float16; float32 on "
               "the CPU)", choices=("auto", "bfloat16", "float16", "float32")),
        Option("temperature", float, 1.0, "sampling temperature (a proposal's own temperature wins; 0 is greedy)",
               minimum=0),
        Option("top_p", float, None, "nucleus sampling: keep the smallest set of tokens with this much probability"),
        Option("max_new_tokens", int, 4096, "most tokens in one answer", minimum=1),
        Option("batch_size", int, 16, "most sequences sampled together", minimum=1),
        Option("adapter", str, None, "LoRA adapter folder (peft format) to start from; default: a fresh LoRA",
               is_path=True),
        Option("adapters", dict, None, "more LoRA adapters to load for sampling, name = folder; a proposal picks one "
               "with params.adapter (paths relative to the current directory)"),
        Option("lora_r", int, 16, "rank of a fresh LoRA", minimum=1),
        Option("lora_alpha", int, 32, "alpha of a fresh LoRA", minimum=1),
        Option("lora_dropout", float, 0.0, "dropout of a fresh LoRA", minimum=0),
        Option("lora_target_modules", (str, list), "all-linear", "modules a fresh LoRA adapts ('all-linear' or a "
               "list of module names)", item_type=str),
        Option("seed", int, 0, "seed of a fresh LoRA's initialisation"),
        Option("train_micro_batch", int, 2, "sequences per forward/backward pass in train_step (memory)", minimum=1),
        Option("gradient_checkpointing", bool, False, "recompute activations in the backward pass (less memory, "
               "about 30% slower)"),
        Option("trust_remote_code", bool, False, "let transformers run code shipped in the model folder"),
        Option("chat_template", str, None, "a Jinja chat template file, or 'plain' (messages joined by blank lines, "
               "for a base model); default: the tokenizer's own"),
        Option("extract", str, "code", "'code': the module pulled out of the answer (as the API generators do); "
               "'raw': the whole answer", choices=("code", "raw")),
        Option("system_prompt", str, None, "file replacing the system message template", is_path=True),
        Option("user_template", str, None, "file replacing the user message template", is_path=True),
        Option("template_dir", str, None, "folder of <section>.txt files replacing prompt sections", is_path=True),
        Option("example", str, "other", "example in the prompt: 'other', 'self' or 'none'",
               choices=("other", "self", "none")),
        Option("edit_format", str, "full", "with a parent candidate: ask for the full module or SEARCH/REPLACE edits",
               choices=("full", "diff")),
        Option("target_device", str, None, "GPU to name in the prompt (default: the executor's device)"),
        Option("feedback_max_chars", int, 4000, "longest text quoted from feedback", minimum=100),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        path = self.opts.model_path
        if not path:
            raise RecipeError("generator.model_path is required by the hf generator: a folder holding a transformers "
                              "causal language model (nothing is downloaded)")
        self.model_path = Path(str(path))
        if not self.model_path.is_dir() or not (self.model_path / "config.json").is_file():
            raise RecipeError(f"generator.model_path {self.model_path} is not a folder with a config.json: the hf "
                              f"generator only loads models already on disk and never downloads one. Download it "
                              f"yourself (e.g. `huggingface-cli download ORG/NAME --local-dir {self.model_path}`) "
                              f"or point model_path at the folder that holds it.")
        adapter = self.opts.adapter
        if adapter and not Path(str(adapter)).is_dir():
            raise RecipeError(f"generator.adapter {adapter} is not a folder (a peft LoRA adapter)")
        for name, folder in (self.opts.adapters or {}).items():
            if name in ("default", "base"):
                raise RecipeError(f"generator.adapters: the name {name!r} is reserved")
            if not Path(str(folder)).is_dir():
                raise RecipeError(f"generator.adapters.{name}: {folder} is not a folder (a peft LoRA adapter)")
        self.model_name = self.model_path.name
        self.prompt_settings = PromptSettings.from_options(
            {**self.opts, "device": self.opts.target_device})  # the target device names the prompt's GPU
        self._policy: Policy | None = None
        self._pending_checkpoint: Path | None = None
        self._lock = threading.RLock()
        self._rollouts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.max_rollouts_in_memory = 1024  # older ones stay on disk when a rollout folder is set
        self.rollout_dir: Path | None = None
        self.usage = {"samples": 0, "tokens_in": 0, "tokens_out": 0, "train_steps": 0}
        _LATEST.append(weakref.ref(self))
        del _LATEST[:-8]

    # -- the model ------------------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        """The loaded model (loaded on first use)."""
        with self._lock:
            if self._policy is None:
                from kforge_hf.policy import Policy, PolicyError

                o = self.opts
                try:
                    self._policy = Policy(
                        model_path=str(self.model_path), tokenizer_path=o.tokenizer_path, device=o.device,
                        dtype=o.dtype, trust_remote_code=bool(o.trust_remote_code), lora_r=int(o.lora_r),
                        lora_alpha=int(o.lora_alpha), lora_dropout=float(o.lora_dropout),
                        lora_target_modules=o.lora_target_modules, adapter=o.adapter, adapters=o.adapters,
                        init_seed=int(o.seed), gradient_checkpointing=bool(o.gradient_checkpointing),
                        chat_template=o.chat_template)
                except PolicyError as exc:
                    raise RecipeError(f"hf generator: {exc}") from exc
                except OSError as exc:
                    raise RecipeError(f"hf generator: cannot load the model in {self.model_path} (only files on "
                                      f"disk are used): {exc}") from exc
                if self._pending_checkpoint is not None:
                    self._policy.load(self._pending_checkpoint)
                    self._pending_checkpoint = None
            return self._policy

    @property
    def loaded(self) -> bool:
        return self._policy is not None

    @property
    def adapter_version(self) -> int:
        return self._policy.version if self._policy is not None else 0

    # -- prompts --------------------------------------------------------------------------------
    def build_prompt(self, proposal: Proposal, ctx: RunContext) -> Prompt:
        problem = ctx.problems_by_id[proposal.problem_id]
        return build_prompt(problem, ctx.backend, ctx.device, proposal.params, self.prompt_settings)

    def temperature(self, proposal: Proposal) -> float:
        t = proposal.params.get("temperature")
        return float(t if t is not None else self.opts.temperature)

    def request(self, proposal: Proposal, prompt: Prompt) -> dict[str, Any]:
        """What determines a sample, without the model (what ``kforge prompt`` prints)."""
        return {"generator": self.name, "model": str(self.model_path), "messages": prompt.messages(),
                "sampling": {"temperature": self.temperature(proposal), "top_p": self.opts.top_p,
                             "max_new_tokens": int(self.opts.max_new_tokens)},
                "seed": proposal.seed, "adapter": proposal.params.get("adapter") or "default"}

    # -- generate -------------------------------------------------------------------------------
    async def generate(self, proposals: list[Proposal], ctx: RunContext) -> list[Generation]:
        if not proposals:
            return []
        prompts = [self.build_prompt(p, ctx) for p in proposals]
        # the model runs in a worker thread: judging of earlier candidates goes on meanwhile
        return await asyncio.to_thread(self._generate_sync, proposals, prompts)

    def _generate_sync(self, proposals: list[Proposal], prompts: list[Prompt]) -> list[Generation]:
        with self._lock:
            policy = self.policy
            texts = [policy.render(pr.messages()) for pr in prompts]
            ids = [policy.encode(t) for t in texts]
            out: dict[str, Generation] = {}
            by_adapter: dict[str | None, list[int]] = {}
            for i, p in enumerate(proposals):
                by_adapter.setdefault(p.params.get("adapter"), []).append(i)
            size = int(self.opts.batch_size)
            for adapter, idx in by_adapter.items():
                idx.sort(key=lambda i: len(ids[i]))  # similar lengths together: less padding
                for start in range(0, len(idx), size):
                    chunk = idx[start:start + size]
                    samples = policy.sample([ids[i] for i in chunk], [proposals[i].seed for i in chunk],
                                            [self.temperature(proposals[i]) for i in chunk], self.opts.top_p,
                                            int(self.opts.max_new_tokens), adapter=adapter)
                    for i, s in zip(chunk, samples):
                        out[proposals[i].id] = self._generation(proposals[i], prompts[i], ids[i], s, adapter)
            return [out[p.id] for p in proposals]

    def _generation(self, proposal: Proposal, prompt: Prompt, prompt_ids: list[int], sample: Any,
                    adapter: str | None) -> Generation:
        policy = self.policy
        text = policy.decode(sample.tokens)
        temperature = self.temperature(proposal)
        version = policy.version if adapter in (None, "default") else None
        self._keep_rollout(proposal.id, {
            "proposal_id": proposal.id, "prompt_ids": list(prompt_ids), "completion_ids": list(sample.tokens),
            "logprobs": list(sample.logprobs), "temperature": temperature, "adapter": adapter or "default",
            "adapter_version": version, "finish": sample.finish})
        self.usage["samples"] += 1
        self.usage["tokens_in"] += len(prompt_ids)
        self.usage["tokens_out"] += len(sample.tokens)
        meta: dict[str, Any] = {"seed": proposal.seed, "temperature": temperature, "prompt_hash": prompt.hash(),
                                "adapter": adapter or "default", "adapter_version": version,
                                "finish_reason": sample.finish, "answer_chars": len(text), **prompt.meta}
        sample_no = proposal.params.get("sample", proposal.step)
        label = f"{self.model_name} v{version if version is not None else adapter} #{sample_no}"
        if self.opts.extract == "raw":
            code, error = (text, None) if text.strip() else (None, "hf: the answer is empty")
            meta["extraction"] = "raw"
        else:
            ex = extract_code(text, proposal.params.get("parent_code"), sample.finish == "length")
            meta.update(ex.meta())
            code, error = ex.code, (f"hf: {ex.error}" if ex.error else None)
        return Generation(proposal.id, code, self.name, model=self.model_name, label=label,
                          tokens_in=len(prompt_ids), tokens_out=len(sample.tokens), cost_usd=0.0, error=error,
                          meta=meta)

    # -- rollouts -------------------------------------------------------------------------------
    def keep_rollouts(self, folder: str | Path | None) -> None:
        """Also write every rollout to ``folder/<proposal id>.json`` (so training survives a restart)."""
        self.rollout_dir = Path(folder) if folder is not None else None
        if self.rollout_dir is not None:
            self.rollout_dir.mkdir(parents=True, exist_ok=True)

    def _rollout_file(self, proposal_id: str) -> Path | None:
        if self.rollout_dir is None:
            return None
        safe = "".join(ch if ch.isalnum() or ch in "-_.:" else "_" for ch in proposal_id).replace(":", "_")
        return self.rollout_dir / f"{safe}.json"

    def _keep_rollout(self, proposal_id: str, record: dict[str, Any]) -> None:
        self._rollouts[proposal_id] = record
        self._rollouts.move_to_end(proposal_id)
        while len(self._rollouts) > self.max_rollouts_in_memory:
            self._rollouts.popitem(last=False)
        path = self._rollout_file(proposal_id)
        if path is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, path)

    def rollout(self, proposal_id: str) -> dict[str, Any] | None:
        """The rollout kept for a proposal (from memory, else from the rollout folder), or None."""
        record = self._rollouts.get(proposal_id)
        if record is None:
            path = self._rollout_file(proposal_id)
            if path is not None and path.is_file():
                record = json.loads(path.read_text())
        return record

    def forget_rollouts(self, proposal_ids: list[str]) -> None:
        for pid in proposal_ids:
            self._rollouts.pop(pid, None)
            path = self._rollout_file(pid)
            if path is not None:
                path.unlink(missing_ok=True)

    # -- training -------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One LoRA update from a batch of scored samples; returns the step's figures.

        The batch (a dict):

        - ``advantages``: one float per sample (required);
        - the samples, either ``rollout_ids`` (proposal ids this generator sampled: it uses the exact
          tokens it kept and their sampling log-probs) or ``prompts`` (chat messages, or prompt text
          already in the chat format) with ``completions`` (text) and, optionally, ``old_logprobs``
          (one list of per-token log-probs per completion; missing: the current policy's, so the
          importance ratio starts at 1) and ``temperatures``;
        - the update's settings (all optional): ``lr`` (4e-5), ``clip_eps`` (0.2; 0 for the plain
          importance-sampling loss), ``kl_coef`` (0: no penalty towards the base model), ``track_kl``
          (true: report KL to the base model even without a penalty), ``num_minibatches`` (1: one
          optimiser step; more: several, the later ones off-policy, where the clip matters),
          ``max_grad_norm`` (1.0), ``loss_agg`` (``token-mean`` or ``seq-mean``).

        Returns ``loss``, ``pg_loss``, ``kl`` (k3 estimate of KL(policy || base) per token, when
        tracked), ``kl_old`` (policy vs sampler), ``ratio_mean``, ``clip_fraction``, ``grad_norm``,
        ``lr``, ``rollouts``, ``tokens``, ``adapter_version`` and ``missing`` (rollouts not found).
        """
        from kforge_hf.policy import TrainItem

        with self._lock:
            policy = self.policy
            advantages = [float(a) for a in batch["advantages"]]
            items: list[TrainItem] = []
            missing = 0
            if batch.get("rollout_ids") is not None:
                ids = list(batch["rollout_ids"])
                if len(ids) != len(advantages):
                    raise ValueError("train_step: rollout_ids and advantages differ in length")
                for pid, adv in zip(ids, advantages):
                    r = self.rollout(pid)
                    if r is None:
                        missing += 1
                        continue
                    old = r.get("logprobs") if r.get("adapter") == "default" else None
                    items.append(TrainItem(r["prompt_ids"], r["completion_ids"], adv, float(r.get("temperature", 1.0)),
                                           old if old and len(old) == len(r["completion_ids"]) else None))
            else:
                prompts, completions = list(batch["prompts"]), list(batch["completions"])
                if not len(prompts) == len(completions) == len(advantages):
                    raise ValueError("train_step: prompts, completions and advantages differ in length")
                olds = batch.get("old_logprobs") or [None] * len(prompts)
                temps = batch.get("temperatures") or [1.0] * len(prompts)
                for prompt, completion, adv, old, t in zip(prompts, completions, advantages, olds, temps):
                    text = prompt if isinstance(prompt, str) else policy.render(list(prompt))
                    c_ids = policy.encode(completion)
                    items.append(TrainItem(policy.encode(text), c_ids, adv, float(t),
                                           list(old) if old is not None and len(old) == len(c_ids) else None))
            metrics = policy.train(
                items, lr=float(batch.get("lr", 4e-5)), clip_eps=float(batch.get("clip_eps", 0.2)),
                kl_coef=float(batch.get("kl_coef", 0.0)), track_kl=bool(batch.get("track_kl", True)),
                num_minibatches=int(batch.get("num_minibatches", 1)),
                micro_batch=int(self.opts.train_micro_batch),
                max_grad_norm=float(batch.get("max_grad_norm", 1.0)),
                loss_agg=str(batch.get("loss_agg", "token-mean")))
            metrics["missing"] = missing
            metrics.setdefault("adapter_version", policy.version)
            self.usage["train_steps"] += 1
            return metrics

    # -- adapters and checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, folder: str | Path) -> None:
        """Adapter, optimiser state and adapter version into ``folder`` (loads the model if needed)."""
        with self._lock:
            self.policy.save(folder)

    def load_checkpoint(self, folder: str | Path) -> None:
        """Continue from a checkpoint: now if the model is loaded, else as soon as it is."""
        with self._lock:
            if self._policy is None:
                self._pending_checkpoint = Path(folder)
            else:
                self._policy.load(folder)

    def load_adapter(self, folder: str | Path, name: str) -> None:
        """Load a LoRA adapter for sampling under ``name`` (``params["adapter"] = name`` picks it)."""
        with self._lock:
            self.policy.load_adapter(str(folder), name)

    def save_adapter(self, folder: str | Path) -> None:
        """The trainable adapter alone, in peft format (loadable with ``adapter = folder``)."""
        with self._lock:
            self.policy.model.save_pretrained(str(folder), selected_adapters=["default"])

    def adapter_state(self) -> dict[str, Any]:
        with self._lock:
            return self.policy.adapter_state()

    async def aclose(self) -> None:
        with self._lock:
            if self._policy is not None:
                self._policy.release()
                self._policy = None

    def usage_summary(self) -> dict[str, Any]:
        return {**self.usage, "adapter_version": self.adapter_version}
