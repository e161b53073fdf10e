# Writes OUT (a header defining POLIS_SOURCE_REVISION) from the source tree's
# git revision at build time, "-dirty" appended when tracked files differ
# from it, "unknown" outside a git checkout. Run on every build
# (common/CMakeLists.txt) but the header is replaced only when the text
# changes, so an unchanged revision recompiles nothing.
#   cmake -DSRC=<source root> -DOUT=<header> -P common/source_revision.cmake
execute_process(COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY ${SRC} OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0 OR NOT rev)
  set(rev "unknown")
else()
  execute_process(COMMAND git diff --quiet HEAD --
    WORKING_DIRECTORY ${SRC} RESULT_VARIABLE dirty ERROR_QUIET)
  if(NOT dirty EQUAL 0)
    string(APPEND rev "-dirty")
  endif()
endif()
set(text "// Generated at build time by common/source_revision.cmake. Do not edit.\n#pragma once\n#define POLIS_SOURCE_REVISION \"${rev}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE ${OUT} "${text}")
endif()
