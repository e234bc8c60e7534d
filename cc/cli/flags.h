// Flags: the small command-line parser of servekit_verify.
//
// Accepts `--name value`, `--name=value`, boolean `--name`, repeated flags and
// positional arguments, and checks them against the flags a subcommand declares.
#ifndef SERVEKIT_CC_CLI_FLAGS_H_
#define SERVEKIT_CC_CLI_FLAGS_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cc/status.h"

namespace servekit {

class Flags {
 public:
  // `with_value`: flags that take a value; `switches`: boolean flags.
  static StatusOr<Flags> Parse(const std::vector<std::string>& args, const std::set<std::string>& with_value,
                               const std::set<std::string>& switches);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // The last value of `name`, if given.
  std::optional<std::string> Get(const std::string& name) const;
  // Every value of a repeated flag, in order.
  std::vector<std::string> GetAll(const std::string& name) const;
  StatusOr<std::optional<int64_t>> GetInt(const std::string& name) const;
  StatusOr<std::optional<double>> GetDouble(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// "1,8,32" -> {1, 8, 32}; each value must be a positive integer.
StatusOr<std::vector<int64_t>> ParseIntList(const std::string& text, const std::string& flag);

}  // namespace servekit

#endif  // SERVEKIT_CC_CLI_FLAGS_H_
