#include "cc/validate.h"

#include <algorithm>
#include <set>

#include "cc/file_util.h"
#include "cc/sha256.h"

namespace servekit {
namespace {

std::string DimDescription(const Dim& d) {
  if (d.is_static()) return std::to_string(d.size);
  return d.symbol.empty() ? "dynamic" : "dynamic (" + d.symbol + ")";
}

void CompareTensor(const std::string& where, const TensorSpec& expected, const TensorSpec& found,
                   bool check_symbols, std::vector<std::string>* errors) {
  if (expected.dtype != found.dtype) {
    errors->push_back(where + ": dtype expected " + DTypeName(expected.dtype) + ", found " + DTypeName(found.dtype));
  }
  if (found.unknown_rank) {
    errors->push_back(where + ": rank expected " + std::to_string(expected.dims.size()) + " (" +
                      SpecToString(expected) + "), found unknown rank");
    return;
  }
  if (expected.dims.size() != found.dims.size()) {
    errors->push_back(where + ": rank expected " + std::to_string(expected.dims.size()) + " (" +
                      SpecToString(expected) + "), found " + std::to_string(found.dims.size()) + " (" +
                      SpecToString(found) + ")");
    return;
  }
  for (size_t i = 0; i < expected.dims.size(); ++i) {
    const Dim& e = expected.dims[i];
    const Dim& f = found.dims[i];
    const std::string dim = where + ": dim " + std::to_string(i);
    if (e.is_static() != f.is_static() || (e.is_static() && e.size != f.size)) {
      errors->push_back(dim + " expected " + DimDescription(e) + ", found " + DimDescription(f));
    } else if (!e.is_static() && check_symbols && !e.symbol.empty() && e.symbol != f.symbol) {
      errors->push_back(dim + " expected symbolic name '" + e.symbol + "', found " +
                        (f.symbol.empty() ? std::string("no name") : "'" + f.symbol + "'"));
    }
  }
}

void CompareTensorLists(const std::string& endpoint, const char* role, const std::vector<TensorSpec>& expected,
                        const std::vector<TensorSpec>& found, ModelFormat format, bool check_symbols,
                        std::vector<std::string>* errors) {
  for (const auto& e : expected) {
    const std::string where = "endpoint '" + endpoint + "' " + role + " '" + e.name + "'";
    const TensorSpec* f = FindSpec(found, e.name);
    if (f == nullptr) {
      errors->push_back(where + ": missing from the " + FormatName(format) + " artifact (expected " +
                        SpecToString(e) + ")");
      continue;
    }
    CompareTensor(where, e, *f, check_symbols, errors);
  }
  for (const auto& f : found) {
    if (FindSpec(expected, f.name) == nullptr) {
      errors->push_back("endpoint '" + endpoint + "' " + role + " '" + f.name + "': found in the " +
                        FormatName(format) + " artifact (" + SpecToString(f) + ") but not in the manifest");
    }
  }
}

bool IsHexDigest(const std::string& s) {
  return s.size() == 64 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

std::vector<std::string> CompareSignatures(const Manifest& manifest, ModelFormat format,
                                           const std::vector<Signature>& found) {
  std::vector<std::string> errors;
  std::vector<const ManifestEndpoint*> expected;
  for (const auto& e : manifest.endpoints) {
    if (e.HasFormat(format)) expected.push_back(&e);
  }
  // Formats whose signature carries dim names: ONNX always (dim_param), a SavedModel
  // when servekit wrote them into its signature_def.
  const ManifestArtifact* artifact = manifest.FindArtifact(format);
  const bool check_symbols = format == ModelFormat::kOnnx ||
                             (format == ModelFormat::kTfSavedModel && artifact != nullptr && artifact->dim_names);
  if (format == ModelFormat::kTfSavedModel) {
    const bool listed = std::any_of(expected.begin(), expected.end(),
                                    [](const ManifestEndpoint* e) { return e->signature.name == "serving_default"; });
    if (!listed) errors.push_back("the manifest lists no 'serving_default' endpoint for tf_saved_model");
  }
  // Every format but the SavedModel holds one graph: one endpoint, serving_default.
  if (format != ModelFormat::kTfSavedModel && expected.size() != 1) {
    errors.push_back("the manifest lists " + std::to_string(expected.size()) + " endpoints for " +
                     FormatName(format) + "; " + (format == ModelFormat::kOnnx ? "an ONNX model" : "this format") +
                     " has exactly one (serving_default)");
  }
  for (const ManifestEndpoint* e : expected) {
    const Signature& want = e->signature;
    const Signature* have = FindSignature(found, want.name);
    if (have == nullptr) {
      std::string names;
      for (const auto& s : found) names += (names.empty() ? "'" : ", '") + s.name + "'";
      errors.push_back("endpoint '" + want.name + "': missing from the " + FormatName(format) +
                       " artifact (it has: " + (names.empty() ? "no endpoints" : names) + ")");
      continue;
    }
    if (format == ModelFormat::kTfSavedModel && want.method_name != have->method_name) {
      errors.push_back("endpoint '" + want.name + "': method_name expected '" + want.method_name + "', found '" +
                       have->method_name + "'");
    }
    CompareTensorLists(want.name, "input", want.inputs, have->inputs, format, check_symbols, &errors);
    CompareTensorLists(want.name, "output", want.outputs, have->outputs, format, check_symbols, &errors);
  }
  for (const auto& s : found) {
    const bool known = std::any_of(expected.begin(), expected.end(),
                                   [&s](const ManifestEndpoint* e) { return e->signature.name == s.name; });
    if (!known) {
      errors.push_back("endpoint '" + s.name + "': found in the " + std::string(FormatName(format)) +
                       " artifact but the manifest does not list it for that format");
    }
  }
  return errors;
}

std::vector<std::string> VerifyDigests(const Manifest& manifest, const ManifestArtifact& artifact) {
  std::vector<std::string> errors;
  const std::string prefix = std::string("artifact '") + FormatName(artifact.format) + "' file '";
  const std::string root = manifest.Resolve(artifact.path);
  const bool is_dir = IsDirectory(root);
  if (!is_dir && !IsRegularFile(root)) {
    errors.push_back(std::string("artifact '") + FormatName(artifact.format) + "': " + root + " does not exist");
    return errors;
  }
  // Files are relative to the directory (a SavedModel) or sit beside the file (ONNX).
  const std::string base = is_dir ? root : DirName(root);
  if (artifact.files.empty()) {
    errors.push_back(std::string("artifact '") + FormatName(artifact.format) + "': the manifest lists no files");
  }
  for (const auto& [file, digest] : artifact.files) {
    const std::string where = prefix + file + "'";
    const std::string path = JoinPath(base, file);
    if (digest.rfind("sha256:", 0) != 0 || !IsHexDigest(digest.substr(7))) {
      errors.push_back(where + ": the manifest's digest '" + digest + "' is not 'sha256:<64 lowercase hex>'");
      continue;
    }
    if (!IsRegularFile(path)) {
      errors.push_back(where + ": missing (" + path + ")");
      continue;
    }
    auto actual = Sha256File(path);
    if (!actual.ok()) {
      errors.push_back(where + ": " + actual.status().message());
    } else if (*actual != digest.substr(7)) {
      errors.push_back(where + ": sha256 expected " + digest.substr(7) + ", found " + *actual);
    }
  }
  if (is_dir) {
    auto listed = ListFilesRecursive(root);
    if (!listed.ok()) {
      errors.push_back(std::string("artifact '") + FormatName(artifact.format) + "': " + listed.status().message());
    } else {
      std::set<std::string> known;
      for (const auto& f : artifact.files) known.insert(f.first);
      for (const auto& f : *listed) {
        if (known.count(f) == 0) errors.push_back(prefix + f + "': on disk but not listed in the manifest");
      }
    }
  } else if (std::none_of(artifact.files.begin(), artifact.files.end(),
                          [&](const auto& f) { return JoinPath(base, f.first) == root; })) {
    errors.push_back(std::string("artifact '") + FormatName(artifact.format) + "': the manifest lists no digest for " +
                     artifact.path + " itself");
  }
  return errors;
}

}  // namespace servekit
