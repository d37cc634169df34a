"""A SentencePiece tokenizer for the suite's instructions (the small model has no use for PaliGemma's 257k pieces).

A word-level model over the instructions, with PaliGemma's special ids (pad 0, eos 1, bos 2, unk 3) and the prompt's
line break as a piece of its own, so ``sim_eval.policies.pi05.processing.PromptTokenizer`` encodes prompts exactly as
for the real model: BOS, the cleaned instruction, then "\\n"."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sim_eval.policies.pi05.processing import clean_task


def train_tokenizer(instructions: list[str], out: str | Path) -> Path:
    """Train on ``instructions`` and write ``out`` (a ``tokenizer.model`` file); returns its path."""
    import sentencepiece as spm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    words = {w for text in instructions for w in clean_task(text).split()}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(clean_task(t) for t in instructions) + "\n")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "tok"),
            model_type="word",
            vocab_size=len(words) + 6,  # the words, the line break pieces and the four special ids
            hard_vocab_limit=False,
            user_defined_symbols=["\n"],
            normalization_rule_name="identity",
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            minloglevel=2,
        )
        out.write_bytes((Path(tmp) / "tok.model").read_bytes())
    return out
