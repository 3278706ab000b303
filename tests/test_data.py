"""Data layer: the .mat reader, the packed format, prepare/info commands, bad input, sampling."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import make_sprites_dir, random_character, write_character_mat

from ccvae.cli import main
from ccvae.data import load_dataset, load_packed
from ccvae.data.packed import SCHEMA


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean_error(code: int, err: str, *needles: str) -> None:
    """Exit 2, one line on stderr, no traceback, the message names what is wrong."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("read .mat", "download"))]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ccvae: error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# -- prepare from a folder ------------------------------------------------------------------

def test_prepare_folder_roundtrip(tmp_path, capsys):
    expected = make_sprites_dir(tmp_path / "src")
    out = tmp_path / "out.npz"
    code, _, err = run_cli(capsys, "data", "prepare", "--source", str(tmp_path / "src"), "--out", str(out), "--quiet")
    assert code == 0, err
    got = load_packed(out, keys=("images", "masks"))
    assert set(got) == set(SCHEMA)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype or (v.dtype.kind == "U" and got[k].dtype.kind == "U"), k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    with np.load(out, allow_pickle=False) as npz:  # no pickled objects
        assert sorted(npz.files) == sorted(SCHEMA)


def test_prepare_finds_data_sprites_below(tmp_path, capsys):
    make_sprites_dir(tmp_path / "root" / "data" / "sprites", ids=(1, 2), splits=((1,), (2,), ()))
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "data", "prepare", "--source", str(tmp_path / "root"), "--out", str(out), "--quiet")
    assert code == 0, err
    assert load_packed(out)["character_ids"].tolist() == [1, 2]


def test_prepare_partial_warns(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0, 3), splits=((0, 7), (3, 8), (9,)))
    code, _, err = run_cli(capsys, "data", "prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "o.npz"))
    assert code == 0
    assert "670 of the 672 characters are missing" in err
    a = load_packed(tmp_path / "o.npz")
    assert a["train_ids"].tolist() == [0] and a["val_ids"].tolist() == [3] and a["test_ids"].tolist() == []


# -- prepare from a tarball or URL ----------------------------------------------------------

def make_tarball(src_dir: Path, path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(src_dir.iterdir()):
            tar.add(f, arcname=f"data/sprites/{f.name}")
        tar.addfile(tarfile.TarInfo("data/cars/ignored.mat"), io.BytesIO(b""))
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_prepare_tarball_and_url(tmp_path, capsys):
    expected = make_sprites_dir(tmp_path / "src", ids=(0, 4), splits=((0,), (4,), ()))
    tgz = make_tarball(tmp_path / "src", tmp_path / "nips2015-analogy-data.tar.gz")
    md5 = hashlib.md5(tgz.read_bytes()).hexdigest()
    code, _, err = run_cli(capsys, "data", "prepare", "--source", str(tgz), "--out", str(tmp_path / "a.npz"), "--quiet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "data", "prepare", "--source", tgz.as_uri(), "--md5", md5,
                           "--out", str(tmp_path / "b.npz"), "--quiet")
    assert code == 0, err
    for name in ("a.npz", "b.npz"):
        got = load_packed(tmp_path / name, keys=("images",))
        np.testing.assert_array_equal(got["images"], expected["images"])


# -- bad input: one line, exit 2, nothing at the output path -----------------------------------

def _bad_prepare(capsys, tmp_path, source, *needles, extra=()):
    out = tmp_path / "bad-out.npz"
    code, _, err = run_cli(capsys, "data", "prepare", "--source", str(source), "--out", str(out), "--quiet", *extra)
    assert_clean_error(code, err, *needles)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad-out")]


def test_bad_missing_source(tmp_path, capsys):
    _bad_prepare(capsys, tmp_path, tmp_path / "nope", "nope", "no such file")


def test_bad_no_splits_file(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0,), splits=((0,), (), ()))
    (tmp_path / "src" / "sprites_splits.mat").unlink()
    _bad_prepare(capsys, tmp_path, tmp_path / "src", "sprites_splits.mat")


def test_bad_truncated_hdf5(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0, 1), splits=((0,), (1,), ()))
    p = tmp_path / "src" / "sprites_1.mat"
    p.write_bytes(p.read_bytes()[:5000])
    _bad_prepare(capsys, tmp_path, tmp_path / "src", "sprites_1.mat")


def test_bad_corrupt_hdf5(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0,), splits=((0,), (), ()))
    (tmp_path / "src" / "sprites_0.mat").write_bytes(b"not an hdf5 file at all" * 100)
    _bad_prepare(capsys, tmp_path, tmp_path / "src", "sprites_0.mat")


