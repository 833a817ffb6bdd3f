"""Readers of the standard data files: correct files load exactly, every corrupt file is refused naming it."""
import gzip
import os
import pickle
import re

import numpy as np
import pytest
from conftest import cifar_batch, write_batch

from sparsecoding.data import DataFileError, UnsafePickleError, load_cifar10, load_mnist, load_stl10


def named(path):
    """pytest.raises(match=...) pattern for a message that names ``path``."""
    return re.escape(str(path))


def gz(path):
    """Gzip ``path`` into ``path.gz`` and remove the original."""
    with open(path, "rb") as f, gzip.open(str(path) + ".gz", "wb") as g:
        g.write(f.read())
    os.remove(path)
    return type(path)(str(path) + ".gz")


# --- MNIST (IDX) ----------------------------------------------------------------------------------------------------

def idx(path, arr, magic=None, payload=None):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = (0x0800 | arr.ndim) if magic is None else magic
    head = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in arr.shape)
    path.write_bytes(head + (arr.tobytes() if payload is None else payload))
    return path


def mnist(tmp_path, n_images=3, labels=(4, 9, 0)):
    imgs = np.random.default_rng(0).integers(0, 256, (n_images, 28, 28), dtype=np.uint8)
    xp = idx(tmp_path / "t10k-images-idx3-ubyte", imgs)
    yp = idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    return imgs, xp, yp


def test_mnist_reads_idx_files_plain_and_gzipped(tmp_path):
    imgs, xp, yp = mnist(tmp_path)
    X, y = load_mnist(tmp_path, train=False)
    assert X.shape == (3, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X[:, 0], imgs / 255.0, rtol=1e-6)
    assert list(y) == [4, 9, 0]
    gz(xp)
    gz(yp)
    X2, y2 = load_mnist(tmp_path, train=False)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_mnist(tmp_path / "nowhere")


@pytest.mark.parametrize("magic, message", [
    (0x12345678, "magic number 0x12345678"),   # not an IDX file at all
    (0x00000801, "magic number 0x00000801"),   # a label file where the images belong
    (0x00000B03, "data type 0x0B"),            # 16-bit IDX: valid IDX, but not MNIST's unsigned bytes
])
def test_mnist_wrong_magic_number_is_named(tmp_path, magic, message):
    _, xp, _ = mnist(tmp_path)
    idx(xp, np.zeros((3, 28, 28)), magic=magic)
    with pytest.raises(DataFileError, match=named(xp)) as e:
        load_mnist(tmp_path, train=False)
    assert message in str(e.value) and "0x00000803" in str(e.value)


def test_mnist_truncated_or_padded_payload_reports_byte_counts(tmp_path):
    imgs, xp, _ = mnist(tmp_path)
    idx(xp, imgs, payload=imgs.tobytes()[:-100])
    with pytest.raises(DataFileError, match=named(xp)) as e:
        load_mnist(tmp_path, train=False)
    message = str(e.value)
    assert "truncated" in message and f"{imgs.size} bytes" in message and f"found {imgs.size - 100}" in message
    idx(xp, imgs, payload=imgs.tobytes() + b"\0")
    with pytest.raises(DataFileError, match=f"{named(xp)}.*trailing.*found {imgs.size + 1}"):
        load_mnist(tmp_path, train=False)
    xp.write_bytes((0x0803).to_bytes(4, "big") + (3).to_bytes(4, "big"))  # header cut after one of three sizes
    with pytest.raises(DataFileError, match=f"{named(xp)}: truncated IDX header: expected 16 bytes, found 8"):
        load_mnist(tmp_path, train=False)
    xp.write_bytes(b"\0\0")
    with pytest.raises(DataFileError, match=named(xp)):
        load_mnist(tmp_path, train=False)


def test_mnist_image_and_label_counts_must_match(tmp_path):
    _, xp, yp = mnist(tmp_path, n_images=5, labels=(1, 2, 3))
    with pytest.raises(DataFileError, match=f"{named(xp)} holds 5 images but {named(yp)} holds 3 labels"):
        load_mnist(tmp_path, train=False)


def test_mnist_labels_outside_0_to_9_are_refused(tmp_path):
    _, _, yp = mnist(tmp_path, labels=(4, 10, 0))
    with pytest.raises(DataFileError, match=f"{named(yp)}: labels must lie in 0..9.*e.g. 10"):
        load_mnist(tmp_path, train=False)


