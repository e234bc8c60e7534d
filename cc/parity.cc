#include "cc/parity.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>

#include "cc/npy.h"

namespace servekit {
namespace {

std::string Number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.6g", v);
  return buffer;
}

std::string IndexToString(const Shape& shape, int64_t flat) {
  std::vector<int64_t> index(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] > 0) {
      index[i] = flat % shape[i];
      flat /= shape[i];
    }
  }
  return ShapeToString(index);
}

}  // namespace

const char* OutputCheckName(OutputCheck check) {
  switch (check) {
    case OutputCheck::kValues: return "values";
    case OutputCheck::kStochastic: return "stochastic";
    case OutputCheck::kNotComparable: return "not_comparable";
  }
  return "values";
}

OutputParity CheckStochasticOutput(const std::string& name, const Tensor& expected, const Tensor& actual) {
  OutputParity r;
  r.name = name;
  r.check = OutputCheck::kStochastic;
  r.elements = actual.num_elements();
  if (expected.dtype() != actual.dtype()) {
    r.message = std::string("dtype expected ") + DTypeName(expected.dtype()) + ", found " + DTypeName(actual.dtype());
    return r;
  }
  if (expected.shape() != actual.shape()) {
    r.message = "shape expected " + ShapeToString(expected.shape()) + ", found " + ShapeToString(actual.shape());
    return r;
  }
  if (IsFloating(actual.dtype())) {
    for (int64_t i = 0; i < r.elements; ++i) {
      const double a = ElementAsDouble(actual.dtype(), actual.data(), i);
      if (!std::isfinite(a) && r.mismatches++ == 0) {
        r.message = "element " + IndexToString(actual.shape(), i) + " is " + Number(a);
      }
    }
    if (r.mismatches > 0) {
      r.message = std::to_string(r.mismatches) + " of " + std::to_string(r.elements) +
                  " elements are not finite; first: " + r.message;
    }
  }
  r.passed = r.mismatches == 0;
  return r;
}

OutputParity CompareTensors(const std::string& name, const Tensor& expected, const Tensor& actual,
                            const Tolerance& tolerance) {
  OutputParity r;
  r.name = name;
  r.tolerance = tolerance;
  r.elements = expected.num_elements();
  if (expected.dtype() != actual.dtype()) {
    r.message = std::string("dtype expected ") + DTypeName(expected.dtype()) + ", found " + DTypeName(actual.dtype());
    return r;
  }
  if (expected.shape() != actual.shape()) {
    r.message = "shape expected " + ShapeToString(expected.shape()) + ", found " + ShapeToString(actual.shape());
    return r;
  }
  const Shape& shape = expected.shape();
  if (expected.is_string()) {
    for (int64_t i = 0; i < r.elements; ++i) {
      if (expected.strings()[i] != actual.strings()[i]) {
        if (r.mismatches++ == 0) {
          r.message = "element " + IndexToString(shape, i) + ": expected \"" + expected.strings()[i] +
                      "\", found \"" + actual.strings()[i] + "\"";
        }
      }
    }
  } else {
    const bool exact = !IsFloating(expected.dtype());
    double atol = tolerance.atol;
    if (!exact) {
      double scale = 0.0;
      for (int64_t i = 0; i < r.elements; ++i) {
        const double e = ElementAsDouble(expected.dtype(), expected.data(), i);
        if (std::isfinite(e)) scale = std::max(scale, std::fabs(e));
      }
      const double relative_floor = DefaultTolerance(expected.dtype()).atol * scale;
      if (relative_floor > tolerance.atol) {
        atol = relative_floor;
      } else if (scale < kScaleFloor * tolerance.atol) {
        const double fraction = std::max(kScaledAtol, kScaledRtolFactor * tolerance.rtol);
        atol = std::min(tolerance.atol, fraction * std::max(scale, tolerance.atol));
      }
      if (atol != tolerance.atol) {
        r.scaled = true;
        r.tolerance.atol = atol;
      }
    }
    for (int64_t i = 0; i < r.elements; ++i) {
      const double e = ElementAsDouble(expected.dtype(), expected.data(), i);
      const double a = ElementAsDouble(actual.dtype(), actual.data(), i);
      bool ok;
      if (std::isnan(e) || std::isnan(a)) {
        ok = std::isnan(e) && std::isnan(a);
        if (!ok) r.max_abs_error = INFINITY;
      } else if (std::isinf(e) || std::isinf(a)) {
        ok = e == a;
        if (!ok) r.max_abs_error = INFINITY;
      } else {
        const double diff = std::fabs(a - e);
        r.max_abs_error = std::max(r.max_abs_error, diff);
        if (e != 0) r.max_rel_error = std::max(r.max_rel_error, diff / std::fabs(e));
        // Integers: compare the stored values, not their double images.
        ok = exact ? std::memcmp(static_cast<const char*>(expected.data()) + i * DTypeSize(expected.dtype()),
                                 static_cast<const char*>(actual.data()) + i * DTypeSize(actual.dtype()),
                                 DTypeSize(expected.dtype())) == 0
                   : diff <= atol + tolerance.rtol * std::fabs(e);
      }
      if (!ok && r.mismatches++ == 0) {
        r.message = "element " + IndexToString(shape, i) + ": expected " + Number(e) + ", found " + Number(a);
      }
    }
  }
  if (r.mismatches > 0) {
    r.message = std::to_string(r.mismatches) + " of " + std::to_string(r.elements) +
                " elements differ beyond tolerance; first: " + r.message;
  }
  r.passed = r.mismatches == 0;
  return r;
}

