"""Command-line interface of isus (``isus --help``)."""
