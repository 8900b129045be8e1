"""The bundled emoji dataset: mapping, anonymisation, split, atomicity, npm cache, and the answers scorer.

Most tests build from a tiny fake pair of npm tarballs made here with the same structure as the real ones; one
integration test builds the real dataset from the pinned packages (downloaded once into the user cache).
"""
from __future__ import annotations

import functools
import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fold0123.data.layout import LayoutError, read_tags, read_test, read_train
from fold0123.data.answers import bootstrap_se
from fold0123.preprocessing import answers, emoji, npm
from fold0123.common.build import MARKER, BuildError, StaleBuildError
from fold0123.preprocessing.emoji import EmojiDataError
from fold0123.preprocessing.npm import Package, PackageError

# (unified, added_in, emojibase hexcode or None when emojibase lacks it, tags, short name)
BASES = [
    ("1F600", "1.0", "1f600", ["face", "grin"], "grinning"),          # lower-case hexcode in emojibase
    ("2764-FE0F", "0.6", "2764", ["heart", "love"], "heart"),        # FE0F only on the emoji-datasource side
    ("1F970", "11.0", "1F970", ["adore", "crush"], "smiling_face_with_3_hearts"),
    ("1F923", "3.0", "1F923", ["face", "floor"], "rofl"),
    ("1F929", "5.0", "1F929", ["eyes", "star"], "star-struck"),
    ("1FAE8", "15.0", "1FAE8", ["shock"], "shaking_face"),
    ("1FAE9", "16.0", "1FAE9", ["tired"], "face_with_bags"),
    ("1F3B5", "0.7", "1F3B5", ["music"], "musical_note"),
    ("1F6DD", "14.0", "1F6DD", ["slide"], "playground_slide"),
    ("1F9A9", "12.0", "1F9A9", ["pink"], "flamingo"),
    ("1FAB7", "13.0", "1FAB7", ["flower"], "lotus"),
    ("1F984", "1.0", None, [], "unicorn_face"),                       # not in emojibase: no tags, unmatched
]
WAVE = "1F44B"
WAVE_TAGS = ["hand", "wave"]
# the waving hand: base 0.6 (2010), two skin variants 1.0 (2015); one more variant without an image
WAVE_SKINS = {"1F3FB": ("1.0", "light skin tone"), "1F3FC": ("1.0", "medium-light skin tone"),
              "1F3FD": ("1.0", "medium skin tone")}
NO_IMAGE = {"1F44B-1F3FD"}
EXPECTED_YEAR = {"1F600": 2015, "2764-FE0F": 2010, "1F970": 2018, "1F923": 2016, "1F929": 2017, "1FAE8": 2022,
                 "1FAE9": 2024, "1F3B5": 2010, "1F6DD": 2021, "1F9A9": 2019, "1FAB7": 2020, "1F984": 2015,
                 WAVE: 2010, "1F44B-1F3FB": 2015, "1F44B-1F3FC": 2015}
EXPECTED_TARGET = {2010: 0, 2015: 1, 2016: 2, 2017: 2, 2018: 3, 2019: 3, 2020: 3, 2021: 3, 2022: 3, 2024: 3}