namespace {

// The dtype `specs` give tensor `name`, if they name it.
std::optional<DType> SpecDType(const std::vector<TensorSpec>& specs, const std::string& name) {
  for (const TensorSpec& spec : specs) {
    if (spec.name == name) return spec.dtype;
  }
  return std::nullopt;
}

}  // namespace

StatusOr<Tensor> ReadReference(const Manifest& manifest, const std::string& path, std::optional<DType> dtype) {
  return ReadNpyAs(manifest.Resolve(path), dtype);
}

StatusOr<std::vector<NamedTensor>> LoadCaseInputs(const Manifest& manifest, const ReferenceCase& c) {
  static const std::vector<TensorSpec> kNoSpecs;
  const ManifestEndpoint* endpoint = manifest.FindEndpoint(c.endpoint);
  const std::vector<TensorSpec>& specs = endpoint != nullptr ? endpoint->signature.inputs : kNoSpecs;
  std::vector<NamedTensor> inputs;
  for (const auto& [name, path] : c.inputs) {
    SERVEKIT_ASSIGN_OR_RETURN(Tensor t, ReadReference(manifest, path, SpecDType(specs, name)));
    inputs.push_back(NamedTensor{name, std::move(t)});
  }
  return inputs;
}

namespace {

std::string BatchLabel(const ReferenceCase& c) { return c.endpoint + " b" + std::to_string(c.batch); }

const Tensor* Find(const std::vector<NamedTensor>& tensors, const std::string& name) {
  return FindTensor(tensors, name);
}

}  // namespace

namespace {

// The manifest's reference cases the model's format serves, in the order to run
// them: stateful endpoints' cases first (manifest order), then the others.
std::vector<const ReferenceCase*> CasesToRun(const Model& model, const Manifest& manifest) {
  std::vector<const ReferenceCase*> stateful, others;
  for (const auto& c : manifest.reference) {
    const ManifestEndpoint* endpoint = manifest.FindEndpoint(c.endpoint);
    if (endpoint == nullptr || !endpoint->HasFormat(model.format())) continue;
    (endpoint->stateful ? stateful : others).push_back(&c);
  }
  stateful.insert(stateful.end(), others.begin(), others.end());
  return stateful;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  if (a.is_string()) return a.strings() == b.strings();
  return a.byte_size() == b.byte_size() && (a.byte_size() == 0 || std::memcmp(a.data(), b.data(), a.byte_size()) == 0);
}

}  // namespace

