// Parity: do a model's outputs match the reference outputs, within tolerances?
//
// CheckReferenceParity runs a manifest's reference cases through a model and compares
// each output with the recorded .npy; CheckCrossParity runs the same reference
// inputs through two models (a SavedModel and an ONNX model of one export) and
// compares them with each other. Floats pass elementwise when
// |actual - expected| <= atol + rtol * |expected| (NaN matches only NaN); integers,
// bool and strings must be equal. Each output reports its max abs and max rel error.
#ifndef SERVEKIT_CC_PARITY_H_
#define SERVEKIT_CC_PARITY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "cc/manifest.h"
#include "cc/model.h"
#include "cc/tensor.h"
#include "nlohmann/json.hpp"

namespace servekit {

struct OutputParity {
  std::string name;
  bool passed = false;
  double max_abs_error = 0.0;
  double max_rel_error = 0.0;  // over elements whose expected value is non-zero
  int64_t elements = 0;
  int64_t mismatches = 0;
  Tolerance tolerance;
  std::string message;  // why it failed (first mismatch, shape or dtype); empty when passed
};

struct CaseParity {
  std::string endpoint;
  int64_t batch = 0;
  std::string label;  // "reference serving_default b4", "tf_saved_model vs onnx serving_default b4"
  bool passed = false;
  std::string error;  // the case could not run (missing file, run failure); empty otherwise
  std::vector<OutputParity> outputs;
};

// Compares one output tensor with its expected value.
OutputParity CompareTensors(const std::string& name, const Tensor& expected, const Tensor& actual,
                            const Tolerance& tolerance);

// The reference inputs of `c`, read from the manifest's .npy files.
StatusOr<std::vector<NamedTensor>> LoadCaseInputs(const Manifest& manifest, const ReferenceCase& c);

// Every reference case whose endpoint the model's format serves.
std::vector<CaseParity> CheckReferenceParity(const Model& model, const Manifest& manifest);

// Runs the reference inputs of every case both formats serve through `a` and `b`
// and compares b's outputs with a's.
std::vector<CaseParity> CheckCrossParity(const Model& a, const Model& b, const Manifest& manifest);

nlohmann::json ToJson(const CaseParity& c);
// One line per output: "PASS reference serving_default b1 logits max_abs=1.2e-07 max_rel=3e-07".
std::vector<std::string> DescribeParity(const CaseParity& c);

}  // namespace servekit

#endif  // SERVEKIT_CC_PARITY_H_
