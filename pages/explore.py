"""Explore page."""
import streamlit as st

from pages.common import current_dataset

st.title("Explore")
dataset = current_dataset()