std::vector<CaseParity> CheckReferenceParity(const Model& model, const Manifest& manifest) {
  std::vector<CaseParity> results;
  std::map<std::string, int> calls;  // per stateful endpoint, calls so far
  for (const ReferenceCase* case_ptr : CasesToRun(model, manifest)) {
    const ReferenceCase& c = *case_ptr;
    const ManifestEndpoint* endpoint = manifest.FindEndpoint(c.endpoint);
    CaseParity r;
    r.endpoint = c.endpoint;
    r.batch = c.batch;
    r.label = std::string(FormatName(model.format())) + " reference " + BatchLabel(c);
    if (endpoint->stateful) r.label += " call " + std::to_string(++calls[c.endpoint]);
    auto inputs = LoadCaseInputs(manifest, c);
    if (!inputs.ok()) {
      r.error = inputs.status().message();
      results.push_back(std::move(r));
      continue;
    }
    auto outputs = model.Run(c.endpoint, *inputs);
    if (!outputs.ok()) {
      r.error = outputs.status().message();
      results.push_back(std::move(r));
      continue;
    }
    // The artifact's outputs honour the endpoint's named dims: a dim shared by inputs
    // and outputs has one size in this call.
    r.dim_errors = CheckDimBindings(endpoint->signature, *inputs, &*outputs);
    r.passed = r.dim_errors.empty();
    for (const auto& [name, path] : c.outputs) {
      auto expected = ReadReference(manifest, path, SpecDType(endpoint->signature.outputs, name));
      const Tensor* actual = Find(*outputs, name);
      OutputParity o;
      o.name = name;
      if (!expected.ok()) {
        o.message = expected.status().message();
      } else if (actual == nullptr) {
        o.message = "the model returned no output '" + name + "'";
      } else if (endpoint->IsStochasticOutput(name)) {
        o = CheckStochasticOutput(name, *expected, *actual);
      } else {
        o = CompareTensors(name, *expected, *actual, manifest.ToleranceFor(expected->dtype()));
      }
      r.passed = r.passed && o.passed;
      r.outputs.push_back(std::move(o));
    }
    results.push_back(std::move(r));
  }
  return results;
}

namespace {

// The endpoint's first reference case or, when it has none (SavedModel's `serve`
// next to `serving_default`), the first case of an endpoint taking the same inputs.
const ReferenceCase* FirstCaseWithInputsOf(const Manifest& manifest, const Signature& signature) {
  auto same_inputs = [&signature](const Signature& other) {
    if (other.inputs.size() != signature.inputs.size()) return false;
    for (size_t i = 0; i < other.inputs.size(); ++i) {
      const TensorSpec& a = other.inputs[i];
      const TensorSpec& b = signature.inputs[i];
      if (a.name != b.name || a.dtype != b.dtype || a.dims != b.dims) return false;
    }
    return true;
  };
  for (const auto& c : manifest.reference) {
    if (c.endpoint == signature.name) return &c;
  }
  for (const auto& c : manifest.reference) {
    const ManifestEndpoint* other = manifest.FindEndpoint(c.endpoint);
    if (other != nullptr && same_inputs(other->signature)) return &c;
  }
  return nullptr;
}

}  // namespace

std::vector<RandomnessCheck> CheckStaysRandom(const Model& model, const Manifest& manifest) {
  std::vector<RandomnessCheck> results;
  for (const auto& endpoint : manifest.endpoints) {
    if (!endpoint.stochastic || !endpoint.HasFormat(model.format())) continue;
    RandomnessCheck r;
    r.endpoint = endpoint.signature.name;
    r.label = std::string(FormatName(model.format())) + " stays random " + r.endpoint;
    const ReferenceCase* first = FirstCaseWithInputsOf(manifest, endpoint.signature);
    if (first == nullptr) {
      r.message = "no reference case to run it on";
      results.push_back(std::move(r));
      continue;
    }
    r.label += " b" + std::to_string(first->batch);
    if (first->endpoint != r.endpoint) r.label += " (inputs of '" + first->endpoint + "')";
    auto inputs = LoadCaseInputs(manifest, *first);
    if (!inputs.ok()) {
      r.message = inputs.status().message();
      results.push_back(std::move(r));
      continue;
    }
    auto one = model.Run(r.endpoint, *inputs);
    if (!one.ok()) {
      r.message = one.status().message();
      results.push_back(std::move(r));
      continue;
    }
    auto two = model.Run(r.endpoint, *inputs);
    if (!two.ok()) {
      r.message = two.status().message();
      results.push_back(std::move(r));
      continue;
    }
    std::string differ, same;
    for (const auto& name : endpoint.stochastic_outputs) {
      const Tensor* a = Find(*one, name);
      const Tensor* b = Find(*two, name);
      if (a == nullptr || b == nullptr) continue;  // reported by the signature check
      std::string& list = SameBytes(*a, *b) ? same : differ;
      list += (list.empty() ? "'" : ", '") + name + "'";
    }
    r.passed = !differ.empty();
    r.message = r.passed ? differ + " changed between two runs"
                         : "two runs gave identical " + (same.empty() ? std::string("outputs") : same) +
                               ": the artifact is deterministic, but the manifest says the endpoint is stochastic";
    results.push_back(std::move(r));
  }
  return results;
}

