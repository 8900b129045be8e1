"""Retrieval data and scoring (issue 11): the MUGE layout reader, LMDB packing, Recall@K, the predictions JSONL
and its scorer, and the bundled set's build (from fake npm tarballs shaped like the real ones)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fold0123.common import build, muge
from fold0123.common.errors import LayoutError
from fold0123.data import muge as layout
from fold0123.data.muge_lmdb import LmdbSplit
from fold0123.data.recall import first_positive_rank, recall_at, retrieval_metrics, top_k
from fold0123.preprocessing import muge_emoji, pack_lmdb
from fold0123.retrieval import predictions, score
from tests.conftest import make_muge_root
from tests.test_preprocessing import fake_packages, png_bytes, write_tgz

# ---------------------------------------------------------------------------------------------- Recall@K

def test_recall_on_hand_made_matrix():
    sim = np.array([[0.9, 0.1, 0.5],    # positive 0 first
                    [0.2, 0.3, 0.8],    # positive 0 third
                    [0.4, 0.7, 0.1]])   # positive 1 first
    ranks = first_positive_rank(sim, [[0], [0], [1]])
    assert ranks.tolist() == [1, 3, 1]
    r = recall_at(ranks, (1, 2))
    assert r["r1"] == pytest.approx(2 / 3) and r["r2"] == pytest.approx(2 / 3) and r["mr"] == pytest.approx(2 / 3)


def test_recall_ties_go_to_the_earlier_column_as_predictions_do():
    sim = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    assert first_positive_rank(sim, [[2], [0]]).tolist() == [3, 1]
    assert top_k(sim, 2).tolist() == [[0, 1], [0, 1]]
    # several positives: the best-ranked one counts
    assert first_positive_rank(np.array([[0.1, 0.3, 0.2]]), [[0, 2]]).tolist() == [2]


def test_recall_with_k_larger_than_the_gallery_and_missing_positives():
    sim = np.array([[0.1, 0.2], [0.3, 0.1], [0.0, 0.0]])
    m = retrieval_metrics(sim, [[0], [0], []])  # the third text has no positive: a miss at every K
    assert m["t2i_r1"] == pytest.approx(1 / 3) and m["t2i_r5"] == pytest.approx(2 / 3)
    assert m["t2i_r10"] == pytest.approx(2 / 3)
    assert m["i2t_r1"] == 0.5 and m["i2t_r10"] == 0.5  # image 0 finds text 1 first; image 1 is nobody's positive
    assert m["chance_t2i_mr"] == pytest.approx((1 + 2 + 2) / 3 / 2)
    assert top_k(sim, 10).shape == (3, 2)


# ---------------------------------------------------------------------------------------------- layout + LMDB

def test_lmdb_round_trip_is_bit_identical_to_the_tsv(tmp_path):
    root = make_muge_root(tmp_path / "muge")
    rows = pack_lmdb.pack(root, ["train", "valid", "test"])
    assert [r["pairs"] for r in rows] == [48, 16, 0]  # public test texts carry no image_ids: no pairs
    for split in muge.SPLITS:
        tsv = layout.read_split(root, split)
        packed = LmdbSplit(root, split)
        assert packed.n_images == len(tsv.images)
        assert packed.image_ids() == sorted(tsv.images)
        for image_id, b64 in tsv.images.items():
            assert packed.image_b64(image_id) == b64.encode()
        expected = [(i, t.text_id, t.text) for t in tsv.texts for i in (t.image_ids or ())]
        assert packed.pairs() == expected
        packed.close()
    assert not list(root.glob("lmdb/*.tmp.*"))


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("damage, expected", [
    ("bad_base64", "valid_imgs.tsv: line 2: image_id"),
    ("bad_image", "not a readable image"),
    ("duplicate_image", "valid_imgs.tsv: line 3: duplicate image_id"),
    ("duplicate_text", "valid_texts.jsonl: line 2: duplicate text_id"),
    ("missing_image", "is not in valid_imgs.tsv"),
    ("bad_json", "valid_texts.jsonl: line 1: not valid JSON"),
    ("string_id", "valid_texts.jsonl: line 1: text_id '7' is not a non-negative integer"),
])
def test_bad_muge_input_is_one_line_naming_file_and_line(tmp_path, damage, expected):
    root = make_muge_root(tmp_path / "muge")
    imgs, texts = muge.images_tsv(root, "valid"), muge.texts_jsonl(root, "valid")
    img_lines, text_lines = imgs.read_text().splitlines(), texts.read_text().splitlines()
    if damage == "bad_base64":
        img_lines[1] = img_lines[1].split("\t")[0] + "\tnot base64!!"
    elif damage == "bad_image":
        img_lines[1] = img_lines[1].split("\t")[0] + "\t" + layout.encode_base64(b"not an image at all")
    elif damage == "duplicate_image":
        img_lines[2] = img_lines[0]
    elif damage == "duplicate_text":
        text_lines[1] = text_lines[0]
    elif damage == "missing_image":
        obj = json.loads(text_lines[3])
        obj["image_ids"] = [999999999]
        text_lines[3] = json.dumps(obj)
    elif damage == "bad_json":
        text_lines[0] = text_lines[0][:-3]
    elif damage == "string_id":
        obj = json.loads(text_lines[0])
        obj["text_id"] = "7"
        text_lines[0] = json.dumps(obj)
    _write(imgs, "\n".join(img_lines) + "\n")
    _write(texts, "\n".join(text_lines) + "\n")
    with pytest.raises(LayoutError, match=expected) as err:
        layout.read_split(root, "valid")
    assert "\n" not in str(err.value) and str(imgs.parent) in str(err.value)
    done = subprocess.run([sys.executable, "-m", "fold0123.preprocessing.pack_lmdb", "--data-dir", str(root),
                           "--splits", "valid"], capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
    assert not (root / "lmdb" / "valid").exists()


# ---------------------------------------------------------------------------------------------- predictions + scorer

def test_predictions_round_trip_through_the_scorer(tmp_path):
    rng = np.random.default_rng(0)
    text_ids, image_ids = [11, 12, 13, 14, 15], [101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112]
    sim = rng.normal(size=(5, 12)).astype(np.float32)
    truth = [[0], [3], [5, 6], [11], [2]]
    layout.write_texts(tmp_path / "answers.jsonl",
                       [layout.MugeText(t, f"text {t}", tuple(image_ids[j] for j in js))
                        for t, js in zip(text_ids, truth)])
    path = predictions.write_predictions(predictions.predictions_path(tmp_path, "test"), text_ids, image_ids, sim)
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"text_id", "image_ids"} and len(first["image_ids"]) == 10
    assert all(isinstance(i, int) for i in first["image_ids"])
    scored = score.score(path, tmp_path / "answers.jsonl")
    expected = retrieval_metrics(sim, truth)
    for k in ("r1", "r5", "r10", "mr"):
        assert scored[k] == pytest.approx(expected[f"t2i_{k}"])
    done = subprocess.run([sys.executable, "-m", "fold0123.retrieval.score", str(path), "--answers",
                           str(tmp_path / "answers.jsonl")], capture_output=True, text=True, check=True)
    assert f"MR {100 * expected['t2i_mr']:.2f}" in done.stdout
    # a gallery smaller than K gives shorter lists, which the reader accepts
    small = predictions.write_predictions(tmp_path / "small.jsonl", [1], [7, 8, 9], np.array([[0.1, 0.9, 0.5]]))
    assert predictions.read_predictions(small) == {1: [8, 9, 7]}


@pytest.mark.parametrize("line, expected", [
    ('{"text_id": 1, "image_ids": [1, 1]}', "duplicate image ids"),
    ('{"text_id": "1", "image_ids": [1]}', "is not an integer"),
    ('{"text_id": 1}', "expected"),
    ('{"text_id": 1, "image_ids": [1]', "not valid JSON"),
])
def test_bad_predictions_are_one_line(tmp_path, line, expected):
    path = _write(tmp_path / "p.jsonl", '{"text_id": 2, "image_ids": [3]}\n' + line + "\n")
    with pytest.raises(LayoutError, match=f"p.jsonl: line 2: .*{expected}"):
        predictions.read_predictions(path)


def test_similarity_matrix_saves_with_its_ids(tmp_path):
    sim = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = predictions.save_similarity(tmp_path / "test_similarity.npy", sim, [5, 6], [7, 8, 9])
    loaded, texts, images = predictions.load_similarity(path)
    assert np.array_equal(loaded, sim) and texts == [5, 6] and images == [7, 8, 9]


# ---------------------------------------------------------------------------------------------- the bundled build

def test_bundled_build_is_series_disjoint_opaque_and_packs(tmp_path):
    google, base = fake_packages(tmp_path / "npm")
    # the other artist: the same file names under img/apple/64 (every image but one)
    with __import__("tarfile").open(google) as tar:
        names = [m.name[len("package/img/google/64/"):] for m in tar if m.name.startswith("package/img/google/64/")]
    apple = write_tgz(tmp_path / "npm" / "apple.tgz",
                      {f"img/apple/64/{n}": png_bytes((9, 9, 9)) for n in names[1:]})
    out = tmp_path / "emoji_muge"
    summary = muge_emoji.build_from_tarballs(google, base, apple, out, seed=0)
    assert sum(summary.images.values()) == 14 and summary.unlabelled == 1  # the unicorn has no emojibase label
    key = __import__("pandas").read_csv(muge_emoji.private_dir(out) / "ids.csv", dtype=str)
    series = key.groupby("base_hexcode")["split"].nunique()
    assert (series == 1).all()  # a base emoji and its skin tones stay in one split
    public = " ".join(p.read_text() for p in out.iterdir()).upper()
    assert not any(h in public for h in key["hexcode"]) and "1F44B" not in public
    assert "waving hand: light skin tone" in " ".join(key["text"])
    tests = layout.read_texts(muge.texts_jsonl(out, "test"), need_images=False)
    assert all(t.image_ids is None for t in tests)
    answers = layout.read_texts(muge.texts_jsonl(muge_emoji.private_dir(out), "test"))
    cache = layout.read_split(muge_emoji.cache_dir(out), "test")
    assert {t.text_id for t in cache.texts} <= {t.text_id for t in answers}
    assert not set(cache.images) & set(layout.read_images(muge.images_tsv(out, "test")))
    # the valid split has its own cache (where the test-time-learning settings are chosen), pointing at valid texts
    valid = layout.read_split(muge_emoji.cache_dir(out), "valid")
    valid_texts = {t.text_id: t.text for t in layout.read_texts(muge.texts_jsonl(out, "valid"))}
    assert valid.texts and all(valid_texts[t.text_id] == t.text for t in valid.texts)
    assert not set(valid.images) & set(layout.read_images(muge.images_tsv(out, "valid")))
    assert summary.cache_pairs == {"valid": len(valid.texts), "test": len(cache.texts)}
    pack_lmdb.pack(out, muge.SPLITS)
    assert muge_emoji.build_dataset(out, cache=tmp_path / "npm", packages=()).reused is True
    # a build from before the valid cache is not silently reused
    marker = json.loads((out / build.MARKER).read_text())
    del marker["cache_splits"]
    (out / build.MARKER).write_text(json.dumps(marker))
    with pytest.raises(build.BuildError, match=r"cache_splits None -> \['valid', 'test'\]"):
        muge_emoji.build_dataset(out, cache=tmp_path / "npm", packages=())
