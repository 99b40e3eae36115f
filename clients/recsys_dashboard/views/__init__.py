"""The dashboard pages, run by Streamlit as scripts (see app.py)."""
