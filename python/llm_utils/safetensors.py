"""safetensors files, with the safetensors package's function names (``save_file``,
``load_file``), on dicts of float32 numpy arrays. Files interchange with
``safetensors.torch``: weights saved here load into PyTorch and the other way round::

    from llm_utils.safetensors import save_file, load_file
    save_file(module.state_dict(), "w.safetensors", metadata={"format": "pt"})
    module.load_state_dict(load_file("w.safetensors"))

For ``.npy`` files use numpy's own ``np.save`` / ``np.load``.
"""

from ._core import load_file, load_metadata, save_file

__all__ = ["save_file", "load_file", "load_metadata"]
