"""Decoding on every core into a memory-mapped cache (train/decode.py, archive.py, images.py): the same bytes,
messages and batches as decoding in one process into memory."""
import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from testdata import CLASSES, write_folder
from edgekit.errors import EdgeError
from edgekit.train import archive, decode
from edgekit.train.data import load_dataset, read_unlabeled
from edgekit.train.images import ImageRows, open_npy
from edgekit_runtime import load_rgb, resize_rgb


@pytest.fixture
def parallel(monkeypatch):
    """Worker processes even for a handful of images, a few per chunk (cut by count, and for an archive by its
    members' bytes too) so that both workers get several."""
    monkeypatch.setattr(decode, "MIN_PARALLEL_SECONDS", 0)
    monkeypatch.setattr(decode, "CHUNK", 5)
    monkeypatch.setattr(decode, "CHUNK_BYTES", 3000)

    def load(path, workers, **kw):
        monkeypatch.setenv(decode.WORKERS_ENV, str(workers))
        return load_dataset(str(path), kw.pop("target", (32, 32)), use_cache=False, **kw)
    return load


def _with_bad_files(root):
    (root / "train" / "blue" / "0001.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    good = io.BytesIO()
    Image.new("RGB", (32, 32)).save(good, "JPEG")
    (root / "train" / "green" / "0002.jpg").write_bytes(good.getvalue()[:60])
    (root / "test" / "red" / "0000.png").write_bytes(b"not a png either")
    return root


def _tar(root, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    return path


def _same(a, b):
    assert a.data_hash == b.data_hash and a.class_names == b.class_names
    assert a.bad_files == b.bad_files
    for name in ("train", "val", "test"):
        sa, sb = getattr(a, name), getattr(b, name)
        np.testing.assert_array_equal(sa.y, sb.y)
        xa, xb = np.asarray(sa.x), np.asarray(sb.x)
        assert xa.shape == xb.shape and xa.dtype == xb.dtype == np.uint8
        assert xa.tobytes() == xb.tobytes()


@pytest.mark.parametrize("as_tar", [False, True])
def test_parallel_decode_is_byte_identical_with_bad_files(tmp_path, parallel, as_tar):
    root = _with_bad_files(write_folder(tmp_path / "d", per_class_train=12, per_class_test=4))
    src = _tar(root, tmp_path / "d.tar.gz") if as_tar else root
    one = parallel(src, 1, skip_bad=True)
    two = parallel(src, 2, skip_bad=True)
    _same(one, two)
    # in the order the files were found (_same: as one process gives them)
    assert sorted(b.split(":")[-2][-8:] for b in one.bad_files) == ["0000.png", "0001.jpg", "0002.jpg"]
    messages = []
    for workers in (1, 2):
        with pytest.raises(EdgeError, match=r"3 unreadable image\(s\).*--skip-bad") as err:
            parallel(src, workers)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_mixed_sizes_are_resized_as_before(tmp_path, parallel):
    """Images smaller than the input keep their size only when they all share it; mixed, all go to the input."""
    root = write_folder(tmp_path / "d", per_class_train=6, per_class_test=2, size=20)
    rng = np.random.default_rng(3)
    odd = {"train/red/0100.png": 24, "train/blue/0101.jpg": 48, "train/green/0102.png": 32}
    for rel, side in odd.items():
        Image.fromarray(rng.integers(0, 255, (side, side + 4, 3), np.uint8)).save(root / rel)
    one = parallel(root, 1, val_fraction=0.2)
    two = parallel(root, 2, val_fraction=0.2)
    _same(one, two)
    assert one.train.x.shape[1:] == (32, 32, 3)
    # what the in-memory decoder did: decode, keep the size if not larger, then resize every odd one
    small = root / "train" / "red" / "0000.jpg"
    arr = np.asarray(load_rgb(small.read_bytes(), target_size=(32, 32)))
    want = resize_rgb(Image.fromarray(arr), (32, 32))
    rows = np.concatenate([np.asarray(one.train.x), np.asarray(one.val.x)])
    assert any(np.array_equal(r, want) for r in rows)
    # the test split is all 20 px: it keeps its size
    assert one.test.x.shape[1:] == (20, 20, 3)


def test_unlabeled_images_decode_in_parallel_too(tmp_path, parallel, monkeypatch):
    root = _with_bad_files(write_folder(tmp_path / "d", per_class_train=8, per_class_test=2))
    monkeypatch.setenv(decode.WORKERS_ENV, "1")
    one = read_unlabeled(str(root), (32, 32))
    monkeypatch.setenv(decode.WORKERS_ENV, "2")
    two = read_unlabeled(str(root), (32, 32))
    assert one.data_hash == two.data_hash and one.bad_files == two.bad_files and len(one.bad_files) == 3
    assert np.asarray(one.test.x).tobytes() == np.asarray(two.test.x).tobytes()
    assert len(one.val.x) == 0 and one.val.x.shape[1:] == (32, 32, 3)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_worker_count_must_be_a_positive_number(monkeypatch, value):
    monkeypatch.setenv(decode.WORKERS_ENV, value)
    with pytest.raises(EdgeError, match=decode.WORKERS_ENV):
        decode.worker_count()
    monkeypatch.setenv(decode.WORKERS_ENV, "3")
    assert decode.worker_count() == 3


@pytest.mark.parametrize("fmt, mode", [(tarfile.USTAR_FORMAT, "w"), (tarfile.GNU_FORMAT, "w:gz"),
                                       (tarfile.PAX_FORMAT, "w:bz2"), (tarfile.USTAR_FORMAT, "w:xz")])
def test_archive_index_matches_tarfile(tmp_path, fmt, mode):
    """Long names (a ustar prefix; GNU and pax long-name headers, which go through tarfile), links, dirs."""
    root = tmp_path / "src"
    deep = root / "train" / ("d" * 60) / ("e" * 50)
    deep.mkdir(parents=True)
    (root / "train" / "a.jpg").write_bytes(b"a" * 700)
    (deep / "b.jpg").write_bytes(b"b" * 1)
    (root / "empty.jpg").write_bytes(b"")
    (root / "link.jpg").symlink_to("train/a.jpg")
    path = tmp_path / "a.tar"
    with tarfile.open(path, mode, format=fmt) as tar:
        tar.add(root, arcname=".")
    got = archive.members(str(path), lambda name: name.endswith("a.jpg"))
    with tarfile.open(path) as tar:
        want = [(m.name, m.offset_data, m.size) for m in tar if m.isfile()]
        blob = tar.extractfile("./train/a.jpg").read()
    assert [(m.name, m.offset, m.size) for m in got] == want
    assert [m.blob for m in got if m.blob is not None] == [blob]
    with archive.open_stream(str(path)) as stream:
        m = next(m for m in got if m.name.endswith("b.jpg"))
        stream.seek(m.offset)
        assert stream.read(m.size) == b"b"


def test_truncated_archive_is_refused(tmp_path, tiny_tar):
    cut = tmp_path / "cut.tar"
    with archive.open_stream(str(tiny_tar)) as stream:
        cut.write_bytes(stream.read()[:5000])
    with pytest.raises(EdgeError, match="truncated or corrupt"):
        load_dataset(str(cut), (32, 32), use_cache=False)


def test_rows_read_like_an_array(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (50, 4, 5, 3), np.uint8)
    np.save(tmp_path / "x.npy", x)
    full = open_npy(tmp_path / "x.npy")
    pick = rng.permutation(50)[:30]
    view = full.take(pick)
    ref = x[pick]
    assert view.shape == ref.shape and view.dtype == np.uint8 and len(view) == 30
    for key in (3, -1, slice(2, 9), slice(None, None, -3), np.array([5, 1, 1, 29]), rng.random(30) < 0.5,
                [4, 2], (slice(None), slice(None), slice(None, None, -1)), (2, 1), (..., 0), (slice(3, 1, -1), 0)):
        np.testing.assert_array_equal(view[key], ref[key])
    np.testing.assert_array_equal(view.take([3, 0]).take([1]), ref[[0]])
    np.testing.assert_array_equal(np.asarray(view), ref)
    np.testing.assert_array_equal(np.stack(list(view)), ref)
    np.testing.assert_array_equal(ImageRows(x)[[-2]], x[[-2]])
    with pytest.raises(IndexError):
        view[[30]]


def test_memory_does_not_grow_with_the_file(tmp_path, monkeypatch):
    """Reading every row of a mapped file larger than RELEASE_BYTES leaves at most about that much resident."""
    import edgekit.train.images as images

    def resident_file_kb():
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        pytest.skip("no RssFile in /proc/self/status")

    monkeypatch.setattr(images, "RELEASE_BYTES", 4 << 20)
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, (1024, 128, 128, 3))  # 48 MB
    x[:] = 7
    del x
    rows = open_npy(tmp_path / "x.npy")
    before = resident_file_kb()
    order = np.random.default_rng(0).permutation(len(rows))
    for s in range(0, len(rows), 64):
        assert rows[order[s:s + 64]].max() == 7
    assert resident_file_kb() - before < 16 << 10


def test_cache_is_memory_mapped_and_splits_are_row_numbers(tmp_path, cache_dir):
    root = write_folder(tmp_path / "d", per_class_train=8, per_class_test=2)
    first = load_dataset(str(root), (32, 32), limit_per_class=6)
    again = load_dataset(str(root), (32, 32), limit_per_class=6)
    assert (first.cache_hit, again.cache_hit) == (False, True)
    for d in (first, again):
        assert isinstance(d.train.x, ImageRows) and d.train.x.index is not None
        assert d.train.x.base.shape[0] == 8 * len(CLASSES)   # the whole decoded train split, not a copy
        assert not d.train.x.base.flags.writeable
    np.testing.assert_array_equal(np.asarray(first.train.x), np.asarray(again.train.x))
    assert not list(cache_dir.glob("decoded/.tmp-*"))


def test_an_entry_written_by_np_save_still_loads(tmp_path, cache_dir):
    """Entries of the in-memory decoder (np.save of whole arrays) are read, not decoded again."""
    root = write_folder(tmp_path / "d", per_class_train=4, per_class_test=1)
    first = load_dataset(str(root), (32, 32))
    entry = next((cache_dir / "decoded").iterdir())
    for name in ("xtr", "xte"):
        np.save(entry / f"{name}.npy", np.load(entry / f"{name}.npy"))
    again = load_dataset(str(root), (32, 32))
    assert again.cache_hit
    np.testing.assert_array_equal(np.asarray(first.train.x), np.asarray(again.train.x))


@pytest.mark.tf
def test_batches_from_the_mapped_cache_are_the_batches_from_memory(tiny_folder):
    """The same seed gives the same shuffled, augmented batches from rows of the memory-mapped cache as from an
    array in memory (what the splits were before)."""
    from edgekit.train.augment import parse_policy
    from edgekit.train.pipeline import make_dataset
    from edgekit_runtime import PreprocessSpec

    data = load_dataset(str(tiny_folder), (32, 32), seed=7)
    assert isinstance(data.train.x, ImageRows)
    spec = PreprocessSpec(40, 40)
    batches = []
    for x in (data.train.x, np.asarray(data.train.x)):
        ds = make_dataset(x, data.train.y, spec, 8, num_classes=3, shuffle=True, augment=parse_policy("fast"),
                          seed=7, start_epoch=1)
        batches.append([(a.numpy(), b.numpy()) for a, b in ds.repeat(2).take(10)])
    for (xa, ya), (xb, yb) in zip(*batches):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_a_worker_error_is_raised_here_and_a_lost_worker_is_named():
    from edgekit.train import pool
    job = ([(0, "gone.jpg", "x", 0, ("file", "/nonexistent/gone.jpg"))], (8, 8), {}, "/nonexistent")
    with pytest.raises(FileNotFoundError):
        list(pool.results("edgekit.train.decode:decode_chunk", [job], 2))
    with pytest.raises(pool.WorkerStopped, match="exit status 3"):
        list(pool.results("os:_exit", [3, 3], 2))


def test_a_disk_too_small_for_the_cache_is_one_sentence(tmp_path, cache_dir, monkeypatch):
    from collections import namedtuple
    root = write_folder(tmp_path / "d", per_class_train=4, per_class_test=1)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(decode.shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 10 << 20))
    with pytest.raises(EdgeError, match=r"^the decoded images \(15 at up to 32x32\) need 0\.0 MB on disk and .* has "
                                        r"10\.5 MB free: free some space, or point EDGE_CACHE_DIR at a larger disk\.$"):
        load_dataset(str(root), (32, 32))
    assert not any((cache_dir / "decoded").iterdir())


@pytest.mark.tf
def test_validation_reads_only_its_rows_of_test_and_val(tiny_folder):
    from edgekit.convert.calibration import validation_images
    from edgekit_runtime import PreprocessSpec
    data = load_dataset(str(tiny_folder), (32, 32), seed=7)
    n = len(data.test.y) + 5   # more than the test split: drawn from test and val together
    got = validation_images(data, n, 3, PreprocessSpec(32, 32), CLASSES)
    x = np.concatenate([np.asarray(data.test.x), np.asarray(data.val.x)])   # what it did before, in memory
    y = np.concatenate([data.test.y, data.val.y])
    from edgekit.helpers import balanced_indices
    idx = np.sort(balanced_indices(y, n, 4))
    assert got.split == "test+val"
    np.testing.assert_array_equal(got.x, x[idx])
    np.testing.assert_array_equal(got.y, y[idx])
