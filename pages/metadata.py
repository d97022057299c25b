"""Meta-data page."""
import streamlit as st

from pages.common import current_dataset

st.title("Meta-data")
dataset = current_dataset()
