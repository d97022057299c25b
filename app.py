"""Concord's web app: `streamlit run app.py` (or `make run`)."""
import streamlit as st

import core  # noqa: F401  registers the torchvision op schemas before anything imports torchvision
from pages.common import settle_heap, sidebar, start_first_run

st.set_page_config(page_title="Concord", page_icon=":material/join_inner:", layout="wide")

PAGES = [
    st.Page("pages/datasets.py", title="Datasets", icon=":material/database:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/explore.py", title="Explore", icon=":material/scatter_plot:"),
    st.Page("pages/review.py", title="Review", icon=":material/rule:"),
    st.Page("pages/metadata.py", title="Meta-data", icon=":material/verified:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]

navigation = st.navigation(PAGES)
start_first_run()
sidebar()
try:
    navigation.run()
finally:   # also after a page's st.stop()
    settle_heap()
