# Helpers that declare moa's library, test and benchmark targets in one line each.

# moa_cc_library(NAME name SRCS ... DEPS ...): one static library per top-level folder, aliased
# moa::name. The first library built (common) owns the precompiled LibTorch header; the others
# reuse it.
function(moa_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(moa_${ARG_NAME} STATIC ${ARG_SRCS})
  add_library(moa::${ARG_NAME} ALIAS moa_${ARG_NAME})
  target_include_directories(moa_${ARG_NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(moa_${ARG_NAME} PUBLIC ${ARG_DEPS})
  target_compile_options(moa_${ARG_NAME} PRIVATE ${MOA_WARNINGS})
  moa_use_pch(moa_${ARG_NAME})
endfunction()

function(moa_use_pch target)
  if(NOT MOA_USE_PCH)
    return()
  endif()
  if(target STREQUAL "moa_common")
    target_precompile_headers(moa_common PRIVATE "${PROJECT_SOURCE_DIR}/common/pch.h")
  else()
    target_precompile_headers(${target} REUSE_FROM moa_common)
  endif()
endfunction()

# moa_cc_test(NAME name SRCS ... DEPS ...): one GoogleTest executable, its tests registered with
# ctest one by one.
function(moa_cc_test)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} moa_test_support GTest::gtest_main)
  target_compile_options(${ARG_NAME} PRIVATE ${MOA_WARNINGS})
  moa_use_pch(${ARG_NAME})
  gtest_discover_tests(${ARG_NAME} DISCOVERY_TIMEOUT 120
                       PROPERTIES ENVIRONMENT "MOA_SOURCE_DIR=${PROJECT_SOURCE_DIR};MOA_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()
