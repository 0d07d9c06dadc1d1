#pragma once
// Boost.Process v2 as shipped in Boost 1.81, with BOOST_PROCESS_USE_STD_FS (the Debian package
// has no Boost.Filesystem 1.81 to link): in that mode its headers use boost::optional,
// boost::decay and boost::is_convertible (unqualified, found from namespace boost) without
// including them. Include this instead of the process headers.
#include <boost/optional.hpp>
#include <boost/type_traits/decay.hpp>
#include <boost/type_traits/is_convertible.hpp>

#include <boost/process/v2/posix/default_launcher.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
