// Helpers for the native verifier's tests: where the fixture export is, scratch
// directories, and small tensor constructors.
#ifndef SERVEKIT_TESTS_CC_TEST_UTIL_H_
#define SERVEKIT_TESTS_CC_TEST_UTIL_H_

#include <string>
#include <vector>

#include "cc/tensor.h"

namespace servekit::testing {

// The fixture export written by tests/cc/make_fixtures.py (a runfiles path).
std::string FixtureDir();
std::string FixturePath(const std::string& relative);
// A fresh, empty directory under TEST_TMPDIR.
std::string ScratchDir(const std::string& name);
// A writable copy of the fixture export; returns its directory.
std::string CopyFixture(const std::string& name);

Tensor Floats(Shape shape, const std::vector<float>& values);
Tensor Int64s(Shape shape, const std::vector<int64_t>& values);
Tensor Strings(Shape shape, std::vector<std::string> values);

}  // namespace servekit::testing

#endif  // SERVEKIT_TESTS_CC_TEST_UTIL_H_
