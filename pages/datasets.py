"""Datasets page: the datasets with their counts; create the demo, import, attach scored shards, inject noise, delete;
sample pairs."""
from pathlib import Path

import pandas as pd
import streamlit as st

from core.errors import ConcordError
from core.generated import CAPTIONS, SOURCES, GenerateOptions, create_generated, delete_dataset, \
    deletion_summary, describe_deletion
from core.importers import FORMATS, ColumnNames, import_dataset
from core.noise import DEFAULT_K, KINDS, inject_noise_copy
from core.progress import Progress
from core.runs import overall_fraction, progress_text, run_title
from core.shards.job import job_key, submit_score_and_attach
from core.shards.config import ENGINES, ShardScoreConfig
from pages.common import FIRST_START_NOTE, first_start_running, get_store, job_manager, through_app

SAMPLES = 12
SCORING_METHODS = ("b0", "b1", "npc", "mscn")   # runs whose encoder can score shards


def progress_bar() -> Progress:
    """A progress object drawn as a Streamlit progress bar while this script run does the work."""
    bar = st.progress(0.0)
    return Progress(listener=lambda p: bar.progress(p.fraction or 0.0, text=p.message))


@st.fragment(run_every=2.0)
def shard_job_progress(key: str) -> None:
    """A running shard job's progress, polled, with Cancel; the whole page reruns once it has ended."""
    job = job_manager().latest(key)
    if job is None or not job.active:
        st.rerun(scope="app")
    record = job.progress.snapshot()
    c1, c2 = st.columns([5, 1])
    c1.progress(overall_fraction(record), text=f"{job.title}: {progress_text(record)}")
    if c2.button("Cancel", key="score_cancel", help="stops after the batch in flight; the shards written are kept"):
        job_manager().cancel(job.id)


def shard_job(key: str) -> None:
    """The latest shard job for an output folder: its progress while it runs, then how it ended."""
    job = job_manager().latest(key)
    if job is None:
        return
    if job.active:
        shard_job_progress(key)
    elif job.state == "finished":
        st.success(job.result["summary"].capitalize())
    elif job.state == "cancelled":
        st.warning("Scoring cancelled: the shards written so far are kept; start it again to score the rest.")
    else:
        st.error(f"Scoring failed: {job.error}")


def done(lines: list[str]) -> None:
    """Show `lines` after a rerun (so that the sidebar lists the datasets as they are now)."""
    st.session_state["datasets_notice"] = lines
    st.rerun()


through_app()
st.title("Datasets")
store = get_store()
notice = st.session_state.pop("datasets_notice", None)
if notice:
    st.success(notice[0])
    if notice[1:]:
        st.text("\n".join(notice[1:]))

rows = store.list_datasets()
if rows:
    table = pd.DataFrame([{
        "name": r["name"], "source": r["source_format"], "parent": r["parent"], "images": r["images"],
        "captions": r["captions"], "pairs": r["pairs"],
        **{f"{split} pairs": count for split, count in r["splits"].items()},
        "injected noise": r["noisy"], "reviewed": r["reviewed"], "flagged": r["flagged"]} for r in rows])
    st.dataframe(table, hide_index=True)
else:
    st.info(FIRST_START_NOTE if first_start_running() else "No dataset yet. Create the demo or import one below.")
names = [r["name"] for r in rows]

create, importing, attaching, noise, delete = st.tabs(["Create demo", "Import", "Scored shards",
                                                        "Inject noise", "Delete"])
