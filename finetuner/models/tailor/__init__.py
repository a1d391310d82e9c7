"""Tailor: turn a general model (a classifier, a backbone) into an embedding model.

`display` lists a model's layers; `to_embedding_model` cuts it at a layer, pools that layer's
output to [B, D], freezes layers and adds a projection head; `freeze` freezes layers of any
module. The cut is a forward hook that stops the forward pass once the chosen layer has run, so
the model's own forward code (a `Sequential`, nested custom modules, a Hugging Face transformer,
EfficientNet) runs unchanged, whatever its control flow; the layers that only run after the cut
are removed. Idea and API after Jina Finetuner's Tailor (Xiao et al., 2021), with its known bugs
fixed: names with several dots work, and freezing a layer freezes its biases too.

One job per module: `trace` (which layer runs when, and what it returns), `probe` (a batch to
run the model with), `layers` (layers by name), `listing` (`display` and its table), `freezing`
(the freeze rules, shared with the Keras / Paddle backends), `heads` (`pool`,
`projection_head`), `cut` (`EmbeddingModel`, `CutOff`, where to cut), `convert`
(`to_embedding_model`), `args` (the tailor's arguments, checked once for every framework).
"""

from .args import TAILOR_ARGS, check_tailor_args, resolve_tailor_args
from .convert import to_embedding_model
from .cut import CutOff, EmbeddingModel, is_tailored
from .freezing import freeze, freeze_spec
from .heads import HEADS, POOLINGS, pool, projection_head
from .listing import display, show_layer_table
from .probe import check_input_size
from .trace import single_tensor

_CutOff = CutOff  # the name models saved before the tailor became a package pickled

__all__ = ["CutOff", "EmbeddingModel", "HEADS", "POOLINGS", "TAILOR_ARGS", "check_input_size", "check_tailor_args",
           "display", "freeze", "freeze_spec", "is_tailored", "pool", "projection_head", "resolve_tailor_args",
           "show_layer_table", "single_tensor", "to_embedding_model"]
