"""Train page: start a scoring run (model, method, regime, device, the method's settings), watch it live,
cancel, resume or delete it, and compare the dataset's runs."""
import streamlit as st
import torch

from core.errors import ConcordError
from core.jobs import run_key
from core.methods import METHODS, Setting, settings
from core.models import DEFAULT_MODEL, model_info
from core.progress import format_eta
from core.runs import (FUSING_METHOD, RESUMABLE_STATES, delete_run, device_choices, epochs_frame, loss_frame,
                       method_choices, method_label, number_step, overall_eta, overall_fraction, picked_first,
                       progress_text, regime_choices, run_label, runs_table, split_settings, unfused_runs)
from core.training import DEFAULT_METHOD, REGIMES, default_regime, start_run
from pages.common import current_dataset, get_store, job_manager, settle_runs, submit_new_run, through_app


def setting_input(s: Setting, method: str):
    """The widget of one method setting, at its default, with its one-line help."""
    label, key, help_ = s.name.replace("_", " "), f"train_set_{method}_{s.name}", f"{s.help} (default {s.default})"
    if s.choices:
        return st.selectbox(label, s.choices, index=list(s.choices).index(s.default), help=help_, key=key)
    if s.type is bool:
        return st.checkbox(label, value=bool(s.default), help=help_, key=key)
    r = s.range      # the ends the widget itself holds (an open end is refused with the same words at Start)
    low = None if r is None or r.low is None or r.low_open else r.low
    high = None if r is None or r.high is None or r.high_open else r.high
    if s.type is int:
        return int(st.number_input(label, value=int(s.default), step=1, help=help_, key=key,
                                   min_value=None if low is None else int(low),
                                   max_value=None if high is None else int(high)))
    if s.type is float:
        return float(st.number_input(label, value=float(s.default), step=number_step(s.default), format="%g",
                                     help=help_, key=key, min_value=None if low is None else float(low),
                                     max_value=None if high is None else float(high)))
    return st.text_input(label, value=str(s.default), help=help_, key=key)


def new_run_form(store, dataset) -> None:
    """Choose model, method, regime, device and settings; Start queues the run on the job runner."""
    st.subheader("New run")
    c1, c2 = st.columns(2)
    model = c1.text_input("Model", value=DEFAULT_MODEL, key="train_model",
                          help="concord-tiny (offline; its image tower trains on your data) | open_clip:ARCH:TAG | "
                               "file:ARCH:PATH").strip()
    try:
        info = model_info(model)
    except ConcordError as exc:
        st.error(str(exc))
        return
    methods = method_choices(info.image_pretrained)
    method = c2.selectbox("Method", methods, index=methods.index(DEFAULT_METHOD) if DEFAULT_METHOD in methods else 0,
                          format_func=lambda m: METHODS[m].title, key="train_method")
    st.caption(METHODS[method].summary)
    c1, c2 = st.columns(2)
    regime = c1.selectbox("Regime", regime_choices(REGIMES, info.image_pretrained, default_regime(model)),
                          key=f"train_regime_{info.image_pretrained}",
                          help="finetune: train the image tower; features: heads on cached pretrained features")
    device = c2.selectbox("Device", device_choices(torch.cuda.device_count()), key="train_device",
                          help="auto: CUDA when present, else the CPU")
    main, advanced = split_settings(settings(method))
    values = {}
    cols = st.columns(len(main) or 1)
    for col, s in zip(cols, main):
        with col:
            values[s.name] = setting_input(s, method)
    with st.expander("Advanced settings"):
        for s in advanced:
            values[s.name] = setting_input(s, method)
        c1, c2 = st.columns(2)
        seed = c1.number_input("seed", 0, 2**31 - 1, 0, key="train_seed", help="the same seed gives the same run")
        threshold = c2.number_input("flag threshold", 0.0, 1.0, 0.5, step=0.05, key="train_threshold",
                                    help="pairs whose clean_prob is below this are flagged for review")
    if st.button("Start", type="primary", key="train_start"):
        submit_new_run(lambda: start_run(store, dataset.name, method, model=model, regime=regime, device=device,
                                         seed=int(seed), settings=values, threshold=float(threshold)), "train_run")


