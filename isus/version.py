"""The version of isus, in a module of its own so that any part of the package can record it
without importing the package face."""

__version__ = "0.1.0"
