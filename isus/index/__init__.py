"""The dataset index: per-class and per-instance lookup tables in one memory-mapped file."""
from isus.index.build import BuildParams, build_index, merge_indexes, remove_checkpoint, scan_image, shard_range
from isus.index.index import Index, Instances
from isus.index.store import SCHEMA_VERSION, IndexFileError, IndexMismatchError

__all__ = ["Index", "Instances", "BuildParams", "build_index", "merge_indexes", "remove_checkpoint", "scan_image",
           "shard_range", "IndexFileError", "IndexMismatchError", "SCHEMA_VERSION"]
