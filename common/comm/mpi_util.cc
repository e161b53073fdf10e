#include "common/comm/mpi_util.h"

#include <cstdlib>
#include <string>

namespace polis::comm {

Status MpiStatus(int rc, const char* expr, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return RemoteError("{} failed at {}:{}: {}", expr, file, line, std::string(text, len));
}

void SetOpenMpiDefaults() {
  static constexpr const char* kDefaults[][2] = {
      {"OMPI_MCA_btl_tcp_eager_limit", "262144"},
      {"OMPI_MCA_btl_tcp_rndv_eager_limit", "262144"},
      {"OMPI_MCA_btl_tcp_max_send_size", "262144"},
  };
  for (const auto& [name, value] : kDefaults) setenv(name, value, /*overwrite=*/0);
}

}  // namespace polis::comm
