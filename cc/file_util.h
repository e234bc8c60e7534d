// Small, non-throwing file system helpers shared by the loaders, manifest and CLI.
#ifndef SERVEKIT_CC_FILE_UTIL_H_
#define SERVEKIT_CC_FILE_UTIL_H_

#include <string>
#include <vector>

#include "cc/status.h"

namespace servekit {

// The whole file; NotFound if absent, InvalidArgument if it is a directory.
StatusOr<std::string> ReadFile(const std::string& path);
Status WriteFile(const std::string& path, const std::string& bytes);
bool IsDirectory(const std::string& path);
bool IsRegularFile(const std::string& path);
// "a/b" from "a" and "b"; `b` when it is absolute or `a` is empty.
std::string JoinPath(const std::string& a, const std::string& b);
// The directory part of `path` ("." when there is none).
std::string DirName(const std::string& path);
// Regular files under `dir`, relative to it with '/' separators, sorted.
StatusOr<std::vector<std::string>> ListFilesRecursive(const std::string& dir);
// Creates `dir` and its parents.
Status MakeDirectories(const std::string& dir);

}  // namespace servekit

#endif  // SERVEKIT_CC_FILE_UTIL_H_
