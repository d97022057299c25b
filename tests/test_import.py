"""Import round trips: every format in, read back through the store, every image, caption and pair
accounted for and caption text byte-identical (accents, CJK, emoji, RTL, newlines)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.errors import ConcordError
from core.hashing import file_hash
from core.importers import ColumnNames, import_dataset

REPO = Path(__file__).resolve().parent.parent
CAPTIONS = ["Café crème à côté", "一只猫坐在垫子上", "dog 🐕 on a 🛹", "قطة على السجادة",
            'a "quoted", comma\nand newline',
            "  leading and trailing spaces  "]


def make_images(folder: Path, n: int, sub: str = "") -> list[str]:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rel = f"{sub}/img{i}.png" if sub else f"img{i}.png"
        Image.new("RGB", (4 + i, 3), (40 * i, 10, 200)).save(folder / rel)
        names.append(rel)
    return names


def rows(folder: Path) -> list[dict]:
    """Six pairs over four images: img0 has two captions, three in train, two in val, one default split."""
    imgs = make_images(folder, 4)
    spec = [(0, "train"), (0, "train"), (1, "val"), (2, "val"), (3, "train"), (3, None)]
    return [{"image": imgs[i], "caption": CAPTIONS[n], "split": s, "pair_id": f"p{n}", "extra": n}
            for n, (i, s) in enumerate(spec)]


def assert_round_trip(store, report, folder: Path, expected: list[dict], fmt: str) -> None:
    ds = store.dataset(report.name)
    assert ds.source_format == fmt and report.format == fmt
    assert Path(ds.source_path).is_absolute() and ds.root == str(folder.resolve())
    pairs = store.pairs_frame(ds.id)
    got = sorted(zip(pairs["key"], pairs["image_path"], pairs["caption"], pairs["split"]))
    want = sorted((r["pair_id"], r["image"], r["caption"], r["split"] or "train") for r in expected)
    assert got == want
    for key, caption in zip(pairs["key"], pairs["caption"]):
        assert caption.encode("utf-8") == next(r["caption"] for r in expected if r["pair_id"] == key).encode("utf-8")
    images = store.images_frame(ds.id)
    assert sorted(images["path"]) == sorted({r["image"] for r in expected})
    for path, h, w in zip(images["path"], images["hash"], images["width"]):
        assert h == file_hash(folder / path) and w == Image.open(folder / path).size[0]
    assert (report.images, report.captions, report.pairs) == (4, 6, 6)
    assert report.splits == {"train": {"images": 2, "captions": 4, "pairs": 4},
                             "val": {"images": 2, "captions": 2, "pairs": 2}}


def write_csv(path: Path, data: list[dict]) -> None:
    import csv
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["pair_id", "image", "caption", "split", "extra"])
        w.writeheader()
        w.writerows([{**r, "split": r["split"] or ""} for r in data])


def test_csv_round_trip(store, tmp_path: Path) -> None:
    data = rows(tmp_path)
    write_csv(tmp_path / "pairs.csv", data)
    report = import_dataset(store, tmp_path / "pairs.csv", "c")
    assert_round_trip(store, report, tmp_path, data, "csv")
    assert store.dataset("c").info["columns"] == {"image": "image", "caption": "caption", "split": "split",
                                                  "id": "pair_id"}


def test_jsonl_round_trip_with_renamed_columns(store, tmp_path: Path) -> None:
    data = rows(tmp_path)
    lines = [json.dumps({"file": r["image"], "text": r["caption"], "part": r["split"], "uid": r["pair_id"]},
                        ensure_ascii=n % 2 == 0) for n, r in enumerate(data)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    report = import_dataset(store, tmp_path / "pairs.jsonl", "j",
                            columns=ColumnNames(image="file", caption="text", split="part", id="uid"))
    assert_round_trip(store, report, tmp_path, data, "jsonl")


def test_parquet_round_trip(store, tmp_path: Path) -> None:
    data = rows(tmp_path)
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "pairs.parquet")
    report = import_dataset(store, tmp_path / "pairs.parquet", "p")
    assert_round_trip(store, report, tmp_path, data, "parquet")


def test_coco_round_trip_split_from_file_names(store, tmp_path: Path) -> None:
    imgs = make_images(tmp_path / "imgs", 3)
    names = ["COCO_train2014_1.png", "COCO_val2014_2.png", "COCO_val2014_3.png"]
    for old, new in zip(imgs, names):
        (tmp_path / "imgs" / old).rename(tmp_path / "imgs" / new)
    coco = {"info": {"year": 2014}, "licenses": [],
            "images": [{"id": 10 + i, "file_name": n} for i, n in enumerate(names)] + [{"id": 99, "file_name": "x"}],
            "annotations": [{"id": 500 + n, "image_id": 10 + n % 3, "caption": c} for n, c in enumerate(CAPTIONS)]}
    (tmp_path / "captions_train2014.json").write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
    report = import_dataset(store, tmp_path / "captions_train2014.json", "coco", images_root=tmp_path / "imgs")
    expected = [{"pair_id": str(500 + n), "image": names[n % 3], "caption": c,
                 "split": "train" if n % 3 == 0 else "val"} for n, c in enumerate(CAPTIONS)]
    ds = store.dataset("coco")
    pairs = store.pairs_frame(ds.id)
    assert sorted(zip(pairs["key"], pairs["image_path"], pairs["caption"], pairs["split"])) == sorted(
        (r["pair_id"], r["image"], r["caption"], r["split"]) for r in expected)
    assert (report.format, report.images, report.pairs) == ("coco", 3, 6)
    assert ds.info["coco"]["image_ids"] == {"COCO_train2014_1.png": 10, "COCO_val2014_2.png": 11,
                                            "COCO_val2014_3.png": 12, "x": 99}
    forced = import_dataset(store, tmp_path / "captions_train2014.json", "coco2", images_root=tmp_path / "imgs",
                            split="test")
    assert forced.splits == {"test": {"images": 3, "captions": 6, "pairs": 6}}


def test_karpathy_round_trip_restval_is_train(store, tmp_path: Path) -> None:
    make_images(tmp_path / "train2014", 2)
    make_images(tmp_path / "val2014", 1)
    images = [
        {"filepath": "train2014", "filename": "img0.png", "imgid": 0, "cocoid": 7, "split": "restval",
         "sentences": [{"raw": CAPTIONS[0], "sentid": 0}, {"raw": CAPTIONS[1], "sentid": 1}]},
        {"filepath": "train2014", "filename": "img1.png", "imgid": 1, "split": "train",
         "sentences": [{"raw": CAPTIONS[2], "sentid": 2}, {"raw": CAPTIONS[3], "sentid": 3}]},
        {"filepath": "val2014", "filename": "img0.png", "imgid": 2, "split": "test",
         "sentences": [{"raw": CAPTIONS[4], "sentid": 4}, {"raw": CAPTIONS[5], "sentid": 5}]},
    ]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}), encoding="utf-8")
    report = import_dataset(store, tmp_path / "dataset_coco.json", "k")
    pairs = store.pairs_frame(report.dataset_id)
    assert sorted(zip(pairs["key"], pairs["image_path"], pairs["caption"], pairs["split"])) == [
        ("0", "train2014/img0.png", CAPTIONS[0], "train"), ("1", "train2014/img0.png", CAPTIONS[1], "train"),
        ("2", "train2014/img1.png", CAPTIONS[2], "train"), ("3", "train2014/img1.png", CAPTIONS[3], "train"),
        ("4", "val2014/img0.png", CAPTIONS[4], "test"), ("5", "val2014/img0.png", CAPTIONS[5], "test")]
    assert (report.format, report.images, report.captions) == ("karpathy", 3, 6)
    kept = store.dataset("k").info["karpathy"]
    assert kept["dataset"] == "coco" and kept["images"]["train2014/img0.png"]["split"] == "restval"
    assert kept["images"]["train2014/img0.png"]["cocoid"] == 7


def test_replace_keeps_decisions_on_pairs_that_still_exist(store, tmp_path: Path) -> None:
    data = rows(tmp_path)
    write_csv(tmp_path / "pairs.csv", data)
    first = import_dataset(store, tmp_path / "pairs.csv", "r")
    pairs = store.pairs_frame(first.dataset_id)
    kept_id = int(pairs.loc[pairs["key"] == "p2", "pair_id"].iloc[0])
    store.decide(first.dataset_id, [kept_id], "reject", "ann")
    with pytest.raises(ConcordError, match="already exists; pass --replace"):
        import_dataset(store, tmp_path / "pairs.csv", "r")
    write_csv(tmp_path / "pairs.csv", data[1:])  # p0 is gone
    second = import_dataset(store, tmp_path / "pairs.csv", "r", replace=True)
    assert second.dataset_id == first.dataset_id and second.pairs == 5
    after = store.pairs_frame(second.dataset_id)
    assert "p0" not in set(after["key"])
    row = after.loc[after["key"] == "p2"].iloc[0]
    assert int(row["pair_id"]) == kept_id and row["decision"] == "reject"
    assert len(store.meta_frame(second.dataset_id)) == 1


def test_auto_detects_and_progress_counts_images(store, tmp_path: Path) -> None:
    from core.progress import Progress
    data = rows(tmp_path)
    write_csv(tmp_path / "pairs.txt", data)
    with pytest.raises(ConcordError, match="cannot tell the format.*--format"):
        import_dataset(store, tmp_path / "pairs.txt", "x")
    progress = Progress()
    report = import_dataset(store, tmp_path / "pairs.txt", "x", fmt="csv", progress=progress)
    assert report.pairs == 6
    assert progress.snapshot()["stage"] == "writing"


def test_cli_import_json(tmp_path: Path) -> None:
    data = rows(tmp_path)
    write_csv(tmp_path / "pairs.csv", data)
    db = tmp_path / "cli.duckdb"
    result = subprocess.run([sys.executable, "-m", "core", "import", str(tmp_path / "pairs.csv"), "--name", "cli",
                             "--json", "--db", str(db)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["format"], out["images"], out["captions"], out["pairs"], out["skipped"]) == ("csv", 4, 6, 6, 0)
    again = subprocess.run([sys.executable, "-m", "core", "import", str(tmp_path / "pairs.csv"), "--name", "cli",
                            "--db", str(db)], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 1 and again.stderr.strip().count("\n") == 0
    assert "already exists; pass --replace" in again.stderr


def _many_images(folder: Path, n: int) -> None:
    (folder / "img").mkdir()
    for i in range(n):
        Image.new("RGB", (3 + i % 7, 2 + i % 5), (i % 256, i // 256, 9)).save(folder / "img" / f"{i}.png")


def _many_pairs_csv(folder: Path, n: int) -> Path:
    """`n` small images and a CSV pairing each with one caption."""
    _many_images(folder, n)
    (folder / "p.csv").write_text("image,caption\n" + "".join(f"img/{i}.png,picture {i}\n" for i in range(n)))
    return folder / "p.csv"


def test_large_import_checks_images_in_worker_processes(store, tmp_path: Path) -> None:
    """Past `PROCESS_BELOW` images the checks run in worker processes: every image's size and hash are recorded
    as in one process, a truncated image among them is refused by its row, and --skip-bad keeps the others."""
    from core.importers.validation import PROCESS_BELOW, check_image
    n = PROCESS_BELOW + 40
    _many_images(tmp_path, n)
    full = (tmp_path / "img" / "77.png").read_bytes()
    (tmp_path / "img" / "77.png").write_bytes(full[: len(full) // 2])
    lines = ["image,caption"] + [f"img/{i}.png,picture {i}" for i in range(n)] + ["img/5.png,picture five again"]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConcordError, match=r"p.csv line 79: unreadable or truncated image 77.png"):
        import_dataset(store, tmp_path / "p.csv", "big")
    assert store.dataset_names() == []
    report = import_dataset(store, tmp_path / "p.csv", "big", skip_bad=True)
    assert (report.pairs, report.images, [p.where for p in report.skipped]) == (n, n - 1, ["line 79"])
    images = store.images_frame(report.dataset_id).set_index("path")
    for i in (0, 5, n - 1):
        info = check_image(tmp_path / "img" / f"{i}.png")
        assert (images.loc[f"img/{i}.png", "hash"], images.loc[f"img/{i}.png", "width"]) == (info.hash, info.width)


def test_cancel_while_worker_processes_check_images_changes_nothing(store, tmp_path: Path) -> None:
    """A cancel during the checks (here: at the first batch done) stops the import; nothing is written."""
    from core.importers.validation import PROCESS_BELOW
    from core.errors import Cancelled
    from core.progress import Progress
    n = 3 * PROCESS_BELOW
    csv = _many_pairs_csv(tmp_path, n)
    steps: list[int] = []

    def listen(progress: Progress) -> None:
        if progress.stage == "checking images" and progress.step:
            steps.append(progress.step)
            progress.cancel()

    with pytest.raises(Cancelled):
        import_dataset(store, csv, "big", progress=Progress(listener=listen))
    assert store.dataset_names() == [] and 0 < steps[0] < n


def _kill_checkers() -> int:
    """SIGKILL this process's image-checking children (`core.importers.check_worker`); returns how many."""
    import os
    import signal
    killed = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"core.importers.check_worker" in cmdline:
            os.kill(int(stat.parent.name), signal.SIGKILL)
            killed += 1
    return killed


