"""Heads that were renamed, still readable under their old names.

``classifier`` used to name the segmentation head of DeepLab and PSPNet but the empty-image head
of the ResNet34 U-Net. They are now ``segmentation_head`` and ``classification_head`` (the names
of segmentation_models_pytorch). A model that mixes in :class:`RenamedHeads` loads state dicts
and checkpoints saved under the old names, and answers the old attribute with a FutureWarning.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar


class RenamedHeads:
    """Mixin for an ``nn.Module`` whose submodules were renamed (put it before ``nn.Module``).

    ``renamed_heads = {"old": "new"}``: a state dict key ``old.<rest>`` (at this module's prefix,
    so nested models and DDP's ``module.`` work too) loads into ``new.<rest>``; ``model.old``
    returns ``model.new`` with a FutureWarning naming the new name.
    """

    renamed_heads: ClassVar[dict[str, str]] = {}

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # torch calls this on the model before its children, with the state dict they load from
        for old, new in self.renamed_heads.items():
            for key in [k for k in state_dict if k.startswith(f"{prefix}{old}.")]:
                moved = f"{prefix}{new}.{key[len(prefix) + len(old) + 1 :]}"
                if moved not in state_dict:  # a key under both names: the new one is kept
                    state_dict[moved] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        new = type(self).renamed_heads.get(name)
        if new is not None:
            warnings.warn(
                f"{type(self).__name__}.{name} is now called {new}", FutureWarning, stacklevel=2
            )
            return getattr(self, new)
        return super().__getattr__(name)
