"""Train page."""
import streamlit as st

from pages.common import current_dataset

st.title("Train")
dataset = current_dataset()
