"""Export page: choose the options, preview the counts, write the export, download it when small."""
import streamlit as st

from core.errors import ConcordError
from core.export import (FORMATS, IMAGE_MODES, ZIP_LIMIT_BYTES, ExportOptions, default_format, folder_size,
                         plan_export, write_export, zip_folder)
from core.runs import run_title
from pages.common import current_dataset, get_store, through_app

through_app()
st.title("Export")
dataset = current_dataset()
if dataset is not None:
    store = get_store()
    runs = [r for r in store.runs(dataset.id) if r.state == "finished"]
    fmt = st.selectbox("Format", FORMATS, index=FORMATS.index(default_format(dataset)), key="export_format")
    run_labels = {r.id: run_title(r) for r in runs}
    run_id = st.selectbox("Scores from run", list(run_labels), format_func=run_labels.get,
                          key="export_run") if runs else None
    if not runs:
        st.caption("No finished run: clean_prob and weight will be empty.")
    drop = st.checkbox("Also drop flagged pairs nobody decided", key="export_drop_flagged", disabled=not runs)
    images = st.radio("Images", IMAGE_MODES, key="export_images", horizontal=True,
                      help="copy: the kept images go beside the data file, so the folder imports back as a "
                           "dataset; paths: only paths relative to the original root (named in the manifest)")
    out = st.text_input("Destination folder", key="export_out")
    overwrite = st.checkbox("Overwrite an earlier export", key="export_overwrite",
                            help="replaces a folder that holds an earlier Concord export; never any other folder, "
                                 "nor one that holds the database or a dataset's images")
    options = ExportOptions(format=fmt, run_id=run_id, drop_flagged_unreviewed=bool(drop and runs),
                            images=images, overwrite=overwrite)
    try:
        plan = plan_export(store, dataset.name, options)
    except ConcordError as exc:
        st.error(str(exc))
        plan = None
    if plan is not None:
        c = plan.counts
        cols = st.columns(4)
        for col, (label, key) in zip(cols, [("In", "in"), ("Dropped", "dropped"), ("Fixed", "fixed"), ("Out", "out")]):
            col.metric(label, c[key])
        st.caption(f"{c['dropped_rejected']} rejected, {c['dropped_flagged_unreviewed']} flagged unreviewed dropped; "
                   f"images to copy: {plan.images:,} ({plan.image_bytes / 1e6:.1f} MB)")
        if st.button("Write export", type="primary", disabled=not out.strip(), key="export_write"):
            try:
                manifest = write_export(store, plan, out.strip())
                st.session_state["export_done"] = out.strip()
                st.success(f"Wrote {manifest['counts']['out']} pairs to {out.strip()}")
            except ConcordError as exc:
                st.session_state.pop("export_done", None)       # no download of an earlier export under this one
                st.error(str(exc))
    done = st.session_state.get("export_done")
    if done:
        size = folder_size(done)
        if size <= ZIP_LIMIT_BYTES:
            st.download_button(f"Download {done} as zip", zip_folder(done), file_name=f"{dataset.name}-export.zip",
                               mime="application/zip", key="export_zip")
        else:
            st.text(f"Export written to {done} ({size / 1e6:.0f} MB, too large to download here)")
