# Compiler flags live on an interface target that every fleetid target links, never in global
# CMAKE_CXX_FLAGS, so third-party code is untouched and each target states what it gets.
add_library(fleetid_build_flags INTERFACE)
add_library(fleetid::build_flags ALIAS fleetid_build_flags)

# -Wnull-dereference is left out: at -O2, g++ 12 reports false positives inside libstdc++'s
# streambuf, which would break only the release build.
target_compile_options(fleetid_build_flags INTERFACE
  -Wall -Wextra -Werror -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Wimplicit-fallthrough -Wformat=2
  -fno-omit-frame-pointer)

# clang checks the thread-safety annotations of common/mutex.h wherever it compiles fleetid (the
# fuzz preset; make lint passes the same flag to clang-tidy for every translation unit).
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  target_compile_options(fleetid_build_flags INTERFACE -Wthread-safety)
endif()

if(FLEETID_SANITIZE)
  target_compile_options(fleetid_build_flags INTERFACE
    -fsanitize=address,undefined -fno-sanitize-recover=all)
  target_link_options(fleetid_build_flags INTERFACE -fsanitize=address,undefined)
endif()

# fleetid_library(NAME sources... [DEPS ...]) makes fleetid_NAME with the alias fleetid::NAME.
function(fleetid_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(fleetid_${name} STATIC ${ARG_SOURCES})
  add_library(fleetid::${name} ALIAS fleetid_${name})
  target_include_directories(fleetid_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(fleetid_${name}
    PUBLIC ${ARG_PUBLIC_DEPS}
    PRIVATE fleetid::build_flags ${ARG_PRIVATE_DEPS})
endfunction()

# fleetid_test(NAME SOURCES ... [DEPS ...] [DEFINITIONS ...] [DEPENDS ...] [DB]) builds a
# GoogleTest binary linked with the test helpers (fleetid::testing, src/testing/) and registers each
# of its tests with CTest. It is the only way a test executable is made. DEFINITIONS are compile
# definitions of the test (FLEETID_SOURCE_DIR is always defined); DEPENDS are targets built before
# it (a driver it runs). DB: the tests run against SQLite and the throwaway PostgreSQL cluster that
# the store.postgres.start fixture brings up (testing/db.h reads its URL from the file named here).
function(fleetid_test name)
  if(NOT FLEETID_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "DB" "" "SOURCES;DEPS;DEFINITIONS;DEPENDS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_compile_definitions(${name} PRIVATE FLEETID_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                             ${ARG_DEFINITIONS})
  target_link_libraries(${name} PRIVATE fleetid::build_flags ${ARG_DEPS} fleetid::testing
                        GTest::gtest GTest::gmock GTest::gtest_main)
  if(ARG_DEPENDS)
    add_dependencies(${name} ${ARG_DEPENDS})
  endif()
  if(ARG_DB)
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
      PROPERTIES TIMEOUT 300 FIXTURES_REQUIRED postgres
                 ENVIRONMENT "FLEETID_TEST_PG_URL_FILE=${FLEETID_PG_DIR}/url;FLEETID_PG_SH=${PROJECT_SOURCE_DIR}/tests/pg/pg.sh")
  else()
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)
  endif()
endfunction()
