"""What servekit knows about a source Keras model, by concern.

- `kinds`: which backend runs, whether a model is Functional, its layers.
- `names`: signature keys and dim names (sanitized, unique, Keras-like).
- `input_layout`: an endpoint's inputs as flat named specs plus the
  structure of its positional arguments (`InputLayout`), from a model, an
  `input_signature` or jax2tf `polymorphic_shapes`.
- `outputs`: the names and signatures of a model's outputs.
- `sample_inputs`: deterministic inputs the model accepts, for verification.
- `calls`: running the model on flat inputs, and `reference_outputs`.
- `graph_mode`: Keras layers whose TensorFlow code assumes a size known while
  tracing, written for unknown sizes in every endpoint trace.
- `recurrences`: recurrent layers traced step by step for the converters
  that cannot take their loop (LiteRT, torch.export), in the workers too:
  unrolled, or over a sequence of unknown length a loop without TensorLists.
- `precision`: float16 and bfloat16 layers traced in float32 for the
  converters without their kernels (LiteRT, OpenVINO's bfloat16), in the
  workers too.

Everything here runs in the *source* process, on whatever Keras backend it
uses, and never imports TensorFlow unless the backend is TensorFlow (or the
model's lookup layers need it): an `InputLayout` is all the TensorFlow-side
exporter needs to rebuild the call.
"""

from servekit.source_model.calls import reference_outputs
from servekit.source_model.input_layout import FlatSpec, InputLayout, resolve_input_layout

__all__ = ["FlatSpec", "InputLayout", "reference_outputs", "resolve_input_layout"]
