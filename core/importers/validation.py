"""Checks of a single row's parts: the caption text, the image path (never escaping the root), and the
image file itself (decodable in full, its size and content hash), the last in worker processes.

What can be normalised is: CR LF and lone CR line breaks in a caption become LF; an image path whose
Unicode form (NFC / NFD) differs from the name on disk finds that file. What cannot is refused with the
reason: control characters in a caption or an image path, names too long for the file system, links that
loop or leave the root, images that are unreadable, truncated, too large, or in a format other than the
common ones. An image is decoded by its content, so a file whose extension lies (a JPEG named `.png`) is
read as what it is."""
from __future__ import annotations

import errno
import io
import os
import re
import stat
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from PIL import Image, UnidentifiedImageError

from core.hashing import bytes_hash
from core.progress import Progress

MAX_CAPTION_CHARS = 10_000
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # 8192 × 8192; larger ones would be refused by Pillow's bomb guard anyway
MAX_IMAGE_BYTES = 256 * 1024 * 1024
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "MPO")
_REFUSED_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Unicode's control characters (category Cc: U+0000–U+001F, U+007F–U+009F) other than tab and line feed."""
_PATH_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Control characters refused in an image path: all of category Cc (a NUL cannot reach the file system at all)."""
_BATCH = 256
PROCESS_BELOW = 4 * _BATCH
"""Fewer images than this are checked in the importing process: starting the checking processes costs about a second."""
RECENT = 1 << 16
"""How many of the latest distinct image paths an import remembers as checked."""


@dataclass(frozen=True)
class Problem:
    """A refused row: the file, where in it, and why."""

    file: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file} {self.where}: {self.reason}"


@dataclass(frozen=True)
class ImageInfo:
    """What the import records of an image that decoded in full."""

    hash: str
    width: int
    height: int
    nbytes: int


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _first_not_utf8(text: str) -> str:
    """`byte 0xE9 at character 4` for the first undecodable byte (kept as a lone surrogate)."""
    for i, ch in enumerate(text):
        if 0xDC80 <= ord(ch) <= 0xDCFF:
            return f"byte 0x{ord(ch) - 0xDC00:02X} at character {i + 1}"
    return "a lone surrogate"


def normalise_caption(caption: Any) -> Any:
    """`caption` with CR LF and lone CR line breaks as LF; anything else as it is (never stripped)."""
    if isinstance(caption, str) and "\r" in caption:
        return caption.replace("\r\n", "\n").replace("\r", "\n")
    return caption


def caption_problem(caption: Any) -> str | None:
    """Why `caption` (normalised by `normalise_caption`) cannot be imported, or None."""
    if caption is None or (isinstance(caption, str) and not caption.strip()):
        return "empty caption"
    if not isinstance(caption, str):
        return f"caption is not text ({type(caption).__name__} {caption!r})"
    if _not_utf8(caption):
        return (f"caption holds bytes that are not UTF-8 ({_first_not_utf8(caption)}); "
                "save the file as UTF-8")
    if len(caption) > MAX_CAPTION_CHARS:
        return f"caption is {len(caption):,} characters, over the limit of {MAX_CAPTION_CHARS:,}"
    control = _REFUSED_CONTROL.search(caption)
    if control:
        return f"caption holds the control character U+{ord(control.group()):04X} at character {control.start() + 1}"
    return None


@dataclass
class PathMemo:
    """What one import learns of its folders, so that a million rows list and resolve each folder once."""

    listings: dict[Path, dict[str, list[str]]] = field(default_factory=dict)  # folder -> entries by NFC form
    real_dirs: dict[str, str] = field(default_factory=dict)                     # folder as written -> realpath


def _nfc_names(folder: Path, memo: PathMemo) -> dict[str, list[str]]:
    """The entries of `folder` by their NFC form, listed once per import."""
    if folder not in memo.listings:
        names: dict[str, list[str]] = {}
        for entry in folder.iterdir():
            names.setdefault(unicodedata.normalize("NFC", entry.name), []).append(entry.name)
        memo.listings[folder] = names
    return memo.listings[folder]


def _plain_file(root: Path, rel: str, memo: PathMemo) -> str | None:
    """The resolved path of `rel` when it is, as written, a regular file (not a link) in a folder that resolves
    inside `root`: the common case, decided with one `lstat` and a memo of folders. None: take the full check."""
    path = os.path.join(root, rel)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
    except (OSError, ValueError):  # ValueError: a NUL byte, which resolve_image_path refuses first
        return None
    folder, name = os.path.split(path)
    real = memo.real_dirs.get(folder)
    if real is None:
        real = memo.real_dirs[folder] = os.path.realpath(folder)
    top = str(root)
    if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
        return None
    return os.path.join(real, name)


def _on_disk(root: Path, rel: str, memo: PathMemo) -> str:
    """`rel` spelled as the names on disk: a part that does not exist as written is matched to the one
    entry of its folder with the same NFC form (data files and disks disagree on NFC / NFD)."""
    parts = PurePosixPath(rel).parts
    folder, found = root, []
    for part in parts:
        if not (folder / part).exists() and not (folder / part).is_symlink() and folder.is_dir():
            matches = _nfc_names(folder, memo).get(unicodedata.normalize("NFC", part), [])
            part = matches[0] if len(matches) == 1 else part
        found.append(part)
        folder = folder / part
    return PurePosixPath(*found).as_posix()


def normalise_path(raw: str) -> str:
    """An image path as it is stored: `/` between parts, `.` parts and repeated separators dropped
    (`./a.jpg`, `sub//a.jpg` and `sub\\a.jpg` are `a.jpg`, `sub/a.jpg`, `sub/a.jpg`). Readers key what they
    keep per image (COCO image ids, Karpathy fields) by it, so that a re-export finds it by the stored path."""
    return os.path.normpath(raw.replace("\\", "/")).replace(os.sep, "/")


def resolve_image_path(root: Path, raw: Any, memo: PathMemo | None = None) -> tuple[str, str] | str:
    """`(relative posix path, absolute path)` of an image under `root` (already resolved), or why not.

    Refuses absolute paths, paths that leave the root through `..`, links pointing outside it and links
    that loop; finds the file when only its Unicode form differs from the path as written. `memo` carries
    what one import learnt of its folders from row to row."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return "empty image path"
    if not isinstance(raw, str):
        return f"image path is not text ({raw!r})"
    if _not_utf8(raw):
        return "image path holds bytes that are not UTF-8"
    control = _PATH_CONTROL.search(raw)
    if control:
        return (f"image path holds the control character U+{ord(control.group()):04X} at character "
                f"{control.start() + 1}")
    if raw.startswith(("/", "\\")) or os.path.isabs(raw) or (len(raw) > 1 and raw[1] == ":"):
        return f"image path {raw!r} is absolute; paths must be relative to the images root {root}"
    rel = normalise_path(raw)
    if rel == ".." or rel.startswith("../"):
        return f"image path {raw!r} escapes the images root {root}"
    memo = PathMemo() if memo is None else memo
    plain = _plain_file(root, rel, memo)
    if plain is not None:
        return rel, plain
    try:
        rel = _on_disk(root, rel, memo)
        target = (root / rel).resolve(strict=True)
    except FileNotFoundError:
        if (root / rel).is_symlink():
            return f"image {raw!r} is a link to a file that does not exist"
        return f"image {raw!r} not found under {root}"
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError up to Python 3.12, OSError ELOOP after;
        # another OSError: a name too long for the file system (ENAMETOOLONG), a folder that cannot be listed
        if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
            return f"image path {raw!r} is a link that loops (it leads back to itself)"
        return f"image {raw!r} cannot be reached ({getattr(exc, 'strerror', None) or exc})"
    if not target.is_relative_to(root):
        return f"image path {raw!r} escapes the images root {root} (a link to {target})"
    if not target.is_file():
        return f"image {raw!r} not found under {root} (it is a folder)" if target.is_dir() else \
            f"image {raw!r} is not a regular file"
    return rel, str(target)


