"""experiments/holdout.py: the seeded choice of photos kept back from training to choose decodes on."""
import os

import pytest

from experiments import holdout


def test_the_draw_is_seeded_sized_per_folder_and_even_over_nested_folders(make_photo_folder, tmp_path):
    data = tmp_path / "train"
    make_photo_folder(data / "landscape", 10)
    for cls in ("sea", "street", "forest"):
        make_photo_folder(data / "scenes" / cls, 6, real=False)
    make_photo_folder(data / "general", 5, real=False)
    chosen = holdout.draw(str(data), {"landscape": 4, "scenes": 7})
    assert chosen == holdout.draw(str(data), {"landscape": 4, "scenes": 7})  # reproducible
    assert chosen != holdout.draw(str(data), {"landscape": 4, "scenes": 7}, seed=1)
    assert len(set(chosen)) == 11 and all(os.path.isfile(data / c) for c in chosen)
    firsts = [c.split(os.sep)[:2] for c in chosen]
    assert sum(f[0] == "landscape" for f in firsts) == 4
    assert sorted(sum(f == ["scenes", cls] for f in firsts) for cls in ("forest", "sea", "street")) == [2, 2, 3]
    with pytest.raises(ValueError, match="asked for"):
        holdout.draw(str(data), {"general": 6})


def test_the_list_and_the_links_name_the_same_photos(make_photo_folder, tmp_path):
    data = tmp_path / "train"
    make_photo_folder(data / "landscape", 8, real=False)
    listed, links = tmp_path / "select.txt", tmp_path / "select"
    assert holdout.main(["--data", str(data), "--per-folder", "landscape=3", "--list", str(listed),
                         "--link", str(links)]) == 0
    names = [line for line in listed.read_text().splitlines() if not line.startswith("#")]
    assert len(names) == 3
    assert sorted(os.path.realpath(links / n) for n in os.listdir(links)) == \
        sorted(os.path.realpath(data / n) for n in names)
