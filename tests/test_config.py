import pytest

from fold0123.common.config import ConfigError, load_config
from fold0123.common.io import atomic_path, is_temporary, write_text


def test_base_chain_and_overrides(tmp_path):
    (tmp_path / "base.yml").write_text("lr: 0.1\nepochs: 10\njigsaw: {grid: 3, kind: hamming}\n")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "target.yml").write_text("base: ../base.yml\nepochs: 2\n")
    cfg = load_config(tmp_path / "demo" / "target.yml", ["lr=3e-4", "jigsaw.kind=random", "epochs=null"])
    assert cfg == {"lr": 3e-4, "epochs": None, "jigsaw": {"grid": 3, "kind": "random"}, "exp": "target"}


@pytest.mark.parametrize("override, message", [("lr", "expected key=value"), ("lrr=1", "unknown key 'lrr'"),
                                               ("jigsaw.gird=2", "unknown key 'jigsaw.gird'")])
def test_bad_overrides_name_the_key(tmp_path, override, message):
    (tmp_path / "c.yml").write_text("lr: 0.1\njigsaw: {grid: 3}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yml", [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yml")
    (tmp_path / "a.yml").write_text("base: b.yml\n")
    (tmp_path / "b.yml").write_text("base: a.yml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yml")
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yml")


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            assert is_temporary(tmp)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_text(target, "whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
