#include "cc/inspect.h"

#include <algorithm>
#include <sstream>

#include "cc/loader.h"
#include "cc/tf_saved_model.h"

namespace servekit {
namespace {

std::string Pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

const ManifestEndpoint* FindIn(const std::optional<std::vector<ManifestEndpoint>>& endpoints,
                               const std::string& name) {
  if (!endpoints) return nullptr;
  for (const auto& e : *endpoints) {
    if (e.signature.name == name) return &e;
  }
  return nullptr;
}

}  // namespace

std::string InspectReport::ToText() const {
  std::ostringstream out;
  out << path << " (" << FormatName(format) << "), " << signatures.size() << " endpoint"
      << (signatures.size() == 1 ? "" : "s") << "\n";
  for (const auto& s : signatures) {
    out << "\nendpoint '" << s.name << "'" << (s.method_name.empty() ? "" : "  (" + s.method_name + ")");
    if (const ManifestEndpoint* e = FindIn(manifest_endpoints, s.name)) {
      if (e->stochastic) out << "  stochastic";
      if (e->stateful) out << "  stateful";
    } else if (manifest_endpoints) {
      out << "  (not in the manifest)";
    }
    out << "\n";
    const ManifestEndpoint* e = FindIn(manifest_endpoints, s.name);
    size_t width = 4;
    for (const auto* list : {&s.inputs, &s.outputs}) {
      for (const auto& t : *list) width = std::max(width, t.name.size());
    }
    for (const auto& [role, list] : {std::pair{"input ", &s.inputs}, std::pair{"output", &s.outputs}}) {
      for (const auto& t : *list) {
        const std::string shape = SpecToString(t).substr(std::string(DTypeName(t.dtype)).size());
        std::string line = "  " + std::string(role) + "  " + Pad(t.name, width) + "  " + Pad(DTypeName(t.dtype), 8) +
                           "  " + Pad(shape, 16) + (t.runtime_name.empty() ? "" : "  " + t.runtime_name);
        if (e != nullptr && role[0] == 'o' && e->IsStochasticOutput(t.name)) line += "  stochastic";
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out << line << "\n";
      }
    }
  }
  return out.str();
}

nlohmann::json InspectReport::ToJson() const {
  nlohmann::json endpoints = nlohmann::json::array();
  for (const auto& s : signatures) {
    nlohmann::json j = SignatureToJson(s);
    if (manifest_endpoints) {
      const ManifestEndpoint* e = FindIn(manifest_endpoints, s.name);
      j["stochastic"] = e != nullptr && e->stochastic;
      j["stateful"] = e != nullptr && e->stateful;
      for (auto& out : j["outputs"]) out["stochastic"] = e != nullptr && e->IsStochasticOutput(out["name"]);
    }
    endpoints.push_back(std::move(j));
  }
  return {{"path", path}, {"format", FormatName(format)}, {"endpoints", endpoints}};
}

StatusOr<InspectReport> InspectArtifact(const std::string& path, const std::vector<std::string>& tags,
                                        const std::optional<std::string>& manifest_path) {
  InspectReport report;
  report.path = path;
  SERVEKIT_ASSIGN_OR_RETURN(report.format, DetectFormat(path));
  if (report.format == ModelFormat::kTfSavedModel) {
    SERVEKIT_ASSIGN_OR_RETURN(report.signatures, ReadSavedModelSignatures(path, tags));
  } else {
    SERVEKIT_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, LoadModel(path, LoadOptions{}, report.format));
    report.signatures = model->signatures();
  }
  if (manifest_path) {
    SERVEKIT_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(*manifest_path));
    report.manifest_endpoints = std::move(manifest.endpoints);
  }
  return report;
}

}  // namespace servekit
