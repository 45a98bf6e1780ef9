# Warning and ISA settings for smax's own tests, benchmarks and examples (never for users: the
# smax target itself carries no flags).
include(CheckCXXCompilerFlag)

set(SMAX_WARNINGS -Wall -Wextra -Wpedantic)
option(SMAX_WERROR "Treat warnings as errors in smax's own targets" OFF)
if(SMAX_WERROR)
  list(APPEND SMAX_WARNINGS -Werror)
endif()

check_cxx_compiler_flag(-march=native SMAX_HAS_MARCH_NATIVE)

# smax_target_flavor(<target> <baseline|native|avx2>): the compiler's baseline ISA, this machine's,
# or AVX2 with FMA and F16C.
function(smax_target_flavor target flavor)
  target_compile_options(${target} PRIVATE ${SMAX_WARNINGS})
  if(flavor STREQUAL "native")
    if(NOT SMAX_HAS_MARCH_NATIVE)
      message(FATAL_ERROR "smax: -march=native is not supported by this compiler")
    endif()
    target_compile_options(${target} PRIVATE -march=native)
    # GCC 12's AVX-512 intrinsics initialize their "undefined" operands from themselves, which
    # -Wuninitialized reports wherever they are inlined (GCC bug 105593, fixed in GCC 13). The
    # baseline and AVX2 builds keep both warnings.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
      target_compile_options(${target} PRIVATE -Wno-uninitialized -Wno-maybe-uninitialized)
    endif()
  elseif(flavor STREQUAL "avx2")
    target_compile_options(${target} PRIVATE -mavx2 -mfma -mf16c)
  endif()
endfunction()
