"""DataError formatting and read_all, the one way every domain loads a dataset with bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from maecore.errors import DataError, read_all
from maecore.sample import read_image_array, sample_path


def test_data_error_names_file_expected_found_and_pickles():
    err = DataError("a/b.tif", "3 bands", "4 bands")
    assert str(err) == "a/b.tif: expected 3 bands, found 4 bands"
    assert str(pickle.loads(pickle.dumps(err))) == str(err)
    assert str(DataError(None, "x", "y")) == "expected x, found y"


def _files(tmp_path: Path) -> list[Path]:
    good = tmp_path / "good.npz"
    good.write_bytes(sample_path().read_bytes())
    (tmp_path / "cut.npz").write_bytes(sample_path().read_bytes()[:100])
    (tmp_path / "text.npy").write_text("not numpy")
    return [good, tmp_path / "cut.npz", tmp_path / "text.npy"]


def test_read_all_reports_every_bad_file_unless_told_to_skip(tmp_path: Path, capsys):
    files = _files(tmp_path)
    with pytest.raises(DataError, match=r"expected only readable files .*found 2 bad file\(s\): .*cut\.npz: .*; "
                                        r".*text\.npy: "):
        read_all(files, read_image_array)
    good = read_all(files, read_image_array, skip_bad=True)
    assert [g["path"] for g in good] == [str(files[0])]
    out = capsys.readouterr().out
    assert out.count("skipped bad file: ") == 2 and "cut.npz" in out and "text.npy" in out


def test_read_all_with_earlier_problems_and_nothing_left(tmp_path: Path, capsys):
    files = _files(tmp_path)
    earlier = DataError(tmp_path / "case9", "a case folder with images", "an empty folder")
    with pytest.raises(DataError, match=r"data: expected only readable cases .*3 bad case\(s\): .*case9"):
        read_all(files, read_image_array, noun="case", where="data", found_bad=[earlier])
    with pytest.raises(DataError, match=r"expected at least one good file, found none left after skipping 2 bad"):
        read_all(files[1:], read_image_array, skip_bad=True)
    with pytest.raises(DataError, match="at least one good file, found none left after skipping 0 bad"):
        read_all([], read_image_array)


def test_expand_paths_folder_glob_single_default_and_nothing(tmp_path: Path):
    from maecore.paths import expand_paths

    (tmp_path / "sub").mkdir()
    for name in ("a.NPZ", "sub/b.npy", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_paths(tmp_path, (".npz", ".npy"), [], "arrays")] == ["a.NPZ", "b.npy"]
    assert [p.name for p in expand_paths(str(tmp_path / "*.txt"), (".npz",), [], "arrays")] == ["c.txt"]
    assert expand_paths(tmp_path / "missing.npz", (".npz",), [], "arrays") == [tmp_path / "missing.npz"]
    assert expand_paths(None, (".npz",), [sample_path()], "arrays") == [sample_path()]
    with pytest.raises(DataError, match=r"empty: expected arrays \(\.npz, \.npy\), found no files"):
        (tmp_path / "empty").mkdir()
        expand_paths(tmp_path / "empty", (".NPZ", ".npy"), [], "arrays")


def test_labels_from_csv_relative_absolute_by_name_and_errors(tmp_path: Path):
    from maecore.paths import labels_from_csv

    (tmp_path / "walk").mkdir()
    files = [tmp_path / "walk" / "a.bvh", tmp_path / "b.bvh", tmp_path / "elsewhere" / "c.bvh"]
    csv = tmp_path / "labels.csv"
    csv.write_text(f"file,label\nwalk/a.bvh,walk\n{tmp_path / 'b.bvh'},run\nold/place/c.bvh,jump\n")
    assert labels_from_csv(files, csv) == ["walk", "run", "jump"]
    with pytest.raises(DataError, match=r"labels\.csv: expected a label for every clip, found no label for "
                                        r"\['.*d\.bvh'\]"):
        labels_from_csv([tmp_path / "d.bvh"], csv, "clip")
    (tmp_path / "bad.csv").write_text("path,class\nx,y\n")
    with pytest.raises(DataError, match=r"bad\.csv: expected a CSV with columns 'file' and 'label', found columns"):
        labels_from_csv(files, tmp_path / "bad.csv")
    with pytest.raises(DataError, match=r"none\.csv: expected a labels CSV with columns file,label, found nothing"):
        labels_from_csv(files, tmp_path / "none.csv")


def test_damage_cuts_and_flips_bytes_and_can_aim_at_a_header():
    from maecore.testing import damage

    data = bytes(range(100))
    assert damage(data, 1.0, []) == data and damage(data, 0.25, []) == data[:25]
    assert damage(data, 1.0, [(0.0, 255), (1.0, 7)]) == bytes([255, *range(1, 99), 7])
    assert damage(data, 1.0, [(1.0, 200, True)], prefix=10)[9] == 200  # last byte of the 10-byte header
    assert damage(b"", 0.0, [(0.5, 1)]) == b""
