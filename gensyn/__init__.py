"""GENSYN: synthetic chest X-rays from CT, and experiments that test whether they help."""

__version__ = "0.1.0"