std::vector<CaseParity> CheckCrossParity(const Model& a, const Model& b, const Manifest& manifest) {
  std::vector<CaseParity> results;
  for (const auto& c : manifest.reference) {
    const ManifestEndpoint* endpoint = manifest.FindEndpoint(c.endpoint);
    if (endpoint == nullptr || !endpoint->HasFormat(a.format()) || !endpoint->HasFormat(b.format())) continue;
    CaseParity r;
    r.endpoint = c.endpoint;
    r.batch = c.batch;
    r.label = std::string(FormatName(a.format())) + " vs " + FormatName(b.format()) + " " + BatchLabel(c);
    if (endpoint->stateful) {
      // Each artifact's state has moved on since its reference run; another call
      // would compare two arbitrary points of two histories.
      r.passed = true;
      r.not_comparable = "stateful endpoint: each call updates the artifact's variables";
      results.push_back(std::move(r));
      continue;
    }
    auto inputs = LoadCaseInputs(manifest, c);
    if (!inputs.ok()) {
      r.error = inputs.status().message();
      results.push_back(std::move(r));
      continue;
    }
    auto out_a = a.Run(c.endpoint, *inputs);
    auto out_b = b.Run(c.endpoint, *inputs);
    if (!out_a.ok() || !out_b.ok()) {
      r.error = !out_a.ok() ? std::string(FormatName(a.format())) + ": " + out_a.status().message()
                            : std::string(FormatName(b.format())) + ": " + out_b.status().message();
      results.push_back(std::move(r));
      continue;
    }
    r.passed = true;
    for (const auto& spec : endpoint->signature.outputs) {
      const Tensor* ta = Find(*out_a, spec.name);
      const Tensor* tb = Find(*out_b, spec.name);
      OutputParity o;
      o.name = spec.name;
      if (endpoint->IsStochasticOutput(spec.name)) {
        o.check = OutputCheck::kNotComparable;
        o.passed = true;
        o.message = "stochastic output";
      } else if (ta == nullptr || tb == nullptr) {
        o.message = std::string("output missing from ") + FormatName((ta == nullptr ? a : b).format());
      } else {
        o = CompareTensors(spec.name, *ta, *tb, manifest.ToleranceFor(spec.dtype));
      }
      r.passed = r.passed && o.passed;
      r.outputs.push_back(std::move(o));
    }
    results.push_back(std::move(r));
  }
  return results;
}

std::vector<std::string> CheckDimBindings(const Signature& signature, const std::vector<NamedTensor>& inputs,
                                          const std::vector<NamedTensor>* outputs,
                                          std::map<std::string, int64_t>* sizes) {
  std::vector<std::string> errors;
  std::map<std::string, std::pair<int64_t, std::string>> bound;  // symbol -> size, where it was bound
  auto bind = [&](const char* role, const std::vector<TensorSpec>& specs, const std::vector<NamedTensor>& tensors) {
    for (const auto& spec : specs) {
      const Tensor* t = FindTensor(tensors, spec.name);
      if (t == nullptr || spec.unknown_rank || t->shape().size() != spec.dims.size()) continue;
      for (size_t i = 0; i < spec.dims.size(); ++i) {
        const Dim& d = spec.dims[i];
        if (d.is_static() || d.symbol.empty()) continue;
        const int64_t size = t->shape()[i];
        const std::string where = std::string(role) + " '" + spec.name + "' dim " + std::to_string(i);
        auto it = bound.find(d.symbol);
        if (it == bound.end()) {
          bound.emplace(d.symbol, std::make_pair(size, where));
        } else if (it->second.first != size) {
          errors.push_back("dim '" + d.symbol + "': " + where + " is " + std::to_string(size) + ", but " +
                           it->second.second + " is " + std::to_string(it->second.first));
        }
      }
    }
  };
  bind("input", signature.inputs, inputs);
  if (outputs != nullptr) bind("output", signature.outputs, *outputs);
  if (sizes != nullptr) {
    for (const auto& [symbol, b] : bound) (*sizes)[symbol] = b.first;
  }
  return errors;
}

