# Warning and ISA settings for smax's own tests, benchmarks and examples (never for users: the
# smax target itself carries no flags).
include(CheckCXXCompilerFlag)

set(SMAX_WARNINGS -Wall -Wextra -Wpedantic)
option(SMAX_WERROR "Treat warnings as errors in smax's own targets" OFF)
if(SMAX_WERROR)
  list(APPEND SMAX_WARNINGS -Werror)
endif()

check_cxx_compiler_flag(-march=native SMAX_HAS_MARCH_NATIVE)

# smax_target_flavor(<target> <baseline|native>): the compiler's baseline ISA, or this machine's.
function(smax_target_flavor target flavor)
  target_compile_options(${target} PRIVATE ${SMAX_WARNINGS})
  if(flavor STREQUAL "native")
    if(NOT SMAX_HAS_MARCH_NATIVE)
      message(FATAL_ERROR "smax: -march=native is not supported by this compiler")
    endif()
    target_compile_options(${target} PRIVATE -march=native)
  endif()
endfunction()
