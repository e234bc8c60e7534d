#include "cc/cli/flags.h"

#include <cerrno>
#include <cstdlib>

namespace servekit {

StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args, const std::set<std::string>& with_value,
                             const std::set<std::string>& switches) {
  Flags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      if (arg.size() > 1 && arg[0] == '-' && arg != "-") return InvalidArgument("unknown option '" + arg + "'");
      flags.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    const auto eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (switches.count(name)) {
      if (value) return InvalidArgument("--" + name + " takes no value");
      flags.values_[name].push_back("true");
    } else if (with_value.count(name)) {
      if (!value) {
        if (i + 1 >= args.size()) return InvalidArgument("--" + name + " needs a value");
        value = args[++i];
      }
      flags.values_[name].push_back(*value);
    } else {
      return InvalidArgument("unknown option '--" + name + "'");
    }
  }
  return flags;
}

std::optional<std::string> Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Flags::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

StatusOr<std::optional<int64_t>> Flags::GetInt(const std::string& name) const {
  auto v = Get(name);
  if (!v) return std::optional<int64_t>();
  errno = 0;
  char* end = nullptr;
  const long long parsed = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0) return InvalidArgument("--" + name + " must be an integer, not '" + *v + "'");
  return std::optional<int64_t>(parsed);
}

StatusOr<std::optional<double>> Flags::GetDouble(const std::string& name) const {
  auto v = Get(name);
  if (!v) return std::optional<double>();
  errno = 0;
  char* end = nullptr;
  const double parsed = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || errno != 0) return InvalidArgument("--" + name + " must be a number, not '" + *v + "'");
  return std::optional<double>(parsed);
}

StatusOr<std::vector<int64_t>> ParseIntList(const std::string& text, const std::string& flag) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    char* stop = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &stop, 10);
    if (item.empty() || *stop != '\0' || errno != 0 || v <= 0) {
      return InvalidArgument("--" + flag + " must be a comma-separated list of positive integers, not '" + text + "'");
    }
    values.push_back(v);
    start = end + 1;
  }
  return values;
}

}  // namespace servekit
