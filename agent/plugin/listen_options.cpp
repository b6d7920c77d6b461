#include "plugin/listen_options.hpp"

#include "net/listen_address.hpp"

namespace tank::plugin {

void check_listen_option(const config::SectionValues& values, config::Diagnostics& diagnostics) {
  std::string error;
  if (!net::parse_listen_address(values.string("listen"), &error)) {
    diagnostics.error(values.location_of("listen"), values.path() + ".listen", error);
  }
}

}  // namespace tank::plugin
