"""The dataset index: per-class and per-instance lookup tables in one memory-mapped file."""
from isus.index.build import BuildParams, build_index, merge_indexes, remove_checkpoint, scan_image, shard_range
from isus.index.index import Index
from isus.index.schema import BuildInfo, ClassTable, DatasetIdentity, IndexMeta, Instances
from isus.index.store import SCHEMA_VERSION, IndexFileError, IndexMismatchError

__all__ = ["Index", "Instances", "ClassTable", "IndexMeta", "DatasetIdentity", "BuildInfo", "BuildParams",
           "build_index", "merge_indexes", "remove_checkpoint", "scan_image", "shard_range", "IndexFileError",
           "IndexMismatchError", "SCHEMA_VERSION"]
