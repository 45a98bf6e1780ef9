# smax's only dependencies: Eigen (3.3 or later) and xsimd (8.x). Used by the project itself and
# by the installed smaxConfig.cmake, so that both see the same targets.
include(CMakeFindDependencyMacro)

if(NOT TARGET Eigen3::Eigen)
  find_dependency(Eigen3 3.3 NO_MODULE)
endif()

if(NOT TARGET xsimd)
  # xsimd 8.1's exported target (Debian 12) lists a library named `xtl` in its link interface.
  # xtl (header-only) provides that target when installed (Debian: xtl-dev); xsimd itself needs
  # xtl only for its optional xtl::xcomplex support, so without xtl an empty stand-in target keeps
  # the link line valid.
  if(NOT TARGET xtl)
    find_package(xtl QUIET)
  endif()
  find_dependency(xsimd 8)
  if(NOT TARGET xtl)
    add_library(xtl INTERFACE IMPORTED)
  endif()
endif()