def png_bytes(color: tuple[int, int, int], size: int = 12) -> bytes:
    """A small RGBA PNG: transparent border, opaque coloured centre (like an emoji on a transparent canvas)."""
    pixels = np.zeros((size, size, 4), dtype=np.uint8)
    pixels[3:-3, 3:-3] = (*color, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG")
    return buffer.getvalue()


def write_tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_packages(folder: Path, bases=BASES, corrupt_png: str | None = None) -> tuple[Path, Path]:
    """emoji-datasource-like and emojibase-like tarballs with the fields the builder reads."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    entries, files, emojibase = [], {}, []

    def add_image(unified: str) -> str:
        name = unified.lower() + ".png"
        if unified not in NO_IMAGE:
            data = png_bytes(tuple(int(c) for c in rng.integers(0, 200, 3)))
            files[f"img/google/64/{name}"] = b"not a png" if unified == corrupt_png else data
        return name

    for unified, added_in, hexcode, tags, short in bases:
        entries.append(dict(unified=unified, image=add_image(unified), added_in=added_in, short_name=short,
                            category="Smileys & Emotion", subcategory="face-misc", skin_variations=None))
        if hexcode is not None:
            emojibase.append(dict(label=short, hexcode=hexcode, tags=tags, group=0, subgroup=1))
    skins, base_skins = {}, []
    for key, (added_in, tone) in WAVE_SKINS.items():
        unified = f"{WAVE}-{key}"
        skins[key] = dict(unified=unified, image=add_image(unified), added_in=added_in)
        base_skins.append(dict(label=f"waving hand: {tone}", hexcode=unified, group=1, subgroup=16, tone=1))
    entries.append(dict(unified=WAVE, image=add_image(WAVE), added_in="0.6", short_name="wave",
                        category="People & Body", subcategory="hand-fingers-open", skin_variations=skins))
    emojibase.append(dict(label="waving hand", hexcode=WAVE, tags=WAVE_TAGS, group=1, subgroup=16,
                          skins=base_skins))
    files["emoji.json"] = json.dumps(entries).encode()
    datasource = write_tgz(folder / "emoji-datasource-google-16.0.0.tgz", files)
    base = write_tgz(folder / "emojibase-data-17.0.0.tgz", {"en/data.json": json.dumps(emojibase).encode()})
    return datasource, base


@pytest.fixture
def built(tmp_path: Path):
    datasource, base = fake_packages(tmp_path / "npm")
    out = tmp_path / "datasets" / "emoji"
    summary = emoji.build_from_tarballs(datasource, base, out, seed=0)
    ids = pd.read_csv(out.parent / "emoji_private" / "ids.csv", keep_default_na=False, dtype=str)
    return out, summary, ids.set_index("hexcode")


def test_dates_targets_and_series(built):
    out, summary, ids = built
    train = read_train(out)
    test = read_test(out, train)
    private = out.parent / "emoji_private"
    answers_frame = pd.read_csv(private / "answers.csv", dtype={"object_id": str})
    labels = pd.concat([train.set_index("object_id")[["sorting_date", "target"]],
                        answers_frame.set_index("object_id")[["sorting_date", "target"]]])
    assert sorted(ids.index) == sorted(EXPECTED_YEAR)  # one row per image; the variant without image is skipped
    for hexcode, year in EXPECTED_YEAR.items():
        object_id = ids.loc[hexcode, "object_id"]
        assert labels.loc[object_id, "sorting_date"] == year, hexcode
        assert labels.loc[object_id, "target"] == EXPECTED_TARGET[year], hexcode
    assert summary.rows == len(EXPECTED_YEAR) == len(train) + len(test)
    assert summary.skipped_without_image == 1
    # skin variants share the base's series, other emoji have their own, and series ids are not object ids
    series = {**train.set_index("object_id")["art_series_id"].to_dict(),
              **ids.reset_index().set_index("object_id")["art_series_id"].to_dict()}
    wave_series = {series[ids.loc[h, "object_id"]] for h in (WAVE, "1F44B-1F3FB", "1F44B-1F3FC")}
    assert len(wave_series) == 1
    assert len(set(series.values())) == len(BASES) + 1 == summary.series
    assert not set(series.values()) & set(ids["object_id"])


def all_tags(out: Path, table: str) -> pd.DataFrame:
    """The dataroot's rows of a tag table and the private folder's test rows, together."""
    private = emoji.test_tags_path(emoji.private_dir(out), table)
    return pd.concat([read_tags(out, table), pd.read_csv(private, dtype=str, keep_default_na=False)],
                     ignore_index=True)


def test_tags_inherited_fe0f_and_case(built):
    out, summary, ids = built
    materials = all_tags(out, "materials").groupby("object_id")["name"].apply(list).to_dict()
    tags_of = lambda hexcode: materials.get(ids.loc[hexcode, "object_id"], [])  # noqa: E731
    assert tags_of(WAVE) == WAVE_TAGS
    assert tags_of("1F44B-1F3FB") == WAVE_TAGS + ["light skin tone"]
    assert tags_of("1F44B-1F3FC") == WAVE_TAGS + ["medium-light skin tone"]
    assert tags_of("2764-FE0F") == ["heart", "love"]    # matched without FE0F
    assert tags_of("1F600") == ["face", "grin"]         # matched case-insensitively
    assert tags_of("1F984") == []
    assert summary.tag_matched == summary.rows - 1
    assert summary.share_without_tags == pytest.approx(1 / summary.rows)
    techniques = all_tags(out, "techniques")
    wave = techniques[techniques["object_id"] == ids.loc["1F44B-1F3FB", "object_id"]]["name"].tolist()
    assert wave == ["People & Body", "hand-fingers-open"]
    assert len(techniques) == 2 * summary.rows


def test_photos_composited_on_white(built):
    out, summary, ids = built
    photos = sorted((out / "photos").iterdir())
    assert {p.stem for p in photos} == set(ids["object_id"])
    for path in photos:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            pixels = np.asarray(image).astype(int)
        assert (pixels[0, 0] >= 245).all(), path          # transparent corner -> white, not black
        assert pixels[6, 6].min() < 230, path              # the opaque centre keeps its colour


def test_ids_opaque_shuffled_and_private(built):
    out, summary, ids = built
    hexcodes = [h.lower() for h in EXPECTED_YEAR] + [h.lower().replace("-", "_") for h in EXPECTED_YEAR]
    for path in out.rglob("*"):
        name = path.name.lower()
        assert not any(h in name for h in hexcodes if len(h) >= 5), path
        if path.suffix in (".csv", ".json"):
            text = path.read_text().lower()
            assert not any(h in text for h in hexcodes if len(h) >= 5), path
    assert all(len(i) == 20 and int(i, 16) >= 0 for i in ids["object_id"])
    train = read_train(out)
    order = [ids.reset_index().set_index("object_id").loc[i, "hexcode"] for i in train["object_id"]]
    assert order != sorted(order)
    # labels of test rows exist only in the private folder, a sibling of the dataroot
    test = read_test(out, train)
    assert list(pd.read_csv(out / "test.csv").columns) == ["object_id"]
    private = out.parent / "emoji_private"
    assert set(pd.read_csv(private / "answers.csv", dtype=str)["object_id"]) == set(test["object_id"])
    assert not (out / "answers.csv").exists() and not (out / "ids.csv").exists()
    split = ids.reset_index().set_index("object_id")["split"]
    assert (split[test["object_id"]] == "test").all() and (split[train["object_id"]] == "train").all()


def test_tags_of_test_objects_are_private_unless_test_tags(tmp_path, built):
    """As in atmaCup #11, the dataroot's tag tables hold train objects only; the test objects' rows are in the
    private folder, and --test-tags keeps them in the dataroot too (the same rows, in the same order)."""
    out, summary, ids = built
    train, test = read_train(out), read_test(out)
    private = emoji.private_dir(out)
    assert not summary.test_tags and json.loads((out / MARKER).read_text())["test_tags"] is False
    keep = emoji.build_from_tarballs(*fake_packages(tmp_path / "npm2"), tmp_path / "keep" / "emoji", test_tags=True)
    assert keep.test_tags and json.loads((tmp_path / "keep" / "emoji" / MARKER).read_text())["test_tags"]
    for table in ("materials", "techniques"):
        rows = read_tags(out, table)
        hidden = pd.read_csv(emoji.test_tags_path(private, table), dtype=str, keep_default_na=False)
        assert set(rows["object_id"]) <= set(train["object_id"])
        assert not set(rows["object_id"]) & set(test["object_id"])
        assert set(hidden["object_id"]) <= set(test["object_id"]) and len(hidden) > 0
        everything = read_tags(tmp_path / "keep" / "emoji", table)
        assert set(everything["object_id"]) & set(test["object_id"])
        assert sorted(map(tuple, everything.to_numpy())) == sorted(map(tuple, pd.concat([rows, hidden]).to_numpy()))
        assert (everything[everything["object_id"].isin(test["object_id"])].reset_index(drop=True)
                .equals(hidden.reset_index(drop=True)))
    assert summary.test_tag_rows == keep.test_tag_rows > 0
    assert "train objects only" in "\n".join(summary.lines()) and "--test-tags" in "\n".join(keep.lines())


def test_a_build_with_the_other_test_tags_choice_is_refused_or_rebuilt_keeping_photo_times(tmp_path, monkeypatch):
    from fold0123.common.fingerprint import folder_digest

    cache = tmp_path / "cache"
    pins = fake_pins(*fake_packages(cache))
    monkeypatch.setenv("PATH", "")
    out = tmp_path / "datasets" / "emoji"
    emoji.build_dataset(out, cache=cache, packages=pins)
    photos, materials = folder_digest(out / "photos"), (out / "materials.csv").read_text()
    with pytest.raises(StaleBuildError, match=r"train-only tags -> test tags in the dataroot.*--redo-stale"):
        emoji.build_dataset(out, cache=cache, packages=pins, test_tags=True)
    assert (out / "materials.csv").read_text() == materials
    rebuilt = emoji.build_dataset(out, cache=cache, packages=pins, test_tags=True, redo_stale=True)
    assert rebuilt.test_tags and not rebuilt.reused
    assert (out / "materials.csv").read_text() != materials
    assert folder_digest(out / "photos") == photos  # identical photos keep their times: runs on photos stay fresh
    assert emoji.build_dataset(out, cache=cache, packages=pins, test_tags=True, redo_stale=True).reused
    # a marker written before the option existed: that build kept the test tags in the dataroot
    marker = json.loads((out / MARKER).read_text())
    del marker["test_tags"]
    (out / MARKER).write_text(json.dumps(marker))
    assert emoji.build_dataset(out, cache=cache, packages=pins, test_tags=True).test_tags
    monkeypatch.setattr(emoji, "build_dataset", functools.partial(emoji.build_dataset, packages=pins))  # for main
    with pytest.raises(SystemExit, match=r"^error: .*test tags in the dataroot \(--test-tags\) -> train-only tags"):
        emoji.main(["--out", str(out), "--cache", str(cache)])
    emoji.main(["--out", str(out), "--cache", str(cache), "--test-tags"])  # reused
    emoji.main(["--out", str(out), "--cache", str(cache), "--redo-stale"])
    assert json.loads((out / MARKER).read_text())["test_tags"] is False
    assert not set(read_tags(out, "materials")["object_id"]) & set(read_test(out)["object_id"])


def test_every_stage_reading_tags_works_when_test_objects_have_none(tmp_path):
    """word2vec.py gives untagged (test) objects zero vectors and the tagged train objects real ones; folds do not
    read tags."""
    from fold0123.data.folds import write_folds
    from fold0123.data.tags import write_tag_vectors

    root = emoji.build_from_tarballs(*fake_packages(tmp_path / "npm"), tmp_path / "emoji").out
    write_folds(root, k=3, batch_size=None, seed=0)
    report = write_tag_vectors(root, dim=4, epochs=5, seed=0)
    vectors = pd.read_csv(report.path, dtype={"object_id": str}, keep_default_na=False).set_index("object_id")
    test_ids = read_test(root)["object_id"]
    tagged = set(read_tags(root, "materials")["object_id"]) | set(read_tags(root, "techniques")["object_id"])
    assert (vectors.loc[test_ids].to_numpy() == 0).all()
    assert (np.abs(vectors.loc[sorted(tagged)].to_numpy()).sum(axis=1) > 0).all()
    assert report.n_untagged == len(test_ids)


def test_test_split_is_series_disjoint_and_seeded(tmp_path, built):
    out, summary, ids = built
    train, test = read_train(out), read_test(out)
    test_series = set(ids.reset_index().set_index("object_id").loc[test["object_id"], "art_series_id"])
    assert test_series and not test_series & set(train["art_series_id"])
    assert summary.train_rows + summary.test_rows == summary.rows and summary.test_rows > 0
    again = emoji.build_from_tarballs(*fake_packages(tmp_path / "npm2"), tmp_path / "again" / "emoji", seed=0)
    assert (read_test(tmp_path / "again" / "emoji")["object_id"].tolist() == test["object_id"].tolist())
    assert again.test_targets == summary.test_targets


def test_unknown_version_is_an_error_and_leaves_nothing(tmp_path):
    bases = BASES + [("1FAEA", "17.5", "1FAEA", ["new"], "future_face")]
    datasource, base = fake_packages(tmp_path / "npm", bases=bases)
    out = tmp_path / "datasets" / "emoji"
    with pytest.raises(EmojiDataError, match=r"1FAEA.*future_face.*unknown Emoji version '17.5'"):
        emoji.build_from_tarballs(datasource, base, out)
    assert not (tmp_path / "datasets").exists() or list((tmp_path / "datasets").iterdir()) == []


def test_failed_rebuild_keeps_previous_build(tmp_path, built):
    out, summary, ids = built
    before = (out / "train.csv").read_text()
    datasource, base = fake_packages(tmp_path / "bad", corrupt_png="1F970")
    with pytest.raises(EmojiDataError, match=r"1f970\.png: not a readable PNG"):
        emoji.build_from_tarballs(datasource, base, out)
    assert (out / "train.csv").read_text() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["emoji", "emoji_private"]


def test_integrity_mismatch_deletes_download(tmp_path):
    downloaded = tmp_path / "scratch" / "pkg-1.0.0.tgz"
    downloaded.parent.mkdir()
    downloaded.write_bytes(b"tampered")
    package = Package("pkg", "1.0.0", npm.EMOJIBASE.integrity)
    cache = tmp_path / "cache"
    with pytest.raises(PackageError, match=r"integrity mismatch for pkg@1\.0\.0: expected sha512-Yvgb"):
        npm.install_tarball(downloaded, package, cache)
    assert not downloaded.exists() and not (cache / package.filename).exists()
    # the right bytes are accepted and moved into the cache
    downloaded.write_bytes(b"genuine")
    good = Package("pkg", "1.0.0", npm.integrity_of(downloaded))
    assert npm.install_tarball(downloaded, good, cache) == cache / "pkg-1.0.0.tgz"


def test_integrity_string_matches_npm_format(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    # sha512("abc") in base64, as `npm view <pkg> dist.integrity` prints it
    assert npm.integrity_of(path) == ("sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/"
                                      "uu9RU1EI2Q86A4qmslPpUyknw==")


def fake_pins(datasource: Path, base: Path) -> tuple[Package, Package]:
    return (Package("emoji-datasource-google", "16.0.0", npm.integrity_of(datasource)),
            Package("emojibase-data", "17.0.0", npm.integrity_of(base)))


def test_build_dataset_reuses_cache_and_build(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    pins = fake_pins(*fake_packages(cache))
    monkeypatch.setenv("PATH", "")  # no npm: a verified cached tarball must not be downloaded again
    out = tmp_path / "datasets" / "emoji"
    first = emoji.build_dataset(out, cache=cache, seed=0, packages=pins)
    assert not first.reused
    stamp = (out / MARKER).stat().st_mtime_ns
    time.sleep(0.01)
    second = emoji.build_dataset(out, cache=cache, seed=0, packages=pins)
    assert second.reused and second.rows == first.rows and second.test_targets == first.test_targets
    assert (out / MARKER).stat().st_mtime_ns == stamp
    with pytest.raises(BuildError, match="seed 0.*--force"):
        emoji.build_dataset(out, cache=cache, seed=1, packages=pins)
    third = emoji.build_dataset(out, cache=cache, seed=1, force=True, packages=pins)
    assert not third.reused and third.seed == 1
    assert json.loads((out / MARKER).read_text())["seed"] == 1
    assert not [p for p in out.parent.iterdir() if ".tmp." in p.name or ".old" in p.name]


def test_cache_from_env_and_bad_cached_file(tmp_path, monkeypatch):
    cache = tmp_path / "envcache"
    monkeypatch.setenv(npm.CACHE_ENV, str(cache))
    assert npm.cache_dir() == cache and npm.cache_dir(tmp_path / "x") == tmp_path / "x"
    cache.mkdir()
    package = Package("pkg", "1.0.0", npm.EMOJIBASE.integrity)
    (cache / package.filename).write_bytes(b"truncated")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(PackageError, match="npm not found"):
        npm.fetch_package(package)
    assert not (cache / package.filename).exists()  # the bad file is never used, and gone


def test_existing_folder_that_is_not_a_build(tmp_path):
    out = tmp_path / "emoji"
    (out).mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(BuildError, match="no dataset.json"):
        emoji.build_dataset(out, cache=tmp_path / "cache")
    assert (out / "mine.txt").read_text() == "keep"


def test_cli_reports_one_line_error(tmp_path, capsys):
    (tmp_path / "emoji").mkdir()
    with pytest.raises(SystemExit) as stop:
        emoji.main(["--out", str(tmp_path / "emoji"), "--cache", str(tmp_path / "cache")])
    assert str(stop.value).startswith("error: ") and "\n" not in str(stop.value)


# ---------------------------------------------------------------- the scorer

def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_score_submission(tmp_path):
    truth = write(tmp_path / "answers.csv", "object_id,target,sorting_date\na,0,2010\nb,3,2019\nc,1,2015\nNA,2,2016\n")
    perfect = write(tmp_path / "p.csv", "object_id,target\nNA,2\nc,1\nb,3\na,0\n")
    assert answers.score_submission(perfect, truth) == {"rmse": 0.0, "n": 4, "se": 0.0}
    off = write(tmp_path / "o.csv", "object_id,target\na,1\nb,3\nc,1\nNA,0.0\n")
    scored = answers.score_submission(off, truth)
    assert scored["rmse"] == pytest.approx(np.sqrt((1 + 4) / 4)) and scored["se"] > 0


def test_bootstrap_se_matches_the_binomial_standard_error():
    """Accuracy on n objects has the binomial s.e. sqrt(p (1 - p) / n); the bootstrap must land near it, shrink
    as 1/sqrt(n), and repeat itself for the same seed."""
    rng = np.random.default_rng(1)
    for n in (400, 1600):
        truth = rng.integers(0, 4, n)
        guess = np.where(rng.random(n) < 0.7, truth, (truth + 1) % 4)
        p = float(np.mean(guess == truth))
        se = bootstrap_se("accuracy", truth, guess, draws=2000)
        assert se == pytest.approx(np.sqrt(p * (1 - p) / n), rel=0.1)
        assert se == bootstrap_se("accuracy", truth, guess, draws=2000)
    assert bootstrap_se("rmse", np.arange(5.0), np.arange(5.0)) == 0.0


def test_recipe_closing_line_states_the_answers_standard_error(tmp_path):
    (tmp_path / "emoji").mkdir()
    (tmp_path / "out").mkdir()
    truth = write(tmp_path / "answers.csv", "object_id,target\n" + "".join(f"o{i},{i % 4}\n" for i in range(40)))
    write(tmp_path / "out" / "0.5000_20261207-000000_ids.csv",
          "object_id,target\n" + "".join(f"o{i},{(i + i // 20) % 4}\n" for i in range(40)))
    first = answers.report_latest(tmp_path / "out", tmp_path / "emoji", truth)[0]
    score = answers.score_submission(tmp_path / "out" / "0.5000_20261207-000000_ids.csv", truth)
    assert first == (f"submission RMSE on the held-out answers: {score['rmse']:.4f} ± {score['se']:.4f} "
                     "(s.e. over its 40 test objects, bootstrap)")


@pytest.mark.parametrize("text, message", [
    ("object_id,target\na,0\nb,3\n", r"missing 2 of 4 object_ids.*first 'c'"),
    ("object_id,target\na,0\nb,3\nc,1\nd,2\nzz,1\n", r"1 object_ids not in .*first 'zz'"),
    ("object_id,target\na,0\nb,x\nc,1\nd,2\n", r"row 3: column 'target'.*'x'"),
    ("object_id,target\na,0\na,3\nc,1\nd,2\n", r"row 3: duplicate object_id 'a'"),
    ("id,target\na,0\n", r"missing column 'object_id'"),
])
def test_score_submission_bad_input(tmp_path, text, message):
    truth = write(tmp_path / "answers.csv", "object_id,target,sorting_date\na,0,2010\nb,3,2019\nc,1,2015\nd,2,2016\n")
    submission = write(tmp_path / "s.csv", text)
    with pytest.raises(LayoutError, match=message):
        answers.score_submission(submission, truth)
    with pytest.raises(SystemExit, match="^error: .*s.csv"):
        answers.main([str(submission), "--answers", str(truth)])


# ---------------------------------------------------------------- the real thing

@pytest.mark.integration
def test_real_dataset(tmp_path):
    """Builds the real dataset from the pinned packages (npm downloads them once into ~/.cache/fold0123/npm)."""
    out = tmp_path / "emoji"
    summary = emoji.build_dataset(out, cache=npm.cache_dir(None), seed=0)
    train = read_train(out)
    test = read_test(out, train)
    assert 3700 <= summary.rows == len(train) + len(test) <= 4000
    assert 1800 <= summary.series <= 2000
    assert 0.15 <= len(test) / summary.rows <= 0.25
    assert set(train["target"].astype(int)) == {0, 1, 2, 3}
    assert all(n > 0 for n in summary.test_targets)
    answers_frame = pd.read_csv(out.parent / "emoji_private" / "answers.csv", dtype={"object_id": str})
    assert set(answers_frame["object_id"]) == set(test["object_id"])
    assert set(answers_frame["target"]) == {0, 1, 2, 3}
    assert summary.tag_match_rate > 0.95
    ids = pd.read_csv(out.parent / "emoji_private" / "ids.csv", dtype=str, keep_default_na=False)
    test_series = set(ids[ids["split"] == "test"]["art_series_id"])
    assert not test_series & set(train["art_series_id"])
    for object_id in pd.concat([train["object_id"], test["object_id"]]):
        with Image.open(out / "photos" / f"{object_id}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            image.load()
    # skin variants share their base's series; the US flag's tag "US" survives reading (keep_default_na)
    assert ids.groupby("art_series_id")["base_hexcode"].nunique().max() == 1
    assert (ids.groupby("base_hexcode")["art_series_id"].nunique() == 1).all()
    assert "NA" in set(read_tags(out, "materials")["name"])
    # atmaCup #11's layout: tags for the train objects only, the test objects' in the private folder
    for table in ("materials", "techniques"):
        assert set(read_tags(out, table)["object_id"]) <= set(train["object_id"])
        hidden = pd.read_csv(emoji.test_tags_path(out.parent / "emoji_private", table), dtype=str,
                             keep_default_na=False)
        assert set(hidden["object_id"]) == set(test["object_id"])


@pytest.mark.parametrize("test_tags, redo_stale", [(False, False), (True, True)])
def test_recipe_passes_the_test_tags_choice_to_the_builder(monkeypatch, test_tags, redo_stale):
    from fold0123.launcher import recipe
    from fold0123.common.schema import RecipeConfig

    calls = []
    monkeypatch.setattr(recipe, "run_cli", lambda *args: calls.append(args))
    recipe.build_dataset(RecipeConfig(dataroot="d/emoji", test_tags=test_tags), redo_stale)
    assert calls == [("-m", "fold0123.preprocessing.emoji", "--out", "d/emoji", *(["--test-tags"] if test_tags else []),
                      *(["--redo-stale"] if redo_stale else []))]
