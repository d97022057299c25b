"""Review page."""
import streamlit as st

from pages.common import current_dataset

st.title("Review")
dataset = current_dataset()
