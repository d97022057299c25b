"""What every page shares: the process's store, the sidebar's dataset and reviewer, empty states."""
from __future__ import annotations

import streamlit as st

from core.jobs import JobManager
from core.store import Dataset, Store


@st.cache_resource
def get_store() -> Store:
    """The server process's one store (DuckDB admits one read-write process)."""
    return Store.open()


@st.cache_resource
def job_manager() -> JobManager:
    """The server process's one job runner (its background jobs outlive a page's script run)."""
    return JobManager()


def sidebar() -> None:
    """Dataset picker and reviewer name, kept in the session across pages."""
    store = get_store()
    names = store.dataset_names()
    with st.sidebar:
        if names:
            if st.session_state.get("sidebar_dataset") not in names:
                st.session_state["sidebar_dataset"] = names[0]
            st.selectbox("Dataset", names, key="sidebar_dataset")
            st.session_state["dataset"] = st.session_state["sidebar_dataset"]
        else:
            st.session_state["dataset"] = None
            st.caption("No dataset yet.")
        st.session_state.setdefault("sidebar_reviewer", "reviewer")
        st.text_input("Reviewer", key="sidebar_reviewer", help="Stored with every decision you make.")
        st.session_state["reviewer"] = st.session_state["sidebar_reviewer"]


def current_dataset() -> Dataset | None:
    """The sidebar's dataset, or None (after showing the empty state) when there is none."""
    name = st.session_state.get("dataset")
    if not name:
        st.info("No dataset yet. Create the demo or import one on the **Datasets** page.")
        return None
    return get_store().dataset(name)


def reviewer() -> str:
    return (st.session_state.get("reviewer") or "reviewer").strip() or "reviewer"
