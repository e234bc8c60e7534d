// The loader's side of the AOTInductor plugin (torch_aoti_plugin.h): finds
// libservekit_torch_aoti.so and opens it once, RTLD_LOCAL.
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "cc/file_util.h"
#include "cc/torch_aoti_plugin.h"

// Defined only when the binary links //cc:torch_aoti_plugin itself.
extern "C" const servekit::TorchAotiPlugin* servekit_torch_aoti_plugin_v1() __attribute__((weak));

namespace servekit {
namespace {

std::string Dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

std::string RealPath(const std::string& path) {
  char resolved[PATH_MAX];
  return realpath(path.c_str(), resolved) != nullptr ? std::string(resolved) : std::string();
}

// Where to look, in order: beside the binary or shared object that holds this code,
// as it was opened (a runfiles path) and resolved (bazel-bin), and beside the
// running executable.
std::vector<std::string> Candidates() {
  std::vector<std::string> dirs;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&Candidates), &info) != 0 && info.dli_fname != nullptr) {
    const std::string module = info.dli_fname;
    if (module.find('/') != std::string::npos) dirs.push_back(Dir(module));
    dirs.push_back(Dir(RealPath(module)));
  }
  dirs.push_back(Dir(RealPath("/proc/self/exe")));
  std::vector<std::string> files;
  for (const std::string& dir : dirs) {
    if (dir.empty()) continue;
    const std::string file = dir + "/" + kTorchAotiPluginFile;
    bool seen = false;
    for (const auto& f : files) seen = seen || f == file;
    if (!seen) files.push_back(file);
  }
  return files;
}

struct Opened {
  const TorchAotiPlugin* plugin = nullptr;
  std::string location;  // the file, or "linked in"
  Status status = Status::Ok();
};

Status CheckAbi(const TorchAotiPlugin* plugin, const std::string& where) {
  if (plugin == nullptr) return Internal(where + ": " + kTorchAotiPluginSymbol + "() returned null");
  if (plugin->abi != kTorchAotiPluginAbi || plugin->layout != TorchAotiPluginLayout()) {
    return FailedPrecondition(where + " was built from other servekit sources than this binary (plugin ABI " +
                              std::to_string(plugin->abi) + ", expected " + std::to_string(kTorchAotiPluginAbi) +
                              "): rebuild both");
  }
  return Status::Ok();
}

Opened Open() {
  Opened opened;
  if (servekit_torch_aoti_plugin_v1 != nullptr) {  // linked into this binary
    opened.location = "linked in";
    opened.status = CheckAbi(servekit_torch_aoti_plugin_v1(), "the linked-in AOTInductor plugin");
    if (opened.status.ok()) opened.plugin = servekit_torch_aoti_plugin_v1();
    return opened;
  }
  std::vector<std::string> files;
  const char* env = std::getenv(kTorchAotiPluginEnv);
  if (env != nullptr && *env != '\0') {
    files.push_back(env);  // only there: a wrong setting is an error, not a fallback
  } else {
    files = Candidates();
  }
  std::string looked;
  for (const std::string& file : files) {
    looked += (looked.empty() ? "" : ", ") + file;
    if (!IsRegularFile(file)) continue;
    // RTLD_LOCAL: libtorch's symbols (and the plugin's copies of servekit's) stay out
    // of the process's global scope.
    void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* error = dlerror();
      opened.status = FailedPrecondition("servekit's AOTInductor plugin " + file + " could not be opened: " +
                                         (error != nullptr ? error : "unknown dlopen error"));
      return opened;
    }
    // Never closed: models it made may live until the process ends.
    using Entry = const TorchAotiPlugin* (*)();
    auto entry = reinterpret_cast<Entry>(dlsym(handle, kTorchAotiPluginSymbol));
    if (entry == nullptr) {
      opened.status = FailedPrecondition(file + " has no " + kTorchAotiPluginSymbol + "(): not servekit's plugin");
      return opened;
    }
    opened.status = CheckAbi(entry(), file);
    if (opened.status.ok()) {
      opened.plugin = entry();
      opened.location = file;
    }
    return opened;
  }
  opened.status = FailedPrecondition(
      std::string("AOTInductor packages run through servekit's libtorch plugin, ") + kTorchAotiPluginFile +
      ", which is loaded on demand and is not there (looked for " + (looked.empty() ? "nothing" : looked) +
      "). Build it beside this binary (it is a data dependency of //cc/cli:servekit_verify and "
      "//python/servekit:native; `bazel build //cc/cli:" + kTorchAotiPluginFile + "`), or set " +
      kTorchAotiPluginEnv + " to its path.");
  return opened;
}

const Opened& Plugin() {
  static const Opened* opened = new Opened(Open());  // thread-safe, once; never destroyed
  return *opened;
}

}  // namespace

StatusOr<std::unique_ptr<Model>> LoadTorchAotiPackage(const std::string& path, const LoadOptions& options,
                                                      const Signature& signature) {
  const Opened& plugin = Plugin();
  if (plugin.plugin == nullptr) return Status(plugin.status.code(), path + ": " + plugin.status.message());
  return plugin.plugin->load(path, options, signature);
}

StatusOr<std::string> TorchAotiPluginLocation() {
  const Opened& plugin = Plugin();
  if (plugin.plugin == nullptr) return plugin.status;
  return plugin.location;
}

}  // namespace servekit