with create:
    defaults = GenerateOptions()
    source = st.selectbox("Source", SOURCES, key="demo_source",
                          help="demo: procedural scenes; fashion-mnist, emoji: offline real sets (Debian packages)")
    name = st.text_input("Name", value="demo", key="demo_name")
    c1, c2, c3, c4 = st.columns(4)
    images = c1.number_input("Images", 2, 1_000_000, defaults.images, key="demo_images")
    captions = c2.number_input("Captions per image", 1, CAPTIONS, defaults.captions, key="demo_captions",
                               help=f"the first of each image's {CAPTIONS}; 1 makes a set where no image has siblings")
    size = c3.number_input("Image size (pixels)", 16, 1024, defaults.image_size, key="demo_image_size")
    seed = c4.number_input("Seed", 0, 2**31 - 1, defaults.seed, key="demo_seed")
    c1, c2 = st.columns(2)
    ratio = c1.number_input("Noise in train", 0.0, 1.0, defaults.noise, step=0.1, key="demo_noise")
    kind = c2.selectbox("Noise kind", KINDS, key="demo_noise_kind")
    replace = st.checkbox("Replace a dataset of that name", key="demo_replace")
    if st.button("Create", type="primary", key="demo_create", disabled=not name.strip()):
        options = GenerateOptions(source=source, images=int(images), image_size=int(size), captions=int(captions),
                                  seed=int(seed), noise=float(ratio), noise_kind=kind)
        try:
            result = create_generated(store, name.strip(), options, replace=replace, progress=progress_bar())
        except ConcordError as exc:
            st.error(str(exc))
        else:
            done([f"Created {result['name']!r}: {result['images']:,} images, {result['pairs']:,} pairs, "
                  f"{result['noisy']:,} with injected noise"])

with importing:
    path = st.text_input("Data file or folder on the server", key="import_path",
                         help="CSV / JSONL / Parquet of image, caption rows; MS-COCO or Karpathy JSON; "
                              "or a Concord export's folder")
    import_name = st.text_input("Name (default: an export's dataset name, else the file's name)", key="import_name")
    c1, c2, c3 = st.columns(3)
    fmt = c1.selectbox("Format", FORMATS, key="import_format")
    images_root = c2.text_input("Images root (default: the file's folder, or an export's)",
                                key="import_images_root")
    split = c3.text_input("Split of rows naming none (default train)", key="import_split")
    column_defaults = ColumnNames()
    cols = st.columns(4)
    columns = ColumnNames(**{role: col.text_input(f"{role} column", getattr(column_defaults, role),
                                                  key=f"import_{role}_column")
                             for col, role in zip(cols, ("image", "caption", "split", "id"))})
    import_replace = st.checkbox("Replace a dataset of that name (keeps decisions on pairs that still exist)",
                                 key="import_replace")
    skip_bad = st.checkbox("Import the good rows and list the bad ones in a report", key="import_skip_bad")
    if st.button("Import", type="primary", key="import_run", disabled=not path.strip()):
        try:
            report = import_dataset(store, path.strip(), import_name.strip() or None, fmt=fmt,
                                    images_root=images_root.strip() or None, replace=import_replace,
                                    skip_bad=skip_bad, columns=columns, split=split.strip() or None,
                                    progress=progress_bar())
        except ConcordError as exc:
            st.error(str(exc))
        else:
            done(report.summary_lines())

with attaching:
    st.subheader("Score shards, then attach")
    st.caption("Parquet shards of `image, caption` rows, the image a path or its bytes, scored in the "
               "background as `python -m core shards score` does, then attached. Cancel keeps the shards written "
               "so far: starting the same job again scores only the rest.")
    score_inputs = st.text_area("Input shards: files, globs, folders or fsspec URLs, one per line", key="score_inputs")
    c1, c2 = st.columns(2)
    score_out = c1.text_input("Output folder on the server", key="score_out")
    score_name = c2.text_input("Dataset name", key="score_name")
    scoring_runs = [r for r in store.runs(state="finished") if r.method in SCORING_METHODS]
    c1, c2, c3 = st.columns(3)
    who = c1.radio("Who scores", ["A finished run", "A pretrained model"], key="score_who", horizontal=True)
    dataset_names = {r["id"]: r["name"] for r in rows}
    run_labels = {r.id: f"{run_title(r)} · {dataset_names[r.dataset_id]}" for r in scoring_runs}
    score_run = score_model = None
    if who == "A finished run":
        score_run = c2.selectbox("Run", list(run_labels), format_func=run_labels.get, key="score_run_id",
                                 help="its trained encoder and its mixture score the shards")
    else:
        score_model = c2.text_input("Model", placeholder="open_clip:ViT-B-32:openai", key="score_model")
    engine = c3.selectbox("Engine", ENGINES, key="score_engine",
                          help="local: one process; ray: Ray Data (RAY_ADDRESS, else a local cluster)")
    c1, c2, c3 = st.columns(3)
    score_device = c1.selectbox("Device", ["auto", "cpu", "cuda"], key="score_device")
    with_terms = c2.checkbox("Consensus terms", value=True, key="score_terms")
    with_emb = c3.checkbox("Embeddings", value=True, key="score_embeddings",
                           help="both embeddings per pair: Explore's map and Review's suggestions need them")
    ready = bool(score_inputs.strip() and score_out.strip() and score_name.strip() and (score_run or score_model))
    if st.button("Score and attach", type="primary", key="score_start", disabled=not ready):
        try:
            config = ShardScoreConfig(engine=engine, embeddings=with_emb, consensus=with_terms, device=score_device)
            submit_score_and_attach(job_manager(), store,
                                    [line.strip() for line in score_inputs.splitlines() if line.strip()],
                                    score_out.strip(), score_name.strip(),
                                    run_id=score_run, model=score_model, config=config)
        except ConcordError as exc:
            st.error(str(exc))
        else:
            st.session_state["score_job"] = job_key(score_out.strip())
    if st.session_state.get("score_job"):
        shard_job(st.session_state["score_job"])

    st.subheader("Attach a scored folder")
    st.caption("The output folder of `python -m core shards score IN --out OUT` (scored Parquet shards): its pairs "
               "become a dataset to explore, review and export, their scores a finished run. The shards stay "
               "where they are; DuckDB reads their consensus terms in place.")
    shards_out = st.text_input("Scored shards folder on the server", key="attach_path")
    attach_name = st.text_input("Dataset name", key="attach_name")
    if st.button("Attach", type="primary", key="attach_run", disabled=not (shards_out.strip() and attach_name.strip())):
        from core.shards.attach import attach, attach_summary
        try:
            with st.spinner("Attaching the scored shards…"):
                result = attach(store, shards_out.strip(), attach_name.strip())
        except ConcordError as exc:
            st.error(str(exc))
        else:
            done([attach_summary(result).capitalize()])

