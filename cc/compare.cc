#include "cc/compare.h"

#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>

#include "cc/file_util.h"
#include "cc/loader.h"

namespace servekit {
namespace {

// The path with symbolic links and "." resolved; the path itself when it cannot be.
std::string RealPath(const std::string& path) {
  char buffer[PATH_MAX];
  return ::realpath(path.c_str(), buffer) != nullptr ? std::string(buffer) : path;
}

std::string StripTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A side resolved: the artifact to load, and the manifest that lists it (if any).
struct Resolved {
  CompareSide side;
  std::optional<Manifest> manifest;
  const ManifestArtifact* entry = nullptr;  // the manifest's entry for the artifact
};

bool Loadable(ModelFormat format) { return NoNativeRuntimeReason(format).empty(); }

std::string FormatList(const Manifest& manifest) {
  std::string list;
  for (const auto& a : manifest.artifacts) list += (list.empty() ? "" : ", ") + std::string(FormatName(a.format));
  return list;
}

// `given` as an export (directory with manifest.json, or the manifest) or an artifact.
// `want`: the format asked for; `prefer`: the format to take when the export has it.
StatusOr<Resolved> Resolve(const std::string& label, const std::string& given, std::optional<ModelFormat> want,
                           std::optional<ModelFormat> prefer) {
  Resolved r;
  r.side.given = given;
  const std::string path = StripTrailingSlashes(given);
  std::string manifest_path;
  bool is_export = false;
  if (IsRegularFile(path) && EndsWith(path, ".json")) {
    manifest_path = path;
    is_export = true;
  } else if (IsDirectory(path) && IsRegularFile(JoinPath(path, "manifest.json"))) {
    manifest_path = JoinPath(path, "manifest.json");
    is_export = true;
  } else if (IsRegularFile(JoinPath(DirName(path), "manifest.json"))) {
    manifest_path = JoinPath(DirName(path), "manifest.json");  // the artifact's export, if it lists it
  }
  if (!manifest_path.empty()) {
    auto manifest = ReadManifest(manifest_path);
    if (!manifest.ok()) return manifest.status().WithContext(label + ": ");
    r.manifest = std::move(manifest).value();
  }
  if (is_export) {
    const Manifest& m = *r.manifest;
    if (want) {
      r.entry = m.FindArtifact(*want);
      if (r.entry == nullptr) {
        return NotFound(label + ": " + manifest_path + " has no " + FormatName(*want) + " artifact (it has " +
                        FormatList(m) + ")");
      }
    } else {
      if (prefer && m.FindArtifact(*prefer) != nullptr && Loadable(*prefer)) r.entry = m.FindArtifact(*prefer);
      for (const auto& a : m.artifacts) {
        if (r.entry == nullptr && Loadable(a.format)) r.entry = &a;
      }
      if (r.entry == nullptr) {
        return NotFound(label + ": " + manifest_path + " lists no artifact servekit runs natively (it has " +
                        FormatList(m) + ")");
      }
    }
    if (!Loadable(r.entry->format)) {
      return Unimplemented(label + ": " + NoNativeRuntimeReason(r.entry->format));
    }
    r.side.path = m.Resolve(r.entry->path);
    r.side.format = r.entry->format;
  } else {
    auto format = want ? StatusOr<ModelFormat>(*want) : DetectFormat(path);
    if (!format.ok()) return format.status().WithContext(label + ": ");
    r.side.path = path;
    r.side.format = *format;
    if (r.manifest) {  // the manifest beside the artifact counts only if it lists it
      const std::string real = RealPath(path);
      for (const auto& a : r.manifest->artifacts) {
        if (a.format == *format && RealPath(r.manifest->Resolve(a.path)) == real) r.entry = &a;
      }
      if (r.entry == nullptr) {
        r.manifest.reset();
        manifest_path.clear();
      }
    }
  }
  if (r.manifest) {
    r.side.manifest_path = manifest_path;
    r.side.model = r.manifest->model;
    r.side.source_backend = r.manifest->source_backend;
  }
  return r;
}

LoadOptions OptionsFor(const Resolved& r, LoadOptions load) {
  if (r.entry != nullptr && r.side.format == ModelFormat::kTfSavedModel && !r.entry->tags.empty()) {
    load.tags = r.entry->tags;
  }
  if (r.side.format == ModelFormat::kOpenVino) {
    load.openvino_precision = r.entry != nullptr && r.entry->precision == "bfloat16" ? InferencePrecision::kBFloat16
                                                                                     : InferencePrecision::kFloat32;
  }
  return load;
}

std::string Number(double v) {
  if (std::isinf(v)) return "inf";
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.3g", v);
  return buffer;
}

std::string DescribeSide(const CompareSide& s) {
  std::string text = s.path + " (" + FormatName(s.format);
  if (!s.model.empty()) text += ", model '" + s.model + "'";
  if (!s.source_backend.empty()) text += ", from " + s.source_backend;
  text += ")";
  return text;
}

nlohmann::json SideJson(const CompareSide& s) {
  return {{"given", s.given},   {"path", s.path},   {"format", FormatName(s.format)},
          {"manifest", s.manifest_path}, {"model", s.model}, {"source_backend", s.source_backend}};
}

std::string Pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

}  // namespace

Tolerance Looser(const Tolerance& x, const Tolerance& y) {
  return Tolerance{std::max(x.atol, y.atol), std::max(x.rtol, y.rtol)};
}

std::vector<std::string> SignatureDifferences(const Signature& a, const Signature& b) {
  std::vector<std::string> out;
  auto compare = [&out, &a](const char* kind, const std::vector<TensorSpec>& as, const std::vector<TensorSpec>& bs) {
    const std::string where = "endpoint '" + a.name + "' " + kind + " '";
    for (const auto& x : as) {
      const TensorSpec* y = FindSpec(bs, x.name);
      if (y == nullptr) {
        out.push_back(where + x.name + "': only in A");
        continue;
      }
      if (x.dtype != y->dtype) {
        out.push_back(where + x.name + "': dtype " + DTypeName(x.dtype) + " in A, " + DTypeName(y->dtype) + " in B");
        continue;
      }
      if (x.unknown_rank || y->unknown_rank) continue;
      if (x.dims.size() != y->dims.size()) {
        out.push_back(where + x.name + "': " + SpecToString(x) + " in A, " + SpecToString(*y) + " in B");
        continue;
      }
      for (size_t i = 0; i < x.dims.size(); ++i) {
        if (x.dims[i].is_static() && y->dims[i].is_static() && x.dims[i].size != y->dims[i].size) {
          out.push_back(where + x.name + "': " + SpecToString(x) + " in A, " + SpecToString(*y) + " in B");
          break;
        }
      }
    }
    for (const auto& y : bs) {
      if (FindSpec(as, y.name) == nullptr) out.push_back(where + y.name + "': only in B");
    }
  };
  compare("input", a.inputs, b.inputs);
  compare("output", a.outputs, b.outputs);
  return out;
}

bool CompareReport::passed() const {
  if (cases.empty()) return false;
  for (const auto& c : cases) {
    if (!c.passed) return false;
  }
  return true;
}

const OutputParity* CompareReport::FirstDivergence(const CaseParity** in_case) const {
  for (const auto& c : cases) {
    for (const auto& o : c.outputs) {
      if (!o.passed) {
        if (in_case != nullptr) *in_case = &c;
        return &o;
      }
    }
  }
  return nullptr;
}

nlohmann::json CompareReport::ToJson() const {
  nlohmann::json cases_json = nlohmann::json::array();
  for (const auto& c : cases) cases_json.push_back(servekit::ToJson(c));
  nlohmann::json first = nullptr;
  const CaseParity* where = nullptr;
  if (const OutputParity* o = FirstDivergence(&where)) {
    first = {{"endpoint", where->endpoint}, {"batch", where->batch}, {"output", o->name}, {"message", o->message}};
    first["max_abs_error"] = std::isfinite(o->max_abs_error) ? nlohmann::json(o->max_abs_error) : nlohmann::json("inf");
  } else {
    for (const auto& c : cases) {
      if (!c.error.empty()) {
        first = {{"endpoint", c.endpoint}, {"batch", c.batch}, {"error", c.error}};
        break;
      }
    }
  }
  return {{"a", SideJson(a)}, {"b", SideJson(b)}, {"passed", passed()}, {"cases", cases_json},
          {"first_divergence", first}, {"notes", notes}};
}

std::string CompareReport::ToText() const {
  std::ostringstream out;
  out << "A: " << DescribeSide(a) << "\n"
      << "B: " << DescribeSide(b) << "\n"
      << "inputs: the reference cases of " << a.manifest_path << "; tolerance: the looser of "
      << (b.manifest_path.empty() ? "A's manifest (B has none)" : "both manifests") << "\n";
  for (const auto& n : notes) out << "note: " << n << "\n";
  // One row per case and output: case, output, check, max_abs, max_rel, atol, rtol, result.
  std::vector<std::vector<std::string>> rows = {{"case", "output", "max_abs", "max_rel", "atol", "rtol", "result"}};
  std::vector<std::string> messages;
  for (const auto& c : cases) {
    const std::string label = c.endpoint + " b" + std::to_string(c.batch) +
                              (c.label.find(" call ") != std::string::npos ? c.label.substr(c.label.find(" call ")) : "");
    if (!c.error.empty()) {
      rows.push_back({label, "-", "-", "-", "-", "-", "ERROR"});
      messages.push_back(label + ": " + c.error);
      continue;
    }
    for (const auto& o : c.outputs) {
      if (o.check == OutputCheck::kNotComparable) {
        rows.push_back({label, o.name, "-", "-", "-", "-", "N/A"});
        messages.push_back(label + " " + o.name + ": not comparable (" + o.message + ")");
        continue;
      }
      rows.push_back({label, o.name, Number(o.max_abs_error), Number(o.max_rel_error),
                      Number(o.tolerance.atol) + (o.scaled ? "*" : ""), Number(o.tolerance.rtol),
                      o.passed ? "PASS" : "FAIL"});
      if (!o.passed) messages.push_back(label + " " + o.name + ": " + o.message);
    }
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  out << "\n";
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) line += "  " + (i + 1 == row.size() ? row[i] : Pad(row[i], width[i]));
    out << line << "\n";
  }
  bool scaled = false;
  for (const auto& c : cases) {
    for (const auto& o : c.outputs) scaled = scaled || o.scaled;
  }
  if (scaled) out << "  (* atol scaled to the output's size: docs/manifest.md, scale rule)\n";
  for (const auto& m : messages) out << "  - " << m << "\n";
  const CaseParity* where = nullptr;
  const OutputParity* first = FirstDivergence(&where);
  if (passed()) {
    out << "\nRESULT: SAME (every output of " << cases.size() << " case" << (cases.size() == 1 ? "" : "s")
        << " within tolerance)\n";
  } else if (first != nullptr) {
    out << "\nRESULT: DIFFERENT (first divergence: " << where->endpoint << " b" << where->batch << " output '"
        << first->name << "', max_abs=" << Number(first->max_abs_error) << ")\n";
  } else {
    out << "\nRESULT: FAIL (" << (cases.empty() ? "no case was compared" : "a case did not run") << ")\n";
  }
  return out.str();
}

