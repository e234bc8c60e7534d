// TensorSpec and Signature: what a model's endpoint accepts and returns.
//
// The C++ twin of python/servekit/signature.py. A Signature is one endpoint (a
// SavedModel SignatureDef, or an ONNX graph): its inputs and outputs, each a name, a
// dtype and dims. A dim is static (size >= 0) or dynamic; a dynamic dim may carry a
// symbolic name (ONNX dim_param, the manifest's "batch"). TensorFlow can also declare
// a tensor of unknown rank.
#ifndef SERVEKIT_CC_SIGNATURE_H_
#define SERVEKIT_CC_SIGNATURE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "cc/dtype.h"

namespace servekit {

struct Dim {
  int64_t size = -1;   // >= 0: static size; -1: dynamic
  std::string symbol;  // name of a dynamic dim; may be empty

  static Dim Static(int64_t size) { return Dim{size, ""}; }
  static Dim Dynamic(std::string symbol = "") { return Dim{-1, std::move(symbol)}; }
  bool is_static() const { return size >= 0; }
  bool operator==(const Dim& o) const { return size == o.size && symbol == o.symbol; }
};

struct TensorSpec {
  std::string name;            // signature key / ONNX graph input or output name
  DType dtype = DType::kFloat32;
  std::vector<Dim> dims;
  bool unknown_rank = false;   // TensorFlow only: any rank is accepted; dims is empty
  std::string runtime_name;    // TensorFlow's "op:index" tensor name; empty for ONNX
};

struct Signature {
  std::string name;         // endpoint name, e.g. "serving_default"
  std::string method_name;  // e.g. "tensorflow/serving/predict"; empty for ONNX
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

// "3", "batch" or "?" for a nameless dynamic dim.
std::string DimToString(const Dim& dim);
// "float32[batch,3]"; "float32[...]" for unknown rank.
std::string SpecToString(const TensorSpec& spec);

// The endpoint named `name` in `signatures`, or nullptr.
const Signature* FindSignature(const std::vector<Signature>& signatures, const std::string& name);
// The spec named `name` in `specs`, or nullptr.
const TensorSpec* FindSpec(const std::vector<TensorSpec>& specs, const std::string& name);

}  // namespace servekit

#endif  // SERVEKIT_CC_SIGNATURE_H_