def test_a_checking_process_that_dies_stops_the_import_and_changes_nothing(store, tmp_path: Path) -> None:
    """The image-checking processes killed mid-import: the import fails saying so, and nothing is written."""
    from core.importers.validation import PROCESS_BELOW
    from core.progress import Progress
    n = 3 * PROCESS_BELOW
    csv = _many_pairs_csv(tmp_path, n)
    killed: list[int] = []

    def listen(progress: Progress) -> None:
        if progress.stage == "checking images" and progress.step and not killed:
            killed.append(_kill_checkers())

    with pytest.raises(ConcordError, match=r"an image-checking process stopped \(exit status -9\)"):
        import_dataset(store, csv, "big", progress=Progress(listener=listen))
    assert killed == [2] and store.dataset_names() == []
    assert import_dataset(store, csv, "big").pairs == n  # the next import starts new processes


def test_a_checking_process_that_fails_reports_its_last_error_line() -> None:
    from core.importers.check_worker import CheckerProcesses
    with CheckerProcesses(1) as pool:
        pool.submit([7])  # not a path: the process dies of the TypeError
        with pytest.raises(ConcordError, match=r"an image-checking process stopped \(exit status 1\): TypeError"):
            pool.next_result()
        with pytest.raises(ConcordError, match=r"stopped \(exit status 1\): TypeError"):
            pool.submit(["img/0.png"])  # and a batch sent after it is refused the same way
