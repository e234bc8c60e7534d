// Parity: do a model's outputs match the reference outputs, within tolerances?
//
// CheckReferenceParity runs a manifest's reference cases through a model and compares
// each output with the recorded .npy; CheckCrossParity runs the same reference
// inputs through two models (a SavedModel and an ONNX model of one export) and
// compares them with each other. Floats pass elementwise when
// |actual - expected| <= atol' + rtol * |expected| (NaN matches only NaN); integers,
// bool and strings must be equal. Each output reports its max abs and max rel error.
// atol' is the manifest's atol, unless the expected output is too small for it to
// mean anything: when its scale S (largest finite |value|) is below kScaleFloor * atol,
// atol' = min(atol, f * max(S, atol)) with f = max(kScaledAtol, kScaledRtolFactor * rtol),
// a check relative to the output's own size ("scaled"; the same rule as
// servekit.verification, docs/manifest.md: a lossy precision's roundings add up to a
// few of its units at the output's scale). At the other end, an output is never held
// closer than its dtype's default atol per unit of its scale: atol' = max(atol,
// DefaultTolerance(dtype).atol * S), since a sum's roundings grow with its terms
// (float32: 1e-5 * S, about 84 epsilons; also "scaled").
//
// Endpoints the manifest marks stochastic or stateful (docs/manifest.md) change the
// checks, and every change is reported, never silent:
// - a stochastic output is checked for name, dtype and shape and finite float
//   values, not compared with the reference; CheckStaysRandom checks that two runs
//   on the same reference inputs differ in at least one stochastic output;
// - a stateful endpoint's reference cases run first, once each, in manifest order
//   (they are successive calls from the export-time state: load the model afresh);
// - across formats, stochastic outputs and stateful endpoints are "not comparable".
#ifndef SERVEKIT_CC_PARITY_H_
#define SERVEKIT_CC_PARITY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cc/manifest.h"
#include "cc/model.h"
#include "cc/tensor.h"
#include "nlohmann/json.hpp"

namespace servekit {

// How an output was checked.
enum class OutputCheck {
  kValues,         // compared with the expected values within tolerance
  kStochastic,     // a stochastic output: dtype, shape and finite values only
  kNotComparable,  // across formats: a stochastic output, nothing compared
};
const char* OutputCheckName(OutputCheck check);  // "values", "stochastic", "not_comparable"

inline constexpr double kScaleFloor = 100.0;
inline constexpr double kScaledAtol = 1e-3;
inline constexpr double kScaledRtolFactor = 3.0;

struct OutputParity {
  std::string name;
  OutputCheck check = OutputCheck::kValues;
  // kValues on floats: the output was too small or too large for the manifest's atol,
  // which was replaced by a fraction of its scale (tolerance.atol holds the one used).
  bool scaled = false;
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
  // Why the case was not run (across formats, a stateful endpoint); it then passes.
  std::string not_comparable;
  std::vector<OutputParity> outputs;
  // Named dims the call did not honour (CheckDimBindings): an output dim whose size
  // differs from the input dim of the same name, or inputs that disagree.
  std::vector<std::string> dim_errors;
};

// Whether a stochastic endpoint stays random in an artifact: two runs on its first
// reference case's inputs give different values for at least one stochastic output.
struct RandomnessCheck {
  std::string endpoint;
  std::string label;  // "onnx stays random serving_default b2"
  bool passed = false;
  std::string message;  // which outputs differed, or why the check failed
};

// Compares one output tensor with its expected value.
OutputParity CompareTensors(const std::string& name, const Tensor& expected, const Tensor& actual,
                            const Tolerance& tolerance);

// A stochastic output against its reference: dtype, shape and (floats) finite
// values; the values themselves are not compared.
OutputParity CheckStochasticOutput(const std::string& name, const Tensor& expected, const Tensor& actual);

// The reference inputs of `c`, read from the manifest's .npy files.
// A reference .npy of the manifest as the signature's `dtype`: a bfloat16 tensor's
// values are stored as float32 (.npy has no bfloat16) and narrowed back, exactly.
StatusOr<Tensor> ReadReference(const Manifest& manifest, const std::string& path, std::optional<DType> dtype);
StatusOr<std::vector<NamedTensor>> LoadCaseInputs(const Manifest& manifest, const ReferenceCase& c);

// Every reference case whose endpoint the model's format serves: the cases of
// stateful endpoints first, in manifest order, then the others.
std::vector<CaseParity> CheckReferenceParity(const Model& model, const Manifest& manifest);

// One RandomnessCheck per stochastic endpoint the model's format serves.
std::vector<RandomnessCheck> CheckStaysRandom(const Model& model, const Manifest& manifest);

// Runs the reference inputs of every case both formats serve through `a` and `b`
// and compares b's outputs with a's.
std::vector<CaseParity> CheckCrossParity(const Model& a, const Model& b, const Manifest& manifest);

// Binds each named dynamic dim of `signature` to its size in one call: from the
// inputs, then the outputs (when given). Returns every contradiction, e.g.
//   dim 'sequence': output 'logits' dim 1 is 6, but input 'token_ids' dim 1 is 5
// (dims with one name must have one size in a call); tensors of the wrong rank or
// missing are left to the other checks. `sizes`, when given, receives the bindings.
std::vector<std::string> CheckDimBindings(const Signature& signature, const std::vector<NamedTensor>& inputs,
                                          const std::vector<NamedTensor>* outputs,
                                          std::map<std::string, int64_t>* sizes = nullptr);

// The manifest's "dims" records against its reference data: in each reference case
// every named dim has one size (CheckDimBindings on the case's .npy files), and each
// endpoint's recorded `verified` sizes are exactly the sizes its cases exercise.
std::vector<std::string> CheckVerifiedDims(const Manifest& manifest);

nlohmann::json ToJson(const CaseParity& c);
nlohmann::json ToJson(const RandomnessCheck& c);
// One line per output: "PASS reference serving_default b1 logits max_abs=1.2e-07 max_rel=3e-07";
// "N/A ..." for what is not comparable.
std::vector<std::string> DescribeParity(const CaseParity& c);
// "PASS onnx stays random serving_default b2: 'noisy' differs between two runs".
std::string DescribeRandomness(const RandomnessCheck& c);

}  // namespace servekit

#endif  // SERVEKIT_CC_PARITY_H_
