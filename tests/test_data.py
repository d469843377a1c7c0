import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from testdata import CLASSES, write_folder
from edgekit.errors import EdgeError
from edgekit.train.data import load_dataset


def test_folder_and_tar_give_the_same_data(tiny_folder, tiny_tar):
    a = load_dataset(str(tiny_folder), (32, 32), seed=1)
    b = load_dataset(str(tiny_tar), (32, 32), seed=1)
    assert a.class_names == b.class_names == sorted(CLASSES)
    assert a.data_hash == b.data_hash
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    assert a.train.x.dtype == np.uint8 and a.train.x.shape[1:] == (32, 32, 3)


def test_split_is_stratified_seeded_and_disjoint(tiny_folder):
    a = load_dataset(str(tiny_folder), (32, 32), seed=3, val_fraction=0.25)
    again = load_dataset(str(tiny_folder), (32, 32), seed=3, val_fraction=0.25)
    other = load_dataset(str(tiny_folder), (32, 32), seed=4, val_fraction=0.25)
    assert a.counts()["val"] == {c: 4 for c in CLASSES}
    assert a.counts()["train"] == {c: 12 for c in CLASSES}
    np.testing.assert_array_equal(a.val.x, again.val.x)
    assert not np.array_equal(a.val.x, other.val.x)
    train_rows = {r.tobytes() for r in a.train.x}
    assert not any(r.tobytes() in train_rows for r in a.val.x)


def test_limit_per_class_changes_the_hash(tiny_folder):
    full = load_dataset(str(tiny_folder), (32, 32))
    capped = load_dataset(str(tiny_folder), (32, 32), limit_per_class=8)
    assert sum(capped.counts()["train"].values()) + sum(capped.counts()["val"].values()) == 24
    assert capped.data_hash != full.data_hash


def test_odd_image_modes_are_converted(tmp_path):
    root = write_folder(tmp_path / "d", per_class_train=3, per_class_test=1)
    odd = root / "train" / "red"
    Image.new("L", (32, 32), 128).save(odd / "gray.png")
    Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(odd / "rgba.png")
    Image.new("RGB", (32, 32), (9, 9, 9)).convert("P").save(odd / "palette.png")
    Image.fromarray(np.full((32, 32), 65535, np.uint16)).save(odd / "sixteen.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(odd / "cmyk.jpg")
    data = load_dataset(str(root), (32, 32), val_fraction=0.1)
    assert data.counts()["train"]["red"] + data.counts()["val"]["red"] == 8
    x = np.concatenate([data.train.x, data.val.x])
    assert any((img == 255).all() for img in x)  # transparent RGBA over white, 16-bit white stays white


def test_no_test_folder_holds_out_a_test_split(tmp_path):
    root = write_folder(tmp_path / "d", per_class_train=10, per_class_test=0)
    for c in CLASSES:
        (root / "test" / c).rmdir()
    data = load_dataset(str(root), (32, 32), test_fraction=0.2)
    assert data.counts()["test"] == {c: 2 for c in CLASSES}


def test_larger_images_are_resized_with_the_runtime(tmp_path):
    root = write_folder(tmp_path / "d", per_class_train=3, per_class_test=1, size=80)
    data = load_dataset(str(root), (48, 48))
    assert data.train.x.shape[1:] == (48, 48, 3)


def test_corrupt_image_is_named_and_skip_bad_goes_on(tmp_path):
    root = write_folder(tmp_path / "d", per_class_train=4, per_class_test=1)
    (root / "train" / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    good = io.BytesIO()
    Image.new("RGB", (32, 32)).save(good, "JPEG")
    (root / "train" / "blue" / "truncated.jpg").write_bytes(good.getvalue()[:60])
    with pytest.raises(EdgeError, match=r"2 unreadable image\(s\).*broken\.jpg.*--skip-bad"):
        load_dataset(str(root), (32, 32))
    data = load_dataset(str(root), (32, 32), skip_bad=True)
    assert len(data.bad_files) == 2
    assert data.counts()["train"]["blue"] + data.counts()["val"]["blue"] == 4


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "no images found"),
    (lambda p: (p.parent.mkdir(exist_ok=True), p.write_text("x"), p)[2], "neither a folder nor"),
])
def test_bad_data_paths(tmp_path, make, message):
    with pytest.raises(EdgeError, match=message):
        load_dataset(str(make(tmp_path / "data")), (32, 32))


def test_one_class_is_refused(tmp_path):
    d = tmp_path / "one" / "train" / "cat"
    d.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(d / f"{i}.png")
    with pytest.raises(EdgeError, match="at least two"):
        load_dataset(str(tmp_path / "one"), (32, 32))


def test_truncated_archive(tmp_path, tiny_tar):
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(tiny_tar.read_bytes()[: tiny_tar.stat().st_size // 2])
    with pytest.raises(EdgeError):
        load_dataset(str(bad), (32, 32))
    assert tarfile.is_tarfile(tiny_tar)


def test_cifar10_env_points_at_a_local_copy(tiny_tar, monkeypatch):
    monkeypatch.setenv("EDGE_CIFAR10", str(tiny_tar))
    data = load_dataset("cifar10", (32, 32))
    assert data.source == str(tiny_tar) and data.class_names == sorted(CLASSES)


def test_decoded_images_are_cached_until_a_file_changes(tmp_path, cache_dir):
    root = write_folder(tmp_path / "d", per_class_train=4, per_class_test=1)
    first = load_dataset(str(root), (32, 32))
    second = load_dataset(str(root), (32, 32))
    assert (first.cache_hit, second.cache_hit) == (False, True)
    np.testing.assert_array_equal(first.train.x, second.train.x)
    assert first.data_hash == second.data_hash
    make = Image.new("RGB", (32, 32), (1, 2, 3))
    make.save(root / "train" / "red" / "0000.jpg")
    third = load_dataset(str(root), (32, 32))
    assert not third.cache_hit and third.data_hash != first.data_hash
    assert not load_dataset(str(root), (32, 32), use_cache=False).cache_hit
