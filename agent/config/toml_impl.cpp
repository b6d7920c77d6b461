// The one translation unit that compiles toml++ (TOML_HEADER_ONLY=0 everywhere else), so the
// library is built into tank instead of linked as a shared object.
#define TOML_IMPLEMENTATION
#include <toml++/toml.h>
