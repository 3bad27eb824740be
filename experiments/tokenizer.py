"""One byte-level BPE tokenizer, trained once on a sample of the raw corpus and
shared by every arm, so bits per byte and token budgets mean the same thing in
every comparison."""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline.heldout import is_held_out, order_key
from pipeline.rundir import RunFolder
from pipeline.shards import atomic_write_bytes, atomic_write_json, sha256_file

EOS = "<|endoftext|>"


def train_tokenizer(run_dir: Path, stage: str, out_path: Path, vocab_size: int = 8192, sample_docs: int = 20000,
                    seed: int = 0) -> dict:
    """Train on up to ``sample_docs`` seeded-random, non-held-out documents of ``stage``."""
    docs = [d for d in RunFolder(run_dir).rows(stage, ["id", "text"]) if not is_held_out(d["id"])]
    docs.sort(key=lambda d: order_key(seed, d["id"], "tokenizer"))
    sample = [d["text"] for d in docs[:sample_docs]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample, trainer=trainer, length=len(sample))
    atomic_write_bytes(Path(out_path), tok.to_str().encode("utf-8"))
    info = {"stage": stage, "vocab_size": tok.get_vocab_size(), "sample_docs": len(sample),
            "sample_chars": sum(map(len, sample)), "seed": seed, "sha256": sha256_file(out_path)}
    atomic_write_json(Path(out_path).with_suffix(".manifest.json"), info)
    return info


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def eos_id(tok: Tokenizer) -> int:
    return tok.token_to_id(EOS)


def hf_tokenizer(path: Path):
    """The tokenizer as a ``transformers`` fast tokenizer, for ``save_pretrained`` beside each final model
    (``AutoTokenizer.from_pretrained`` loads it). End-of-text is its BOS, EOS and padding token, and encoding with
    special tokens (the default) puts it first -- the context every winnow evaluation gives a text, so a tool that
    scores ``tokenizer(text)`` scores what winnow scores."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(path)
    tok.post_processor = TemplateProcessing(single=f"{EOS} $A", pair=f"{EOS} $A $B",
                                            special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   clean_up_tokenization_spaces=False)
