"""The embedded default's tokenizer: a Qwen2-style byte-level BPE with a tiny vocabulary.

The pipeline is exactly Qwen2's — NFC normalizer, Qwen2's pre-tokenization regex (every digit
its own piece), byte-level mapping, byte-level BPE, byte-level decoder — so that
``AutoTokenizer.from_pretrained(dir)`` rebuilds the same tokenizer from the saved vocabulary
and merges. (In transformers 5, a directory whose ``config.json`` says ``qwen2`` always gets
``Qwen2Tokenizer``, which re-creates that pipeline and ignores any other one stored in
``tokenizer.json``; a different pipeline would silently tokenize differently after loading.)

Vocabulary (263 tokens, ids fixed by construction):

- 0..255: the 256 byte symbols (GPT-2 byte-to-unicode alphabet), in byte order, so every text
  round-trips and digits, operators, ``=``, space and newline are single tokens;
- 256..260: five merges that make the word ``Answer`` one token (``A n`` → ``An`` … ``Answe r``);
- 261 ``<|endoftext|>`` (end of sequence), 262 ``<pad>``.

No BOS and no automatically added special tokens (like Qwen's tokenizer): the ids of a prompt
are exactly the ids of its text. The prompt's first token ``Q`` never occurs in a response,
which is what lets the skip input ``[s, q]`` go without a separator
(:mod:`skpo.tasks.templates`).

Simplifications: no chat template; the merges are hand-written, not learned.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
MERGED_WORDS: tuple[str, ...] = ("Answer",)

# Qwen2's pre-tokenization pattern (public in transformers' Qwen2 tokenizer): contractions,
# letter runs, single digits, punctuation runs with trailing newlines, newlines, spaces.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of bytes 0..255 used by byte-level BPE (GPT-2's mapping).

    Printable Latin-1 bytes stand for themselves; the others are shifted to code points from 256
    upward, in byte order.
    """
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    symbols, shift = [], 0
    for b in range(256):
        if b in keep:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + shift))
            shift += 1
    return symbols


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = {symbol: i for i, symbol in enumerate(byte_symbols())}
    merges: list[tuple[str, str]] = []
    for word in MERGED_WORDS:  # ASCII words: byte symbol == character
        for end in range(2, len(word) + 1):
            merges.append((word[: end - 1], word[end - 1]))
            vocab.setdefault(word[:end], len(vocab))
    for special in (EOS_TOKEN, PAD_TOKEN):
        vocab[special] = len(vocab)
    return vocab, merges


VOCAB, MERGES = _vocab_and_merges()


def build_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """The tokenizer as a ``PreTrainedTokenizerFast`` (right padding; EOS and PAD set).

    Args:
        model_max_length: recorded in the tokenizer config (the tiny model's context).
    """
    core = Tokenizer(
        models.BPE(
            vocab=dict(VOCAB),
            merges=list(MERGES),
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOS_TOKEN, PAD_TOKEN])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    return tokenizer
