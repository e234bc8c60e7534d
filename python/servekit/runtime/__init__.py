"""servekit.runtime: `servekit.load`, an exported artifact's endpoints called by name
from Python (TensorFlow for SavedModels, ONNX Runtime for ONNX files)."""
