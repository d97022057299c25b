"""Generated datasets are kept per database: two databases on one machine each create a demo of the same
name, and both stay intact; deleting one removes only its own files."""
from __future__ import annotations

import os
from pathlib import Path

from core import paths
from core.generated import GenerateOptions, create_generated, delete_dataset, deletion_summary
from core.hashing import file_hash
from core.store import Store


def intact(store: Store, name: str) -> bool:
    """Every image of `name` is on disk under its root with the content its records say."""
    ds = store.dataset(name)
    images = store.images_frame(ds.id)
    return len(images) > 0 and all(file_hash(Path(ds.root) / p) == h for p, h in zip(images["path"], images["hash"]))


def test_two_databases_each_keep_their_demo(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a.duckdb") as a, Store.open(tmp_path / "b" / "a.duckdb") as b:
        create_generated(a, "demo", GenerateOptions(images=12, image_size=32, seed=1))
        create_generated(b, "demo", GenerateOptions(images=20, image_size=48, seed=2))
        root_a, root_b = Path(a.dataset("demo").root), Path(b.dataset("demo").root)
        assert root_a != root_b and root_a.parent.parent == root_b.parent.parent == paths.datasets_dir()
        assert root_a.parent == paths.generated_dir(a.path) and root_a.parent.name.startswith("a-")
        assert intact(a, "demo") and intact(b, "demo")

        # replacing one database's demo leaves the other's files alone
        create_generated(b, "demo", GenerateOptions(images=8, image_size=40, seed=3), replace=True)
        assert intact(a, "demo") and intact(b, "demo")

        # a noise copy shares its parent's folder: deleting the parent keeps it, deleting the copy too removes it
        from core.noise import inject_noise_copy
        inject_noise_copy(a, "demo", "demo-noisy", 0.5)
        assert deletion_summary(a, "demo")["folder"] is None
        delete_dataset(a, "demo")
        assert root_a.is_dir() and intact(a, "demo-noisy") and intact(b, "demo")
        assert delete_dataset(a, "demo-noisy")["folder"] == str(root_a)
        assert not root_a.exists() and intact(b, "demo")


def test_concord_db_env_selects_the_folder(tmp_path: Path, monkeypatch) -> None:
    """The same database file named through CONCORD_DB or --db (relative or absolute) is one folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONCORD_DB", "x.duckdb")
    with Store.open() as s:
        assert paths.generated_dir(s.path) == paths.generated_dir(tmp_path / "x.duckdb")
    assert paths.generated_dir(tmp_path / "x.duckdb") != paths.generated_dir(tmp_path / "y.duckdb")
    assert os.path.isabs(paths.generated_dir("x.duckdb"))
