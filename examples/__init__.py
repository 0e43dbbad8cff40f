"""Examples built on isus (not installed with the package)."""