def test_bad_row_length(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0,), splits=((0,), (), ()))
    write_character_mat(tmp_path / "src" / "sprites_0.mat", *random_character(np.random.default_rng(1)), row_len=10799)
    _bad_prepare(capsys, tmp_path, tmp_path / "src", "sprites_0.mat", "10800")


def test_bad_frame_count(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0, 2), splits=((0,), (2,), ()))
    frames = (7,) * 4 + (8,) * 4 + (9,) * 4 + (6,) * 4 + (13,) * 4 + (5,)
    write_character_mat(tmp_path / "src" / "sprites_2.mat",
                        *random_character(np.random.default_rng(1), n_poses=177), cell_frames=frames)
    _bad_prepare(capsys, tmp_path, tmp_path / "src", "sprites_2.mat", "frames")


def test_bad_truncated_tarball(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0,), splits=((0,), (), ()))
    tgz = make_tarball(tmp_path / "src", tmp_path / "t.tar.gz")
    tgz.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    _bad_prepare(capsys, tmp_path, tgz, "t.tar.gz", "truncated")


def test_bad_md5_url(tmp_path, capsys):
    make_sprites_dir(tmp_path / "src", ids=(0,), splits=((0,), (), ()))
    tgz = make_tarball(tmp_path / "src", tmp_path / "t.tar.gz")
    # Without --md5 a download is checked against the upstream MD5, which this file cannot match.
    _bad_prepare(capsys, tmp_path, tgz.as_uri(), "MD5")
    _bad_prepare(capsys, tmp_path, tgz, "MD5", extra=("--md5", "0" * 32))


@pytest.mark.parametrize("name", ["../evil.mat", "/abs/evil.mat", "data/sprites/../../evil.mat"])
def test_bad_tar_member_escape(tmp_path, capsys, name):
    make_sprites_dir(tmp_path / "src", ids=(0,), splits=((0,), (), ()))
    tgz = make_tarball(tmp_path / "src", tmp_path / "t.tar.gz", extra={name: b"x"})
    _bad_prepare(capsys, tmp_path, tgz, name)
    assert not (tmp_path / "evil.mat").exists() and not (tmp_path.parent / "evil.mat").exists()


# -- the packed file ---------------------------------------------------------------------------

def _rewrite(src: Path, dst: Path, drop=(), replace=None, pickle_obj=False) -> Path:
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    arrays.update(replace or {})
    if pickle_obj:
        arrays["attributes"] = np.array([{"a": 1}] * len(arrays["character_ids"]), dtype=object)
    np.savez(dst, **arrays)
    return dst