std::vector<std::string> CheckVerifiedDims(const Manifest& manifest) {
  std::vector<std::string> errors;
  std::map<std::string, std::map<std::string, std::set<int64_t>>> seen;  // endpoint -> symbol -> sizes
  for (const auto& c : manifest.reference) {
    const ManifestEndpoint* endpoint = manifest.FindEndpoint(c.endpoint);
    if (endpoint == nullptr) continue;
    std::vector<NamedTensor> tensors[2];
    bool readable = true;
    for (int k = 0; k < 2; ++k) {
      for (const auto& [name, path] : k == 0 ? c.inputs : c.outputs) {
        auto t = ReadNpy(manifest.Resolve(path));
        if (!t.ok()) {
          readable = false;  // the parity checks report the file
          break;
        }
        tensors[k].push_back(NamedTensor{name, std::move(t).value()});
      }
    }
    if (!readable) continue;
    std::map<std::string, int64_t> sizes;
    for (const auto& e : CheckDimBindings(endpoint->signature, tensors[0], &tensors[1], &sizes)) {
      errors.push_back("reference " + c.endpoint + " b" + std::to_string(c.batch) + ": " + e);
    }
    for (const auto& [symbol, size] : sizes) seen[c.endpoint][symbol].insert(size);
  }
  for (const auto& endpoint : manifest.endpoints) {
    for (const auto& d : endpoint.dims) {
      const auto& cases = seen[endpoint.signature.name][d.symbol];
      const std::set<int64_t> recorded(d.verified.begin(), d.verified.end());
      if (recorded == cases) continue;
      auto list = [](const std::set<int64_t>& sizes) {
        std::string s;
        for (int64_t v : sizes) s += (s.empty() ? "" : ", ") + std::to_string(v);
        return "[" + s + "]";
      };
      errors.push_back("endpoint '" + endpoint.signature.name + "' dim '" + d.symbol + "': the manifest says it was " +
                       "verified at " + list(recorded) + ", its reference cases give it " + list(cases));
    }
  }
  return errors;
}

nlohmann::json ToJson(const CaseParity& c) {
  nlohmann::json outputs = nlohmann::json::array();
  for (const auto& o : c.outputs) {
    nlohmann::json j = {{"name", o.name},
                        {"check", OutputCheckName(o.check)},
                        {"passed", o.passed},
                        {"elements", o.elements},
                        {"mismatches", o.mismatches},
                        {"atol", o.tolerance.atol},
                        {"rtol", o.tolerance.rtol}};
    if (o.scaled) j["scaled"] = true;
    // JSON has no infinity: report it as a string.
    j["max_abs_error"] = std::isfinite(o.max_abs_error) ? nlohmann::json(o.max_abs_error) : nlohmann::json("inf");
    j["max_rel_error"] = std::isfinite(o.max_rel_error) ? nlohmann::json(o.max_rel_error) : nlohmann::json("inf");
    if (!o.message.empty()) j["message"] = o.message;
    outputs.push_back(std::move(j));
  }
  nlohmann::json j = {{"label", c.label},
                      {"endpoint", c.endpoint},
                      {"batch", c.batch},
                      {"passed", c.passed},
                      {"outputs", outputs}};
  if (!c.error.empty()) j["error"] = c.error;
  if (!c.not_comparable.empty()) j["not_comparable"] = c.not_comparable;
  if (!c.dim_errors.empty()) j["dim_errors"] = c.dim_errors;
  return j;
}

nlohmann::json ToJson(const RandomnessCheck& c) {
  return {{"endpoint", c.endpoint}, {"label", c.label}, {"passed", c.passed}, {"message", c.message}};
}

std::string DescribeRandomness(const RandomnessCheck& c) {
  return std::string(c.passed ? "PASS " : "FAIL ") + c.label + ": " + c.message;
}

std::vector<std::string> DescribeParity(const CaseParity& c) {
  std::vector<std::string> lines;
  if (!c.error.empty()) {
    lines.push_back("FAIL " + c.label + ": " + c.error);
    return lines;
  }
  if (!c.not_comparable.empty()) {
    lines.push_back("N/A  " + c.label + ": not comparable (" + c.not_comparable + ")");
    return lines;
  }
  for (const auto& e : c.dim_errors) lines.push_back("FAIL " + c.label + " " + e);
  for (const auto& o : c.outputs) {
    std::string line;
    if (o.check == OutputCheck::kNotComparable) {
      line = "N/A  " + c.label + " " + o.name + ": not comparable (" + o.message + ")";
    } else if (o.check == OutputCheck::kStochastic && o.passed) {
      line = "PASS " + c.label + " " + o.name + " stochastic: dtype and shape as expected, values finite (not compared)";
    } else {
      line = std::string(o.passed ? "PASS " : "FAIL ") + c.label + " " + o.name;
      if (o.check == OutputCheck::kValues) {
        line += " max_abs=" + Number(o.max_abs_error) + " max_rel=" + Number(o.max_rel_error);
      } else {
        line += " stochastic";
      }
      if (!o.passed) line += ": " + o.message;
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace servekit