StatusOr<CompareReport> CompareArtifacts(const std::string& a_path, const std::string& b_path,
                                         const CompareOptions& options) {
  SERVEKIT_ASSIGN_OR_RETURN(Resolved a, Resolve("A", a_path, options.format_a, std::nullopt));
  if (!a.manifest) {
    return FailedPrecondition("A: no manifest lists " + a_path + "; compare runs both artifacts on A's reference "
                              "inputs: give A's export directory, its manifest.json, or an artifact inside it");
  }
  SERVEKIT_ASSIGN_OR_RETURN(Resolved b, Resolve("B", b_path, options.format_b, a.side.format));
  const Manifest& manifest = *a.manifest;
  if (manifest.reference.empty()) return FailedPrecondition("A: " + a.side.manifest_path + " has no reference cases");

  CompareReport report;
  report.a = a.side;
  report.b = b.side;
  if (!b.manifest) report.notes.push_back("no manifest lists B: A's tolerances apply");
  if (b.manifest && a.side.model != b.side.model) {
    report.notes.push_back("A is model '" + a.side.model + "', B is model '" + b.side.model + "'");
  }
  auto model_a = LoadModel(a.side.path, OptionsFor(a, options.load), a.side.format);
  if (!model_a.ok()) return model_a.status().WithContext("A: ");
  auto model_b = LoadModel(b.side.path, OptionsFor(b, options.load), b.side.format);
  if (!model_b.ok()) return model_b.status().WithContext("B: ");
  const Model& ma = **model_a;
  const Model& mb = **model_b;

  // The endpoints to compare: those of A's reference cases that A serves.
  std::vector<std::string> endpoints;
  for (const auto& c : manifest.reference) {
    if (std::find(endpoints.begin(), endpoints.end(), c.endpoint) == endpoints.end()) endpoints.push_back(c.endpoint);
  }
  if (options.endpoint) {
    if (std::find(endpoints.begin(), endpoints.end(), *options.endpoint) == endpoints.end()) {
      return NotFound("A: " + a.side.manifest_path + " has no reference case for endpoint '" + *options.endpoint + "'");
    }
    endpoints = {*options.endpoint};
  }
  std::vector<std::string> differences, compared;
  for (const auto& name : endpoints) {
    const Signature* sa = ma.FindEndpoint(name);
    if (sa == nullptr) {
      report.notes.push_back("endpoint '" + name + "' has reference cases, but A (" + FormatName(a.side.format) +
                             ") does not serve it: not compared");
      continue;
    }
    const Signature* sb = mb.FindEndpoint(name);
    if (sb == nullptr) {
      differences.push_back("endpoint '" + name + "': only in A");
      continue;
    }
    for (auto& d : SignatureDifferences(*sa, *sb)) differences.push_back(std::move(d));
    compared.push_back(name);
  }
  if (!differences.empty()) {
    std::string message = "A and B do not have the same signatures, so their outputs cannot be compared by name "
                          "(are they artifacts of one model?):";
    for (const auto& d : differences) message += "\n  - " + d;
    return InvalidArgument(message);
  }
  if (compared.empty()) return FailedPrecondition("A serves none of the endpoints of its manifest's reference cases");

  auto tolerance = [&](DType dtype) {
    const Tolerance ta = manifest.ToleranceFor(dtype);
    return b.manifest ? Looser(ta, b.manifest->ToleranceFor(dtype)) : ta;
  };
  // Stateful endpoints' cases first, in manifest order: both models are fresh, so
  // their states advance call by call as the source's did.
  std::vector<const ReferenceCase*> order, others;
  for (const auto& c : manifest.reference) {
    if (std::find(compared.begin(), compared.end(), c.endpoint) == compared.end()) continue;
    const ManifestEndpoint* e = manifest.FindEndpoint(c.endpoint);
    (e != nullptr && e->stateful ? order : others).push_back(&c);
  }
  order.insert(order.end(), others.begin(), others.end());
  std::map<std::string, int> calls;
  for (const ReferenceCase* c : order) {
    const ManifestEndpoint* endpoint = manifest.FindEndpoint(c->endpoint);
    CaseParity r;
    r.endpoint = c->endpoint;
    r.batch = c->batch;
    r.label = std::string("A vs B ") + c->endpoint + " b" + std::to_string(c->batch);
    if (endpoint != nullptr && endpoint->stateful) r.label += " call " + std::to_string(++calls[c->endpoint]);
    auto inputs = LoadCaseInputs(manifest, *c);
    if (!inputs.ok()) {
      r.error = inputs.status().message();
      report.cases.push_back(std::move(r));
      continue;
    }
    auto out_a = ma.Run(c->endpoint, *inputs);
    auto out_b = mb.Run(c->endpoint, *inputs);
    if (!out_a.ok() || !out_b.ok()) {
      r.error = !out_a.ok() ? "A: " + out_a.status().message() : "B: " + out_b.status().message();
      report.cases.push_back(std::move(r));
      continue;
    }
    r.passed = true;
    for (const auto& spec : ma.FindEndpoint(c->endpoint)->outputs) {
      const Tensor* ta = FindTensor(*out_a, spec.name);
      const Tensor* tb = FindTensor(*out_b, spec.name);
      OutputParity o;
      o.name = spec.name;
      if (endpoint != nullptr && endpoint->IsStochasticOutput(spec.name)) {
        o.check = OutputCheck::kNotComparable;
        o.passed = true;
        o.message = "stochastic output";
      } else if (ta == nullptr || tb == nullptr) {
        o.message = std::string("output missing from ") + (ta == nullptr ? "A" : "B");
      } else {
        o = CompareTensors(spec.name, *ta, *tb, tolerance(ta->dtype()));
      }
      r.passed = r.passed && o.passed;
      r.outputs.push_back(std::move(o));
    }
    report.cases.push_back(std::move(r));
  }
  return report;
}

}  // namespace servekit