@pytest.mark.parametrize("case,needle", [
    ("truncated", "truncated"), ("missing", "images"), ("dtype", "dtype"), ("shape", "shape"),
    ("pickle", "pickled"), ("split", "split 'val'"),
])
def test_bad_packed(tmp_path, capsys, tiny_npz, case, needle):
    p = tmp_path / f"{case}.npz"
    if case == "truncated":
        p.write_bytes(tiny_npz.read_bytes()[: tiny_npz.stat().st_size // 2])
    elif case == "missing":
        _rewrite(tiny_npz, p, drop=("images",))
    elif case == "dtype":
        with np.load(tiny_npz) as npz:
            _rewrite(tiny_npz, p, replace={"attributes": npz["attributes"].astype(np.float32)})
    elif case == "shape":
        with np.load(tiny_npz) as npz:
            _rewrite(tiny_npz, p, replace={"images": npz["images"][:, :100]})
    elif case == "pickle":
        _rewrite(tiny_npz, p, pickle_obj=True)
    elif case == "split":
        _rewrite(tiny_npz, p, replace={"val_ids": np.array([600], dtype=np.uint16)})
    code, _, err = run_cli(capsys, "data", "info", "--data", str(p))
    assert_clean_error(code, err, p.name, needle)
    if case != "truncated":  # the training loader refuses it the same way
        from ccvae.errors import UserError
        with pytest.raises(UserError):
            load_dataset(p)


def test_info_and_resolution(tmp_path, capsys, tiny_npz, monkeypatch):
    monkeypatch.setenv("CCVAE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CCVAE_DATA", raising=False)
    code, _, err = run_cli(capsys, "data", "info")
    assert_clean_error(code, err, "ccvae data prepare")
    monkeypatch.setenv("CCVAE_DATA", str(tiny_npz))
    code, out, _ = run_cli(capsys, "data", "info")
    assert code == 0 and "characters  12" in out and "sha256" in out
    assert hashlib.sha256(tiny_npz.read_bytes()).hexdigest() in out


def test_not_a_zip(tmp_path, capsys):
    p = tmp_path / "x.npz"
    p.write_bytes(b"hello")
    code, _, err = run_cli(capsys, "data", "info", "--data", str(p))
    assert_clean_error(code, err, "x.npz")
    assert not zipfile.is_zipfile(p)


# -- the dataset API ---------------------------------------------------------------------------

def test_dataset_sampling_synthetic(tiny_npz):
    ds = load_dataset(tiny_npz)
    g = torch.Generator().manual_seed(0)
    pb = ds.sample_pairs(64, g, split="train")
    assert pb.x1.shape == (64, 3, 60, 60) and pb.x1.dtype == torch.float32
    assert 0 <= pb.x1.min() and pb.x1.max() <= 1
    train_rows = set(ds.rows("train").tolist())
    assert set(pb.character.tolist()) <= train_rows
    raw = ds.images[pb.character, pb.pose2].permute(0, 3, 1, 2).float() / 255
    assert torch.equal(raw, pb.x2)
    b = ds.sample(32, g, split="test")
    assert set(b.character.tolist()) <= set(ds.rows("test").tolist())
    assert ds.n_images("all") == 12 * 178
    order = ds.flat_order("train", g)
    assert sorted(order.tolist()) == sorted(
        (r * 178 + p) for r in ds.rows("train").tolist() for p in range(178))


def test_bad_split_name(tiny_npz):
    from ccvae.errors import UserError
    ds = load_dataset(tiny_npz)
    with pytest.raises(UserError, match="unknown split"):
        ds.rows("holdout")


def test_hdf5_fixture_matches_real_layout(real_sample):
    """Our synthetic writer produces what the real files hold (same keys, dtypes, shapes)."""
    with h5py.File(real_sample / "sprites_7.mat") as f:
        assert f["sprites"].shape == (21, 1) and f["sprites"].dtype == h5py.ref_dtype
        assert f[f["sprites"][0, 0]].shape == (7, 10800)
        assert f["labels"].shape == (7, 1)


# -- the real data -------------------------------------------------------------------------------

def test_real_sample_prepare_matches_packed(tmp_path, capsys, real_sample, real_npz):
    out = tmp_path / "X.npz"
    code, _, err = run_cli(capsys, "data", "prepare", "--source", str(real_sample), "--out", str(out), "--quiet")
    assert code == 0, err
    got = load_packed(out, keys=("images", "masks"))
    assert got["character_ids"].tolist() == [0, 7, 25, 249, 306, 584]
    # Official file order is kept within each split (sprites60.npz keeps it too).
    assert sorted(got["train_ids"].tolist()) == [0, 306, 584]
    assert got["val_ids"].tolist() == [249] and got["test_ids"].tolist() == [7, 25]
    rows = got["character_ids"]
    with np.load(real_npz) as ref:
        for k in ("images", "masks", "attributes"):
            np.testing.assert_array_equal(got[k], ref[k][rows], err_msg=k)
        for k in ("animation", "frame", "animation_names"):
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        order = {c: i for i, c in enumerate(ref["train_ids"].tolist())}
        assert got["train_ids"].tolist() == sorted(got["train_ids"].tolist(), key=order.__getitem__)


def test_real_info(capsys, real_npz):
    code, out, _ = run_cli(capsys, "data", "info", "--data", str(real_npz))
    assert code == 0
    assert "characters  672" in out and "poses       178" in out
    assert "train 500 / val 72 / test 100" in out


@pytest.fixture(scope="session")
def real_ds(real_npz):
    return load_dataset(real_npz)


def test_real_pairs_share_character(real_ds, real_npz):
    g = torch.Generator().manual_seed(1)
    pb = real_ds.sample_pairs(256, g)
    assert pb.x1.shape == (256, 3, 60, 60)
    assert torch.equal(pb.character, pb.character)  # one label per pair by construction; check the pixels:
    imgs = real_ds.images
    assert torch.equal((imgs[pb.character, pb.pose1].permute(0, 3, 1, 2).float() / 255), pb.x1)
    assert torch.equal((imgs[pb.character, pb.pose2].permute(0, 3, 1, 2).float() / 255), pb.x2)
    # Each image of a pair is found among its character's 178 poses and no other character's.
    for j in range(8):
        c = int(pb.character[j])
        x2 = (pb.x2[j].permute(1, 2, 0) * 255).round().to(torch.uint8)
        matches = (imgs[:, :, ...] == x2).flatten(2).all(-1).nonzero()[:, 0].unique().tolist()
        assert c in matches
    train = set(real_ds.rows("train").tolist())
    assert set(pb.character.tolist()) <= train
    assert (pb.pose1 != pb.pose2).float().mean() > 0.9  # independent poses
