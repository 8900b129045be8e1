"""Tag tokens and tag vectors: Word2Vec over each object's materials + techniques, averaged per object.

The materialstechniques task regresses these vectors from the photo, so they must be a pure function of the tag
tables and the seed: gensim trains with one worker, a fixed seed and a hash function that does not depend on
PYTHONHASHSEED, and the corpus is built in file order.

One spelling of a tag for the whole project (word2vec here, the clip task's vocabulary in models/clip.py):
`tag_token`. A name that occurs in both tables (`pencil` as a material and as a technique) is two different
tokens, `pencil (material)` and `pencil (technique)`, as in the original atmaCup #11 solution; a name in one
table only stays as it is.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fold0123.common.dataroot import tag_vectors_fingerprint_path
from fold0123.common.errors import LayoutError, UsageError
from fold0123.common.fingerprint import tag_vectors_fingerprint, write_fingerprint
from fold0123.common.io import write_csv
from fold0123.data.layout import read_csv, read_tags, read_test, read_train, tag_vectors_path

SUFFIX = {"materials": "material", "techniques": "technique"}


def stable_hash(text: str) -> int:
    """A hash of a string that is the same in every process (Python's `hash` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def read_tag_tables(dataroot: str | Path) -> dict[str, pd.DataFrame]:
    """materials.csv and techniques.csv, with empty ids or names rejected as layout errors."""
    tables = {}
    for table in SUFFIX:
        frame = read_tags(dataroot, table)
        path = Path(dataroot) / f"{table}.csv"
        for column in ("object_id", "name"):
            empty = np.flatnonzero(frame[column].str.strip().to_numpy() == "")
            if len(empty):
                raise LayoutError(f"{path}: row {int(empty[0]) + 2}: empty {column}")
        tables[table] = frame
    return tables


def tag_token(name: str, table: str, shared: bool) -> str:
    """The one spelling of a tag: its name, or `name (material)` / `name (technique)` when the name is `shared`
    (occurs in more than one table), so the two meanings of `pencil` stay two tokens."""
    return f"{name} ({SUFFIX[table]})" if shared else name


def shared_names(tables: dict[str, pd.DataFrame]) -> set[str]:
    """Names that occur in more than one tag table."""
    seen: dict[str, int] = {}
    for frame in tables.values():
        for name in set(frame["name"]):
            seen[name] = seen.get(name, 0) + 1
    return {name for name, count in seen.items() if count > 1}


def token_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """(object_id, table, name, token) rows: the materials, then the techniques, each in file order (`token`: the
    name's tag_token)."""
    shared = shared_names(tables)
    frames = [frame.assign(table=table, token=[tag_token(name, table, name in shared) for name in frame["name"]])
              for table, frame in tables.items()]
    return pd.concat([frame[["object_id", "table", "name", "token"]] for frame in frames], ignore_index=True)


def read_tokens(dataroot: str | Path) -> pd.DataFrame:
    """token_table of the dataroot's (validated) tag tables (the stacking baselines' tag features)."""
    return token_table(read_tag_tables(dataroot))


def frequent_tokens(tokens: pd.DataFrame, min_objects: int) -> list[str]:
    """The tokens of `tokens` (token_table rows) that at least `min_objects` objects carry, sorted: a vocabulary
    that is a pure function of the rows, so a run and its evaluation agree on the columns without storing it."""
    counts = tokens.drop_duplicates(["object_id", "token"])["token"].value_counts()
    return sorted(counts.index[counts >= min_objects])


def multi_hot(tokens: pd.DataFrame, vocabulary: list[str], object_ids) -> np.ndarray:
    """`[len(object_ids), len(vocabulary)]` float32: 1 where the object carries the token (untagged: all zeros)."""
    ids = pd.Index([str(i) for i in object_ids])
    column = {token: j for j, token in enumerate(vocabulary)}
    kept = tokens[tokens["object_id"].isin(ids) & tokens["token"].isin(column)]
    values = np.zeros((len(ids), len(vocabulary)), np.float32)
    values[ids.get_indexer(kept["object_id"]), kept["token"].map(column).to_numpy(np.int64)] = 1.0
    return values


def read_tag_targets(dataroot: str | Path, min_objects: int, object_ids) -> np.ndarray:
    """The tags task's targets: multi_hot over the tokens of the dataroot's tag tables that at least `min_objects`
    objects carry (LayoutError naming the file when a table is missing or bad, or no token is that frequent).

    The tokens are counted over every tagged object, held-out folds included, as word2vec.py trains on them all:
    the held-out rows' tags choose which tokens are outputs, never what the run learns about a held-out object."""
    tokens = read_tokens(dataroot)
    vocabulary = frequent_tokens(tokens, min_objects)
    if not vocabulary:
        raise LayoutError(f"{dataroot}: no tag token in materials.csv or techniques.csv is carried by "
                          f"{min_objects} objects (tags_min_objects)")
    return multi_hot(tokens, vocabulary, object_ids)


def token_lists(tables: dict[str, pd.DataFrame], object_ids) -> dict[str, list[str]]:
    """Each object's tokens: its materials then its techniques, each in file order ([] for an untagged object)."""
    tokens: dict[str, list[str]] = {object_id: [] for object_id in object_ids}
    rows = token_table(tables)
    for object_id, token in zip(rows["object_id"], rows["token"]):
        if object_id in tokens:
            tokens[object_id].append(token)
    return tokens


def train_word2vec(sentences: list[list[str]], dim: int, epochs: int, seed: int, sg: bool = False):
    """gensim Word2Vec as the original configured it (window 1, min_count 1), made deterministic."""
    from gensim.models import Word2Vec

    return Word2Vec(sentences=sentences, vector_size=dim, window=1, min_count=1, epochs=epochs, seed=seed,
                    sg=int(sg), workers=1, hashfxn=stable_hash).wv


def object_vectors(tokens: dict[str, list[str]], dim: int, epochs: int, seed: int, sg: bool = False) -> pd.DataFrame:
    """object_id + w2v_0..w2v_{dim-1}: the mean of the object's token vectors, zeros for an untagged object."""
    sentences = [words for words in tokens.values() if words]
    vectors = np.zeros((len(tokens), dim), dtype=np.float32)
    if sentences:
        wv = train_word2vec(sentences, dim, epochs, seed, sg)
        for row, words in enumerate(tokens.values()):
            if words:
                vectors[row] = wv[words].mean(axis=0)
    frame = pd.DataFrame(vectors, columns=list(vector_columns(dim)))
    frame.insert(0, "object_id", list(tokens))
    return frame


@dataclass
class TagVectorsReport:
    path: Path
    n_objects: int
    n_untagged: int
    vocabulary: int
    shared_names: list[str]
    unknown_objects: int

    def summary(self) -> str:
        lines = [f"wrote {self.path}: {self.n_objects} objects, {self.n_untagged} without tags (zero vectors), "
                 f"{self.vocabulary} tokens",
                 f"names in both tables, split by table: {', '.join(self.shared_names) or 'none'}"]
        if self.unknown_objects:
            lines.append(f"note: {self.unknown_objects} tagged object ids are in neither train.csv nor test.csv "
                         f"(ignored)")
        return "\n".join(lines)


def vector_columns(dim: int) -> tuple[str, ...]:
    """The vector columns of the tag-vector CSV, after `object_id`."""
    return tuple(f"w2v_{i}" for i in range(int(dim)))


def read_tag_vectors(dataroot: str | Path, dim: int, object_ids) -> np.ndarray:
    """The tag vectors of `object_ids` `[n, dim]` float32 from word2vec.py's CSV; LayoutError naming the file
    when it is missing, lacks an object or holds a non-numeric value."""
    path = tag_vectors_path(dataroot, dim)
    if not path.is_file():
        raise LayoutError(f"{path}: tag vectors not found (run word2vec.py --dataroot {dataroot} --dim {int(dim)})")
    columns = vector_columns(dim)
    table = read_csv(path, ("object_id",) + columns).set_index("object_id")
    ids = pd.Index([str(i) for i in object_ids])
    missing = ids[~ids.isin(table.index)]
    if len(missing):
        raise LayoutError(f"{path}: no vector for object_id {missing[0]!r} ({len(missing)} missing)")
    values = table.loc[ids, list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    if np.isnan(values).any():
        raise LayoutError(f"{path}: non-numeric value among columns w2v_0..w2v_{int(dim) - 1}")
    return values


def write_tag_vectors(dataroot: str | Path, dim: int = 20, epochs: int = 100, seed: int = 0,
                      sg: bool = False) -> TagVectorsReport:
    """Validate the dataroot's tables, train, and write `materialstechniques_w2v{dim}.csv` for every train and test
    object (train rows first, then test rows, in file order), atomically."""
    if dim < 1 or epochs < 1:
        raise UsageError(f"dim and epochs must be positive, got dim={dim}, epochs={epochs}")
    train = read_train(dataroot)
    test = read_test(dataroot, train)
    tables = read_tag_tables(dataroot)
    object_ids = list(train["object_id"]) + list(test["object_id"])
    tokens = token_lists(tables, object_ids)
    frame = object_vectors(tokens, dim, epochs, seed, sg)
    path = tag_vectors_path(dataroot, dim)
    write_csv(path, frame)
    write_fingerprint(tag_vectors_fingerprint_path(dataroot, dim),
                      tag_vectors_fingerprint(dataroot, dim, epochs, seed, sg))
    known = set(object_ids)
    tagged = set().union(*(set(t["object_id"]) for t in tables.values()))
    shared = sorted(shared_names(tables))
    vocabulary = len({token for words in tokens.values() for token in words})
    return TagVectorsReport(path, len(object_ids), sum(not words for words in tokens.values()), vocabulary, shared,
                            len(tagged - known))
