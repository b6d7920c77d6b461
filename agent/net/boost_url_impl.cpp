// The one translation unit that compiles Boost.URL into tank (header-only mode): Debian 12 ships
// its headers but no libboost_url to link or ship.
#include <boost/url/src.hpp>