def test_corrupt_gzip_is_named(tmp_path):
    _, xp, _ = mnist(tmp_path)
    xgz = gz(xp)
    xgz.write_bytes(xgz.read_bytes()[:-20])  # cut the compressed stream
    with pytest.raises(DataFileError, match=f"{named(xgz)}: corrupt or truncated gzip"):
        load_mnist(tmp_path, train=False)
    xgz.write_bytes(b"plain bytes, not gzip")
    with pytest.raises(DataFileError, match=f"{named(xgz)}: named .gz but is not a gzip file"):
        load_mnist(tmp_path, train=False)


# --- CIFAR-10 (python batches) --------------------------------------------------------------------------------------

def py2_style(d):
    """The batch as Python 2 pickled it: str keys as BINSTRING (bytes on load), numpy.core module names."""
    s = pickle.dumps({k.decode(): v for k, v in d.items() if k in (b"data", b"labels")}, protocol=2)
    for key in (b"data", b"labels"):  # BINUNICODE 'X' + 4-byte length -> SHORT_BINSTRING 'U' + 1-byte length
        s = s.replace(b"X" + len(key).to_bytes(4, "little") + key, b"U" + bytes([len(key)]) + key)
    return s.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def check_cifar(X, y, d):
    assert X.shape == (len(d[b"labels"]), 3, 32, 32) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X.reshape(len(X), -1), d[b"data"] / 255.0, rtol=1e-6)
    assert list(y) == d[b"labels"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_reads_batches_of_each_pickle_protocol(tmp_path, protocol):
    d = cifar_batch()
    write_batch(tmp_path, d, protocol=protocol)
    check_cifar(*load_cifar10(tmp_path, train=False), d)


def test_cifar_reads_python2_batches_str_keys_and_gzip(tmp_path):
    d = cifar_batch()
    path = write_batch(tmp_path, py2_style(d))
    assert b"numpy.core.multiarray" in path.read_bytes() and b"U\x04data" in path.read_bytes()
    check_cifar(*load_cifar10(tmp_path, train=False), d)
    write_batch(tmp_path, {k.decode(): v for k, v in d.items()}, protocol=4)  # re-saved by Python 3 with str keys
    check_cifar(*load_cifar10(tmp_path, train=False), d)
    gz(write_batch(tmp_path, d))  # only test_batch.gz is left
    assert not path.exists()
    check_cifar(*load_cifar10(tmp_path, train=False), d)


def test_cifar_train_concatenates_five_batches(tmp_path):
    batches = [cifar_batch(n=2, seed=i) for i in range(5)]
    for i, d in enumerate(batches, 1):
        write_batch(tmp_path, d, name=f"data_batch_{i}")
    X, y = load_cifar10(tmp_path, train=True)
    check_cifar(X, y, {b"data": np.concatenate([d[b"data"] for d in batches]),
                       b"labels": sum((d[b"labels"] for d in batches), [])})


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update({b"data": d[b"data"].astype(np.int64) + 200}), r"uint8 array of shape \(N, 3072\), got int64"),
    (lambda d: d.update({b"data": d[b"data"].astype(np.float32)}), "got float32"),
    (lambda d: d.update({b"data": d[b"data"][:, :3000]}), r"got uint8 array of shape \(4, 3000\)"),
    (lambda d: d.update({b"data": d[b"data"].tolist()}), "got list"),
    (lambda d: d.update({b"labels": d[b"labels"][:3]}), "4 images but b'labels' holds 3 labels"),
    (lambda d: d.update({b"labels": [0, 1, 10, 2]}), "labels must lie in 0..9"),
    (lambda d: d.update({b"labels": [0, 1, -1, 2]}), "labels must lie in 0..9"),
    (lambda d: d.update({b"labels": [0.5, 1, 2, 3]}), "list of ints"),
    (lambda d: d.pop(b"labels"), "needs the keys b'data' and b'labels'"),
], ids=["int64-data", "float-data", "short-rows", "list-data", "count-mismatch", "label-10", "label-minus-1",
        "float-label", "missing-key"])
def test_cifar_corrupt_batches_are_named(tmp_path, change, message):
    d = cifar_batch()
    change(d)
    path = write_batch(tmp_path, d)
    with pytest.raises(DataFileError, match=named(path)) as e:
        load_cifar10(tmp_path, train=False)
    assert message in str(e.value) or re.search(message, str(e.value)), str(e.value)


@pytest.mark.parametrize("content, message", [
    (pickle.dumps([1, 2, 3]), "a CIFAR-10 batch must be a pickled dict, got list"),
    (b"this is not a pickle", "not a readable CIFAR-10 python batch"),
    (pickle.dumps(cifar_batch())[:-50], "not a readable CIFAR-10 python batch"),  # truncated
], ids=["list", "garbage", "truncated"])
def test_cifar_unreadable_batches_are_named(tmp_path, content, message):
    path = write_batch(tmp_path, content)
    with pytest.raises(DataFileError, match=f"{named(path)}: {message}"):
        load_cifar10(tmp_path, train=False)


