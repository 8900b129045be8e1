"""The text tower's tokenizer: a Hugging Face `tokenizers` WordPiece fitted on the training texts only.

Fitting on a few thousand short texts takes milliseconds but is not reproducible (the trainer breaks ties in
hash order: two fits of the same texts can differ by a token), so a run keeps the fitted tokenizer as a file
(models.clip_task: `{run}/tokenizer.json`) and its checkpoints a digest of the vocabulary (`vocab_digest`, a
float, as task states are floats), so a tokenizer that is not the run's is an error, never a silently shifted
vocabulary. Ids: 0 = [PAD], 1 = [UNK].
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

SPECIAL = ["[PAD]", "[UNK]"]


def fit_tokenizer(texts: Sequence[str], vocab_size: int = 4000):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL,
                                        show_progress=False)
    tokenizer.train_from_iterator(sorted(set(texts)), trainer=trainer)
    return tokenizer


def vocab_digest(tokenizer) -> float:
    """40 bits of a SHA-256 of the sorted vocabulary, exact in a float64 (the task state's type)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    text = "\n".join(f"{i}\t{token}" for token, i in vocab)
    return float(int(hashlib.sha256(text.encode()).hexdigest()[:10], 16))


def encode(tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    """`[n, max_length]` int64 token ids, truncated, padded with 0."""
    out = np.zeros((len(texts), max_length), dtype=np.int64)
    for row, encoding in enumerate(tokenizer.encode_batch(list(texts))):
        ids = encoding.ids[:max_length]
        out[row, :len(ids)] = ids
    return out


def text_key(text: str) -> int:
    """A 62-bit key of the exact string: equal keys in a batch mark identical texts (not each other's negatives)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) >> 2