def check_image(path: Path) -> ImageInfo | str:
    """Read, verify and fully decode one image (a full load catches truncation); its info or why not."""
    try:
        nbytes = path.stat().st_size
        if nbytes > MAX_IMAGE_BYTES:
            return f"image {path.name} is {nbytes:,} bytes, over the limit of {MAX_IMAGE_BYTES:,}"
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read image {path.name} ({exc.strerror or exc})"
    if not data:
        return f"image {path.name} is an empty file"
    try:
        with Image.open(io.BytesIO(data)) as im:
            kind, (width, height) = im.format, im.size
            if kind not in IMAGE_FORMATS:
                return f"image {path.name} is in the {kind} format; import {', '.join(IMAGE_FORMATS)} images"
            if width * height > MAX_IMAGE_PIXELS:
                return (f"image {path.name} is {width:,}×{height:,} pixels, over the limit of "
                        f"{MAX_IMAGE_PIXELS:,} pixels")
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:  # no format's opener took it; its message names the BytesIO object, not the file
        return f"unreadable or truncated image {path.name} (not an image PIL can read)"
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, struct.error…)
        return f"unreadable or truncated image {path.name} ({type(exc).__name__}: {exc})"
    return ImageInfo(bytes_hash(data), int(width), int(height), len(data))


