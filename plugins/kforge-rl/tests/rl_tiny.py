"""A tiny random Llama whose vocabulary holds whole answers: some tokens decode to a fenced correct
Triton ReLU, some to a wrong one, one to prose. One sampled token is one answer, so a random model
makes a mix of verdicts for the judge in one step, with no download and no training beforehand."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RELU = REPO / "recipes" / "quickstart" / "candidates" / "relu"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def answers() -> list[str]:
    correct = (RELU / "correct.py").read_text()
    wrong = (RELU / "wrong_slope.py").read_text()
    fenced = [f"```python\n# variant {i}\n{code}```" for i, code in enumerate([correct, correct, wrong, wrong])]
    return [*fenced, "I would rather not write a kernel today."]


def build_answer_model(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *answers()])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
