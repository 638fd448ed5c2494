"""A tiny, randomly initialised CLIP checkpoint built offline, for tests and smoke runs.

The folder it writes is a plain `model_type: clip` checkpoint (model, tokenizer and image processor), so it
stands in wherever an online user would pass ``openai/clip-vit-base-patch32``.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

__all__ = ["BOS_TOKEN", "EOS_TOKEN", "build_tiny_clip", "build_tiny_tokenizer", "default_corpus"]

logger = logging.getLogger(__name__)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
_END_OF_WORD = "</w>"
# Every byte alone and word-final, as in OpenAI's CLIP vocabulary. CLIP's unk token *is* its eos token, and
# text pooling reads the first eos, so a single unknown symbol would silently truncate the text embedding.
_BYTE_SYMBOLS: tuple[str, ...] = tuple(sorted(pre_tokenizers.ByteLevel.alphabet()))
_NUM_BASE_TOKENS = 2 * len(_BYTE_SYMBOLS) + 2  # bytes, word-final bytes, bos, eos

_NAMES = ("john", "mary", "smith", "anna", "paris", "london", "titanic", "inception", "harry", "potter")
_KINDS = ("film", "novel", "player", "actor", "singer", "book", "team", "city", "painting", "song")
_ADJECTIVES = ("american", "english", "french", "red", "blue", "green", "black", "white", "famous", "old")
_VERBS = ("directed by", "written by", "played for", "born in", "released in", "known as")
_YEARS = ("1997", "2001", "1984", "2010", "1960", "2023")


def default_corpus() -> list[str]:
    """Return the built-in English-ish corpus (M³EL-like names, descriptions and punctuation); deterministic."""
    sentences = [
        f"{name.title()} : {year} {adjective} {kind} {verb} {other.title()}."
        for (name, other), kind, adjective, verb, year in zip(
            itertools.permutations(_NAMES, 2),
            itertools.cycle(_KINDS),
            itertools.cycle(_ADJECTIVES[::-1]),
            itertools.cycle(_VERBS),
            itertools.cycle(_YEARS),
        )
    ]
    sentences += [
        f'a photo of the {kind} ({adjective}), "{name}"!'
        for kind, adjective, name in zip(_KINDS, _ADJECTIVES, _NAMES, strict=True)
    ]
    sentences.append("0 1 2 3 4 5 6 7 8 9 ? ! ; : - ' & % $ # @ / [ ] { } + = * < > | ~ ^ _ ` \\")
    return sentences


def _word_counts(tokenizer: CLIPTokenizer, corpus: Iterable[str]) -> Counter[str]:
    """Split `corpus` into CLIP's byte-level words, exactly as the tokenizer will at encoding time."""
    backend = tokenizer.backend_tokenizer
    counts: Counter[str] = Counter()
    for text in corpus:
        normalized = backend.normalizer.normalize_str(text)
        counts.update(
            word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized) if word not in (BOS_TOKEN, EOS_TOKEN)
        )
    return counts


def _merge_word(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def _learn_merges(word_counts: Counter[str], max_new_tokens: int) -> list[tuple[str, str]]:
    """Learn BPE merges greedily, breaking count ties by the pair itself.

    `train_new_from_iterator` is not reproducible: on the same corpus it writes different merges from one
    process to the next (tokenizers 0.23). This loop is slow but deterministic, which is what a fixture needs.
    """
    words = {(*w[:-1], w[-1] + _END_OF_WORD): c for w, c in sorted(word_counts.items())}
    merges: list[tuple[str, str]] = []
    new_tokens: set[str] = set()
    while len(new_tokens) < max_new_tokens:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        new_tokens.add(best[0] + best[1])
        words = {_merge_word(symbols, best): count for symbols, count in words.items()}
    return merges


def build_tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 1024) -> CLIPTokenizer:
    """Train a byte-level CLIP tokenizer offline, laid out like OpenAI's (bytes, word-final bytes, merges, bos, eos).

    Args:
        corpus (`Iterable[str]`, *optional*):
            Training texts; defaults to [`default_corpus`].
        vocab_size (`int`, *optional*, defaults to 1024):
            Largest vocabulary size, special tokens included; fewer tokens when the corpus runs out of pairs.
            At least 514, the 512 byte symbols and the two special tokens.
    """
    if vocab_size < _NUM_BASE_TOKENS:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level CLIP vocabulary needs at least "
            f"{_NUM_BASE_TOKENS} tokens (256 bytes, 256 word-final bytes, bos, eos). Pass vocab_size >= "
            f"{_NUM_BASE_TOKENS}."
        )
    word_counts = _word_counts(CLIPTokenizer(), default_corpus() if corpus is None else corpus)
    merges = _learn_merges(word_counts, vocab_size - _NUM_BASE_TOKENS)
    tokens = list(_BYTE_SYMBOLS) + [symbol + _END_OF_WORD for symbol in _BYTE_SYMBOLS]
    tokens += list(dict.fromkeys(a + b for a, b in merges))
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _tiny_config(tokenizer: CLIPTokenizer, image_size: int) -> CLIPConfig:
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        # Pooling reads the position of the first `eos_token_id`: take every id from the tokenizer.
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": 8,
    }
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16)


def build_tiny_clip(
    out_dir: str | Path,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 1024,
    image_size: int = 32,
) -> Path:
    """Write a tiny random CLIP checkpoint (model, tokenizer, PIL image processor) to `out_dir`; fully offline.

    The same arguments always give byte-identical weights and tokenizer files.

    Args:
        out_dir (`str` or `Path`):
            Folder to write; created if missing.
        seed (`int`, *optional*, defaults to 0):
            Seed for the weights; the global torch RNG is left untouched.
        corpus (`Iterable[str]`, *optional*):
            Tokenizer training texts; defaults to [`default_corpus`].
        vocab_size (`int`, *optional*, defaults to 1024):
            See [`build_tiny_tokenizer`].
        image_size (`int`, *optional*, defaults to 32):
            Input resolution of the vision tower and of the image processor; a multiple of the patch size 8.

    Returns:
        `Path`: `out_dir`, loadable with `CLIPModel.from_pretrained` and `AutoProcessor.from_pretrained`.

    >>> path = build_tiny_clip(tmp_path / "tiny-clip")  # doctest: +SKIP
    >>> CLIPModel.from_pretrained(path).config.projection_dim  # doctest: +SKIP
    16
    """
    if image_size <= 0 or image_size % 8:
        raise ValueError(f"image_size={image_size} must be a positive multiple of the patch size 8, e.g. 32.")
    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer(corpus, vocab_size)
    config = _tiny_config(tokenizer, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    model.save_pretrained(out_dir)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
    logger.info("Wrote a tiny CLIP (vocabulary %d, seed %d) to %s", len(tokenizer), seed, out_dir)
    return out_dir