def check_batch(paths: list[str]) -> list[ImageInfo | str]:
    """`check_image` of each path: one task of the image-checking processes."""
    return [check_image(Path(path)) for path in paths]


def check_images(paths: Iterable[str | None], progress: Progress, total: int,
                 checked: Callable[[list[str], list[ImageInfo | str]], None], workers: int = 2) -> None:
    """`check_image` for the paths of `paths`, in batches between which a cancel takes effect; each batch's
    paths and results go to `checked` in order.

    `paths` is consumed lazily (the importer yields each row's image as it resolves it, so resolving and checking
    overlap; None for a row with no image to check); `total` is about how many it will yield, for the progress.
    A path repeated within the last `RECENT` distinct ones is checked once (a COCO image's captions are
    neighbours); memory stays bounded, so a path repeated further apart is checked again, with the same result.
    With `workers` > 1 and `total` of at least `PROCESS_BELOW` the batches run in that many processes
    (`core.importers.check_worker`): PIL's per-image work holds the GIL, so threads gave nothing over one."""
    progress.start("checking images", total, message=f"checking the images of about {total:,} rows")
    seen: set[str] = set()
    order: deque[str] = deque()

    def batches() -> Iterator[tuple[list[str], int]]:
        batch, rows = [], 0
        for path in paths:
            rows += 1
            if path is not None and path not in seen:
                seen.add(path)
                order.append(path)
                if len(order) > RECENT:
                    seen.discard(order.popleft())
                batch.append(path)
            if len(batch) == _BATCH:
                yield batch, rows
                batch, rows = [], 0
        if rows:
            yield batch, rows

    def done(batch: list[str], rows: int, results: list[ImageInfo | str]) -> None:
        checked(batch, results)
        progress.advance(rows)

    if workers <= 1 or total < PROCESS_BELOW:
        for batch, rows in batches():
            progress.check()
            done(batch, rows, check_batch(batch))
        return
    from core.importers.check_worker import CheckerProcesses
    with CheckerProcesses(workers) as pool:
        waiting: deque[tuple[list[str], int]] = deque()
        for batch, rows in batches():
            progress.check()
            pool.submit(batch)
            waiting.append((batch, rows))
            if len(pool) > 2 * workers:          # a bounded window: a cancel waits for a few batches only
                done(*waiting.popleft(), pool.next_result())
        while len(pool):
            progress.check()
            done(*waiting.popleft(), pool.next_result())