class _Payload:
    """Unpickling this calls ``func(*args)``: what a malicious batch would do."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("attack", ["open", "system", "nested"])
def test_cifar_malicious_pickle_runs_nothing(tmp_path, attack):
    marker = tmp_path / "marker"
    payload = {"open": _Payload(open, str(marker), "w"),
               "system": _Payload(os.system, f"touch '{marker}'"),
               "nested": {**cifar_batch(), b"labels": _Payload(open, str(marker), "w")}}[attack]
    path = write_batch(tmp_path, payload)
    # pickle records a function under its defining module: open is io.open, os.system is posix.system
    refused = f"{os.system.__module__}.system" if attack == "system" else f"{open.__module__}.open"
    with pytest.raises(UnsafePickleError, match=f"{named(path)}: refused to load global {re.escape(refused)}"):
        load_cifar10(tmp_path, train=False)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # also catchable as the pickle error it is
        load_cifar10(tmp_path, train=False)
    if attack == "open":  # the test is meaningful: a plain pickle.load would have run the payload
        with open(path, "rb") as f:
            pickle.load(f).close()
        assert marker.exists()


def test_cifar_only_latin1_codec_admitted(tmp_path):
    # protocol-2 bytes are rebuilt with _codecs.encode(text, 'latin1'); other codecs are not part of the format
    s = pickle.dumps({b"data": b"x"}, protocol=2)
    assert b"latin1" in s
    path = write_batch(tmp_path, s.replace(b"latin1", b"utf_16"))
    with pytest.raises(DataFileError, match=f"{named(path)}.*latin1"):
        load_cifar10(tmp_path, train=False)


# --- STL-10 (binary) ------------------------------------------------------------------------------------------------

def stl(tmp_path, split="train", n=2, labels=(3, 10)):
    folder = tmp_path / "stl10_binary"
    folder.mkdir(exist_ok=True)
    imgs = np.random.default_rng(1).integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
    xp = folder / f"{split}_X.bin"
    imgs.transpose(0, 1, 3, 2).tofile(xp)  # the files store each channel column-major
    yp = folder / f"{split}_y.bin"
    if labels is not None:
        np.asarray(labels, dtype=np.uint8).tofile(yp)
    return imgs, xp, yp


def test_stl10_reads_binary_files(tmp_path):
    imgs, xp, yp = stl(tmp_path)
    X, y = load_stl10(tmp_path, "train")
    assert X.shape == (2, 3, 96, 96) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X, imgs / 255.0, rtol=1e-6)
    assert list(y) == [2, 9]  # the files' 1..10 become 0..9
    gz(xp)
    gz(yp)
    X2, y2 = load_stl10(tmp_path, "train")
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)


def test_stl10_unlabeled_split_has_minus_one_labels(tmp_path):
    imgs, _, _ = stl(tmp_path, "unlabeled", n=1, labels=None)
    X, y = load_stl10(tmp_path, "unlabeled")
    np.testing.assert_allclose(X, imgs / 255.0, rtol=1e-6)
    assert list(y) == [-1]


def test_stl10_corrupt_files_are_named(tmp_path):
    _, xp, yp = stl(tmp_path, labels=(3, 0))
    with pytest.raises(DataFileError, match=f"{named(yp)}: labels must lie in 1..10.*e.g. 0"):
        load_stl10(tmp_path, "train")
    np.array([3, 11], np.uint8).tofile(yp)
    with pytest.raises(DataFileError, match="e.g. 11"):
        load_stl10(tmp_path, "train")
    np.array([3, 4, 5], np.uint8).tofile(yp)
    with pytest.raises(DataFileError, match=f"{named(xp)} holds 2 images but {named(yp)} holds 3 labels"):
        load_stl10(tmp_path, "train")
    os.remove(yp)
    with pytest.raises(FileNotFoundError, match=f"{named(xp)} has no label file: train_y.bin not found"):
        load_stl10(tmp_path, "train")
    xp.write_bytes(xp.read_bytes()[:-5])
    with pytest.raises(DataFileError, match=f"{named(xp)}: expected a whole number of 3x96x96 images "
                                            f"\\(27648 bytes each\\), found {2 * 27648 - 5} bytes"):
        load_stl10(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be"):
        load_stl10(tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_stl10(tmp_path, "test")
