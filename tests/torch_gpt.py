"""The PyTorch twin of :class:`jaxlr.gpt.GPT`: a re-export of :mod:`torch_parity.torch_gpt`.

``tests/test_gpt.py`` imports it as ``torch_gpt``; the private helpers it uses
(``_flax_path``, ``_leaves``) are re-exported by name, since ``import *`` skips them.
"""

from torch_parity.torch_gpt import *  # noqa: F403
from torch_parity.torch_gpt import (  # noqa: F401
    MLP,
    Attention,
    Block,
    TorchGPT,
    TwinConfig,
    _flax_path,
    _leaves,
    load_flax,
    to_flax,
    twin_config,
)
