// The one translation unit that compiles Boost.JSON into tank (header-only mode), so there is no
// libboost_json to link or ship.
#include <boost/json/src.hpp>
