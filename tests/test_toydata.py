"""finetuner.toydata: real Fashion-MNIST files, the session format, and the download cache
(tested against a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuner.data.relation import relation_matrix
from finetuner.toydata import generate_fashion
from finetuner.toydata import files as _files
from finetuner.toydata.fashion import CLASS_NAMES, MD5

T10K = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="module")
def fashion_root(data_dir: Path) -> Path:
    """The shared data folder, skipping when it lacks the Fashion-MNIST files."""
    if not all((data_dir / "fashion_mnist" / f).is_file() for f in MD5):
        pytest.skip(f"Fashion-MNIST files not found under {data_dir / 'fashion_mnist'}")
    return data_dir


@pytest.fixture(scope="module")
def testset(fashion_root: Path):
    return generate_fashion(is_testset=True, data_dir=fashion_root)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    """An empty download cache; no data folder or URL from the environment leaks in."""
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FINETUNER_DATA", raising=False)
    monkeypatch.delenv("FINETUNER_FASHION_URL", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def serve():
    """serve(folder) -> (base URL, list of requested paths): a threaded HTTP server on
    127.0.0.1 (free port) serving `folder`, shut down after the test."""
    servers = []

    def start(folder: Path):
        requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output clean
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        # a short poll interval so shutdown() at teardown is quick
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the real files ---------------------------------------------------------------------------


def test_testset_shapes_classes_and_range(testset):
    d = testset
    assert d.format == "class" and d.relevance is None
    assert isinstance(d.items, np.ndarray) and d.items.shape == (10000, 28, 28) and d.items.dtype == np.float32
    assert d.items.min() == 0.0 and d.items.max() == 1.0
    # raw bytes / 255: every value is a multiple of 1/255
    assert np.allclose(d.items[:50] * 255, np.round(d.items[:50] * 255), atol=1e-4)
    assert d.groups.dtype == np.int64
    assert np.bincount(d.groups).tolist() == [1000] * 10
    assert d.class_names == CLASS_NAMES and len(CLASS_NAMES) == 10
    assert d.class_names[d.groups[0]] == "Ankle boot"  # first test image, per the official files


def test_num_total_takes_the_first_items_and_clamps(fashion_root, testset):
    d = generate_fashion(123, is_testset=True, data_dir=fashion_root)
    assert len(d) == 123
    assert np.array_equal(d.items, testset.items[:123]) and np.array_equal(d.groups, testset.groups[:123])
    assert len(generate_fashion(10**9, is_testset=True, data_dir=fashion_root)) == 10000
    train = generate_fashion(500, data_dir=fashion_root)
    assert train.items.shape == (500, 28, 28) and set(train.groups.tolist()) == set(range(10))


def test_data_folder_from_environment(fashion_root, cache, monkeypatch, testset):
    monkeypatch.setenv("FINETUNER_DATA", str(fashion_root))
    d = generate_fashion(20, is_testset=True, download=False)
    assert np.array_equal(d.items, testset.items[:20])
    assert not cache.exists()  # read in place, nothing copied


def test_session_format_structure(fashion_root):
    n, num_pos, num_neg = 300, 4, 3
    d = generate_fashion(n, is_testset=True, data_dir=fashion_root, format="session", num_pos=num_pos, num_neg=num_neg)
    per = 1 + num_pos + num_neg
    assert d.format == "session" and d.items.shape == (n * per, 28, 28) and d.items.dtype == np.float32
    assert np.array_equal(d.groups, np.repeat(np.arange(n), per))
    assert np.array_equal(d.relevance, np.tile([1.0] * (1 + num_pos) + [0.0] * num_neg, n))

    # the class of every image, looked up by its pixels, to check who is relevant to whom
    source = generate_fashion(n, is_testset=True, data_dir=fashion_root)
    class_of = {img.tobytes(): int(c) for img, c in zip(source.items, source.groups)}
    classes = np.array([class_of[img.tobytes()] for img in d.items]).reshape(n, per)
    assert np.array_equal(d.items[::per], source.items)  # queries in order
    assert (classes[:, 1: 1 + num_pos] == classes[:, :1]).all()
    assert (classes[:, 1 + num_pos:] != classes[:, :1]).all()

    # and the shared relation rule reads it as: query ~ relevant 1, query ~ irrelevant 0
    rel = relation_matrix(torch.from_numpy(d.labels(np.arange(per))))
    assert rel[0, 1:].tolist() == [1.0] * num_pos + [0.0] * num_neg


def test_session_format_is_deterministic(fashion_root):
    kw = dict(is_testset=True, data_dir=fashion_root, format="session", num_pos=2, num_neg=2)
    a, b = generate_fashion(200, seed=1, **kw), generate_fashion(200, seed=1, **kw)
    c = generate_fashion(200, seed=2, **kw)
    assert np.array_equal(a.items, b.items)
    assert not np.array_equal(a.items, c.items)
    no_matches = generate_fashion(5, is_testset=True, data_dir=fashion_root, format="session", num_pos=0, num_neg=0)
    assert len(no_matches) == 5 and (no_matches.relevance == 1).all()


def test_channels_and_size(fashion_root, testset):
    d = generate_fashion(16, is_testset=True, data_dir=fashion_root, channels=3, size=(32, 40))
    assert d.items.shape == (16, 3, 32, 40) and d.items.dtype == np.float32
    assert np.array_equal(d.items[:, 0], d.items[:, 2])
    assert 0.0 <= d.items.min() and d.items.max() <= 1.0
    assert generate_fashion(4, is_testset=True, data_dir=fashion_root, size=56).items.shape == (4, 56, 56)
    # channels alone does not resample: the grey image, repeated
    d1 = generate_fashion(4, is_testset=True, data_dir=fashion_root, channels=1)
    assert d1.items.shape == (4, 1, 28, 28) and np.array_equal(d1.items[:, 0], testset.items[:4])
    s = generate_fashion(40, is_testset=True, data_dir=fashion_root, format="session", num_pos=1, num_neg=1,
                         channels=3, size=(8, 8))
    assert s.items.shape == (120, 3, 8, 8)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_total=0), "num_total"),
        (dict(num_total=2.5), "num_total"),
        (dict(format="pair"), "format"),
        (dict(num_pos=-1), "num_pos"),
        (dict(num_neg=-2), "num_neg"),
        (dict(channels=0), "channels"),
        (dict(size=(0, 28)), "size"),
        (dict(size=(1, 2, 3)), "size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name, cache):
    # checked before any file is looked for: this must not reach the network
    with pytest.raises(ValueError, match=rf"^{name}: expected .*got"):
        generate_fashion(**{"is_testset": True, **kwargs})


def test_session_needs_enough_items(fashion_root):
    with pytest.raises(ValueError, match="num_pos"):
        generate_fashion(1, is_testset=True, data_dir=fashion_root, format="session", num_pos=1, num_neg=0)
    with pytest.raises(ValueError, match="num_neg"):
        generate_fashion(1, is_testset=True, data_dir=fashion_root, format="session", num_pos=0, num_neg=1)


# --- the download cache, against a real local HTTP server --------------------------------------


def test_download_into_cache_then_reuse(fashion_root, cache, serve, tmp_path, testset):
    base, requests = serve(fashion_root)
    empty = tmp_path / "empty"
    empty.mkdir()
    d = generate_fashion(is_testset=True, data_dir=empty, base_url=f"{base}/fashion_mnist/")
    assert sorted(requests) == sorted(f"/fashion_mnist/{f}" for f in T10K)
    for f in T10K:
        assert _md5(cache / "fashion_mnist" / f) == MD5[f]
    assert sorted(p.name for p in (cache / "fashion_mnist").iterdir()) == sorted(T10K)  # no temp files left
    assert np.array_equal(d.items, testset.items) and np.array_equal(d.groups, testset.groups)

    requests.clear()
    again = generate_fashion(is_testset=True, data_dir=empty, base_url=f"{base}/fashion_mnist/")
    assert requests == [] and np.array_equal(again.items, testset.items)
    # and with downloads off, the cache alone is enough
    assert len(generate_fashion(10, is_testset=True, data_dir=empty, download=False)) == 10


def test_base_url_from_environment(fashion_root, cache, serve, monkeypatch):
    base, requests = serve(fashion_root / "fashion_mnist")
    monkeypatch.setenv("FINETUNER_FASHION_URL", base)  # no trailing slash: still joined right
    assert len(generate_fashion(10, is_testset=True)) == 10
    assert sorted(requests) == sorted(f"/{f}" for f in T10K)


def test_checksum_mismatch_raises_and_leaves_nothing(fashion_root, cache, serve, tmp_path):
    bad = tmp_path / "bad" / "fashion_mnist"
    bad.mkdir(parents=True)
    for f in T10K:
        data = bytearray((fashion_root / "fashion_mnist" / f).read_bytes())
        data[100] ^= 0xFF  # one flipped byte
        (bad / f).write_bytes(bytes(data))
    base, requests = serve(bad.parent)
    with pytest.raises(OSError, match="checksum mismatch.*expected md5"):
        generate_fashion(is_testset=True, base_url=f"{base}/fashion_mnist/")
    assert requests  # it did download
    assert not cache.exists() or not any(cache.rglob("*.gz*"))


def test_corrupt_cached_file_is_fetched_again(fashion_root, cache, serve):
    name = T10K[1]
    target = cache / "fashion_mnist" / name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    base, requests = serve(fashion_root)
    path = _files.fetch("fashion_mnist", name, f"{base}/fashion_mnist/{name}", md5=MD5[name])
    assert path == target and _md5(target) == MD5[name] and len(requests) == 1


def test_unreachable_url_gives_a_clear_error(cache, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/fashion_mnist/"
    with pytest.raises(OSError) as info:
        generate_fashion(is_testset=True, data_dir=tmp_path, base_url=url)
    msg = str(info.value)
    assert isinstance(info.value, _files.DownloadError)
    assert url in msg and "data_dir=" in msg and "FINETUNER_DATA" in msg
    assert not any(cache.rglob("*.gz*"))  # no partial file


def test_http_error_gives_a_clear_error(cache, serve, tmp_path):
    base, requests = serve(tmp_path)  # an empty folder: every file is a 404
    with pytest.raises(_files.DownloadError, match=r"could not download http://127\.0\.0\.1:\d+/t10k-.*404"):
        generate_fashion(is_testset=True, data_dir=tmp_path, base_url=base)
    assert len(requests) == 1 and not any(cache.rglob("*.gz*"))


def test_missing_file_with_download_off_names_where_it_looked(cache, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        generate_fashion(is_testset=True, data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path / "fashion_mnist") in msg and str(cache / "fashion_mnist") in msg


def test_roots(monkeypatch, tmp_path):
    monkeypatch.delenv("FINETUNER_DATA", raising=False)
    monkeypatch.delenv("FINETUNER_CACHE", raising=False)
    assert _files.data_root() is None
    assert _files.data_root(tmp_path) == tmp_path
    assert _files.cache_root() == Path.home() / ".cache" / "finetuner"
    monkeypatch.setenv("FINETUNER_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("FINETUNER_CACHE", str(tmp_path / "c"))
    assert _files.data_root() == tmp_path / "d" and _files.cache_root() == tmp_path / "c"
    assert _files.data_root(tmp_path / "x") == tmp_path / "x"  # the argument wins
