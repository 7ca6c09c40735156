"""Folder of compatibility packages: put it first on PYTHONPATH (`nbstore compat-path`), never import it.

It holds a package named `jupyter_cache` that answers jupyter-cache 1.0's import paths with nbstore, so
that tools importing `jupyter_cache` by name (Quarto, MyST-NB's cache mode) use an nbstore store. It is
not installed as a top-level package: that would shadow a real jupyter-cache in the same environment.
"""
