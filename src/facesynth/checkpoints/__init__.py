"""The model-file format, apart from any training loop: every command that reads a model reads it here.

A model file is safetensors (never a pickle) whose metadata carries the config that rebuilds its networks:
  safetensors_io  header checks, reading and writing safetensors files
  locate          run folder / snapshot folder / file -> the model file
  metadata        kind, format version, config and growth state in a file's metadata
  tensors         tensors in and out of networks, compared with what the config builds
  model_files     GAN model files: read, load a generator, export one
"""

from .locate import LATEST, MODEL_FILE, PICKLE_SUFFIXES, SNAPSHOT_PREFIX, list_snapshots, read_json, resolve_checkpoint
from .metadata import FORMAT_VERSION, KIND, config_from_metadata, growth_from_metadata, model_metadata
from .model_files import apply_growth, export_generator, load_generator, read_model, read_model_file
from .safetensors_io import (DTYPE_SIZES, MAX_HEADER_BYTES, check_safetensors, read_safetensors, safetensors_header,
                             save_file)
from .tensors import (META_CHECK_BYTES, check_same_tensors, check_tensor_shapes, gan_size_bound, load_module_tensors,
                      module_tensors)

__all__ = [
    "LATEST", "MODEL_FILE", "PICKLE_SUFFIXES", "SNAPSHOT_PREFIX", "list_snapshots", "read_json", "resolve_checkpoint",
    "FORMAT_VERSION", "KIND", "config_from_metadata", "growth_from_metadata", "model_metadata",
    "apply_growth", "export_generator", "load_generator", "read_model", "read_model_file",
    "DTYPE_SIZES", "MAX_HEADER_BYTES", "check_safetensors", "read_safetensors", "safetensors_header", "save_file",
    "META_CHECK_BYTES", "check_same_tensors", "check_tensor_shapes", "gan_size_bound", "load_module_tensors",
    "module_tensors",
]