@st.fragment(run_every=1.0)
def live_run(run_id: int, seen_state: str) -> None:
    """The chosen run, updating in place: progress with ETA and rate, loss curve, epoch metrics; Cancel or
    Resume. When its state changes, the whole page reruns (so the runs table shows it)."""
    store, manager = get_store(), job_manager()
    run = store.run(run_id)
    if run.state != seen_state:
        st.rerun()
    job = manager.find(run_key(run_id))
    record = manager.run_progress(run)
    st.markdown(f"**Run {run_label(run)}** · {run.model} · {run.regime} · {run.device}")
    if job is not None:
        st.progress(overall_fraction(record), text=progress_text(record))
        c1, c2, c3 = st.columns(3)
        c1.metric("ETA", format_eta(overall_eta(record)))
        c2.metric("Rate", f"{record['rate']:.1f} steps/s" if record.get("rate") else "?")
        c3.metric("Loss", f"{record['metrics']['loss']:.4f}" if "loss" in record.get("metrics", {}) else "?")
        if st.button("Cancel", key="train_cancel", help="stops at the next batch and keeps a checkpoint to resume"):
            manager.cancel(job.id)
            st.rerun()
    elif run.state == "failed":
        st.error(f"Run {run.id} failed: {(run.error or 'no error recorded').splitlines()[0]}")
        with st.expander("Traceback"):
            st.code(run.error or "")
    elif run.state == "finished":
        st.success(f"Run {run.id} finished.")
    else:
        st.info(f"Run {run.id} is {run.state}: Resume continues it from its last checkpoint.")
    if job is None and run.state in RESUMABLE_STATES:
        if st.button("Resume", type="primary", key="train_resume"):
            try:
                manager.submit_run(store, run.id)
            except ConcordError as exc:
                st.error(str(exc))
            else:
                st.rerun()
    losses, epochs = loss_frame(record), epochs_frame(record)
    if not losses.empty:
        st.line_chart(losses, x="update", y="loss", height=220)
    if not epochs.empty:
        st.dataframe(epochs, hide_index=True)


def run_panel(store, dataset) -> None:
    """Pick one of the dataset's runs and show it live; delete it; the table of all runs to compare."""
    st.subheader("Runs")
    runs = store.runs(dataset.id)
    if not runs:
        st.info("No runs on this dataset yet: choose a method above and press **Start**.")
        return
    by_id = {r.id: r for r in runs}
    if st.session_state.get("train_run") not in by_id:
        st.session_state["train_run"] = picked_first(runs).id
    run_id = st.selectbox("Run", list(by_id), format_func=lambda i: run_label(by_id[i]), key="train_run")
    live = job_manager().find(run_key(run_id)) is not None
    live_run(run_id, by_id[run_id].state)
    with st.expander("Delete this run"):
        sure = st.checkbox(f"Yes, delete run {run_id} with its scores (decisions are kept)",
                           key=f"train_delete_confirm_{run_id}", disabled=live)
        if st.button("Delete run", key="train_delete", disabled=live or not sure):
            try:
                delete_run(store, by_id[run_id], live)
            except ConcordError as exc:
                st.error(str(exc))
            else:
                del st.session_state["train_run"]
                st.rerun()
    unfused = unfused_runs(runs)
    if unfused:
        st.info(f"{', '.join(f'#{r.id} ({method_label(r)})' for r in unfused)} not fused yet: a **{FUSING_METHOD}** "
                "run scores every pair from the latest run of each method and learning rate in seconds and refits "
                "as you review; on the benchmarks it ranks mismatches above the best single method.")
    st.dataframe(runs_table(runs), hide_index=True, column_config={
        "AUROC": st.column_config.NumberColumn(format="%.3f"), "AUPRC": st.column_config.NumberColumn(format="%.3f"),
        "F1": st.column_config.NumberColumn(format="%.3f"), "rSum": st.column_config.NumberColumn(format="%.1f"),
        "time (s)": st.column_config.NumberColumn(format="%.1f")})


through_app()
st.title("Train")
dataset = current_dataset()
if dataset is not None:
    settle_runs()
    store = get_store()
    new_run_form(store, dataset)
    run_panel(store, dataset)
