"""Test support: model packs in the real formats and names, with random or known weights."""