with noise:
    if not names:
        st.caption("No dataset to copy yet.")
    else:
        source_name = st.selectbox("Copy of", names, key="noise_source")
        c1, c2, c3, c4 = st.columns(4)
        noise_ratio = c1.number_input("Ratio", 0.0, 1.0, 0.4, step=0.1, key="noise_ratio")
        noise_kind = c2.selectbox("Kind", KINDS, key="noise_kind",
                                  help="ncr: random swaps; decl: all captions of chosen images; hard: near misses")
        noise_seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="noise_seed")
        k = c4.number_input("k (hard)", 1, 1000, DEFAULT_K, key="noise_k")
        new_name = st.text_input("New dataset name", key="noise_new_name")
        if st.button("Inject noise into a copy", type="primary", key="noise_run", disabled=not new_name.strip()):
            try:
                result = inject_noise_copy(store, source_name, new_name.strip(), float(noise_ratio), noise_kind,
                                           int(noise_seed), k=int(k), progress=progress_bar())
            except ConcordError as exc:
                st.error(str(exc))
            else:
                done([f"Created {new_name.strip()!r} from {source_name!r}: {result['noisy']:,} of "
                      f"{result['train_pairs']:,} train pairs carry {noise_kind} noise"])

with delete:
    if not names:
        st.caption("No dataset to delete.")
    else:
        target = st.selectbox("Dataset", names, key="delete_name")
        st.warning(describe_deletion(deletion_summary(store, target)).capitalize() + ".")
        sure = st.checkbox(f"Yes, delete {target} and its decisions", key=f"delete_confirm_{target}")
        if st.button("Delete", key="delete_run", disabled=not sure):
            try:
                summary = delete_dataset(store, target, job_manager().live_runs())
            except ConcordError as exc:
                st.error(str(exc))
            else:
                done([f"Deleted {target!r} ({summary['pairs']:,} pairs, {summary['decisions']:,} decisions)"])

if names:
    st.subheader("Sample pairs")
    current = st.session_state.get("dataset")
    shown = st.selectbox("Dataset", names, index=names.index(current) if current in names else 0,
                         key="samples_dataset")
    dataset = store.dataset(shown)
    sample = store.pairs_frame(dataset.id, pair_ids=store.sample_pair_ids(dataset.id, SAMPLES))
    grid = st.columns(6)
    for i, pair in enumerate(sample.itertuples()):
        with grid[i % 6]:
            image = Path(dataset.root) / pair.image_path
            if image.is_file():
                st.image(str(image), width="stretch")
            else:
                st.text(f"(missing: {pair.image_path})")
            st.text(pair.caption)
